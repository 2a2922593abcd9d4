/* The CPU backend's table, memory and device description; the ops live in
 * cpu_ops.c, cpu_gemm.c (with cpu_gemm_bf16.c and cpu_dnnl.c) and
 * cpu_attention.c. */
#include "config.h"
#include "cpu.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

/* A cblas.h not from OpenBLAS lacks these; the library still has them. */
#ifndef OPENBLAS_OPENMP
void openblas_set_num_threads(int num_threads);
int openblas_get_parallel(void);
#define OPENBLAS_OPENMP 2
#endif

#include "cpu_impl.h"

struct lt_cpu_ctx *lt_cpu_ctx(lt_backend *be)
{
	return be->ctx;
}

void *lt_cpu_bytes(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf);
	LT_ASSERT(r.off <= r.buf->head.n && n <= r.buf->head.n - r.off);
	return (char *)r.buf->data + lt_dtype_bytes(r.buf->head.type, r.off);
}

float *lt_cpu_at(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf && r.buf->head.type == LT_F32);
	return lt_cpu_bytes(r, n);
}

int32_t *lt_cpu_ids(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf && r.buf->head.type == LT_I32);
	return lt_cpu_bytes(r, n);
}

uint16_t *lt_cpu_bf16(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf && r.buf->head.type == LT_BF16);
	return lt_cpu_bytes(r, n);
}

struct lt_cpu_vec lt_cpu_vec(lt_ref r, size_t n)
{
	LT_ASSERT(r.buf && (r.buf->head.type == LT_F32 || r.buf->head.type == LT_BF16));
	return (struct lt_cpu_vec){ lt_cpu_bytes(r, n), r.buf->head.type == LT_BF16 };
}

float *lt_cpu_stage(struct lt_cpu_ctx *c, size_t per_thread)
{
	size_t need = (size_t)c->threads * (per_thread ? per_thread : 1);
	if (need > c->stage_n) {
		free(c->stage);
		c->stage_n = 0;
		size_t bytes = (need * sizeof(float) + 63) & ~(size_t)63;
		c->stage = aligned_alloc(64, bytes);
		if (!c->stage) {
			char msg[128];
			snprintf(msg, sizeof msg, "cannot allocate %zu bytes of bf16 staging", bytes);
			lt_cpu_fail(c, LT_ERR_NOMEM, msg);
			return NULL;
		}
		c->stage_n = need;
	}
	return c->stage;
}

void lt_cpu_fail(struct lt_cpu_ctx *c, enum lt_status st, const char *msg)
{
	if (c->failed)
		return;
	c->failed = st;
	snprintf(c->errmsg, sizeof c->errmsg, "%s", msg);
}

double lt_cpu_prof_start(const struct lt_cpu_ctx *c)
{
	return c->profiling ? omp_get_wtime() : 0.0;
}

void lt_cpu_prof_stop(struct lt_cpu_ctx *c, const char *op, double t0)
{
	if (!c->profiling)
		return;
	double dt = omp_get_wtime() - t0;
	int i = 0;
	while (i < c->n_prof && strcmp(c->prof[i].op, op) != 0)
		i++;
	if (i == c->n_prof) {
		if (i == LT_CPU_PROF_OPS)
			return;
		c->prof[c->n_prof++] = (struct lt_op_time){ .op = op };
	}
	c->prof[i].seconds += dt;
	c->prof[i].calls++;
}

static void cpu_profile(lt_backend *be, int on)
{
	struct lt_cpu_ctx *c = be->ctx;
	c->profiling = on;
	if (on)
		c->n_prof = 0;
}

static int by_time_descending(const void *a, const void *b)
{
	const struct lt_op_time *x = a, *y = b;
	return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

/* The recorded ops, largest time first. */
static int cpu_profile_read(lt_backend *be, struct lt_op_time *out, int max)
{
	struct lt_cpu_ctx *c = be->ctx;
	qsort(c->prof, (size_t)c->n_prof, sizeof c->prof[0], by_time_descending);
	int n = c->n_prof < max ? c->n_prof : max;
	memcpy(out, c->prof, (size_t)n * sizeof *out);
	return c->n_prof;
}

static void cpu_free(lt_backend *be)
{
	struct lt_cpu_ctx *c = be->ctx;
	lt_cpu_bf16_free(c);
	free(c->panel);
	lt_cpu_dnnl_free(c);
	free(c->att_scratch);
	free(c->stage);
	free(c);
	free(be);
}

/* The value of /proc/cpuinfo's first line named `field` into out (empty
 * when there is none). */
static void cpuinfo_field(const char *field, char *out, size_t size)
{
	char line[4096];
	FILE *f = fopen("/proc/cpuinfo", "r");
	out[0] = '\0';
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (strncmp(line, field, strlen(field)) != 0 || !colon)
			continue;
		colon++;
		colon += strspn(colon, " \t");
		colon[strcspn(colon, "\n")] = '\0';
		snprintf(out, size, "%s", colon);
		break;
	}
	fclose(f);
}

