/* The OpenCL backend's table, context, memory, kernel cache and launches;
 * the ops live in cl_ops.c, cl_attention.c and cl_gemm.c. */
#include "config.h"
#include "cl.h"
#include "cl_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROGRAMS 32
#define MAX_KERNELS 160
/* Profiled launches whose events wait for the next sync. */
#define MAX_PENDING 4096
/* Reads started and not yet waited for. */
#define MAX_READS 64

struct program_entry {
	char file[32];
	char options[192];
	cl_program program;
};

struct kernel_entry {
	int program;
	char name[64];
	cl_kernel kernel;
};

/* A profiled command: ev's start to end, or, when since is set, since's
 * end to ev's end (the span of several kernels, between two markers). */
struct pending_event {
	cl_event ev, since;
	const char *op;
};

struct lt_cl_ctx {
	cl_platform_id platform;
	cl_device_id device;
	cl_context context;
	cl_command_queue queue;
	cl_command_queue copies;    /* read_start and write_start (NULL: queue) */
	struct lt_device_info info;
	size_t max_alloc, max_group, local_mem;
	int fp64;

	/* The first failure inside an op; later ops do nothing, sync reports it. */
	enum lt_status failed;
	char errmsg[4096];

	struct program_entry programs[MAX_PROGRAMS];
	int n_programs;
	struct kernel_entry kernels[MAX_KERNELS];
	int n_kernels;

	lt_buf *scratch[LT_CL_SCRATCH_SLOTS];
	lt_buf *panel;  /* lt_cl_panel's */
	size_t held, peak;  /* bytes of live buffers */

	struct lt_cl_mma mma;

	int profiling;
	struct lt_cl_profile prof;
	struct pending_event pending[MAX_PENDING];
	int n_pending;
	cl_event reads[MAX_READS];  /* started reads, oldest first */
	int n_reads;
};

struct lt_cl_ctx *lt_cl_ctx(lt_backend *be) { return be->ctx; }
cl_command_queue lt_cl_queue(struct lt_cl_ctx *c) { return c->queue; }
int lt_cl_failed(struct lt_cl_ctx *c) { return c->failed != LT_OK; }
int lt_cl_has_fp64(struct lt_cl_ctx *c) { return c->fp64; }
size_t lt_cl_max_group(struct lt_cl_ctx *c) { return c->max_group; }
int lt_cl_compute_units(struct lt_cl_ctx *c) { return c->info.compute_units; }
size_t lt_cl_local_mem(struct lt_cl_ctx *c) { return c->local_mem; }
int lt_cl_profiling(struct lt_cl_ctx *c) { return c->profiling; }
struct lt_cl_mma *lt_cl_mma_of(struct lt_cl_ctx *c) { return &c->mma; }
cl_context lt_cl_context(struct lt_cl_ctx *c) { return c->context; }
cl_device_id lt_cl_device(struct lt_cl_ctx *c) { return c->device; }

/* An OpenCL error code as its name, for messages. */
static const char *cl_error_name(cl_int err)
{
	switch (err) {
	case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
	case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
	case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
	case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
	case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
	case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
	case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
	case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
	case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
	case CL_INVALID_ARG_INDEX: return "CL_INVALID_ARG_INDEX";
	case CL_INVALID_ARG_SIZE: return "CL_INVALID_ARG_SIZE";
	case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
	case CL_INVALID_WORK_ITEM_SIZE: return "CL_INVALID_WORK_ITEM_SIZE";
	case CL_INVALID_GLOBAL_WORK_SIZE: return "CL_INVALID_GLOBAL_WORK_SIZE";
	case CL_INVALID_KERNEL_NAME: return "CL_INVALID_KERNEL_NAME";
	case CL_INVALID_MEM_OBJECT: return "CL_INVALID_MEM_OBJECT";
	case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
	case CL_INVALID_OPERATION: return "CL_INVALID_OPERATION";
	default: return "an OpenCL error";
	}
}

void lt_cl_fail(struct lt_cl_ctx *c, cl_int err, const char *what)
{
	if (c->failed)
		return;
	c->failed = err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES
		? LT_ERR_DEVMEM : LT_ERR_BACKEND;
	snprintf(c->errmsg, sizeof c->errmsg, "%s on %s: %s (%d)", what, c->info.name,
		 cl_error_name(err), (int)err);
}

