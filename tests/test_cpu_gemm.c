/* The CPU backend's libraries for f32 GEMMs: oneDNN's matmul
 * (LLTRAIN_CPU_GEMM=dnnl) against float64 on every layout, at edge sizes,
 * with leading dimensions and batch strides wider than the rows, beta 0
 * over NaN, beta 1 and overlapping outputs, bitwise repeatable; under auto,
 * each GEMM bitwise what the library the rule names computes; and the
 * environment variable's values. oneDNN's checks skip, saying why, in a
 * build without it. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_impl.h"
#include "tap.h"

#define THREADS 2
#define GUARD 3  /* sentinel floats on each side of every array */

/* The CPU backend as LLTRAIN_CPU_GEMM = lib makes it (NULL: unset), or
 * NULL with the status in *st. */
static lt_backend *open_cpu(const char *lib, enum lt_status *st)
{
	lt_backend *be = NULL;
	if (lib)
		setenv("LLTRAIN_CPU_GEMM", lib, 1);
	else
		unsetenv("LLTRAIN_CPU_GEMM");
	*st = lt_backend_new("cpu", THREADS, &be);
	unsetenv("LLTRAIN_CPU_GEMM");
	return be;
}

/* ------------------------------------------------------------------ */
/* One GEMM on host arrays with gaps, and its float64 reference. */

struct gemm_case {
	int ta, tb, m, n, k, batch;
	float alpha, beta;
	int pad;      /* extra elements after every row of A, B and C */
	int overlap;  /* stride_c 0: the batch's products go into one C in turn */
};

/* The shape of t: leading dimensions pad wider than the rows, batch
 * strides a few elements past each matrix. */
static struct lt_gemm shape_of(const struct gemm_case *t)
{
	struct lt_gemm g = { .trans_a = t->ta, .trans_b = t->tb, .m = t->m, .n = t->n, .k = t->k,
			     .alpha = t->alpha, .beta = t->beta, .batch = t->batch };
	int ar = t->ta ? t->k : t->m, ac = t->ta ? t->m : t->k;
	int br = t->tb ? t->n : t->k, bc = t->tb ? t->k : t->n;
	g.lda = ac + t->pad;
	g.ldb = bc + t->pad;
	g.ldc = t->n + t->pad;
	g.stride_a = (long)ar * g.lda + 5;
	g.stride_b = (long)br * g.ldb + 3;
	g.stride_c = t->overlap ? 0 : (long)t->m * g.ldc + 7;
	return g;
}

struct host_case {
	struct lt_gemm g;
	size_t na, nb, nc;
	float *a, *b, *c0;  /* the inputs; c0 is C before the GEMM */
};

