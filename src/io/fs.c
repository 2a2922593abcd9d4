/* File-system steps shared by every writer: atomic publishing of files and
 * directories, mkdir -p, rm -rf, fsynced whole-file writes (JSON ones too)
 * and copies that leave nothing behind on failure, fsync of a path, and
 * path joining. */
#include "config.h"
#include "io/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define IO_BLOCK ((size_t)1 << 20)
/* lt_fs_remove_tree goes this many directories deep below its path. */
#define MAX_DEPTH 8

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

enum lt_status lt_fs_output_dir(const char *path, int follow, int *has_files)
{
	struct stat sb;
	*has_files = 0;
	if ((follow ? stat(path, &sb) : lstat(path, &sb)) != 0) {
		if (errno == ENOENT)
			return LT_OK;
		lt_errmsg_set("%s: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	if (!S_ISDIR(sb.st_mode)) {
		lt_errmsg_set("%s: exists and is not a directory", path);
		return LT_ERR_ARG;
	}
	int empty = lt_fs_is_empty_dir(path);
	if (empty < 0) {
		lt_errmsg_set("%s: cannot list: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	*has_files = !empty;
	return LT_OK;
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

enum lt_status lt_fs_split(const char *path, char *dir, char *name, size_t cap)
{
	size_t end = strlen(path);
	while (end > 1 && path[end - 1] == '/')
		end--;
	size_t start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	size_t n = start;
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (n >= cap || end - start >= cap) {
		lt_errmsg_set("%s: path too long (at most %zu bytes)", path, cap - 1);
		return LT_ERR_ARG;
	}
	memcpy(dir, start ? path : ".", start ? n : 1);
	dir[start ? n : 1] = '\0';
	memcpy(name, path + start, end - start);
	name[end - start] = '\0';
	return LT_OK;
}

static enum lt_status sync_parent(const char *path)
{
	char dir[LT_FS_PATH_MAX], name[LT_FS_PATH_MAX];
	enum lt_status st = lt_fs_split(path, dir, name, sizeof dir);
	return st != LT_OK ? st : lt_fs_sync(dir);
}

enum lt_status lt_fs_publish(const char *tmp, const char *path)
{
	if (rename(tmp, path) != 0) {
		lt_errmsg_set("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
		return LT_ERR_IO;
	}
	return sync_parent(path);
}

enum lt_status lt_fs_publish_file(const char *path, const void *p, size_t n)
{
	char tmp[LT_FS_PATH_MAX];
	int len = snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
	if (len < 0 || (size_t)len >= sizeof tmp) {
		lt_errmsg_set("%s: path too long (at most %zu bytes)", path, sizeof tmp - 20);
		return LT_ERR_ARG;
	}
	enum lt_status st = lt_fs_write_new(tmp, p, n);
	if (st != LT_OK)
		return st;
	if ((st = lt_fs_publish(tmp, path)) != LT_OK)
		unlink(tmp);
	return st;
}

/* Writes j's text, indented by two and ending in a newline, to path
 * through put (lt_fs_write_new or lt_fs_publish_file). */
static enum lt_status put_json(const char *path, const json_t *j,
			       enum lt_status (*put)(const char *path, const void *p, size_t n))
{
	char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	size_t n = text ? strlen(text) : 0;
	char *line = text ? realloc(text, n + 2) : NULL;
	if (!line) {
		free(text);
		lt_errmsg_set("%s: out of memory while writing the JSON text", path);
		return LT_ERR_NOMEM;
	}
	memcpy(line + n, "\n", 2);
	enum lt_status st = put(path, line, n + 1);
	free(line);
	return st;
}

enum lt_status lt_fs_write_json_new(const char *path, const json_t *j)
{
	return put_json(path, j, lt_fs_write_new);
}

enum lt_status lt_fs_publish_json(const char *path, const json_t *j)
{
	return put_json(path, j, lt_fs_publish_file);
}

enum lt_status lt_fs_publish_dir(const char *tmp, const char *final, const char *aside)
{
	int moved = 0;
	if (rename(final, aside) == 0) {
		moved = 1;
	} else if (errno != ENOENT) {
		lt_errmsg_set("%s: cannot move the old copy aside to %s: %s", final, aside,
			      strerror(errno));
		return LT_ERR_IO;
	}
	if (rename(tmp, final) != 0) {
		lt_errmsg_set("%s: cannot rename to %s: %s", tmp, final, strerror(errno));
		if (moved)
			rename(aside, final);
		return LT_ERR_IO;
	}
	enum lt_status st = sync_parent(final);
	if (st != LT_OK)
		return st;
	if (moved && lt_fs_remove_tree(aside) != LT_OK)
		lt_errmsg_clear();
	return LT_OK;
}

/* Removes the entry `name` of the directory open as dfd: a file or a link
 * (never followed), or a directory with what it holds, at most
 * MAX_DEPTH levels deep. A missing entry is no error. Returns 0, or the
 * first errno met. */
static int remove_at(int dfd, const char *name, int depth)
{
	struct stat sb;
	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	int err = errno;
	/* a read-only file system refuses before it looks for the entry */
	if (err == EROFS && fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)
		return 0;
	if (err != EISDIR && err != EPERM)
		return err;
	if (depth > MAX_DEPTH)
		return ELOOP;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int why = errno;
		if (why == ENOENT)
			return 0;
		/* not a directory after all (a file the unlink may not remove):
		 * the unlink's own error says why */
		return why == ENOTDIR || why == ELOOP ? err : why;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		err = errno;
		close(fd);
		return err;
	}
	err = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		int r = remove_at(fd, e->d_name, depth + 1);
		if (r != 0 && !err)
			err = r;
	}
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) != 0 && !err)
		err = errno;
	return err;
}

enum lt_status lt_fs_remove_tree(const char *path)
{
	char dir[LT_FS_PATH_MAX], name[LT_FS_PATH_MAX];
	enum lt_status st = lt_fs_split(path, dir, name, sizeof dir);
	if (st != LT_OK)
		return st;
	if (!name[0] || !strcmp(name, ".") || !strcmp(name, "..")) {
		lt_errmsg_set("%s: will not remove a path that does not end in a name", path);
		return LT_ERR_ARG;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err = dfd < 0 ? (errno == ENOENT ? 0 : errno) : remove_at(dfd, name, 0);
	if (dfd >= 0)
		close(dfd);
	if (err) {
		lt_errmsg_set("%s: cannot remove: %s", path, strerror(err));
		return LT_ERR_IO;
	}
	return LT_OK;
}

void lt_fs_discard(const char *path)
{
	char saved[8192]; /* lt_errmsg's room */
	snprintf(saved, sizeof saved, "%s", lt_errmsg());
	lt_fs_remove_tree(path);
	lt_errmsg_set("%s", saved);
}

enum lt_status lt_fs_join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= cap) {
		lt_errmsg_set("%s/%s: path too long (at most %zu bytes)", dir, name,
			      cap ? cap - 1 : 0);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

char *lt_fs_join_new(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *out = malloc(a + b + 2);
	if (!out) {
		lt_errmsg_set("cannot allocate %zu bytes for the path %s/%s", a + b + 2, dir, name);
		return NULL;
	}
	memcpy(out, dir, a);
	out[a] = '/';
	memcpy(out + a + 1, name, b + 1);
	return out;
}

char *lt_fs_tmp_new(const char *path)
{
	size_t n = strlen(path);
	char *out = malloc(n + sizeof ".tmp");
	if (!out) {
		lt_errmsg_set("cannot allocate %zu bytes for the path %s.tmp", n + sizeof ".tmp", path);
		return NULL;
	}
	memcpy(out, path, n);
	memcpy(out + n, ".tmp", sizeof ".tmp");
	return out;
}