/* Records a failure whose message (a build log) is in lt_errmsg. */
static void fail_with_errmsg(struct lt_cl_ctx *c, enum lt_status st)
{
	if (c->failed)
		return;
	c->failed = st;
	snprintf(c->errmsg, sizeof c->errmsg, "%s", lt_errmsg());
}

/* ------------------------------------------------------------------ */
/* Programs and kernels. */

void lt_cl_build_options(struct lt_cl_ctx *c, const char *options, char *out, size_t cap)
{
	/* LLTRAIN_CL_OPTIONS adds build options of the user's (lltrain(1)). */
	const char *extra = getenv("LLTRAIN_CL_OPTIONS");
	snprintf(out, cap, "-cl-std=CL1.2%s %s %s", c->fp64 ? " -DLT_FP64=1" : "", options,
		 extra ? extra : "");
}

static int find_or_build_program(struct lt_cl_ctx *c, const char *file, const char *options);

int lt_cl_program_builds(struct lt_cl_ctx *c, const char *file, const char *options)
{
	if (c->failed)
		return 0;
	if (find_or_build_program(c, file, options) >= 0)
		return 1;
	c->failed = LT_OK;  /* undo what find_or_build_program recorded */
	c->errmsg[0] = '\0';
	lt_errmsg_clear();
	return 0;
}

static int find_or_build_program(struct lt_cl_ctx *c, const char *file, const char *options)
{
	for (int i = 0; i < c->n_programs; i++)
		if (!strcmp(c->programs[i].file, file) && !strcmp(c->programs[i].options, options))
			return i;
	LT_ASSERT(c->n_programs < MAX_PROGRAMS);
	LT_ASSERT(strlen(file) < sizeof c->programs[0].file);
	LT_ASSERT(strlen(options) < sizeof c->programs[0].options);
	char all[512];
	lt_cl_build_options(c, options, all, sizeof all);
	cl_program p;
	enum lt_status st = lt_cl_build_program(c->context, c->device, file, all, &p);
	if (st != LT_OK) {
		fail_with_errmsg(c, st);
		return -1;
	}
	struct program_entry *e = &c->programs[c->n_programs];
	snprintf(e->file, sizeof e->file, "%s", file);
	snprintf(e->options, sizeof e->options, "%s", options);
	e->program = p;
	return c->n_programs++;
}

cl_kernel lt_cl_kernel(struct lt_cl_ctx *c, const char *file, const char *options,
		       const char *name)
{
	if (c->failed)
		return NULL;
	for (int i = 0; i < c->n_kernels; i++) {
		struct kernel_entry *e = &c->kernels[i];
		if (!strcmp(e->name, name) && !strcmp(c->programs[e->program].file, file) &&
		    !strcmp(c->programs[e->program].options, options))
			return e->kernel;
	}
	int p = find_or_build_program(c, file, options);
	if (p < 0)
		return NULL;
	cl_int err;
	cl_kernel k = clCreateKernel(c->programs[p].program, name, &err);
	if (err != CL_SUCCESS) {
		char what[160];
		snprintf(what, sizeof what, "kernel %s of %s", name, file);
		lt_cl_fail(c, err, what);
		return NULL;
	}
	LT_ASSERT(c->n_kernels < MAX_KERNELS);
	LT_ASSERT(strlen(name) < sizeof c->kernels[0].name);
	struct kernel_entry *e = &c->kernels[c->n_kernels++];
	e->program = p;
	snprintf(e->name, sizeof e->name, "%s", name);
	e->kernel = k;
	return k;
}

static void set_arg(struct lt_cl_ctx *c, cl_kernel k, int *i, size_t size, const void *v)
{
	if (c->failed || !k) {
		(*i)++;
		return;
	}
	cl_int err = clSetKernelArg(k, (cl_uint)*i, size, v);
	if (err != CL_SUCCESS) {
		char what[64];
		snprintf(what, sizeof what, "setting kernel argument %d", *i);
		lt_cl_fail(c, err, what);
	}
	(*i)++;
}

void lt_cl_arg_ref(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n)
{
	LT_ASSERT(!r.buf || lt_dtype_size(r.buf->head.type) == 4);
	lt_cl_arg_any(c, k, i, r, n);
}

