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
#define CHECKS_PER_BACKEND 19

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

/* One GEMM with bf16 operands, C of type tc: B x [m, n] = alpha op(A) op(B)
 * + beta C, with gaps after every row and matrix (ld and stride larger
 * than needed), against float64 over the bf16 values; the gaps of C must
 * keep their bytes. f32 sums of exact products stay within 1e-5 (rel L2);
 * a bf16 C adds its own rounding, 2^-8 relative at most per element (an
 * 8-bit significand, rounded to nearest). */
struct bf16_gemm_case {
	int ta, tb, m, n, k, batch;
	float alpha, beta;
	enum lt_dtype tc;
};

static void fill_bf16(uint16_t *h, size_t n, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++)
		h[i] = lt_bf16_from_f32((float)((int)(next_u32(seed) % 2001) - 1000) / 700.0f);
}

static double gemm_case_error(lt_backend *be, const struct bf16_gemm_case *t, int *gaps_kept)
{
	struct lt_gemm g = { .trans_a = t->ta, .trans_b = t->tb, .m = t->m, .n = t->n, .k = t->k,
			     .alpha = t->alpha, .beta = t->beta, .batch = t->batch };
	int ar = t->ta ? t->k : t->m, ac = t->ta ? t->m : t->k;
	int br = t->tb ? t->n : t->k, bc = t->tb ? t->k : t->n;
	g.lda = ac + 3;
	g.ldb = bc + 1;
	g.ldc = t->n + 2;
	g.stride_a = (long)ar * g.lda + 5;
	g.stride_b = (long)br * g.ldb + 7;
	g.stride_c = (long)t->m * g.ldc + 4;
	size_t na = (size_t)g.stride_a * t->batch, nb = (size_t)g.stride_b * t->batch;
	size_t nc = (size_t)g.stride_c * t->batch, cs = lt_dtype_size(t->tc);
	uint64_t seed = 77;
	uint16_t *a = malloc(na * 2), *b = malloc(nb * 2);
	unsigned char *c0 = malloc(nc * cs), *c1 = malloc(nc * cs);
	double *want = malloc(nc * sizeof *want), *got = malloc(nc * sizeof *got);
	struct array A = { 0 }, B = { 0 }, C = { 0 };
	double err = INFINITY;
	*gaps_kept = 0;
	if (!a || !b || !c0 || !c1 || !want || !got || !new_array(be, LT_BF16, na, &A) ||
	    !new_array(be, LT_BF16, nb, &B) || !new_array(be, t->tc, nc, &C))
		goto out;
	fill_bf16(a, na, &seed);
	fill_bf16(b, nb, &seed);
	for (size_t i = 0; i < nc; i++) {  /* C: NaN where beta is 0, which must not leak */
		float v = t->beta == 0.0f ? NAN : (float)((int)(next_u32(&seed) % 301) - 150) / 100;
		if (t->tc == LT_BF16)
			((uint16_t *)c0)[i] = lt_bf16_from_f32(v);
		else
			((float *)c0)[i] = v;
	}
	be->ops->write(be, A.r, a, na);
	be->ops->write(be, B.r, b, nb);
	be->ops->write(be, C.r, c0, nc);
	be->ops->gemm(be, &g, A.r, B.r, C.r);
	be->ops->read(be, c1, C.r, nc);
	if (be->ops->sync(be) != LT_OK)
		goto out;
	size_t at = 0;
	for (int q = 0; q < t->batch; q++)
		for (int i = 0; i < t->m; i++)
			for (int j = 0; j < t->n; j++, at++) {
				size_t ci = (size_t)q * g.stride_c + (size_t)i * g.ldc + j;
				double sum = 0;
				for (int p = 0; p < t->k; p++) {
					size_t ia = (size_t)q * g.stride_a +
						    (t->ta ? (size_t)p * g.lda + i : (size_t)i * g.lda + p);
					size_t ib = (size_t)q * g.stride_b +
						    (t->tb ? (size_t)j * g.ldb + p : (size_t)p * g.ldb + j);
					sum += bf16_value(a[ia]) * bf16_value(b[ib]);
				}
				double old = t->tc == LT_BF16 ? bf16_value(((uint16_t *)c0)[ci])
							      : ((float *)c0)[ci];
				want[at] = t->alpha * sum + (t->beta == 0.0f ? 0 : t->beta * old);
				got[at] = t->tc == LT_BF16 ? bf16_value(((uint16_t *)c1)[ci])
							   : ((float *)c1)[ci];
				memset(c1 + ci * cs, 0, cs);  /* C's own: not a gap */
				memset(c0 + ci * cs, 0, cs);
			}
	err = tap_rel_l2_d(got, want, (long)at);
	*gaps_kept = !memcmp(c0, c1, nc * cs) && sentinels_intact(be, &C);
out:
	lt_buf_free(be, A.buf);
	lt_buf_free(be, B.buf);
	lt_buf_free(be, C.buf);
	free(a);
	free(b);
	free(c0);
	free(c1);
	free(want);
	free(got);
	return err;
}

static void check_bf16_gemms(lt_backend *be)
{
	static const struct bf16_gemm_case cases[] = {
		{ 0, 0, 37, 29, 53, 1, 1.0f, 0.0f, LT_F32 },
		{ 0, 1, 64, 48, 96, 1, 1.0f, 1.0f, LT_F32 },   /* a linear layer */
		{ 1, 0, 33, 40, 70, 1, 0.5f, 1.0f, LT_BF16 },  /* a weight gradient */
		{ 0, 1, 17, 23, 31, 3, -1.0f, 0.0f, LT_BF16 },
		{ 1, 1, 9, 13, 1, 2, 1.0f, 0.5f, LT_F32 },     /* k = 1 */
		/* past 1024 in m and k, in n and k, in m and n: the CPU's widening
		 * fallback works block by block */
		{ 0, 1, 1030, 40, 1100, 1, 1.0f, 1.0f, LT_F32 },
		{ 1, 0, 30, 1100, 1030, 1, 1.0f, 0.5f, LT_BF16 },
		{ 1, 1, 1100, 1030, 20, 1, 0.5f, 0.0f, LT_BF16 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct bf16_gemm_case *t = &cases[i];
		int kept;
		double err = gemm_case_error(be, t, &kept);
		double tol = t->tc == LT_BF16 ? 4e-3 : 1e-5;
		tap_ok(err <= tol && kept,
		       "%s gemm on bf16 operands %s%s %dx%dx%d batch %d alpha %g beta %g, C %s: rel L2 "
		       "%.2e <= %.0e, gaps and sentinels kept: %s", be->ops->name, t->ta ? "T" : "N",
		       t->tb ? "T" : "N", t->m, t->n, t->k, t->batch, t->alpha, t->beta,
		       lt_dtype_name(t->tc), err, tol, kept ? "yes" : "no");
	}
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
	check_bf16_gemms(be);
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
