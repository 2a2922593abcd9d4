/* Replays the fuzz harnesses' seeds and regressions without libFuzzer:
 * every file of tests/fuzz/NAME/ (sorted by name) through harness NAME's
 * LLVMFuzzerTestOneInput, compiled by the normal compiler (see fuzz.h),
 * one TAP check per file that passes when the harness returns; a crash,
 * or under --enable-sanitizers a sanitizer report, fails the program. */
#include "config.h"
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define DECLARE(name) int lt_fuzz_one_##name(const uint8_t *data, size_t size);
LT_FUZZ_HARNESSES(DECLARE)

static const struct harness {
	const char *name;
	int (*one)(const uint8_t *data, size_t size);
} harnesses[] = {
#define ENTRY(name) { #name, lt_fuzz_one_##name },
	LT_FUZZ_HARNESSES(ENTRY)
};
#define N_HARNESSES (sizeof harnesses / sizeof harnesses[0])

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the plain files in dir (not hidden), sorted; NULL when
 * dir cannot be read. */
static char **list_files(const char *dir, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	size_t cap = 0;

	*n = 0;
	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (*n == cap) {
			char **grown = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof *v);
			if (!grown)
				break;
			v = grown;
		}
		if (!(v[*n] = strdup(e->d_name)))
			break;
		(*n)++;
	}
	closedir(d);
	if (!v)
		v = calloc(1, sizeof *v);
	if (v && *n > 1)
		qsort(v, *n, sizeof *v, by_name);
	return v;
}

int main(void)
{
	const char *top = getenv("top_srcdir");
	char dirs[N_HARNESSES][4096];
	char **files[N_HARNESSES];
	size_t counts[N_HARNESSES];
	int total = 0;

	if (!top || !top[0])
		top = ".";
	for (size_t h = 0; h < N_HARNESSES; h++) {
		snprintf(dirs[h], sizeof dirs[h], "%s/tests/fuzz/%s", top, harnesses[h].name);
		files[h] = list_files(dirs[h], &counts[h]);
		/* a harness without inputs is one failing check */
		total += files[h] && counts[h] ? (int)counts[h] : 1;
	}
	tap_plan(total);
	for (size_t h = 0; h < N_HARNESSES; h++) {
		if (!files[h] || !counts[h]) {
			tap_ok(0, "%s: no seeds in %s", harnesses[h].name, dirs[h]);
			free(files[h]);
			continue;
		}
		for (size_t i = 0; i < counts[h]; i++) {
			char path[8192];
			size_t len = 0;
			unsigned char *data;
			snprintf(path, sizeof path, "%s/%s", dirs[h], files[h][i]);
			data = tap_slurp(path, &len);
			if (!data) {
				tap_ok(0, "%s/%s: cannot be read", harnesses[h].name, files[h][i]);
			} else {
				harnesses[h].one(data, len);
				tap_ok(1, "%s/%s (%zu bytes)", harnesses[h].name, files[h][i], len);
			}
			free(data);
			free(files[h][i]);
		}
		free(files[h]);
	}
	return tap_done();
}