void lt_cl_arg_any(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n)
{
	if (c->failed && !r.buf) {  /* a scratch buffer that could not be had */
		*i += 2;
		return;
	}
	LT_ASSERT(r.buf);
	LT_ASSERT(r.off <= r.buf->head.n && n <= r.buf->head.n - r.off);
	cl_ulong off = r.off;
	set_arg(c, k, i, sizeof(cl_mem), &r.buf->mem);
	set_arg(c, k, i, sizeof off, &off);
}

void lt_cl_assert_real(lt_ref r)
{
	LT_ASSERT(r.buf && (r.buf->head.type == LT_F32 || r.buf->head.type == LT_BF16));
}

void lt_cl_assert_type(lt_ref r, enum lt_dtype t)
{
	LT_ASSERT(r.buf && r.buf->head.type == t);
}

void lt_cl_arg_f32(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n)
{
	lt_cl_assert_type(r, LT_F32);
	lt_cl_arg_any(c, k, i, r, n);
}

void lt_cl_arg_i32(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n)
{
	lt_cl_assert_type(r, LT_I32);
	lt_cl_arg_any(c, k, i, r, n);
}

void lt_cl_arg_real(struct lt_cl_ctx *c, cl_kernel k, int *i, lt_ref r, size_t n)
{
	lt_cl_assert_real(r);
	lt_cl_arg_any(c, k, i, r, n);
	lt_cl_arg_int(c, k, i, r.buf->head.type == LT_BF16);
}

void lt_cl_arg_int(struct lt_cl_ctx *c, cl_kernel k, int *i, int v)
{
	cl_int x = v;
	set_arg(c, k, i, sizeof x, &x);
}

void lt_cl_arg_uint(struct lt_cl_ctx *c, cl_kernel k, int *i, unsigned v)
{
	cl_uint x = v;
	set_arg(c, k, i, sizeof x, &x);
}

void lt_cl_arg_ulong(struct lt_cl_ctx *c, cl_kernel k, int *i, uint64_t v)
{
	cl_ulong x = v;
	set_arg(c, k, i, sizeof x, &x);
}

void lt_cl_arg_float(struct lt_cl_ctx *c, cl_kernel k, int *i, float v)
{
	cl_float x = v;
	set_arg(c, k, i, sizeof x, &x);
}

void lt_cl_arg_local(struct lt_cl_ctx *c, cl_kernel k, int *i, size_t bytes)
{
	set_arg(c, k, i, bytes, NULL);
}

/* ------------------------------------------------------------------ */
/* Launches and profiling. */

static int profile_slot(struct lt_cl_profile *p, const char *op)
{
	for (int i = 0; i < p->n; i++)
		if (p->op[i] == op || !strcmp(p->op[i], op))
			return i;
	if (p->n == LT_CL_PROFILE_OPS)
		return LT_CL_PROFILE_OPS - 1;  /* the last slot collects the rest */
	p->op[p->n] = op;
	p->ns[p->n] = 0;
	p->calls[p->n] = 0;
	return p->n++;
}

/* Adds the times of the finished profiled events and releases them. */
static void collect_pending(struct lt_cl_ctx *c)
{
	for (int i = 0; i < c->n_pending; i++) {
		cl_ulong t0 = 0, t1 = 0;
		cl_event ev = c->pending[i].ev, since = c->pending[i].since;
		clWaitForEvents(1, &ev);
		cl_profiling_info from = since ? CL_PROFILING_COMMAND_END : CL_PROFILING_COMMAND_START;
		if (clGetEventProfilingInfo(since ? since : ev, from, sizeof t0, &t0, NULL) ==
			    CL_SUCCESS &&
		    clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL) ==
			    CL_SUCCESS && t1 >= t0) {
			int s = profile_slot(&c->prof, c->pending[i].op);
			c->prof.ns[s] += (double)(t1 - t0);
			c->prof.calls[s]++;
		}
		clReleaseEvent(ev);
		if (since)
			clReleaseEvent(since);
	}
	c->n_pending = 0;
}

