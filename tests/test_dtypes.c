/* Typed buffers on every backend: a buffer keeps its type and size, copies
 * move whole elements of it, and convert rounds f32 to bf16 to nearest
 * (ties to even) and widens bf16 exactly, held to a float64 model of the
 * rounding that never looks at bit tricks. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "tap.h"

#define GUARD 3  /* sentinel elements on each side of every array */
#define CHECKS_PER_BACKEND 11

/* ------------------------------------------------------------------ */
/* float64 models of bf16. */

/* The value of bf16 bits h: sign, 8-bit exponent, 7-bit mantissa. */
static double bf16_value(uint16_t h)
{
	int sign = h >> 15, e = (h >> 7) & 0xff, m = h & 0x7f;
	double v;
	if (e == 0xff)
		v = m ? NAN : INFINITY;
	else if (e == 0)
		v = ldexp(m, -133);  /* subnormal: m * 2^(1 - 127 - 7) */
	else
		v = ldexp(128 + m, e - 134);
	return sign ? -v : v;
}

/* The bf16 nearest to the finite or infinite float x, ties to the even
 * mantissa, found by comparing distances in double: of the two bf16 that
 * bracket x (its bits cut to 16, and that plus one), the closer. Past the
 * largest finite bf16 the next one up is infinity, which counts as 2^128
 * (where the next would be with a wider exponent): IEEE's overflow rule. */
static uint16_t nearest_bf16(float x)
{
	union { float f; uint32_t u; } v = { x };
	uint16_t lo = (uint16_t)(v.u >> 16);
	if (isinf(x) || (double)x == bf16_value(lo))
		return lo;
	uint16_t hi = (uint16_t)(lo + 1);  /* the next away from zero */
	double vhi = isinf(bf16_value(hi)) ? copysign(ldexp(1, 128), x) : bf16_value(hi);
	double dlo = fabs((double)x - bf16_value(lo)), dhi = fabs((double)x - vhi);
	if (dlo != dhi)
		return dlo < dhi ? lo : hi;
	return (lo & 1) ? hi : lo;
}

static uint32_t bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

/* ------------------------------------------------------------------ */
/* Test inputs. */

static uint32_t next_u32(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 32);
}

static float float_of(uint32_t u)
{
	union { uint32_t u; float f; } v = { u };
	return v.f;
}

/* n floats: first the cases that decide rounding (exact values, ties to
 * even both ways, just past and short of a tie, the largest finite float,
 * the edge of overflow, subnormals, zeros of both signs, infinities), then
 * random bit patterns of every class but NaN. */
static float *rounding_inputs(size_t n, uint64_t seed)
{
	static const uint32_t edges[] = {
		0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0xbf818000,
		0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7f8001, 0xff7f8000, 0x00000001,
		0x00008000, 0x00018000, 0x807f8000, 0x00000000, 0x80000000, 0x7f800000,
		0xff800000, 0x3eaaaaab, 0x40490fdb,
	};
	float *x = malloc(n * sizeof *x);
	if (!x)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		uint32_t u = i < sizeof edges / sizeof edges[0] ? edges[i] : next_u32(&seed);
		if (i >= sizeof edges / sizeof edges[0] && (u & 0x7f800000u) == 0x7f800000u)
			u &= 0xbfffffffu;  /* no NaN, no infinity: a finite number instead */
		x[i] = float_of(u);
	}
	return x;
}

/* ------------------------------------------------------------------ */
/* Arrays with sentinels on each side. */

struct array {
	lt_buf *buf;
	lt_ref r;  /* the n elements between the sentinels */
	size_t n;
};

static const unsigned char sentinel_byte = 0xa5;

static int new_array(lt_backend *be, enum lt_dtype type, size_t n, struct array *a)
{
	size_t size = lt_dtype_size(type), total = n + 2 * GUARD;
	if (lt_buf_new(be, type, total, &a->buf) != LT_OK)
		return 0;
	unsigned char *fill = malloc(total * size);
	if (!fill)
		return 0;
	memset(fill, sentinel_byte, total * size);
	be->ops->write(be, (lt_ref){ a->buf, 0 }, fill, total);
	free(fill);
	a->r = (lt_ref){ a->buf, GUARD };
	a->n = n;
	return 1;
}

