/* Status names, the per-thread error context line, and the release assert. */
#include "config.h"
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char errmsg[8192];  /* room for a kernel build log */

const char *lt_status_str(enum lt_status st)
{
	switch (st) {
	case LT_OK: return "ok";
	case LT_ERR_NOMEM: return "out of memory";
	case LT_ERR_DEVMEM: return "out of device memory";
	case LT_ERR_IO: return "input/output error";
	case LT_ERR_FORMAT: return "bad file format";
	case LT_ERR_CONFIG: return "bad configuration";
	case LT_ERR_ARG: return "invalid argument";
	case LT_ERR_BACKEND: return "backend failure";
	case LT_ERR_NOTFOUND: return "not found";
	case LT_ERR_NUMERIC: return "non-finite value";
	case LT_ERR_INTERRUPTED: return "interrupted";
	case LT_ERR_COMM: return "communication failure";
	}
	return "unknown status";
}

void lt_errmsg_set(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof errmsg, fmt, ap);
	va_end(ap);
}

void lt_errmsg_prefix(const char *fmt, ...)
{
	char old[sizeof errmsg];
	va_list ap;
	memcpy(old, errmsg, sizeof old);
	va_start(ap, fmt);
	int n = vsnprintf(errmsg, sizeof errmsg, fmt, ap);
	va_end(ap);
	/* "<head>: <old context>", cut at the buffer's end */
	if (old[0] && n >= 0 && (size_t)n + 2 < sizeof errmsg) {
		errmsg[n] = ':';
		errmsg[n + 1] = ' ';
		size_t room = sizeof errmsg - (size_t)n - 3;
		size_t len = strnlen(old, room);
		memcpy(errmsg + n + 2, old, len);
		errmsg[n + 2 + len] = '\0';
	}
}

const char *lt_errmsg(void)
{
	return errmsg;
}

void lt_errmsg_clear(void)
{
	errmsg[0] = '\0';
}

void lt_assert_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "lltrain: internal error: %s:%d: assertion '%s' failed\n", file, line, what);
	abort();
}