static void add_pending(struct lt_cl_ctx *c, cl_event since, cl_event ev, const char *op)
{
	if (c->n_pending == MAX_PENDING)
		collect_pending(c);
	c->pending[c->n_pending].ev = ev;
	c->pending[c->n_pending].since = since;
	c->pending[c->n_pending].op = op;
	c->n_pending++;
}

void lt_cl_profile_event(struct lt_cl_ctx *c, cl_event ev, const char *op)
{
	if (!ev)
		return;
	if (!c->profiling) {
		clReleaseEvent(ev);
		return;
	}
	add_pending(c, NULL, ev, op);
}

cl_event lt_cl_profile_mark(struct lt_cl_ctx *c)
{
	cl_event ev = NULL;
	if (c->profiling && clEnqueueMarkerWithWaitList(c->queue, 0, NULL, &ev) != CL_SUCCESS)
		ev = NULL;
	return ev;
}

void lt_cl_profile_since(struct lt_cl_ctx *c, cl_event mark, const char *op)
{
	cl_event end = lt_cl_profile_mark(c);
	if (!mark || !end) {
		if (mark)
			clReleaseEvent(mark);
		if (end)
			clReleaseEvent(end);
		return;
	}
	add_pending(c, mark, end, op);
}

void lt_cl_launch(struct lt_cl_ctx *c, cl_kernel k, int dims, const size_t *global,
		  const size_t *local, const char *op)
{
	if (c->failed || !k)
		return;
	for (int d = 0; d < dims; d++)
		if (global[d] == 0)
			return;
	cl_event ev = NULL;
	cl_int err = clEnqueueNDRangeKernel(c->queue, k, (cl_uint)dims, NULL, global, local, 0, NULL,
					    c->profiling ? &ev : NULL);
	if (err != CL_SUCCESS) {
		char what[128];
		snprintf(what, sizeof what, "launching a kernel of %s", op);
		lt_cl_fail(c, err, what);
		return;
	}
	lt_cl_profile_event(c, ev, op);
}

static void cl_profile(lt_backend *be, int on)
{
	struct lt_cl_ctx *c = be->ctx;
	clFinish(c->queue);
	collect_pending(c);
	if (on)
		memset(&c->prof, 0, sizeof c->prof);
	c->profiling = on;
}

static int cl_profile_read(lt_backend *be, struct lt_op_time *out, int max)
{
	struct lt_cl_ctx *c = be->ctx;
	clFinish(c->queue);
	collect_pending(c);
	int n = 0;
	for (int i = 0; i < c->prof.n && n < max; i++, n++) {
		/* insertion by time, largest first */
		struct lt_op_time t = { c->prof.op[i], c->prof.ns[i] * 1e-9, c->prof.calls[i] };
		int j = n;
		while (j > 0 && out[j - 1].seconds < t.seconds) {
			out[j] = out[j - 1];
			j--;
		}
		out[j] = t;
	}
	return c->prof.n;
}

/* ------------------------------------------------------------------ */
/* Memory. */

static void cl_mem_usage(lt_backend *be, size_t *now, size_t *peak)
{
	struct lt_cl_ctx *c = be->ctx;
	*now = c->held;
	*peak = c->peak;
}

/* The message of a refused allocation: what was asked, what there is. */
static void say_allocation_refused(struct lt_cl_ctx *c, size_t bytes, const char *why)
{
	lt_errmsg_set("the device %s refused %zu bytes (%.2f GiB; %s): it has %.2f GiB, at most "
		      "%.2f GiB per buffer, and lltrain already holds %.2f GiB", c->info.name, bytes,
		      (double)bytes / 1073741824.0, why, (double)c->info.mem_bytes / 1073741824.0,
		      (double)c->max_alloc / 1073741824.0, (double)c->held / 1073741824.0);
}

/* Bytes of device memory a buffer of n elements of type takes (never 0). */
static size_t buffer_bytes(enum lt_dtype type, size_t n)
{
	return n ? lt_dtype_bytes(type, n) : lt_dtype_is_block(type) ? 34 : lt_dtype_size(type);
}

