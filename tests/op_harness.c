/* The op tests' harness (see op_harness.h): arrays, rng, checks and the
 * run over backends with the CPU twin. */
#include "config.h"
#include "op_harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define SENTINEL -7777.25f
#define MAX_SPECS 64

/* what[] = fmt's text, with the arguments of the variadic function it
 * stands in */
#define FORMAT_ARGS(what, fmt)                                  \
	do {                                                    \
		va_list ap_;                                    \
		va_start(ap_, fmt);                             \
		vsnprintf(what, sizeof what, fmt, ap_);         \
		va_end(ap_);                                    \
	} while (0)

/* ------------------------------------------------------------------ */
/* Host helpers. */

_Noreturn void oh_bail_out(const char *fmt, ...)
{
	va_list ap;
	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

void *oh_alloc(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);
	if (!p)
		oh_bail_out("out of host memory (%zu bytes)", bytes);
	return p;
}

float *oh_floats(size_t n)
{
	return oh_alloc(n * sizeof(float));
}

double *oh_doubles(size_t n)
{
	return oh_alloc(n * sizeof(double));
}

uint64_t oh_rng_next(struct oh_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

float oh_rng_uniform(struct oh_rng *r, float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(oh_rng_next(r) >> 40) * 0x1p-24);
}

int32_t oh_rng_below(struct oh_rng *r, int n)
{
	return (int32_t)(oh_rng_next(r) % (uint64_t)n);
}

float *oh_random_values(struct oh_rng *r, size_t n, float lo, float hi, enum lt_dtype t)
{
	float *x = oh_floats(n);
	for (size_t i = 0; i < n; i++) {
		x[i] = oh_rng_uniform(r, lo, hi);
		if (t == LT_BF16)
			x[i] = lt_bf16_to_f32(lt_bf16_from_f32(x[i]));
	}
	return x;
}

double *oh_widened(const float *x, size_t n)
{
	double *y = oh_doubles(n);
	for (size_t i = 0; i < n; i++)
		y[i] = x[i];
	return y;
}

void oh_label(char *dst, size_t cap, lt_backend *be, enum lt_dtype t)
{
	snprintf(dst, cap, "%s%s", be->ops->name, t == LT_BF16 ? " bf16" : "");
}

/* ------------------------------------------------------------------ */
/* The CPU twin: while recording, every array read is kept; while
 * comparing, each is held to the kept one at the same place in the
 * sequence. */

static struct {
	int mode;          /* TWIN_OFF, TWIN_RECORD or TWIN_COMPARE */
	float **arr;
	size_t *len;
	int count, cap, pos;
	double worst;      /* largest relative L2 difference seen (NaN stays) */
	int equal_left_out;  /* the suite's twin_equal_left_out */
} twin;
enum { TWIN_OFF, TWIN_RECORD, TWIN_COMPARE };

/* ||got - cpu|| / ||cpu|| over the finite elements (with
 * twin.equal_left_out, over those that differ). NaN against NaN, and an
 * infinity against the same one, are left out; NaN against a number, or
 * an infinity against anything else, differ infinitely. */
static double rel_l2_to_cpu(const float *got, const float *cpu, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (isnan(got[i]) || isnan(cpu[i])) {
			if (isnan(got[i]) != isnan(cpu[i]))
				return INFINITY;
			continue;
		}
		if (isinf(got[i]) || isinf(cpu[i])) {
			if (got[i] != cpu[i])
				return INFINITY;
			continue;
		}
		if (twin.equal_left_out && got[i] == cpu[i])
			continue;
		double d = (double)got[i] - cpu[i];
		num += d * d;
		den += (double)cpu[i] * cpu[i];
	}
	return num == 0 ? 0 : sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

static void twin_see(const float *x, size_t n)
{
	if (twin.mode == TWIN_RECORD) {
		if (twin.count == twin.cap) {
			twin.cap = twin.cap ? 2 * twin.cap : 64;
			twin.arr = realloc(twin.arr, (size_t)twin.cap * sizeof *twin.arr);
			twin.len = realloc(twin.len, (size_t)twin.cap * sizeof *twin.len);
			if (!twin.arr || !twin.len)
				oh_bail_out("out of host memory recording the CPU twin");
		}
		twin.arr[twin.count] = oh_floats(n);
		memcpy(twin.arr[twin.count], x, n * sizeof(float));
		twin.len[twin.count++] = n;
	} else if (twin.mode == TWIN_COMPARE) {
		double e = twin.pos < twin.count && twin.len[twin.pos] == n
			? rel_l2_to_cpu(x, twin.arr[twin.pos], n) : INFINITY;
		twin.worst = tap_worst(twin.worst, e);
		twin.pos++;
	}
}

