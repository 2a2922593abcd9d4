/* The backend registry: opens a backend by name and wraps allocation with
 * error context. */
#include "config.h"
#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "cpu.h"

static const char *const names[] = { "cpu", NULL };

const char *const *lt_backend_names(void)
{
	return names;
}

enum lt_status lt_backend_new(const char *spec, int threads, lt_backend **out)
{
	*out = NULL;
	if (!spec || !strcmp(spec, "cpu") || !strcmp(spec, "auto"))
		return lt_cpu_backend_new(threads, out);
	if (!strncmp(spec, "opencl", 6)) {
		lt_errmsg_set("device '%s': this lltrain was built without the OpenCL backend", spec);
		return LT_ERR_NOTFOUND;
	}
	lt_errmsg_set("device '%s': unknown (expected cpu, opencl[:P.D] or auto)", spec);
	return LT_ERR_ARG;
}

void lt_backend_free(lt_backend *be)
{
	if (be)
		be->ops->free(be);
}

enum lt_status lt_buf_new(lt_backend *be, size_t n, lt_buf **out)
{
	enum lt_status st = be->ops->buf_new(be, n, out);
	if (st != LT_OK)
		lt_errmsg_prefix("%s backend", be->ops->name);
	return st;
}

void lt_buf_free(lt_backend *be, lt_buf *b)
{
	if (b)
		be->ops->buf_free(be, b);
}