static enum lt_status cl_buf_new(lt_backend *be, enum lt_dtype type, size_t n, lt_buf **out)
{
	struct lt_cl_ctx *c = be->ctx;
	size_t bytes = buffer_bytes(type, n);
	cl_int err;
	*out = NULL;
	if (n > SIZE_MAX / 4 || bytes > c->max_alloc) {
		say_allocation_refused(c, bytes, "larger than one buffer may be");
		return LT_ERR_DEVMEM;
	}
	lt_buf *b = calloc(1, sizeof *b);
	if (!b) {
		lt_errmsg_set("cannot allocate a buffer descriptor");
		return LT_ERR_NOMEM;
	}
	b->head.type = type;
	b->head.n = n;
	b->mem = clCreateBuffer(c->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
	if (err == CL_SUCCESS) {
		/* Drivers that allocate lazily do it at first use: touch the last
		 * element now, so a refusal is reported here and not by a later op. */
		cl_ushort zero = 0;
		err = clEnqueueWriteBuffer(c->queue, b->mem, CL_TRUE, bytes - sizeof zero, sizeof zero,
					   &zero, 0, NULL, NULL);
		if (err != CL_SUCCESS)
			clReleaseMemObject(b->mem);
	}
	if (err != CL_SUCCESS) {
		say_allocation_refused(c, bytes, cl_error_name(err));
		free(b);
		return LT_ERR_DEVMEM;
	}
	c->held += bytes;
	if (c->held > c->peak)
		c->peak = c->held;
	*out = b;
	return LT_OK;
}

static void cl_buf_free(lt_backend *be, lt_buf *b)
{
	struct lt_cl_ctx *c = be->ctx;
	c->held -= buffer_bytes(b->head.type, b->head.n);
	clReleaseMemObject(b->mem);
	free(b);
}

lt_ref lt_cl_scratch(struct lt_cl_ctx *c, int slot, size_t n)
{
	LT_ASSERT(slot >= 0 && slot < LT_CL_SCRATCH_SLOTS);
	lt_buf **s = &c->scratch[slot];
	if (!*s || (*s)->head.n < n) {
		lt_backend be = { NULL, c };
		if (*s)
			cl_buf_free(&be, *s);  /* queued kernels keep it alive */
		*s = NULL;
		/* Grown by half again, so that creeping sizes reallocate rarely. */
		size_t want = n + n / 2;
		if (cl_buf_new(&be, LT_F32, want, s) != LT_OK &&
		    cl_buf_new(&be, LT_F32, n, s) != LT_OK) {
			fail_with_errmsg(c, LT_ERR_DEVMEM);
			lt_errmsg_clear();
			/* The backend has failed: lt_cl_arg_ref takes this NULL ref
			 * and the launch does nothing. */
			return (lt_ref){ NULL, 0 };
		}
	}
	return (lt_ref){ *s, 0 };
}

lt_ref lt_cl_panel(struct lt_cl_ctx *c, enum lt_dtype type, size_t n)
{
	lt_buf **s = &c->panel;
	if (!*s || (*s)->head.type != type || (*s)->head.n < n) {
		lt_backend be = { NULL, c };
		if (*s)
			cl_buf_free(&be, *s);  /* queued kernels keep it alive */
		*s = NULL;
		if (cl_buf_new(&be, type, n, s) != LT_OK) {
			fail_with_errmsg(c, LT_ERR_DEVMEM);
			lt_errmsg_clear();
			return (lt_ref){ NULL, 0 };
		}
	}
	return (lt_ref){ *s, 0 };
}

/* Checks that n elements from r lie in its buffer. */
static void check_copy(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf && r.off <= r.buf->head.n && n <= r.buf->head.n - r.off);
}

/* Bytes of n elements of r's buffer. */
static size_t bytes_of(lt_ref r, size_t n)
{
	return lt_dtype_bytes(r.buf->head.type, n);
}

static void cl_write(lt_backend *be, lt_ref dst, const void *src, size_t n)
{
	struct lt_cl_ctx *c = be->ctx;
	check_copy(dst, n);
	if (c->failed || !n)
		return;
	cl_int err = clEnqueueWriteBuffer(c->queue, dst.buf->mem, CL_TRUE, bytes_of(dst, dst.off),
					  bytes_of(dst, n), src, 0, NULL, NULL);
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "copying to the device");
}