static void twin_clear(void)
{
	for (int i = 0; i < twin.count; i++)
		free(twin.arr[i]);
	free(twin.arr);
	free(twin.len);
	memset(&twin, 0, sizeof twin);
}

/* ------------------------------------------------------------------ */
/* Device arrays. */

/* Array i's sentinels, OH_GUARD elements of its type (4-byte ones for f32
 * and i32) into s: the next bf16 values down, or f32 values, one per
 * array. */
static void fill_sentinels(void *s, enum lt_dtype type, int array)
{
	for (int i = 0; i < OH_GUARD; i++) {
		if (type == LT_BF16)
			((uint16_t *)s)[i] = (uint16_t)(lt_bf16_from_f32(SENTINEL) + array);
		else
			((float *)s)[i] = SENTINEL - array;
	}
}

void oh_write_floats(lt_backend *be, lt_ref dst, const float *host, size_t n)
{
	if (lt_buf_type(dst.buf) != LT_BF16) {
		be->ops->write(be, dst, host, n);
		return;
	}
	uint16_t *h = oh_alloc(n * sizeof *h);
	for (size_t i = 0; i < n; i++)
		h[i] = lt_bf16_from_f32(host[i]);
	be->ops->write(be, dst, h, n);
	free(h);
}

lt_ref oh_array(struct oh_arrays *a, enum lt_dtype t, size_t n)
{
	lt_backend *be = a->be;
	lt_buf *b;
	if (a->count == OH_MAX_ARRAYS)
		oh_bail_out("test bug: more than %d device arrays in one group", OH_MAX_ARRAYS);
	enum lt_status st = lt_buf_new(be, t, n + 2 * OH_GUARD, &b);
	if (st != LT_OK)
		oh_bail_out("%s: buf_new(%zu): %s: %s", be->ops->name, n + 2 * OH_GUARD,
			    lt_status_str(st), lt_errmsg());
	a->buf[a->count] = b;
	a->len[a->count] = n;
	a->count++;

	lt_ref r = { .buf = b, .off = 0 };
	float guard[OH_GUARD], *nans = oh_floats(n);
	fill_sentinels(guard, t, a->count - 1);
	for (size_t i = 0; i < n; i++)
		nans[i] = NAN;
	be->ops->write(be, r, guard, OH_GUARD);
	if (t == LT_I32)
		be->ops->write(be, lt_ref_at(r, OH_GUARD), nans, n);
	else
		oh_write_floats(be, lt_ref_at(r, OH_GUARD), nans, n);
	be->ops->write(be, lt_ref_at(r, OH_GUARD + n), guard, OH_GUARD);
	free(nans);
	return lt_ref_at(r, OH_GUARD);
}

lt_ref oh_values(struct oh_arrays *a, enum lt_dtype t, const float *host, size_t n)
{
	lt_ref r = oh_array(a, t, n);
	oh_write_floats(a->be, r, host, n);
	return r;
}

lt_ref oh_ids(struct oh_arrays *a, const int32_t *host, size_t n)
{
	lt_ref r = oh_array(a, LT_I32, n);
	a->be->ops->write(a->be, r, host, n);
	return r;
}

float *oh_read_floats(struct oh_arrays *a, lt_ref src, size_t n)
{
	float *x = oh_floats(n);
	if (lt_buf_type(src.buf) == LT_BF16) {
		uint16_t *h = oh_alloc(n * sizeof *h);
		a->be->ops->read(a->be, h, src, n);
		for (size_t i = 0; i < n; i++)
			x[i] = lt_bf16_to_f32(h[i]);
		free(h);
	} else {
		a->be->ops->read(a->be, x, src, n);
	}
	twin_see(x, n);
	return x;
}

int oh_guards_intact(const struct oh_arrays *a)
{
	float got[OH_GUARD], want[OH_GUARD];
	for (int i = 0; i < a->count; i++) {
		lt_ref r = { .buf = a->buf[i], .off = 0 };
		enum lt_dtype type = lt_buf_type(a->buf[i]);
		size_t bytes = OH_GUARD * lt_dtype_size(type);
		fill_sentinels(want, type, i);
		a->be->ops->read(a->be, got, r, OH_GUARD);
		if (memcmp(got, want, bytes) != 0)
			return 0;
		a->be->ops->read(a->be, got, lt_ref_at(r, OH_GUARD + a->len[i]), OH_GUARD);
		if (memcmp(got, want, bytes) != 0)
			return 0;
	}
	return 1;
}

