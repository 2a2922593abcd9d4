/* The libFuzzer harnesses' scratch directory and file writing (see fuzz.h). */
#include "config.h"
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fs.h"

/* Names given out so far, each with its path (few: a harness uses a handful). */
#define MAX_NAMES 64

static char scratch[4096];
static struct {
	char *name, *path;
} names[MAX_NAMES];
static int n_names;

static void remove_scratch(void)
{
	const char *keep = getenv("LT_FUZZ_KEEP");
	if (scratch[0] && keep && keep[0])
		fprintf(stderr, "fuzz: LT_FUZZ_KEEP: the scratch directory %s is kept\n", scratch);
	else if (scratch[0])
		lt_fs_remove_tree(scratch);
	for (int i = 0; i < n_names; i++) {
		free(names[i].name);
		free(names[i].path);
	}
	n_names = 0;
}

static void make_scratch(void)
{
	const char *tmp = getenv("TMPDIR");
	if (!tmp || !tmp[0])
		tmp = "/tmp";
	snprintf(scratch, sizeof scratch, "%s/lltrain-fuzz.XXXXXX", tmp);
	if (!mkdtemp(scratch)) {
		fprintf(stderr, "fuzz: cannot make a scratch directory %s: %s\n", scratch,
			strerror(errno));
		abort();
	}
	atexit(remove_scratch);
}

const char *lt_fuzz_path_of(const char *harness, const char *name)
{
	char key[512];
	if (!scratch[0])
		make_scratch();
	snprintf(key, sizeof key, "%s/%s", harness, name);
	for (int i = 0; i < n_names; i++)
		if (!strcmp(names[i].name, key))
			return names[i].path;
	if (n_names == MAX_NAMES || !(names[n_names].name = strdup(key)) ||
	    !(names[n_names].path = lt_fs_join_new(scratch, key))) {
		fprintf(stderr, "fuzz: no room for the path of %s\n", key);
		abort();
	}
	/* the harness's own directory, made once */
	char *dir = lt_fs_join_new(scratch, harness);
	if (!dir || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
		fprintf(stderr, "fuzz: cannot make %s/%s: %s\n", scratch, harness, strerror(errno));
		abort();
	}
	free(dir);
	return names[n_names++].path;
}

const char *lt_fuzz_dir_of(const char *harness, const char *name)
{
	const char *path = lt_fuzz_path_of(harness, name);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "fuzz: cannot make %s: %s\n", path, strerror(errno));
		abort();
	}
	return path;
}

void lt_fuzz_write(const char *path, const void *p, size_t n)
{
	const char *c = p;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
		abort();
	}
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
			abort();
		}
		c += w;
		n -= (size_t)w;
	}
	close(fd);
}