static void cl_read(lt_backend *be, void *dst, lt_ref src, size_t n)
{
	struct lt_cl_ctx *c = be->ctx;
	check_copy(src, n);
	if (c->failed || !n)
		return;
	cl_int err = clEnqueueReadBuffer(c->queue, src.buf->mem, CL_TRUE, bytes_of(src, src.off),
					 bytes_of(src, n), dst, 0, NULL, NULL);
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "copying from the device");
}

/* The queue a started copy goes to, and in *after an event of the ops
 * queued so far for it to wait for (NULL when it goes to the work queue,
 * where the order is the queue's). */
static cl_command_queue copy_queue(struct lt_cl_ctx *c, cl_event *after)
{
	*after = NULL;
	if (!c->copies)
		return c->queue;
	cl_int err = clEnqueueMarkerWithWaitList(c->queue, 0, NULL, after);
	if (err == CL_SUCCESS)
		err = clFlush(c->queue);
	if (err == CL_SUCCESS)
		return c->copies;
	lt_cl_fail(c, err, "ordering a copy after the device's work");
	if (*after)
		clReleaseEvent(*after);
	*after = NULL;
	return c->queue;  /* the copy then waits in line; the failure is reported */
}

static void cl_write_start(lt_backend *be, lt_ref dst, const void *src, size_t n)
{
	struct lt_cl_ctx *c = be->ctx;
	check_copy(dst, n);
	if (c->failed || !n)
		return;
	cl_event after;
	cl_command_queue q = copy_queue(c, &after);
	cl_int err = clEnqueueWriteBuffer(q, dst.buf->mem, CL_FALSE, bytes_of(dst, dst.off),
					  bytes_of(dst, n), src, after ? 1 : 0, after ? &after : NULL,
					  NULL);
	if (after)
		clReleaseEvent(after);
	if (err == CL_SUCCESS)
		err = clFlush(q);
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "copying to the device");
}

static enum lt_status cl_reads_wait(lt_backend *be, int keep)
{
	struct lt_cl_ctx *c = be->ctx;
	int done = c->n_reads - (keep < c->n_reads ? keep : c->n_reads);
	cl_int err = done ? clWaitForEvents(1, &c->reads[done - 1]) : CL_SUCCESS;
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "waiting for a copy from the device");
	for (int i = 0; i < done; i++)
		clReleaseEvent(c->reads[i]);
	memmove(c->reads, c->reads + done, (size_t)(c->n_reads - done) * sizeof *c->reads);
	c->n_reads -= done;
	if (c->failed)
		lt_errmsg_set("%s", c->errmsg);
	return c->failed;
}

static void cl_read_start(lt_backend *be, void *dst, lt_ref src, size_t n)
{
	struct lt_cl_ctx *c = be->ctx;
	check_copy(src, n);
	if (c->failed || !n)
		return;
	if (c->n_reads == MAX_READS)
		cl_reads_wait(be, MAX_READS - 1);
	/* ops queued from here on may overwrite what the previous read copies:
	 * they wait for it (it ran beside the ops queued since it started) */
	cl_int err = CL_SUCCESS;
	if (c->copies && c->n_reads)
		err = clEnqueueBarrierWithWaitList(c->queue, 1, &c->reads[c->n_reads - 1], NULL);
	cl_event after;
	cl_command_queue q = copy_queue(c, &after);
	if (err == CL_SUCCESS)
		err = clEnqueueReadBuffer(q, src.buf->mem, CL_FALSE, bytes_of(src, src.off),
					  bytes_of(src, n), dst, after ? 1 : 0, after ? &after : NULL,
					  &c->reads[c->n_reads]);
	if (after)
		clReleaseEvent(after);
	if (err == CL_SUCCESS && (err = clFlush(q)) == CL_SUCCESS)
		c->n_reads++;
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "copying from the device");
}

/* A buffer over the host memory: NVIDIA's driver then pins those pages,
 * and copies between them and device buffers run at the bus's speed
 * (about 52 GB/s against 8-14 GB/s unpinned on an H200 host). */
static void *cl_pin(lt_backend *be, void *p, size_t bytes)
{
	struct lt_cl_ctx *c = be->ctx;
	cl_int err;
	cl_mem m = clCreateBuffer(c->context, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR,
				  bytes ? bytes : 1, p, &err);
	return err == CL_SUCCESS ? m : NULL;
}

static void cl_unpin(lt_backend *be, void *handle)
{
	(void)be;
	if (handle)
		clReleaseMemObject(handle);
}

