/* The backend registry: opens a backend by name, wraps allocation with
 * error context, and stages host views of buffers. */
#include "config.h"
#include "backend.h"

#include <math.h>
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
	LT_ASSERT(!lt_dtype_is_block(t));
	return t == LT_BF16 ? 2 : 4;
}

const char *lt_dtype_name(enum lt_dtype t)
{
	static const char *const type_names[] = { "f32", "bf16", "i32", "q8_0", "q4_0" };
	return type_names[t];
}

int lt_dtype_is_block(enum lt_dtype t)
{
	return t == LT_Q8_0 || t == LT_Q4_0;
}

size_t lt_dtype_bytes(enum lt_dtype t, size_t n)
{
	if (!lt_dtype_is_block(t))
		return n * lt_dtype_size(t);
	LT_ASSERT(n % LT_QBLOCK == 0);
	return n / LT_QBLOCK * (t == LT_Q8_0 ? 34 : 18);
}

float lt_half_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
	union { uint32_t u; float f; } v;
	if (exp == 0)
		return (sign ? -1.0f : 1.0f) * ldexpf((float)mant, -24);
	v.u = exp == 0x1f ? sign | 0x7f800000u | mant << 13 : sign | (exp + 112) << 23 | mant << 13;
	return v.f;
}

uint16_t lt_half_from_f32(float f)
{
	union { float f; uint32_t u; } v = { f };
	uint32_t sign = (v.u >> 16) & 0x8000u, ax = v.u & 0x7fffffffu;
	if (ax > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u);
	if (ax >= 0x477ff000u)
		return (uint16_t)(sign | 0x7c00u);
	if (ax < 0x38800000u)  /* a subnormal half: units of 2^-24, exact in float */
		return (uint16_t)(sign | (uint32_t)nearbyintf(fabsf(f) * 16777216.0f));
	uint32_t h = (ax >> 13) - (112u << 10), rest = ax & 0x1fffu;
	if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
		h++;
	return (uint16_t)(sign | h);
}

static float block_scale(const unsigned char *b)
{
	return lt_half_to_f32((uint16_t)(b[0] | b[1] << 8));
}

static void store_scale(unsigned char *b, float d)
{
	uint16_t h = lt_half_from_f32(d);
	b[0] = (unsigned char)h;
	b[1] = (unsigned char)(h >> 8);
}

void lt_dtype_dequantize(enum lt_dtype t, const void *blocks, float *dst, size_t n)
{
	const unsigned char *b = blocks;
	LT_ASSERT(lt_dtype_is_block(t) && n % LT_QBLOCK == 0);
	for (size_t i = 0; i < n; i += LT_QBLOCK, dst += LT_QBLOCK) {
		float d = block_scale(b);
		if (t == LT_Q8_0) {
			for (int j = 0; j < 32; j++)
				dst[j] = d * (float)(int8_t)b[2 + j];
			b += 34;
			continue;
		}
		for (int j = 0; j < 16; j++) {
			dst[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
			dst[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
		}
		b += 18;
	}
}

static void quantize_q8_0(const float *x, unsigned char *b)
{
	float amax = 0.0f;
	for (int j = 0; j < 32; j++)
		amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
	float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
	store_scale(b, d);
	for (int j = 0; j < 32; j++)
		b[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
}

static void quantize_q4_0(const float *x, unsigned char *b)
{
	float amax = 0.0f, max = 0.0f;
	for (int j = 0; j < 32; j++)
		if (fabsf(x[j]) > amax) {
			amax = fabsf(x[j]);
			max = x[j];
		}
	float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
	store_scale(b, d);
	for (int j = 0; j < 16; j++) {
		int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + 16] * id + 8.5f);
		b[2 + j] = (unsigned char)((lo < 15 ? lo : 15) | (hi < 15 ? hi : 15) << 4);
	}
}

void lt_dtype_quantize(enum lt_dtype t, const float *src, void *blocks, size_t n)
{
	unsigned char *b = blocks;
	LT_ASSERT(lt_dtype_is_block(t) && n % LT_QBLOCK == 0);
	for (size_t i = 0; i < n; i += LT_QBLOCK) {
		if (t == LT_Q8_0)
			quantize_q8_0(src + i, b);
		else
			quantize_q4_0(src + i, b);
		b += t == LT_Q8_0 ? 34 : 18;
	}
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