void oh_arrays_free(struct oh_arrays *a)
{
	for (int i = 0; i < a->count; i++)
		lt_buf_free(a->be, a->buf[i]);
	a->count = 0;
}

/* ------------------------------------------------------------------ */
/* Checks with the measured error in the message. */

double oh_tol(enum lt_dtype t, int k)
{
	return t == LT_BF16 ? OH_BF16_TOL(k) : OH_TOL;
}

int oh_check_close(double tol, const float *got, const double *want, size_t n, const char *fmt,
		   ...)
{
	char what[256];
	FORMAT_ARGS(what, fmt);
	double e = tap_rel_l2_f(got, want, (long)n);
	return tap_ok(e <= tol, "%s: rel L2 %.3g <= %.3g", what, e, tol);
}

int oh_check_gradient(double *x, const double *analytic, size_t n, oh_loss_fn *loss, void *ctx,
		      const char *fmt, ...)
{
	char what[256];
	FORMAT_ARGS(what, fmt);
	double *numeric = oh_doubles(n);
	for (size_t i = 0; i < n; i++) {
		double keep = x[i];
		x[i] = keep + OH_FD_EPS;
		double up = loss(ctx);
		x[i] = keep - OH_FD_EPS;
		double down = loss(ctx);
		x[i] = keep;
		numeric[i] = (up - down) / (2 * OH_FD_EPS);
	}
	double e = tap_rel_l2_d(analytic, numeric, (long)n);
	free(numeric);
	return tap_ok(e <= OH_FD_TOL,
		      "reference %s vs central differences (eps %.0e): rel L2 %.3g <= %.3g", what,
		      OH_FD_EPS, e, OH_FD_TOL);
}

/* ------------------------------------------------------------------ */
/* float64 references. */

void oh_ref_xent(double *losses, double *grad, const double *logits, const int32_t *targets,
		 int N, int V, double grad_scale)
{
	for (int n = 0; n < N; n++) {
		const double *x = logits + (size_t)n * V;
		double mx = -INFINITY, sum = 0;
		for (int v = 0; v < V; v++)
			mx = fmax(mx, x[v]);
		for (int v = 0; v < V; v++)
			sum += exp(x[v] - mx);
		double lse = mx + log(sum);
		losses[n] = targets[n] < 0 ? 0 : lse - x[targets[n]];
		for (int v = 0; grad && v < V; v++)
			grad[(size_t)n * V + v] = targets[n] < 0 ? 0 :
				grad_scale * (exp(x[v] - lse) - (v == targets[n]));
	}
}

void oh_ref_embedding_forward(double *out, const int32_t *tokens, const double *table, int N,
			      int C)
{
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			out[(size_t)n * C + c] =
				tokens[n] < 0 ? 0 : table[(size_t)tokens[n] * C + c];
}