static enum lt_status cl_sync(lt_backend *be)
{
	struct lt_cl_ctx *c = be->ctx;
	cl_int err = clFinish(c->queue);
	if (err == CL_SUCCESS && c->copies)
		err = clFinish(c->copies);
	if (err != CL_SUCCESS)
		lt_cl_fail(c, err, "waiting for the device");
	if (c->n_pending)
		collect_pending(c);
	for (int i = 0; i < c->n_reads; i++)
		clReleaseEvent(c->reads[i]);
	c->n_reads = 0;
	if (c->failed)
		lt_errmsg_set("%s", c->errmsg);
	return c->failed;
}

static void cl_info(lt_backend *be, struct lt_device_info *out)
{
	struct lt_cl_ctx *c = be->ctx;
	*out = c->info;
	lt_cl_mma_describe(&c->mma, out->gemm, sizeof out->gemm);
	lt_cl_mma_describe_attention(&c->mma, out->attention, sizeof out->attention);
	lt_cl_gemm_bf16_describe(&c->mma, out->bf16, sizeof out->bf16);
}

static void cl_set_matmul(lt_backend *be, enum lt_matmul mode)
{
	struct lt_cl_ctx *c = be->ctx;
	c->mma.tf32 = mode == LT_MATMUL_TF32;
}

/* ------------------------------------------------------------------ */
/* Creation. */

static void cl_free(lt_backend *be)
{
	struct lt_cl_ctx *c = be->ctx;
	if (c->queue) {
		clFinish(c->queue);
		if (c->copies)
			clFinish(c->copies);
		collect_pending(c);
		for (int i = 0; i < c->n_reads; i++)
			clReleaseEvent(c->reads[i]);
	}
	for (int i = 0; i < LT_CL_SCRATCH_SLOTS; i++)
		if (c->scratch[i])
			cl_buf_free(be, c->scratch[i]);
	if (c->panel)
		cl_buf_free(be, c->panel);
	for (int i = 0; i < c->n_kernels; i++)
		clReleaseKernel(c->kernels[i].kernel);
	for (int i = 0; i < c->n_programs; i++)
		clReleaseProgram(c->programs[i].program);
	if (c->copies)
		clReleaseCommandQueue(c->copies);
	if (c->queue)
		clReleaseCommandQueue(c->queue);
	if (c->context)
		clReleaseContext(c->context);
	free(c);
	free(be);
}

static const struct lt_backend_ops cl_ops_table = {
	.name = "opencl",
	.free = cl_free,
	.info = cl_info,
	.buf_new = cl_buf_new,
	.buf_free = cl_buf_free,
	.write = cl_write,
	.read = cl_read,
	.write_start = cl_write_start,
	.read_start = cl_read_start,
	.reads_wait = cl_reads_wait,
	.sync = cl_sync,
	.host_ptr = NULL,
	.pin = cl_pin,
	.unpin = cl_unpin,
	.mem_usage = cl_mem_usage,
	.profile = cl_profile,
	.profile_read = cl_profile_read,
	.set_matmul = cl_set_matmul,
	.fill = lt_cl_fill,
	.copy = lt_cl_copy,
	.convert = lt_cl_convert,
	.scale = lt_cl_scale,
	.add = lt_cl_add,
	.sum_squares = lt_cl_sum_squares,
	.sum = lt_cl_sum,
	.gemm = lt_cl_gemm,
	.embedding_forward = lt_cl_embedding_forward,
	.embedding_backward = lt_cl_embedding_backward,
	.rmsnorm_forward = lt_cl_rmsnorm_forward,
	.rmsnorm_backward = lt_cl_rmsnorm_backward,
	.rope = lt_cl_rope,
	.attention_forward = lt_cl_attention_forward,
	.attention_backward = lt_cl_attention_backward,
	.attention_cached = lt_cl_attention_cached,
	.swiglu_forward = lt_cl_swiglu_forward,
	.swiglu_backward = lt_cl_swiglu_backward,
	.xent = lt_cl_xent,
	.xent_part = lt_cl_xent_part,
	.xent_part_grad = lt_cl_xent_part_grad,
	.distill = lt_cl_distill,
	.adamw = lt_cl_adamw,
};

