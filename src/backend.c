/* The backend registry: opens a backend by name, wraps allocation with
 * error context, and stages host views of buffers. */
#include "config.h"
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#ifdef LT_HAVE_OPENCL
#include "cl.h"
#endif

#ifdef LT_HAVE_OPENCL
static const char *const names[] = { "cpu", "opencl", NULL };
#else
static const char *const names[] = { "cpu", NULL };
#endif

static char note[1024];

const char *const *lt_backend_names(void)
{
	return names;
}

void lt_backend_set_local_rank(int local_rank)
{
#ifdef LT_HAVE_OPENCL
	lt_cl_set_gpu_index(local_rank);
#else
	(void)local_rank;
#endif
}

const char *lt_backend_note(void)
{
	return note;
}

/* --device auto: an OpenCL GPU that works, else the CPU, noting why. */
static enum lt_status open_auto(int threads, lt_backend **out)
{
#ifdef LT_HAVE_OPENCL
	if (lt_cl_backend_new("opencl-gpu", out) == LT_OK) {
		snprintf(note, sizeof note, "device auto: using the OpenCL GPU");
		return LT_OK;
	}
	snprintf(note, sizeof note, "device auto: using the CPU (%s)", lt_errmsg());
#else
	snprintf(note, sizeof note, "device auto: using the CPU (built without OpenCL)");
#endif
	lt_errmsg_clear();
	return lt_cpu_backend_new(threads, out);
}

enum lt_status lt_backend_new(const char *spec, int threads, lt_backend **out)
{
	*out = NULL;
	note[0] = '\0';
	if (!spec || !strcmp(spec, "cpu"))
		return lt_cpu_backend_new(threads, out);
	if (!strcmp(spec, "auto"))
		return open_auto(threads, out);
	if (!strcmp(spec, "opencl") || !strncmp(spec, "opencl:", 7)) {
#ifdef LT_HAVE_OPENCL
		return lt_cl_backend_new(spec, out);
#else
		lt_errmsg_set("device '%s': this lltrain was built without the OpenCL backend", spec);
		return LT_ERR_NOTFOUND;
#endif
	}
	lt_errmsg_set("device '%s': unknown (expected cpu, opencl, opencl:P.D, opencl:NAME or auto)",
		      spec);
	return LT_ERR_ARG;
}

void lt_backend_free(lt_backend *be)
{
	if (be)
		be->ops->free(be);
}

size_t lt_dtype_size(enum lt_dtype t)
{
	return t == LT_BF16 ? 2 : 4;
}

const char *lt_dtype_name(enum lt_dtype t)
{
	return t == LT_F32 ? "f32" : t == LT_BF16 ? "bf16" : "i32";
}

enum lt_status lt_buf_new(lt_backend *be, enum lt_dtype type, size_t n, lt_buf **out)
{
	enum lt_status st = be->ops->buf_new(be, type, n, out);
	if (st != LT_OK)
		lt_errmsg_prefix("%s backend", be->ops->name);
	return st;
}

void lt_buf_free(lt_backend *be, lt_buf *b)
{
	if (b)
		be->ops->buf_free(be, b);
}

void lt_backend_set_matmul(lt_backend *be, enum lt_matmul mode)
{
	if (be->ops->set_matmul)
		be->ops->set_matmul(be, mode);
}

void *lt_backend_host_ptr(lt_backend *be, lt_ref r)
{
	return be->ops->host_ptr ? be->ops->host_ptr(be, r) : NULL;
}

enum lt_status lt_host_view_map(struct lt_host_view *v, lt_backend *be, lt_ref r, size_t n)
{
	LT_ASSERT(lt_buf_type(r.buf) == LT_F32);
	float *host = lt_backend_host_ptr(be, r);
	size_t want = n ? n : 1;
	if (!host && v->staging_n < want) {
		free(v->staging);
		v->staging_n = 0;
		if (!(v->staging = malloc(want * sizeof *v->staging))) {
			lt_host_view_free(v);
			lt_errmsg_set("cannot allocate %zu bytes of host staging for a buffer",
				      want * sizeof *v->staging);
			return LT_ERR_NOMEM;
		}
		v->staging_n = want;
	}
	v->p = host ? host : v->staging;
	v->n = n;
	v->staged = !host;
	v->be = be;
	v->ref = r;
	return LT_OK;
}

void lt_host_view_read(const struct lt_host_view *v)
{
	if (v->staged && v->n > 0)
		v->be->ops->read(v->be, v->p, v->ref, v->n);
}

void lt_host_view_write(const struct lt_host_view *v)
{
	if (v->staged && v->n > 0)
		v->be->ops->write(v->be, v->ref, v->p, v->n);
}

void lt_host_view_free(struct lt_host_view *v)
{
	free(v->staging);
	*v = (struct lt_host_view){ 0 };
}