/* 1 when the space-separated flags hold flag. */
static int has_flag(const char *flags, const char *flag)
{
	size_t n = strlen(flag);
	for (const char *p = strstr(flags, flag); p; p = strstr(p + 1, flag))
		if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

/* What bf16 runs on here: the CPU's bf16 units by its flags, and which
 * GEMM serves them. */
static void describe_bf16(struct lt_cpu_ctx *c, char *out, size_t size)
{
	char flags[4096], gemm[96];
	cpuinfo_field("flags", flags, sizeof flags);
	int avx = has_flag(flags, "avx512_bf16"), amx = has_flag(flags, "amx_bf16");
	lt_cpu_bf16_describe(c, gemm, sizeof gemm);
	if (avx || amx)
		snprintf(out, size, "bf16 units (%s%s%s); GEMMs through %s", avx ? "AVX512_BF16" : "",
			 avx && amx ? ", " : "", amx ? "AMX" : "", gemm);
	else
		snprintf(out, size, "no bf16 units (no AVX512_BF16 or AMX): bf16 runs correctly, "
			 "expect no speed-up over fp32; GEMMs through %s", gemm);
}

static void cpu_info(lt_backend *be, struct lt_device_info *out)
{
	struct lt_cpu_ctx *c = be->ctx;
	char model[200];
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

	memset(out, 0, sizeof *out);
	cpuinfo_field("model name", model, sizeof model);
	if (!model[0])
		snprintf(model, sizeof model, "CPU");
	snprintf(out->name, sizeof out->name, "%s (%d threads)", model, c->threads);
	out->mem_bytes = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
	out->compute_units = c->threads;
	lt_cpu_gemm_describe(c, out->gemm, sizeof out->gemm);
	snprintf(out->attention, sizeof out->attention, "OpenMP blocks through OpenBLAS");
	describe_bf16(c, out->bf16, sizeof out->bf16);
}

/* Bytes a buffer of n elements of type takes: whole 64-byte lines. */
static size_t rounded_bytes(enum lt_dtype type, size_t n)
{
	return (lt_dtype_bytes(type, n) + 63) & ~(size_t)63;
}

static enum lt_status cpu_buf_new(lt_backend *be, enum lt_dtype type, size_t n, lt_buf **out)
{
	struct lt_cpu_ctx *c = be->ctx;
	size_t size = lt_dtype_is_block(type) ? 4 : lt_dtype_size(type);
	*out = NULL;
	if (n > (SIZE_MAX - 64) / size) {
		lt_errmsg_set("cannot allocate %zu elements of %zu bytes", n, size);
		return LT_ERR_NOMEM;
	}
	LT_ASSERT(!lt_dtype_is_block(type) || n % LT_QBLOCK == 0);
	/* aligned_alloc wants a multiple of the alignment, and never 0 bytes. */
	size_t bytes = lt_dtype_bytes(type, n);
	size_t rounded = rounded_bytes(type, n);
	struct lt_buf *b = malloc(sizeof *b);
	void *data = aligned_alloc(64, rounded ? rounded : 64);
	if (!b || !data) {
		free(b);
		free(data);
		lt_errmsg_set("cannot allocate %zu bytes of host memory", bytes);
		return LT_ERR_NOMEM;
	}
	b->data = data;
	b->head.type = type;
	b->head.n = n;
	c->bytes_now += rounded;
	if (c->bytes_now > c->bytes_peak)
		c->bytes_peak = c->bytes_now;
	*out = b;
	return LT_OK;
}

static void cpu_buf_free(lt_backend *be, lt_buf *b)
{
	struct lt_cpu_ctx *c = be->ctx;
	if (!b)
		return;
	c->bytes_now -= rounded_bytes(b->head.type, b->head.n);
	free(b->data);
	free(b);
}

/* dst[n] = src[n], host to buffer */
static void cpu_write(lt_backend *be, lt_ref dst, const void *src, size_t n)
{
	void *d = lt_cpu_bytes(dst, n);
	if (n)
		lt_cpu_memcpy(be->ctx, d, src, lt_dtype_bytes(lt_buf_type(dst.buf), n));
}

/* dst[n] = src[n], buffer to host */
static void cpu_read(lt_backend *be, void *dst, lt_ref src, size_t n)
{
	const void *s = lt_cpu_bytes(src, n);
	if (n)
		lt_cpu_memcpy(be->ctx, dst, s, lt_dtype_bytes(lt_buf_type(src.buf), n));
}

/* Every op has finished when it returns; only a recorded failure is left. */
static enum lt_status cpu_sync(lt_backend *be)
{
	struct lt_cpu_ctx *c = be->ctx;
	if (c->failed)
		lt_errmsg_set("%s", c->errmsg);
	return c->failed;
}

static void *cpu_host_ptr(lt_backend *be, lt_ref r)
{
	(void)be;
	return lt_cpu_bytes(r, 0);
}

static void cpu_mem_usage(lt_backend *be, size_t *now, size_t *peak)
{
	const struct lt_cpu_ctx *c = be->ctx;
	*now = c->bytes_now;
	*peak = c->bytes_peak;
}

static const struct lt_backend_ops cpu_ops = {
	.name = "cpu",
	.free = cpu_free,
	.info = cpu_info,
	.buf_new = cpu_buf_new,
	.buf_free = cpu_buf_free,
	.write = cpu_write,
	.read = cpu_read,
	.sync = cpu_sync,
	.host_ptr = cpu_host_ptr,
	.mem_usage = cpu_mem_usage,
	.profile = cpu_profile,
	.profile_read = cpu_profile_read,
	.fill = lt_cpu_fill,
	.copy = lt_cpu_copy,
	.convert = lt_cpu_convert,
	.scale = lt_cpu_scale,
	.add = lt_cpu_add,
	.sum_squares = lt_cpu_sum_squares,
	.sum = lt_cpu_sum,
	.gemm = lt_cpu_gemm,
	.embedding_forward = lt_cpu_embedding_forward,
	.embedding_backward = lt_cpu_embedding_backward,
	.rmsnorm_forward = lt_cpu_rmsnorm_forward,
	.rmsnorm_backward = lt_cpu_rmsnorm_backward,
	.rope = lt_cpu_rope,
	.attention_forward = lt_cpu_attention_forward,
	.attention_backward = lt_cpu_attention_backward,
	.attention_cached = lt_cpu_attention_cached,
	.swiglu_forward = lt_cpu_swiglu_forward,
	.swiglu_backward = lt_cpu_swiglu_backward,
	.xent = lt_cpu_xent,
	.xent_part = lt_cpu_xent_part,
	.xent_part_grad = lt_cpu_xent_part_grad,
	.distill = lt_cpu_distill,
	.adamw = lt_cpu_adamw,
};

/* LLTRAIN_CPU_GEMM: which library computes the f32 GEMMs. */
static enum lt_status gemm_lib_of_environment(enum lt_cpu_gemm_lib *lib)
{
	const char *v = getenv("LLTRAIN_CPU_GEMM");
	char dnnl[32];
	*lib = LT_CPU_GEMM_AUTO;
	if (!v || !*v || !strcmp(v, "auto"))
		return LT_OK;
	if (!strcmp(v, "openblas")) {
		*lib = LT_CPU_GEMM_OPENBLAS;
		return LT_OK;
	}
	if (!strcmp(v, "dnnl") && lt_cpu_dnnl_version(dnnl, sizeof dnnl)) {
		*lib = LT_CPU_GEMM_DNNL;
		return LT_OK;
	}
	if (!strcmp(v, "dnnl"))
		lt_errmsg_set("environment LLTRAIN_CPU_GEMM=dnnl: this lltrain was built without "
			      "oneDNN (expected openblas or auto)");
	else
		lt_errmsg_set("environment LLTRAIN_CPU_GEMM='%s': expected openblas, dnnl or auto", v);
	return LT_ERR_CONFIG;
}

enum lt_status lt_cpu_backend_new(int threads, lt_backend **out)
{
	enum lt_cpu_gemm_lib lib;
	*out = NULL;
	enum lt_status st = gemm_lib_of_environment(&lib);
	if (st != LT_OK)
		return st;
	lt_backend *be = malloc(sizeof *be);
	struct lt_cpu_ctx *c = calloc(1, sizeof *c);
	if (!be || !c) {
		free(be);
		free(c);
		lt_errmsg_set("cannot allocate %zu bytes for the CPU backend",
			      sizeof *be + sizeof *c);
		return LT_ERR_NOMEM;
	}
	/* The team size is fixed here so that every op splits its work the same
	 * way from call to call: results are then bitwise repeatable. */
	if (threads > 0)
		omp_set_num_threads(threads);
	c->threads = threads > 0 ? threads : omp_get_max_threads();
	c->gemm_lib = lib;
	/* lt_cpu_gemm threads GEMM over our team, so OpenBLAS must run each
	 * call on one thread. Built on OpenMP it does inside our parallel
	 * regions, and its thread count there is OpenMP's own (setting it sets
	 * omp_set_num_threads in some versions), so it stays the team size;
	 * any other build is set to one thread for good. */
	openblas_set_num_threads(openblas_get_parallel() == OPENBLAS_OPENMP ? c->threads : 1);
	be->ops = &cpu_ops;
	be->ctx = c;
	*out = be;
	return LT_OK;
}
