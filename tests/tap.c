/* TAP output for the test programs (see tap.h). */
#include "config.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fs.h"
#include "status.h"

static int planned = -1, run, failed, muted;

void tap_mute(int on)
{
	muted = on;
}

void tap_plan(int n)
{
	planned = n;
	printf("1..%d\n", n);
	fflush(stdout);
}

int tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;
	if (muted)
		return cond;
	run++;
	if (!cond)
		failed++;
	printf("%s %d - ", cond ? "ok" : "not ok", run);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

void tap_skip(const char *why, ...)
{
	va_list ap;
	if (muted)
		return;
	run++;
	printf("ok %d # SKIP ", run);
	va_start(ap, why);
	vprintf(why, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

void tap_diag(const char *fmt, ...)
{
	va_list ap;
	if (muted)
		return;
	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

int tap_done(void)
{
	if (planned < 0) {
		printf("1..%d\n", run);
		planned = run;
	}
	if (run != planned) {
		printf("# planned %d checks but ran %d\n", planned, run);
		return 1;
	}
	fflush(stdout);
	return failed ? 1 : 0;
}

void tap_skip_all(const char *why, ...)
{
	va_list ap;
	printf("1..0 # SKIP ");
	va_start(ap, why);
	vprintf(why, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(0);
}

/* ||a - ref|| / max(||ref||, tiny), a being af (a float array) or else ad. */
static double rel_l2(const float *af, const double *ad, const double *ref, long n)
{
	double num = 0, den = 0;
	for (long i = 0; i < n; i++) {
		double d = (af ? (double)af[i] : ad[i]) - ref[i];
		num += d * d;
		den += ref[i] * ref[i];
	}
	if (!isfinite(num))
		return INFINITY;
	return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

double tap_rel_l2_f(const float *a, const double *ref, long n)
{
	return rel_l2(a, NULL, ref, n);
}

double tap_rel_l2_d(const double *a, const double *ref, long n)
{
	return rel_l2(NULL, a, ref, n);
}

int tap_write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(p, 1, n, f) == n;
	if (f && fclose(f) != 0)
		ok = 0;
	return ok;
}

unsigned char *tap_slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	long len;
	*n = 0;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (p = malloc((size_t)len + 1)) && fread(p, 1, (size_t)len, f) == (size_t)len)
		*n = (size_t)len;
	fclose(f);
	return p;
}

double tap_worst(double worst, double e)
{
	return worst != worst || e <= worst ? worst : e;
}

static char scratch[4096];

const char *tap_scratch_new(const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(scratch, sizeof scratch, "%s/%s.XXXXXX", tmp && tmp[0] ? tmp : "/tmp", prefix);
	if (!mkdtemp(scratch)) {
		printf("Bail out! mkdtemp %s: %s\n", scratch, strerror(errno));
		exit(1);
	}
	return scratch;
}

int tap_scratch_done(void)
{
	if (scratch[0] && lt_fs_remove_tree(scratch) != LT_OK)
		tap_diag("could not remove %s: %s", scratch, lt_errmsg());
	return tap_done();
}

const char *tap_at(const char *name)
{
	static char buf[6][4400];
	static int slot;
	slot = (slot + 1) % 6;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", scratch, name);
	return buf[slot];
}

int tap_exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

int tap_count_entries(const char *dir, const char *part, int anywhere)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		n += anywhere ? strstr(e->d_name, part) != NULL
			      : !strncmp(e->d_name, part, strlen(part));
	}
	closedir(d);
	return n;
}
