/* File-system steps shared by the writers: mkdir -p, whole-file writes
 * and copies that are fsynced and leave nothing behind on failure, and
 * fsync of a path. */
#include "config.h"
#include "io/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_BLOCK ((size_t)1 << 20)

int lt_fs_is_dir(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Creates directory path unless it already is one. */
static enum lt_status make_directory(const char *path)
{
	if (mkdir(path, 0755) == 0)
		return LT_OK;
	int err = errno;
	if (err == EEXIST) {
		if (lt_fs_is_dir(path))
			return LT_OK;
		lt_errmsg_set("%s: exists and is not a directory", path);
		return LT_ERR_IO;
	}
	lt_errmsg_set("%s: cannot create the directory: %s", path, strerror(err));
	return LT_ERR_IO;
}

/* mkdir -p: creates every missing directory of path. */
enum lt_status lt_fs_make_dirs(const char *path)
{
	char buf[LT_FS_PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof buf) {
		lt_errmsg_set("'%s': not a usable directory name", path);
		return LT_ERR_ARG;
	}
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i < n; i++) {
		if (buf[i] != '/' || buf[i - 1] == '/')
			continue;
		buf[i] = '\0';
		enum lt_status st = make_directory(buf);
		buf[i] = '/';
		if (st != LT_OK)
			return st;
	}
	return make_directory(buf);
}

/* Flushes a file or directory to stable storage. */
enum lt_status lt_fs_sync(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		lt_errmsg_set("%s: cannot open to fsync: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	if (fsync(fd) != 0 && errno != EINVAL) {
		int err = errno;
		close(fd);
		lt_errmsg_set("%s: fsync failed: %s", path, strerror(err));
		return LT_ERR_IO;
	}
	close(fd);
	return LT_OK;
}

/* Writes all of p to fd. Returns 0 or an errno. */
static int write_fully(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t r = write(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return ENOSPC;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Writes n bytes to a new file path, fsyncs and closes it; removes it again
 * on failure. */
enum lt_status lt_fs_write_new(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), err;
	if (fd < 0) {
		lt_errmsg_set("%s: cannot create: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	if ((err = write_fully(fd, p, n)) != 0) {
		lt_errmsg_set("%s: write failed: %s", path, strerror(err));
	} else if (fsync(fd) != 0) {
		err = errno;
		lt_errmsg_set("%s: fsync failed: %s", path, strerror(err));
	}
	if (close(fd) != 0 && !err) {
		err = errno;
		lt_errmsg_set("%s: close failed: %s", path, strerror(err));
	}
	if (err) {
		unlink(path);
		return LT_ERR_IO;
	}
	return LT_OK;
}

/* Copies src to a new file dst (fsynced); removes dst on failure. */
enum lt_status lt_fs_copy(const char *src, const char *dst)
{
	int in = -1, out = -1, err = 0;
	char *buf = malloc(IO_BLOCK);
	enum lt_status st = LT_ERR_IO;

	if (!buf) {
		lt_errmsg_set("cannot allocate %zu bytes to copy %s", IO_BLOCK, src);
		return LT_ERR_NOMEM;
	}
	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0) {
		lt_errmsg_set("%s: cannot open: %s", src, strerror(errno));
		goto out;
	}
	if ((out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		lt_errmsg_set("%s: cannot create: %s", dst, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t r = read(in, buf, IO_BLOCK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			lt_errmsg_set("%s: read failed: %s", src, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		if ((err = write_fully(out, buf, (size_t)r)) != 0) {
			lt_errmsg_set("%s: write failed: %s", dst, strerror(err));
			goto out;
		}
	}
	if (fsync(out) != 0) {
		lt_errmsg_set("%s: fsync failed: %s", dst, strerror(errno));
		goto out;
	}
	err = close(out);
	out = -1;
	if (err != 0) {
		lt_errmsg_set("%s: close failed: %s", dst, strerror(errno));
		goto out;
	}
	st = LT_OK;
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (st != LT_OK)
		unlink(dst);
	free(buf);
	return st;
}

int lt_fs_is_empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int empty = 1;
	if (!d)
		return -1;
	while (empty && (e = readdir(d)) != NULL)
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}
