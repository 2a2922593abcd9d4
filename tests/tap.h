/* A small TAP producer for lltrain's test programs: plan, ok, diag, and an
 * exit status that is non-zero whenever a check failed. */
#ifndef LT_TAP_H
#define LT_TAP_H

#include <stdarg.h>
#include <stddef.h>

/* Declares how many checks follow (call once, first). */
void tap_plan(int n);
/* Records one check; returns cond so callers can branch on it. */
int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records one check as skipped, with the reason. */
void tap_skip(const char *why, ...) __attribute__((format(printf, 1, 2)));
/* A comment line, shown by the harness. */
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* While on, tap_ok/tap_skip/tap_diag neither print nor count (tap_ok
 * still returns cond): for a run whose results only feed a later check. */
void tap_mute(int on);
/* Ends the run; returns the exit status for main (0 only if all passed
 * and the count matched the plan). */
int tap_done(void);

/* Test files: writes n bytes to path (1 on success), and reads a whole file
 * into a malloc'd buffer (NULL when it cannot; *n gets its size). */
int tap_write_file(const char *path, const void *p, size_t n);
unsigned char *tap_slurp(const char *path, size_t *n);
/* Ends the whole file as skipped (exit 77 semantics in TAP: "1..0 # SKIP"). */
_Noreturn void tap_skip_all(const char *why, ...) __attribute__((format(printf, 1, 2)));

/* Scratch files. tap_scratch_new makes a new empty directory
 * $TMPDIR/PREFIX.XXXXXX (or under /tmp) for the test's files and returns
 * its path, or bails out; tap_at gives the path of name inside it (six
 * rotating buffers, so up to six may be in use at once); tap_exists says
 * whether a path exists (a link counts, whatever it points to); and
 * tap_count_entries counts the entries of directory dir whose names start
 * with part (anywhere: contain it), -1 when dir cannot be listed. */
const char *tap_scratch_new(const char *prefix);
/* Removes the scratch directory and all in it (saying so in a comment
 * where it cannot), then ends the run as tap_done does. */
int tap_scratch_done(void);
const char *tap_at(const char *name);
int tap_exists(const char *path);
int tap_count_entries(const char *dir, const char *part, int anywhere);

/* Relative L2 error ||a - b|| / max(||b||, tiny) of a float array against a
 * double reference. */
double tap_rel_l2_f(const float *a, const double *ref, long n);
double tap_rel_l2_d(const double *a, const double *ref, long n);
/* The larger of a running worst error and a new one, where NaN is the
 * largest of all and stays: a check `worst <= tol` then fails on a NaN
 * (a plain `e > worst ? e : worst` would drop it and pass). */
double tap_worst(double worst, double e);

#endif