/* 1 when the sentinels on both sides of a are as written. */
static int sentinels_intact(lt_backend *be, const struct array *a)
{
	size_t size = lt_dtype_size(lt_buf_type(a->buf));
	unsigned char got[GUARD * 4];
	for (int side = 0; side < 2; side++) {
		be->ops->read(be, got, (lt_ref){ a->buf, side ? GUARD + a->n : 0 }, GUARD);
		for (size_t i = 0; i < GUARD * size; i++)
			if (got[i] != sentinel_byte)
				return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* The checks. */

/* Index of the first of n bf16 results that differs from the model, or n. */
static size_t first_wrong_rounding(const float *x, const uint16_t *got, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (isnan(x[i])) {
			if ((got[i] & 0x7fff) <= 0x7f80 || !(got[i] & 0x0040) ||
			    (got[i] >> 15) != (uint16_t)(signbit(x[i]) ? 1 : 0))
				return i;
		} else if (got[i] != nearest_bf16(x[i])) {
			return i;
		}
	}
	return n;
}

/* f32 -> bf16 over n inputs at an odd place, then back to f32. */
static void check_round_trip(lt_backend *be, size_t n, uint64_t seed)
{
	const char *name = be->ops->name;
	float *x = rounding_inputs(n, seed), *back = malloc(n * sizeof *back);
	uint16_t *h = malloc(n * sizeof *h);
	struct array f = { 0 }, b = { 0 }, w = { 0 };
	if (!x || !back || !h || !new_array(be, LT_F32, n, &f) || !new_array(be, LT_BF16, n, &b) ||
	    !new_array(be, LT_F32, n, &w)) {
		for (int i = 0; i < 3; i++)
			tap_ok(0, "%s: buffers for %zu elements: %s", name, n, lt_errmsg());
		goto out;
	}
	x[n / 2] = NAN;
	x[n - 1] = -NAN;
	be->ops->write(be, f.r, x, n);
	be->ops->convert(be, b.r, f.r, n);
	be->ops->convert(be, w.r, b.r, n);
	be->ops->read(be, h, b.r, n);
	be->ops->read(be, back, w.r, n);
	enum lt_status st = be->ops->sync(be);
	size_t bad = first_wrong_rounding(x, h, n);
	tap_ok(st == LT_OK && bad == n,
	       "%s convert f32 -> bf16, n=%zu: every element the nearest bf16, ties to even, NaN "
	       "kept quiet (first wrong: %zd, input bits %08x, got %04x, want %04x)", name, n,
	       bad == n ? (ssize_t)-1 : (ssize_t)bad,
	       bad == n ? 0u : (unsigned)bits_of(x[bad]),
	       bad == n ? 0u : h[bad], bad == n ? 0u : nearest_bf16(x[bad]));
	size_t wrong = 0;
	for (size_t i = 0; i < n; i++) {
		double want = bf16_value(h[i]);
		if (isnan(want) ? !isnan(back[i]) : (double)back[i] != want ||
		    !signbit(back[i]) != !signbit(want))
			wrong++;
	}
	tap_ok(wrong == 0, "%s convert bf16 -> f32, n=%zu: exact (%zu wrong)", name, n, wrong);
	tap_ok(sentinels_intact(be, &f) && sentinels_intact(be, &b) && sentinels_intact(be, &w),
	       "%s convert n=%zu: sentinels around every array intact", name, n);
out:
	lt_buf_free(be, f.buf);
	lt_buf_free(be, b.buf);
	lt_buf_free(be, w.buf);
	free(x);
	free(back);
	free(h);
}

/* Buffers keep type and size; bf16 and i32 elements copy whole. */
static void check_typed_buffers(lt_backend *be)
{
	const char *name = be->ops->name;
	enum { N = 37 };
	struct array b1 = { 0 }, b2 = { 0 }, i1 = { 0 }, i2 = { 0 }, f = { 0 };
	uint16_t h[N], h2[N];
	int32_t ids[N], ids2[N];
	for (int i = 0; i < N; i++) {
		h[i] = (uint16_t)(0x3f00 + 97 * i);
		ids[i] = -5 + 1000003 * i;
	}
	int made = new_array(be, LT_BF16, N, &b1) && new_array(be, LT_BF16, N, &b2) &&
		   new_array(be, LT_I32, N, &i1) && new_array(be, LT_I32, N, &i2) &&
		   new_array(be, LT_F32, N, &f);
	tap_ok(made && lt_buf_type(b1.buf) == LT_BF16 && lt_buf_elems(b1.buf) == N + 2 * GUARD &&
	       lt_buf_type(i1.buf) == LT_I32 && lt_buf_type(f.buf) == LT_F32,
	       "%s: buffers keep their type and element count (bf16 of %d: %s, %zu)", name,
	       N + 2 * GUARD, made ? lt_dtype_name(lt_buf_type(b1.buf)) : "-",
	       made ? lt_buf_elems(b1.buf) : 0);
	if (!made) {
		for (int i = 0; i < 4; i++)
			tap_ok(0, "%s: typed buffers of %d elements: %s", name, N, lt_errmsg());
		goto out;
	}
	be->ops->write(be, b1.r, h, N);
	be->ops->copy(be, b2.r, b1.r, N);
	be->ops->read(be, h2, b2.r, N);
	be->ops->write(be, i1.r, ids, N);
	be->ops->copy(be, i2.r, i1.r, N);
	be->ops->read(be, ids2, i2.r, N);
	/* a convert of one type to itself is a copy: bf16 bits that no f32
	 * round trip would keep (a NaN payload) come through */
	h[5] = 0x7fa1;
	be->ops->write(be, b1.r, h, N);
	be->ops->convert(be, b2.r, b1.r, N);
	uint16_t h3[N];
	be->ops->read(be, h3, b2.r, N);
	enum lt_status st = be->ops->sync(be);
	h[5] = (uint16_t)(0x3f00 + 97 * 5);
	tap_ok(st == LT_OK && !memcmp(h, h2, sizeof h), "%s copy of %d bf16 elements is exact",
	       name, N);
	tap_ok(!memcmp(ids, ids2, sizeof ids), "%s write, copy and read of %d i32 elements are exact",
	       name, N);
	h[5] = 0x7fa1;
	tap_ok(!memcmp(h, h3, sizeof h), "%s convert bf16 -> bf16 is a copy (NaN payload kept)", name);
	tap_ok(sentinels_intact(be, &b1) && sentinels_intact(be, &b2) && sentinels_intact(be, &i1) &&
	       sentinels_intact(be, &i2), "%s typed copies: sentinels intact", name);
out:
	lt_buf_free(be, b1.buf);
	lt_buf_free(be, b2.buf);
	lt_buf_free(be, i1.buf);
	lt_buf_free(be, i2.buf);
	lt_buf_free(be, f.buf);
}

static void test_backend(const char *spec)
{
	lt_backend *be;
	if (lt_backend_new(spec, 2, &be) != LT_OK) {
		for (int i = 0; i < CHECKS_PER_BACKEND; i++)
			tap_skip("backend %s cannot start here: %s", spec, lt_errmsg());
		return;
	}
	check_typed_buffers(be);
	check_round_trip(be, 1, 1);
	check_round_trip(be, 200003, 7);
	lt_backend_free(be);
}

/* The models themselves, on values worked out by hand. */
static void prove_models(void)
{
	tap_ok(bf16_value(0x3f80) == 1.0 && bf16_value(0xc040) == -3.0 &&
	       bf16_value(0x0001) == ldexp(1, -133) && bf16_value(0x7f7f) == 0x1.fep127 &&
	       isinf(bf16_value(0x7f80)),
	       "model: bf16 1, -3, the smallest subnormal, the largest finite and infinity decode");
	tap_ok(nearest_bf16(float_of(0x3f808000)) == 0x3f80 &&
	       nearest_bf16(float_of(0x3f818000)) == 0x3f82 &&
	       nearest_bf16(float_of(0x3f808001)) == 0x3f81 &&
	       nearest_bf16(float_of(0x7f7fffff)) == 0x7f80 &&
	       nearest_bf16(float_of(0x7f7f7fff)) == 0x7f7f &&
	       nearest_bf16(1.0f / 3.0f) == 0x3eab,
	       "model: ties go to the even mantissa, past a tie up, FLT_MAX to infinity, 1/3 to "
	       "0x3eab");
}

int main(void)
{
	const char *const *names = lt_backend_names();
	int n = 0;
	while (names[n])
		n++;
	tap_plan(2 + n * CHECKS_PER_BACKEND);
	prove_models();
	for (int i = 0; i < n; i++)
		test_backend(names[i]);
	return tap_done();
}