void oh_ref_embedding_backward(double *dtable, const int32_t *tokens, const double *dout, int N,
			       int C)
{
	for (int n = 0; n < N; n++)
		for (int c = 0; tokens[n] >= 0 && c < C; c++)
			dtable[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}

/* n ids drawn from [0, below), then the pairs (index, id) of fixed[k] */
static int32_t *drawn_ids(struct oh_rng *r, int n, int below, const int32_t (*fixed)[2], int k)
{
	int32_t *ids = oh_alloc((size_t)n * sizeof *ids);
	for (int i = 0; i < n; i++)
		ids[i] = oh_rng_below(r, below);
	for (int i = 0; i < k; i++)
		ids[fixed[i][0]] = fixed[i][1];
	return ids;
}

void oh_xent_new(struct oh_rng *r, enum lt_dtype t, struct oh_xent *x)
{
	size_t nl = (size_t)x->N * x->V;
	x->targets = drawn_ids(r, x->N, x->V, x->fixed, x->n_fixed);
	x->z = oh_random_values(r, nl, -4, 4, t);
	x->zd = oh_widened(x->z, nl);
	x->want_loss = oh_doubles((size_t)x->N);
	x->want_grad = oh_doubles(nl);
	oh_ref_xent(x->want_loss, x->want_grad, x->zd, x->targets, x->N, x->V, x->grad_scale);
}

void oh_xent_free(struct oh_xent *x)
{
	free(x->targets); free(x->z); free(x->zd); free(x->want_loss); free(x->want_grad);
}

void oh_embedding_run(struct oh_arrays *a, struct oh_rng *r, enum lt_dtype t,
		      struct oh_embedding *e)
{
	lt_backend *be = a->be;
	size_t NC = (size_t)e->N * e->C, RC = (size_t)e->rows * e->C;
	e->tokens = drawn_ids(r, e->N, e->rows, e->fixed, e->n_fixed);
	e->table = oh_random_values(r, RC, -1, 1, t);
	float *dtable = oh_random_values(r, RC, -1, 1, LT_F32);
	float *dout = oh_random_values(r, NC, -1, 1, t);
	double *table_d = oh_widened(e->table, RC), *dout_d = oh_widened(dout, NC);
	e->want_out = oh_doubles(NC);
	e->want_dtable = oh_widened(dtable, RC);
	oh_ref_embedding_forward(e->want_out, e->tokens, table_d, e->N, e->C);
	oh_ref_embedding_backward(e->want_dtable, e->tokens, dout_d, e->N, e->C);

	e->rtok = oh_ids(a, e->tokens, (size_t)e->N);
	e->rtable = oh_values(a, t, e->table, RC);
	lt_ref rout = oh_array(a, t, NC);
	be->ops->embedding_forward(be, rout, e->rtok, e->rtable, e->N, e->C);
	e->out = oh_read_floats(a, rout, NC);
	lt_ref rdtable = oh_values(a, LT_F32, dtable, RC), rdout = oh_values(a, t, dout, NC);
	be->ops->embedding_backward(be, rdtable, e->rtok, rdout, e->N, e->C);
	e->dtable = oh_read_floats(a, rdtable, RC);
	free(dtable); free(dout); free(table_d); free(dout_d);
}

void oh_embedding_free(struct oh_embedding *e)
{
	free(e->tokens); free(e->table); free(e->out); free(e->dtable);
	free(e->want_out); free(e->want_dtable);
}

/* What a proof's loss reads: x its variable, ids the targets or tokens. */
struct proof {
	int N, V, C;
	double grad_scale;
	const int32_t *ids;
	double *x, *proj, *out;
};

/* grad_scale * the sum of the losses, whose gradient oh_ref_xent writes */
static double xent_loss(void *ctx)
{
	struct proof *p = ctx;
	double s = 0;
	oh_ref_xent(p->out, NULL, p->x, p->ids, p->N, p->V, 0);
	for (int n = 0; n < p->N; n++)
		s += p->out[n];
	return p->grad_scale * s;
}

/* sum(proj * embedding_forward(table)) */
static double embedding_loss(void *ctx)
{
	struct proof *p = ctx;
	double s = 0;
	oh_ref_embedding_forward(p->out, p->ids, p->x, p->N, p->C);
	for (size_t i = 0; i < (size_t)p->N * p->C; i++)
		s += p->proj[i] * p->out[i];
	return s;
}

static float *widened_random(struct oh_rng *r, size_t n, float lo, float hi, double **wide)
{
	float *f = oh_random_values(r, n, lo, hi, LT_F32);
	*wide = oh_widened(f, n);
	return f;
}

int oh_prove_xent(struct oh_rng *r, int V, const char *fmt, ...)
{
	char what[256];
	FORMAT_ARGS(what, fmt);
	const int32_t targets[9] = { 0, 17, -1, V - 1, 42, 42, -100, 3, 88 };
	struct proof p = { .N = 9, .V = V, .grad_scale = 0.3, .ids = targets };
	size_t nl = (size_t)p.N * V;
	float *f = widened_random(r, nl, -4, 4, &p.x);
	double *grad = oh_doubles(nl);
	p.out = oh_doubles(p.N);
	oh_ref_xent(p.out, grad, p.x, targets, p.N, V, p.grad_scale);
	int ok = oh_check_gradient(p.x, grad, nl, xent_loss, &p, "%s", what);
	free(f); free(p.x); free(p.out); free(grad);
	return ok;
}

int oh_prove_embedding(struct oh_rng *r, const int32_t *tokens, const char *fmt, ...)
{
	char what[256];
	FORMAT_ARGS(what, fmt);
	struct proof p = { .N = 9, .C = 7, .ids = tokens };
	size_t nt = 11 * 7, no = 9 * 7;
	float *tf = widened_random(r, nt, -1, 1, &p.x), *pf = widened_random(r, no, -1, 1, &p.proj);
	double *dtable = oh_doubles(nt);
	p.out = oh_doubles(no);
	oh_ref_embedding_backward(dtable, tokens, p.proj, p.N, p.C);
	int ok = oh_check_gradient(p.x, dtable, nt, embedding_loss, &p, "%s", what);
	free(tf); free(pf); free(p.x); free(p.proj); free(p.out); free(dtable);
	return ok;
}

/* ------------------------------------------------------------------ */
/* The run over backends. */

/* Group g on be in mode t, with arrays of its own. */
static const char *run_group(const struct oh_suite *s, lt_backend *be, struct oh_rng *r, int g,
			     enum lt_dtype t)
{
	struct oh_arrays a = { .be = be };
	oh_label(a.name, sizeof a.name, be, t);
	const char *what = s->run(&a, r, g, t);
	oh_arrays_free(&a);
	return what;
}

/* Group g on the CPU (checks muted, reads recorded), then with the same
 * rng on be (its checks, plus one holding every read to the CPU's). */
static void run_beside_cpu(const struct oh_suite *s, lt_backend *be, lt_backend *cpu,
			   struct oh_rng *r, int g, int mode)
{
	static const enum lt_dtype types[2] = { LT_F32, LT_BF16 };
	struct oh_rng saved = *r;
	char name[64];
	double tol = s->twin_tol[mode];
	oh_label(name, sizeof name, be, types[mode]);
	twin.mode = TWIN_RECORD;
	twin.equal_left_out = s->twin_equal_left_out;
	tap_mute(1);
	run_group(s, cpu, r, g, types[mode]);
	tap_mute(0);
	*r = saved;
	twin.mode = TWIN_COMPARE;
	const char *what = run_group(s, be, r, g, types[mode]);
	tap_ok(twin.pos == twin.count && twin.worst <= tol,
	       "%s against the cpu backend, %s: %d of %d %s, worst rel L2 %.3g <= %.3g", name, what,
	       twin.pos, twin.count, s->counted, twin.worst, tol);
	twin_clear();
}

static int is_cpu(const char *spec)
{
	return strcmp(spec, "cpu") == 0;
}

/* Opening the backend, the groups in each mode, and for a backend other
 * than the CPU one more per group run. */
static int checks_for(const struct oh_suite *s, const char *spec)
{
	return 1 + s->checks[0] + s->checks[1] + (is_cpu(spec) ? 0 : s->groups[0] + s->groups[1]);
}

/* checks_for(s, spec) checks. */
static void test_backend(const struct oh_suite *s, const char *spec)
{
	static const enum lt_dtype types[2] = { LT_F32, LT_BF16 };
	lt_backend *be = NULL, *cpu = NULL;
	lt_errmsg_clear();
	enum lt_status st = lt_backend_new(spec, 0, &be);
	if (!tap_ok(st == LT_OK, "backend '%s' opens (%s%s%s)", spec, lt_status_str(st),
		    st == LT_OK ? "" : ": ", st == LT_OK ? "" : lt_errmsg())) {
		lt_backend_free(be);
		for (int i = 1; i < checks_for(s, spec); i++)
			tap_ok(0, "backend '%s' did not open", spec);
		return;
	}
	if (s->opened)
		s->opened(be, spec);
	if (!is_cpu(spec) && lt_backend_new("cpu", 0, &cpu) != LT_OK)
		oh_bail_out("the cpu backend does not open: %s", lt_errmsg());
	struct oh_rng r = { .s = s->seed };
	for (int m = 0; m < 2; m++)
		for (int g = 0; g < s->groups[m]; g++) {
			if (cpu)
				run_beside_cpu(s, be, cpu, &r, g, m);
			else
				run_group(s, be, &r, g, types[m]);
		}
	lt_backend_free(cpu);
	lt_backend_free(be);
}

int oh_main(const struct oh_suite *s)
{
	const char *env = getenv("LT_TEST_BACKENDS"), *specs[MAX_SPECS];
	char *list = NULL;
	int n_specs = 0;
	if (env && *env) {
		list = oh_alloc(strlen(env) + 1);
		memcpy(list, env, strlen(env) + 1);
		for (char *tok = strtok(list, ","); tok && n_specs < MAX_SPECS;
		     tok = strtok(NULL, ","))
			specs[n_specs++] = tok;
	} else {
		for (const char *const *nm = lt_backend_names(); *nm && n_specs < MAX_SPECS; nm++)
			specs[n_specs++] = *nm;
	}
	int plan = s->reference_checks;
	for (int i = 0; i < n_specs; i++)
		plan += checks_for(s, specs[i]);
	tap_plan(plan);
	s->prove();
	for (int i = 0; i < n_specs; i++)
		test_backend(s, specs[i]);
	free(list);
	return tap_done();
}