static uint32_t next_u32(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

/* A value in [-1, 1) with all 24 bits of mantissa in use, so that a
 * library rounding the operands (to TF32 or bf16) is seen. */
static float small_value(uint64_t *s)
{
	return (float)((int32_t)(next_u32(s) >> 8) - (1 << 23)) / (float)(1 << 23);
}

/* Inputs of t: A and B of values of [-1, 1), C of NaN where beta is 0 (which
 * must not leak) and of values elsewhere, gaps included. 0 when out of
 * memory. */
static int make_inputs(const struct gemm_case *t, struct host_case *h)
{
	uint64_t seed = 12345 + (uint64_t)t->m * 31 + (uint64_t)t->n * 7 + (uint64_t)t->k;
	h->g = shape_of(t);
	h->na = (size_t)h->g.stride_a * t->batch;
	h->nb = (size_t)h->g.stride_b * t->batch;
	h->nc = t->overlap ? (size_t)t->m * h->g.ldc : (size_t)h->g.stride_c * t->batch;
	h->a = malloc(h->na * sizeof(float));
	h->b = malloc(h->nb * sizeof(float));
	h->c0 = malloc(h->nc * sizeof(float));
	if (!h->a || !h->b || !h->c0)
		return 0;
	for (size_t i = 0; i < h->na; i++)
		h->a[i] = small_value(&seed);
	for (size_t i = 0; i < h->nb; i++)
		h->b[i] = small_value(&seed);
	for (size_t i = 0; i < h->nc; i++)
		h->c0[i] = t->beta == 0.0f ? NAN : small_value(&seed);
	return 1;
}

static void free_inputs(struct host_case *h)
{
	free(h->a);
	free(h->b);
	free(h->c0);
}

/* C after the GEMM on be into c1 (nc floats), and the name the backend's
 * profile gave the call into *op. 0 when the backend failed or an array's
 * sentinels moved. */
static int run_case(lt_backend *be, const struct host_case *h, float *c1, const char **op)
{
	size_t n[3] = { h->na, h->nb, h->nc };
	const float *in[3] = { h->a, h->b, h->c0 };
	lt_buf *buf[3] = { NULL, NULL, NULL };
	float guard[GUARD] = { -7.0f, -7.0f, -7.0f }, back[GUARD];
	struct lt_op_time ran[4];
	int ok = 1;
	for (int i = 0; i < 3 && ok; i++) {
		ok = lt_buf_new(be, LT_F32, n[i] + 2 * GUARD, &buf[i]) == LT_OK;
		if (!ok)
			break;
		be->ops->write(be, (lt_ref){ buf[i], 0 }, guard, GUARD);
		be->ops->write(be, (lt_ref){ buf[i], GUARD }, in[i], n[i]);
		be->ops->write(be, (lt_ref){ buf[i], GUARD + n[i] }, guard, GUARD);
	}
	*op = "?";
	if (ok) {
		be->ops->profile(be, 1);
		be->ops->gemm(be, &h->g, (lt_ref){ buf[0], GUARD }, (lt_ref){ buf[1], GUARD },
			      (lt_ref){ buf[2], GUARD });
		ok = be->ops->sync(be) == LT_OK;
		if (be->ops->profile_read(be, ran, 4) > 0)
			*op = ran[0].op;
		be->ops->profile(be, 0);
		be->ops->read(be, c1, (lt_ref){ buf[2], GUARD }, h->nc);
	}
	for (int i = 0; i < 3 && ok; i++)
		for (int side = 0; side < 2 && ok; side++) {
			be->ops->read(be, back, (lt_ref){ buf[i], side ? GUARD + n[i] : 0 }, GUARD);
			ok = !memcmp(back, guard, sizeof guard);
		}
	for (int i = 0; i < 3; i++)
		lt_buf_free(be, buf[i]);
	return ok;
}

/* Element (i, j) of op(X) for matrix q of a batch. */
static double element(const float *x, long stride, int ld, int trans, int q, int i, int j)
{
	return x[(size_t)q * stride + (trans ? (size_t)j * ld + i : (size_t)i * ld + j)];
}

/* The relative L2 error of c1 against float64 over C's own elements, and
 * whether every gap of C kept what it held. */
static double case_error(const struct host_case *h, const float *c1, int *gaps_kept)
{
	const struct lt_gemm *g = &h->g;
	size_t cells = (size_t)g->m * g->n * (g->stride_c ? (size_t)g->batch : 1);
	double *want = malloc(cells * sizeof *want), *got = malloc(cells * sizeof *got);
	char *own = calloc(h->nc, 1);
	double err = INFINITY;
	if (!want || !got || !own)
		goto out;
	for (size_t i = 0; i < cells; i++)  /* C as it was, for the first beta */
		want[i] = 0;
	for (int q = 0; q < g->batch; q++)
		for (int i = 0; i < g->m; i++)
			for (int j = 0; j < g->n; j++) {
				size_t ci = (size_t)q * g->stride_c + (size_t)i * g->ldc + j;
				size_t at = (g->stride_c ? (size_t)q * g->m * g->n : 0) + (size_t)i * g->n + j;
				double sum = 0, old = q && !g->stride_c ? want[at] : h->c0[ci];
				for (int p = 0; p < g->k; p++)
					sum += element(h->a, g->stride_a, g->lda, g->trans_a, q, i, p) *
					       element(h->b, g->stride_b, g->ldb, g->trans_b, q, p, j);
				want[at] = g->alpha * sum + (g->beta == 0.0f ? 0 : g->beta * old);
				got[at] = c1[ci];
				own[ci] = 1;
			}
	err = tap_rel_l2_d(got, want, (long)cells);
	*gaps_kept = 1;
	for (size_t i = 0; i < h->nc; i++)
		if (!own[i] && memcmp(&h->c0[i], &c1[i], sizeof(float)))
			*gaps_kept = 0;
out:
	free(want);
	free(got);
	free(own);
	return err;
}

static const struct gemm_case cases[] = {
	{ 0, 0, 37, 29, 53, 1, 1.0f, 0.0f, 3, 0 },
	{ 0, 1, 64, 48, 96, 1, 1.0f, 1.0f, 0, 0 },     /* a linear layer, += */
	{ 1, 0, 33, 40, 70, 1, 0.5f, 1.0f, 5, 0 },     /* a weight gradient */
	{ 1, 1, 17, 23, 31, 3, -1.0f, 0.0f, 2, 0 },    /* a strided batch */
	{ 0, 1, 1, 1, 1, 1, 1.0f, 0.0f, 0, 0 },
	{ 0, 0, 1, 37, 29, 1, 1.0f, 1.0f, 1, 0 },      /* one row */
	{ 1, 0, 29, 1, 37, 1, 1.0f, 0.0f, 4, 0 },      /* one column */
	{ 0, 1, 5, 7, 1, 2, 2.0f, 0.5f, 1, 0 },        /* k = 1 */
	{ 0, 1, 3, 300, 129, 1, 1.0f, 0.0f, 0, 0 },    /* a few rows, as sampling has */
	{ 0, 0, 301, 257, 129, 1, 1.0f, 0.0f, 7, 0 },  /* odd, threaded */
	{ 1, 0, 19, 21, 23, 3, 1.0f, 1.0f, 2, 1 },     /* a batch into one C, in turn */
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static void describe_case(const struct gemm_case *t, char *out, size_t cap)
{
	snprintf(out, cap, "%s%s %dx%dx%d batch %d%s alpha %g beta %g, ld +%d", t->ta ? "T" : "N",
		 t->tb ? "T" : "N", t->m, t->n, t->k, t->batch, t->overlap ? " (one C)" : "",
		 t->alpha, t->beta, t->pad);
}

/* ------------------------------------------------------------------ */
/* The checks. */

/* Each case through oneDNN: within 1e-5 of float64, gaps and sentinels
 * kept, and oneDNN's the op that ran. */
static void check_dnnl_cases(lt_backend *be)
{
	for (int i = 0; i < N_CASES; i++) {
		struct host_case h = { 0 };
		char what[96];
		const char *op = "?";
		int kept = 0, ran = 0;
		double err = INFINITY;
		float *c1 = NULL;
		describe_case(&cases[i], what, sizeof what);
		if (make_inputs(&cases[i], &h) && (c1 = malloc(h.nc * sizeof *c1)) &&
		    (ran = run_case(be, &h, c1, &op)))
			err = case_error(&h, c1, &kept);
		tap_ok(ran && err <= 1e-5 && kept && !strcmp(op, "gemm_dnnl"),
		       "oneDNN f32 %s: rel L2 %.2e <= 1e-5, gaps and sentinels kept: %s, computed by "
		       "%s (want gemm_dnnl)", what, err, kept ? "yes" : "no", op);
		free(c1);
		free_inputs(&h);
	}
}

/* Case t on be twice, and on other once: three bitwise equal results. */
static void check_repeats(lt_backend *be, lt_backend *other, const struct gemm_case *t)
{
	struct host_case h = { 0 };
	float *c[3] = { NULL, NULL, NULL };
	const char *op;
	char what[96];
	int ok = make_inputs(t, &h);
	for (int r = 0; r < 3 && ok; r++)
		ok = (c[r] = malloc(h.nc * sizeof(float))) && run_case(r < 2 ? be : other, &h, c[r], &op);
	describe_case(t, what, sizeof what);
	tap_ok(ok && !memcmp(c[0], c[1], h.nc * sizeof(float)) &&
	       !memcmp(c[0], c[2], h.nc * sizeof(float)),
	       "oneDNN f32 %s at %d threads: bitwise the same twice, and on a second backend", what,
	       THREADS);
	for (int r = 0; r < 3; r++)
		free(c[r]);
	free_inputs(&h);
}

/* Products of each class of the rule: the three of a linear layer at the
 * 15M preset's widths and 512 rows, a wide input gradient, a prompt's
 * forward, the head's over a wide vocabulary, a token's (sgemv). */
static const struct gemm_case model_cases[] = {
	{ 0, 1, 512, 864, 288, 1, 1.0f, 0.0f, 0, 0 },
	{ 0, 0, 512, 288, 864, 1, 1.0f, 0.0f, 0, 0 },
	{ 1, 0, 864, 288, 512, 1, 1.0f, 1.0f, 0, 0 },
	{ 0, 0, 512, 768, 288, 1, 1.0f, 0.0f, 0, 0 },
	{ 0, 1, 40, 768, 288, 1, 1.0f, 1.0f, 0, 0 },
	{ 0, 1, 40, 16384, 24, 1, 1.0f, 0.0f, 0, 0 },
	{ 0, 1, 1, 768, 288, 1, 1.0f, 0.0f, 0, 0 },
};
#define N_MODEL_CASES ((int)(sizeof model_cases / sizeof model_cases[0]))

/* Under auto, every case: bitwise what the library the rule names gives,
 * computed by that library (the name the profile gives the call). With
 * oneDNN, both libraries must be among them. */
static void check_auto_follows_rule(lt_backend *autobe, lt_backend *blas, lt_backend *dnnl)
{
	/* without oneDNN, auto is OpenBLAS whatever the rule says */
	struct gemm_case all[N_CASES + N_MODEL_CASES];
	memcpy(all, cases, sizeof cases);
	memcpy(all + N_CASES, model_cases, sizeof model_cases);
	int same = 0, total = N_CASES + N_MODEL_CASES, by_blas = 0, by_dnnl = 0;
	char bad[160] = "";
	for (int i = 0; i < total; i++) {
		struct host_case h = { 0 };
		float *ca = NULL, *cr = NULL;
		const char *op_auto = "?", *op_rule = "?";
		int ok = make_inputs(&all[i], &h) && (ca = malloc(h.nc * sizeof *ca)) &&
			 (cr = malloc(h.nc * sizeof *cr));
		int dn = ok && dnnl && lt_cpu_gemm_rule(&h.g) == LT_CPU_GEMM_DNNL;
		ok = ok && run_case(autobe, &h, ca, &op_auto) &&
		     run_case(dn ? dnnl : blas, &h, cr, &op_rule);
		if (ok && !memcmp(ca, cr, h.nc * sizeof *ca) && !strcmp(op_auto, op_rule) &&
		    (strcmp(op_auto, "gemm_dnnl") == 0) == dn) {
			same++;
			by_dnnl += dn;
			by_blas += !dn;
		} else if (!bad[0]) {
			describe_case(&all[i], bad, sizeof bad);
			snprintf(bad + strlen(bad), sizeof bad - strlen(bad), ": auto ran %s, %s ran %s",
				 op_auto, dn ? "dnnl" : "openblas", op_rule);
		}
		free(ca);
		free(cr);
		free_inputs(&h);
	}
	tap_ok(same == total && (!dnnl || (by_blas && by_dnnl)),
	       "auto: %d of %d GEMMs bitwise as the rule's library computes them (%d OpenBLAS, %d "
	       "oneDNN)%s%s", same, total, by_blas, by_dnnl, bad[0] ? "; first not: " : "", bad);
}

/* The rule's classes, as its comment gives them. */
static void check_rule_classes(void)
{
	static const struct { int ta, tb, m, n, k; enum lt_cpu_gemm_lib want; } t[] = {
		{ 0, 1, 2048, 864, 288, LT_CPU_GEMM_OPENBLAS },   /* a forward */
		{ 0, 0, 2048, 768, 2304, LT_CPU_GEMM_OPENBLAS },  /* a wide input gradient */
		{ 0, 0, 2048, 511, 864, LT_CPU_GEMM_DNNL },       /* a narrow one */
		{ 0, 0, 2048, 512, 864, LT_CPU_GEMM_OPENBLAS },
		{ 0, 0, 64, 2048, 768, LT_CPU_GEMM_OPENBLAS },    /* wide, of few rows */
		{ 0, 0, 1, 288, 864, LT_CPU_GEMM_DNNL },          /* narrow, one row */
		{ 1, 0, 864, 288, 2048, LT_CPU_GEMM_OPENBLAS },   /* a weight gradient */
		{ 1, 0, 864, 288, 16, LT_CPU_GEMM_OPENBLAS },     /* of few rows too */
		{ 0, 1, 127, 2304, 768, LT_CPU_GEMM_DNNL },       /* a forward of few rows */
		{ 0, 1, 128, 2304, 768, LT_CPU_GEMM_OPENBLAS },
		{ 0, 1, 64, 16383, 288, LT_CPU_GEMM_DNNL },
		{ 0, 1, 64, 32000, 288, LT_CPU_GEMM_OPENBLAS },   /* the head's */
		{ 0, 1, 4, 864, 288, LT_CPU_GEMM_OPENBLAS },      /* sgemv */
		{ 0, 1, 5, 864, 288, LT_CPU_GEMM_DNNL },
		{ 1, 1, 64, 64, 64, LT_CPU_GEMM_OPENBLAS },
		{ 0, 0, 64, 64, 0, LT_CPU_GEMM_OPENBLAS },        /* k = 0 */
	};
	int right = 0, n = (int)(sizeof t / sizeof t[0]), first = -1;
	for (int i = 0; i < n; i++) {
		struct lt_gemm g = { .trans_a = t[i].ta, .trans_b = t[i].tb, .m = t[i].m, .n = t[i].n,
				     .k = t[i].k, .alpha = 1.0f, .batch = 1 };
		if (lt_cpu_gemm_rule(&g) == t[i].want)
			right++;
		else if (first < 0)
			first = i;
	}
	tap_ok(right == n, "the rule puts %d of %d products in their class (first wrong: %d, "
	       "-1 for none)", right, n, first);
}

/* LLTRAIN_CPU_GEMM's values: openblas, auto (and unset) start, dnnl starts
 * where oneDNN was built in and is refused, saying so, where not; anything
 * else is refused naming the variable and what it expects. */
static void check_environment(int have_dnnl)
{
	enum lt_status st;
	struct lt_device_info dev;
	lt_backend *be = open_cpu("openblas", &st);
	int ok = be && st == LT_OK;
	if (be)
		be->ops->info(be, &dev);
	tap_ok(ok && !strncmp(dev.gemm, "OpenBLAS SGEMM", 14) && !strstr(dev.gemm, "oneDNN"),
	       "LLTRAIN_CPU_GEMM=openblas starts, gemm: %s", ok ? dev.gemm : lt_errmsg());
	lt_backend_free(be);

	be = open_cpu("bogus", &st);
	tap_ok(!be && st == LT_ERR_CONFIG && strstr(lt_errmsg(), "LLTRAIN_CPU_GEMM='bogus'") &&
	       strstr(lt_errmsg(), "expected openblas, dnnl or auto"),
	       "LLTRAIN_CPU_GEMM=bogus is refused: %s", lt_errmsg());
	lt_backend_free(be);

	be = open_cpu("dnnl", &st);
	if (be)
		be->ops->info(be, &dev);
	if (have_dnnl)
		tap_ok(be && !strncmp(dev.gemm, "oneDNN ", 7),
		       "LLTRAIN_CPU_GEMM=dnnl starts, gemm: %s", be ? dev.gemm : lt_errmsg());
	else
		tap_ok(!be && st == LT_ERR_CONFIG && strstr(lt_errmsg(), "without oneDNN"),
		       "LLTRAIN_CPU_GEMM=dnnl is refused in a build without oneDNN: %s", lt_errmsg());
	lt_backend_free(be);

	lt_backend *a = open_cpu("auto", &st), *u = open_cpu(NULL, &st);
	tap_ok(a && u, "LLTRAIN_CPU_GEMM=auto and unset start");
	lt_backend_free(a);
	lt_backend_free(u);
}

#define CHECKS (N_CASES + 3 + 1 + 1 + 4)

int main(void)
{
	char version[32];
	int have_dnnl = lt_cpu_dnnl_version(version, sizeof version);
	enum lt_status st;
	tap_plan(CHECKS);
	check_environment(have_dnnl);
	check_rule_classes();
	lt_backend *dnnl = have_dnnl ? open_cpu("dnnl", &st) : NULL;
	lt_backend *dnnl2 = have_dnnl ? open_cpu("dnnl", &st) : NULL;
	lt_backend *blas = open_cpu("openblas", &st), *autobe = open_cpu("auto", &st);
	if (!have_dnnl) {
		for (int i = 0; i < N_CASES + 3; i++)
			tap_skip("oneDNN's f32 matmul: this lltrain was built without oneDNN "
				 "(configure found no libdnnl, or was given --without-dnnl)");
	} else if (!dnnl || !dnnl2) {
		for (int i = 0; i < N_CASES + 3; i++)
			tap_ok(0, "the CPU backend starts with LLTRAIN_CPU_GEMM=dnnl: %s", lt_errmsg());
	} else {
		check_dnnl_cases(dnnl);
		check_repeats(dnnl, dnnl2, &cases[9]);
		check_repeats(dnnl, dnnl2, &(struct gemm_case){ 1, 0, 288, 288, 512, 1, 1.0f, 1.0f,
								0, 0 });
		/* deep and thin: where a library would split k over the team */
		check_repeats(dnnl, dnnl2, &(struct gemm_case){ 0, 0, 16, 96, 20000, 1, 1.0f, 0.0f,
								0, 0 });
	}
	if (!blas || !autobe || (have_dnnl && !dnnl))
		tap_ok(0, "the CPU backend starts under openblas, auto and dnnl: %s", lt_errmsg());
	else
		check_auto_follows_rule(autobe, blas, dnnl);
	lt_backend_free(dnnl);
	lt_backend_free(dnnl2);
	lt_backend_free(blas);
	lt_backend_free(autobe);
	return tap_done();
}