/* Reads the device's name, memory and limits into c. */
static void describe_device(struct lt_cl_ctx *c)
{
	struct lt_cl_device_desc d;
	cl_ulong local = 0;
	cl_device_type type = 0;
	size_t group = 0;
	char ext[4096] = "";
	lt_cl_describe_device(c->platform, c->device, &d);
	clGetDeviceInfo(c->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
	clGetDeviceInfo(c->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
	clGetDeviceInfo(c->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof group, &group, NULL);
	clGetDeviceInfo(c->device, CL_DEVICE_EXTENSIONS, sizeof ext - 1, ext, NULL);
	snprintf(c->info.name, sizeof c->info.name, "%.160s (OpenCL, %.48s)", d.name,
		 d.platform_name);
	c->info.mem_bytes = d.mem_bytes;
	c->info.compute_units = d.compute_units;
	c->info.gpu = (type & CL_DEVICE_TYPE_CPU) == 0;
	c->max_alloc = d.max_alloc_bytes;
	c->local_mem = (size_t)local;
	c->max_group = group ? group : 1;
	c->fp64 = strstr(ext, "cl_khr_fp64") != NULL;
}

/* Creates the context and the in-order queue (profiling-capable, so that
 * --profile can time ops without a second queue). */
static enum lt_status open_context(struct lt_cl_ctx *c)
{
	cl_int err;
	cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)c->platform,
					  0 };
	c->context = clCreateContext(props, 1, &c->device, NULL, NULL, &err);
	if (err != CL_SUCCESS) {
		lt_errmsg_set("cannot open a context on %s: %s (%d)", c->info.name,
			      cl_error_name(err), (int)err);
		return LT_ERR_BACKEND;
	}
	c->queue = clCreateCommandQueue(c->context, c->device, CL_QUEUE_PROFILING_ENABLE, &err);
	if (err != CL_SUCCESS) {
		lt_errmsg_set("cannot open a command queue on %s: %s (%d)", c->info.name,
			      cl_error_name(err), (int)err);
		return LT_ERR_BACKEND;
	}
	/* copies that overlap the kernels; without it they queue with them */
	c->copies = clCreateCommandQueue(c->context, c->device, 0, &err);
	if (err != CL_SUCCESS)
		c->copies = NULL;
	return LT_OK;
}

/* Runs one small kernel end to end, so that a device that cannot run ours
 * fails here (and --device auto can fall back) rather than in training. */
static enum lt_status try_device(lt_backend *be)
{
	struct lt_cl_ctx *c = be->ctx;
	lt_buf *b = NULL;
	float x[4] = { 0 };
	enum lt_status st = cl_buf_new(be, LT_F32, 4, &b);
	if (st != LT_OK)
		return st;
	lt_cl_fill(be, (lt_ref){ b, 0 }, 4, 1.5f);
	cl_read(be, x, (lt_ref){ b, 0 }, 4);
	st = cl_sync(be);
	cl_buf_free(be, b);
	if (st == LT_OK && (x[0] != 1.5f || x[3] != 1.5f)) {
		lt_errmsg_set("%s computed a wrong result in a self-test (%g, expected 1.5)",
			      c->info.name, (double)x[0]);
		st = LT_ERR_BACKEND;
	}
	return st;
}

enum lt_status lt_cl_backend_new(const char *spec, lt_backend **out)
{
	*out = NULL;
	lt_backend *be = calloc(1, sizeof *be);
	struct lt_cl_ctx *c = calloc(1, sizeof *c);
	enum lt_status st;
	if (!be || !c) {
		free(be);
		free(c);
		lt_errmsg_set("cannot allocate the OpenCL backend");
		return LT_ERR_NOMEM;
	}
	be->ops = &cl_ops_table;
	be->ctx = c;
	if ((st = lt_cl_pick_device(spec, &c->platform, &c->device)) != LT_OK) {
		free(c);
		free(be);
		return st;
	}
	describe_device(c);
	lt_cl_tune_gemm(c->device, c->info.name);
	lt_cl_mma_init(&c->mma, c->device);
	if ((st = open_context(c)) != LT_OK || (st = try_device(be)) != LT_OK) {
		cl_free(be);
		return st;
	}
	*out = be;
	return LT_OK;
}
