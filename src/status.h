/* Status codes returned by every fallible lltrain function, and their names. */
#ifndef LT_STATUS_H
#define LT_STATUS_H

enum lt_status {
	LT_OK = 0,
	LT_ERR_NOMEM,     /* host allocation failed */
	LT_ERR_DEVMEM,    /* device allocation failed */
	LT_ERR_IO,        /* a read, write, open or rename failed (errno says more) */
	LT_ERR_FORMAT,    /* a file's contents are not what they must be */
	LT_ERR_CONFIG,    /* a configuration value is impossible */
	LT_ERR_ARG,       /* a caller passed an invalid argument */
	LT_ERR_BACKEND,   /* the backend failed (driver error, kernel build) */
	LT_ERR_NOTFOUND,  /* a named thing (backend, device, tensor, file) is absent */
	LT_ERR_NUMERIC,   /* a NaN or Inf where a finite value is required */
	LT_ERR_INTERRUPTED,
	LT_ERR_COMM,      /* a collective between ranks failed or made no progress */
};

/* A short lower-case phrase for a status, never NULL. */
const char *lt_status_str(enum lt_status st);

/* Where a function fails, it may leave one line of context here (file,
 * tensor, byte, value) for main to print after the status. The buffer is
 * per thread; lt_errmsg_set overwrites, lt_errmsg_prefix adds in front. */
void lt_errmsg_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void lt_errmsg_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *lt_errmsg(void);
void lt_errmsg_clear(void);

/* An invariant that stays checked in release builds: a broken one is a bug
 * in lltrain, never a user error, so it aborts with the place. */
#define LT_ASSERT(cond) \
	do { if (!(cond)) lt_assert_fail(#cond, __FILE__, __LINE__); } while (0)
_Noreturn void lt_assert_fail(const char *what, const char *file, int line);

#endif
