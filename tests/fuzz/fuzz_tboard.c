/* Fuzzes the reading of older TensorBoard event files: the input is an
 * event file of RUN/tb, which lt_tboard_open scans and cuts to the steps
 * up to 3 before writing a file of its own, as a run resumed at step 3
 * does. What it leaves of the input must be a prefix of it (the open only
 * cuts), or nothing, and the writer it opens must take a scalar. */
#include "config.h"
#define LT_FUZZ_NAME tboard
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/tboard.h"

/* Empties dir of the files an earlier input left. */
static void empty_dir(const char *dir)
{
	char path[4096];
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
			unlink(path);
		}
	if (d)
		closedir(d);
}

/* 1 when path is missing, or holds a prefix of data[0..n). */
static int prefix_or_gone(const char *path, const uint8_t *data, size_t n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 1;
	unsigned char *p = malloc(n + 1);
	size_t got = p ? fread(p, 1, n + 1, f) : 0;
	fclose(f);
	int ok = p && got <= n && memcmp(p, data, got) == 0;
	free(p);
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = lt_fuzz_dir("tb");
	char path[4096];
	struct lt_tboard_notes notes = { 0 };
	lt_tboard *tb = NULL;
	size = lt_fuzz_cap(size);
	empty_dir(dir);
	snprintf(path, sizeof path, "%s/events.out.tfevents.0000000001.fuzz.1", dir);
	lt_fuzz_write(path, data, size);
	if (lt_tboard_open(dir, 3, &notes, &tb) == LT_OK) {
		struct lt_tboard_scalar v = { "train/loss", 1.5 };
		if (lt_tboard_scalars(tb, 4, &v, 1) != LT_OK)
			abort(); /* the new file takes no record */
	}
	lt_tboard_close(tb);
	lt_tboard_notes_free(&notes);
	if (!prefix_or_gone(path, data, size))
		abort(); /* the open changed the older file rather than cut it */
	return 0;
}
