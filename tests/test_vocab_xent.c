/* The cross-entropy over slices of the vocabulary (xent_part,
 * xent_part_grad) and the embedding ops' negative tokens, on every
 * backend, in f32 and bf16, against float64 references proven by central
 * differences, and each backend other than the CPU against the CPU. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "tap.h"

#define TOL 1e-5        /* an op against the float64 reference, relative L2 */
#define FD_TOL 1e-6     /* float64 gradient against central differences */
#define FD_EPS 1e-6     /* central-difference step */
#define GUARD 5         /* sentinel elements on each side of every device array */
#define MAX_ARRAYS 32
#define SENTINEL -7777.25f
/* bf16: a result rounded k times to bf16 is off by k 2^-8 (test_ops.c). */
#define BF16_TOL(k) ((k) * 0x1p-8 + TOL)
/* A backend against the CPU: each within its tolerance of the reference. */
#define TWIN_TOL(t) ((t) == LT_BF16 ? 2 * BF16_TOL(1) : 2 * TOL)

/* Odd sizes; the whole vocabulary V_ is split into the slices below. */
enum { N_ = 37, V_ = 101, C_ = 45, TABLE_ROWS = 23 };
enum { SLICES = 4 };
/* Slice r holds columns [v0, v0 + valid) of the vocabulary in rows of
 * width V: uneven, the third padded (31 real of 37), the fourth all
 * padding (valid 0), as a last rank's slice past the vocabulary. */
static const struct slice {
	int v0, V, valid;
} slices[SLICES] = { { 0, 29, 29 }, { 29, 41, 41 }, { 70, 37, 31 }, { 101, 5, 0 } };

/* Checks: the references (2); per backend: opening it (1), then in each
 * mode the groups split (8), one slice against xent (4) and embedding
 * (4), and for a backend other than the CPU, one per group against it. */
#define REFERENCE_CHECKS 2
#define GROUPS 3
#define MODE_CHECKS (8 + 4 + 4)

static _Noreturn void bail_out(const char *fmt, ...)
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

static void *zeroed(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);
	if (!p)
		bail_out("out of host memory (%zu bytes)", bytes);
	return p;
}

/* splitmix64 */
struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static float rng_uniform(struct rng *r, float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(rng_next(r) >> 40) * 0x1p-24);
}

/* n random values in [lo, hi), of type t (rounded to bf16 for LT_BF16) */
static float *random_values(struct rng *r, size_t n, float lo, float hi, enum lt_dtype t)
{
	float *x = zeroed(n * sizeof *x);
	for (size_t i = 0; i < n; i++) {
		x[i] = rng_uniform(r, lo, hi);
		if (t == LT_BF16)
			x[i] = lt_bf16_to_f32(lt_bf16_from_f32(x[i]));
	}
	return x;
}

static double *widened(const float *x, size_t n)
{
	double *y = zeroed(n * sizeof *y);
	for (size_t i = 0; i < n; i++)
		y[i] = x[i];
	return y;
}

static void label(char *dst, size_t cap, lt_backend *be, enum lt_dtype t)
{
	snprintf(dst, cap, "%s%s", be->ops->name, t == LT_BF16 ? " bf16" : "");
}

/* ------------------------------------------------------------------ */
/* Device arrays between sentinels, NaN-filled at first; and the CPU twin:
 * while recording, every download is kept; while comparing, each is held
 * to the kept one at the same place. */

struct arrays {
	lt_backend *be;
	int count;
	lt_buf *buf[MAX_ARRAYS];
	size_t len[MAX_ARRAYS];
};

static struct {
	int mode;  /* TWIN_OFF, TWIN_RECORD or TWIN_COMPARE */
	float *arr[64];
	size_t len[64];
	int count, pos;
	double worst;
} twin;
enum { TWIN_OFF, TWIN_RECORD, TWIN_COMPARE };

static void sentinels(void *s, enum lt_dtype type, int array)
{
	for (int i = 0; i < GUARD; i++) {
		if (type == LT_BF16)
			((uint16_t *)s)[i] = (uint16_t)(lt_bf16_from_f32(SENTINEL) + array);
		else
			((float *)s)[i] = SENTINEL - array;
	}
}

static void write_floats(lt_backend *be, lt_ref dst, const float *host, size_t n)
{
	if (lt_buf_type(dst.buf) != LT_BF16) {
		be->ops->write(be, dst, host, n);
		return;
	}
	uint16_t *h = zeroed(n * sizeof *h);
	for (size_t i = 0; i < n; i++)
		h[i] = lt_bf16_from_f32(host[i]);
	be->ops->write(be, dst, h, n);
	free(h);
}

/* An array of n elements of type, NaN-filled (an i32 array: NaN's bits). */
static lt_ref new_array(struct arrays *a, enum lt_dtype type, size_t n)
{
	lt_buf *b;
	if (a->count == MAX_ARRAYS)
		bail_out("test bug: more than %d arrays", MAX_ARRAYS);
	if (lt_buf_new(a->be, type, n + 2 * GUARD, &b) != LT_OK)
		bail_out("%s: buf_new(%zu): %s", a->be->ops->name, n + 2 * GUARD, lt_errmsg());
	a->buf[a->count] = b;
	a->len[a->count++] = n;
	lt_ref r = { .buf = b, .off = 0 };
	float guard[GUARD], *nans = zeroed(n * sizeof *nans);
	for (size_t i = 0; i < n; i++)
		nans[i] = NAN;
	sentinels(guard, type, a->count - 1);
	a->be->ops->write(a->be, r, guard, GUARD);
	if (type == LT_I32)
		a->be->ops->write(a->be, lt_ref_at(r, GUARD), nans, n);
	else
		write_floats(a->be, lt_ref_at(r, GUARD), nans, n);
	a->be->ops->write(a->be, lt_ref_at(r, GUARD + n), guard, GUARD);
	free(nans);
	return lt_ref_at(r, GUARD);
}

static lt_ref values(struct arrays *a, enum lt_dtype t, const float *host, size_t n)
{
	lt_ref r = new_array(a, t, n);
	write_floats(a->be, r, host, n);
	return r;
}

static lt_ref ids(struct arrays *a, const int32_t *host, size_t n)
{
	lt_ref r = new_array(a, LT_I32, n);
	a->be->ops->write(a->be, r, host, n);
	return r;
}

/* Equal values (infinities included) differ by 0; NaN against non-NaN,
 * or unequal infinities, infinitely. */
static double rel_l2_to_cpu(const float *got, const float *cpu, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		if (got[i] == cpu[i] || (isnan(got[i]) && isnan(cpu[i])))
			continue;
		if (!isfinite(got[i]) || !isfinite(cpu[i]))
			return INFINITY;
		double d = (double)got[i] - cpu[i];
		num += d * d;
		den += (double)cpu[i] * cpu[i];
	}
	return num == 0 ? 0 : sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

static void twin_see(const float *x, size_t n)
{
	if (twin.mode == TWIN_RECORD) {
		if (twin.count == 64)
			bail_out("test bug: more than 64 downloads in a group");
		twin.arr[twin.count] = zeroed(n * sizeof(float));
		memcpy(twin.arr[twin.count], x, n * sizeof(float));
		twin.len[twin.count++] = n;
	} else if (twin.mode == TWIN_COMPARE) {
		double e = twin.pos < twin.count && twin.len[twin.pos] == n
			? rel_l2_to_cpu(x, twin.arr[twin.pos], n) : INFINITY;
		twin.worst = tap_worst(twin.worst, e);
		twin.pos++;
	}
}

static float *downloaded(struct arrays *a, lt_ref src, size_t n)
{
	float *x = zeroed(n * sizeof *x);
	if (lt_buf_type(src.buf) == LT_BF16) {
		uint16_t *h = zeroed(n * sizeof *h);
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

/* One check: sync is ok and every sentinel intact; then frees the arrays. */
static void check_sync_and_guards_then_free(struct arrays *a, const char *name, const char *group)
{
	enum lt_status st = a->be->ops->sync(a->be);
	int intact = 1;
	for (int i = 0; i < a->count; i++) {
		lt_ref r = { .buf = a->buf[i], .off = 0 };
		enum lt_dtype type = lt_buf_type(a->buf[i]);
		float got[GUARD], want[GUARD];
		sentinels(want, type, i);
		a->be->ops->read(a->be, got, r, GUARD);
		intact &= !memcmp(got, want, GUARD * lt_dtype_size(type));
		a->be->ops->read(a->be, got, lt_ref_at(r, GUARD + a->len[i]), GUARD);
		intact &= !memcmp(got, want, GUARD * lt_dtype_size(type));
	}
	tap_ok(st == LT_OK && intact, "%s %s: sync ok (%s), sentinels around every array intact",
	       name, group, st == LT_OK ? "ok" : lt_errmsg());
	for (int i = 0; i < a->count; i++)
		lt_buf_free(a->be, a->buf[i]);
	a->count = 0;
}

static int check_close(double tol, const float *got, const double *want, size_t n,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int check_close(double tol, const float *got, const double *want, size_t n,
		       const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	double e = tap_rel_l2_f(got, want, (long)n);
	return tap_ok(e <= tol, "%s: rel L2 %.3g <= %.3g", what, e, tol);
}

/* ------------------------------------------------------------------ */
/* float64 references. */

/* losses[N] = logsumexp(logits[n,:]) - logits[n, t] over the whole
 * vocabulary z[N,V] (0 for t < 0); grad[N,V] (if not NULL) =
 * grad_scale (softmax - onehot), a zero row for t < 0. */
static void reference_xent(double *losses, double *grad, const double *z, const int32_t *targets,
			   int N, int V, double grad_scale)
{
	for (int n = 0; n < N; n++) {
		const double *x = z + (size_t)n * V;
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

/* part[N,3] of the whole vocabulary's z[N,V] over columns [v0, v0 + valid)
 * as xent_part defines it. */
static void reference_part(double *part, const double *z, const int32_t *targets, int N, int V,
			   const struct slice *s)
{
	for (int n = 0; n < N; n++) {
		const double *x = z + (size_t)n * V + s->v0;
		double mx = -INFINITY, sum = 0;
		for (int c = 0; c < s->valid; c++)
			mx = fmax(mx, x[c]);
		for (int c = 0; c < s->valid; c++)
			sum += exp(x[c] - mx);
		int t = targets[n] - s->v0;
		part[3 * n] = mx;
		part[3 * n + 1] = sum;
		part[3 * n + 2] = targets[n] >= 0 && t >= 0 && t < s->valid ? x[t] : 0;
	}
}

/* out[N,C] = table[tokens[n], :], zeros for tokens[n] < 0 */
static void reference_embedding_forward(double *out, const int32_t *tokens, const double *table,
					int N, int C)
{
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			out[(size_t)n * C + c] = tokens[n] < 0 ? 0 : table[(size_t)tokens[n] * C + c];
}

/* dtable[., C] += dout[n, :] at row tokens[n], for each tokens[n] >= 0 */
static void reference_embedding_backward(double *dtable, const int32_t *tokens, const double *dout,
					 int N, int C)
{
	for (int n = 0; n < N; n++)
		for (int c = 0; tokens[n] >= 0 && c < C; c++)
			dtable[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
}

/* A reference's gradient of L(x) (x read through ctx) against
 * (L(x + eps e_i) - L(x - eps e_i)) / 2 eps: one check. */
typedef double loss_fn(void *ctx);

static void check_by_central_differences(double *x, const double *analytic, size_t n,
					 loss_fn *loss, void *ctx, const char *what)
{
	double *numeric = zeroed(n * sizeof *numeric);
	for (size_t i = 0; i < n; i++) {
		double keep = x[i];
		x[i] = keep + FD_EPS;
		double up = loss(ctx);
		x[i] = keep - FD_EPS;
		double down = loss(ctx);
		x[i] = keep;
		numeric[i] = (up - down) / (2 * FD_EPS);
	}
	double e = tap_rel_l2_d(analytic, numeric, (long)n);
	tap_ok(e <= FD_TOL, "reference %s vs central differences (eps %.0e): rel L2 %.3g <= %.3g",
	       what, FD_EPS, e, FD_TOL);
	free(numeric);
}

struct problem {
	int N, V, C;
	double grad_scale;
	const int32_t *ids;
	double *x, *proj, *out;
};

/* grad_scale * sum of the losses, whose gradient reference_xent writes */
static double xent_loss(void *ctx)
{
	struct problem *p = ctx;
	double s = 0;
	reference_xent(p->out, NULL, p->x, p->ids, p->N, p->V, 0);
	for (int n = 0; n < p->N; n++)
		s += p->out[n];
	return p->grad_scale * s;
}

/* sum(proj * embedding_forward(table)), whose gradient in the table is
 * embedding_backward of proj */
static double embedding_loss(void *ctx)
{
	struct problem *p = ctx;
	double s = 0;
	reference_embedding_forward(p->out, p->ids, p->x, p->N, p->C);
	for (size_t i = 0; i < (size_t)p->N * p->C; i++)
		s += p->proj[i] * p->out[i];
	return s;
}

/* 2 checks */
static void prove_references(struct rng *r)
{
	int32_t targets[9] = { 0, 17, -1, 100, 42, 42, -100, 3, 88 };
	struct problem p = { .N = 9, .V = V_, .grad_scale = 0.3, .ids = targets };
	size_t nl = (size_t)p.N * p.V;
	float *xf = random_values(r, nl, -4, 4, LT_F32);
	p.x = widened(xf, nl);
	p.out = zeroed(p.N * sizeof(double));
	double *grad = zeroed(nl * sizeof *grad);
	reference_xent(p.out, grad, p.x, targets, p.N, p.V, p.grad_scale);
	check_by_central_differences(p.x, grad, nl, xent_loss, &p,
				     "xent gradient N=9 V=101 (ignored targets)");
	free(xf); free(p.x); free(p.out); free(grad);

	int32_t tokens[9] = { 3, -1, 3, 10, 5, -7, 0, 7, 10 };
	struct problem e = { .N = 9, .C = 7, .ids = tokens };
	size_t nt = 11 * 7, no = 9 * 7;
	float *tf = random_values(r, nt, -1, 1, LT_F32), *pf = random_values(r, no, -1, 1, LT_F32);
	e.x = widened(tf, nt);
	e.proj = widened(pf, no);
	e.out = zeroed(no * sizeof(double));
	double *dtable = zeroed(nt * sizeof *dtable);
	reference_embedding_backward(dtable, tokens, e.proj, e.N, e.C);
	check_by_central_differences(e.x, dtable, nt, embedding_loss, &e,
				     "embedding_backward N=9 C=7 rows=11 (repeated and negative tokens)");
	free(tf); free(pf); free(e.x); free(e.proj); free(e.out); free(dtable);
}

/* ------------------------------------------------------------------ */
/* The backend's ops against the references. */

/* Targets over the whole vocabulary: random, with each slice's edges and
 * two ignored ones. */
static void make_targets(struct rng *r, int32_t *targets, int N, int V)
{
	for (int n = 0; n < N; n++)
		targets[n] = (int32_t)(rng_next(r) % (uint64_t)V);
	const int32_t fixed[] = { 0, V - 1, 28, 29, -1, 69, 70, -100, 100 };
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && (int)i < N; i++)
		targets[3 * i] = fixed[i];
}

/* The slice s of the whole z[N,V_] as its rank holds it: rows of width
 * s->V, the padding columns NaN or 80 (either would show if read). */
static float *slice_of(const float *z, int N, const struct slice *s)
{
	float *h = zeroed((size_t)N * s->V * sizeof *h);
	for (int n = 0; n < N; n++)
		for (int c = 0; c < s->V; c++)
			h[(size_t)n * s->V + c] = c < s->valid ? z[(size_t)n * V_ + s->v0 + c]
							       : c % 2 ? NAN : 80.0f;
	return h;
}

/* The host's half between the two ops, as a model does it: lse[n] from
 * the parts of `count` slices, loss[n] = lse - the target's logit (0 when
 * ignored). */
static void combine(float *lse, float *loss, float *const *part, int count,
		    const int32_t *targets, int N)
{
	for (int n = 0; n < N; n++) {
		float gmax = -INFINITY;
		for (int s = 0; s < count; s++)
			gmax = part[s][3 * n] > gmax ? part[s][3 * n] : gmax;
		double sum = 0, zt = 0;
		for (int s = 0; s < count; s++) {
			if (part[s][3 * n + 1] > 0)
				sum += part[s][3 * n + 1] * exp((double)part[s][3 * n] - gmax);
			zt += part[s][3 * n + 2];
		}
		lse[n] = (float)(gmax + log(sum));
		loss[n] = targets[n] < 0 ? 0.0f : (float)((double)lse[n] - zt);
	}
}

/* Each slice's parts against the reference (the valid-0 one exactly),
 * the combined losses, the gradient of the real columns concatenated,
 * exact zeros where there must be, sync and sentinels: 8 checks. */
static const char *test_split(lt_backend *be, struct rng *r, enum lt_dtype t)
{
	char name[64];
	struct arrays a = { .be = be };
	label(name, sizeof name, be, t);
	const int N = N_, V = V_;
	const float grad_scale = 1.0f / N_;
	size_t nl = (size_t)N * V;
	int32_t targets[N_];
	make_targets(r, targets, N, V);
	float *z = random_values(r, nl, -4, 4, t), *part[SLICES], *got_grad = zeroed(nl * 4);
	double *zd = widened(z, nl), *want_loss = zeroed(N * 8), *want_grad = zeroed(nl * 8);
	double *want_part = zeroed(3 * N * 8);
	reference_xent(want_loss, want_grad, zd, targets, N, V, grad_scale);
	lt_ref rt = ids(&a, targets, N), rz[SLICES];

	for (int s = 0; s < SLICES; s++) {
		const struct slice *sl = &slices[s];
		float *h = slice_of(z, N, sl);
		rz[s] = values(&a, t, h, (size_t)N * sl->V);
		lt_ref rp = new_array(&a, LT_F32, 3 * (size_t)N);
		be->ops->xent_part(be, rp, rz[s], rt, N, sl->V, sl->valid, sl->v0);
		part[s] = downloaded(&a, rp, 3 * (size_t)N);
		free(h);
		if (sl->valid) {
			reference_part(want_part, zd, targets, N, V, sl);
			check_close(TOL, part[s], want_part, 3 * (size_t)N,
				    "%s xent_part slice [%d, %d) in rows of %d (%d padding): max, sum "
				    "of exponentials, target logit", name, sl->v0, sl->v0 + sl->valid,
				    sl->V, sl->V - sl->valid);
			continue;
		}
		int exact = 1;
		for (int n = 0; n < N; n++)
			exact &= part[s][3 * n] == -INFINITY && part[s][3 * n + 1] == 0.0f &&
				 part[s][3 * n + 2] == 0.0f;
		tap_ok(exact, "%s xent_part with valid = 0 (v0=%d, V=%d): (-inf, 0, 0) in every row",
		       name, sl->v0, sl->V);
	}

	float lse[N_], loss[N_];
	combine(lse, loss, part, SLICES, targets, N);
	check_close(TOL, loss, want_loss, (size_t)N, "%s losses combined from %d slices' parts", name,
		    SLICES);

	lt_ref rl = values(&a, LT_F32, lse, (size_t)N);
	int zeros = 1;
	for (int s = 0; s < SLICES; s++) {
		const struct slice *sl = &slices[s];
		be->ops->xent_part_grad(be, rz[s], rl, rt, N, sl->V, sl->valid, sl->v0, grad_scale);
		float *g = downloaded(&a, rz[s], (size_t)N * sl->V);
		for (int n = 0; n < N; n++)
			for (int c = 0; c < sl->V; c++) {
				float v = g[(size_t)n * sl->V + c];
				if (c < sl->valid)
					got_grad[(size_t)n * V + sl->v0 + c] = v;
				if (c >= sl->valid || targets[n] < 0)
					zeros &= v == 0.0f;
			}
		free(g);
	}
	check_close(t == LT_BF16 ? BF16_TOL(1) : TOL, got_grad, want_grad, nl,
		    "%s xent_part_grad of %d slices, real columns concatenated, grad_scale=1/%d",
		    name, SLICES, N);
	tap_ok(zeros, "%s xent_part_grad: padding columns, the valid-0 slice and ignored rows "
	       "exactly 0", name);
	check_sync_and_guards_then_free(&a, name, "xent_part over slices");
	for (int s = 0; s < SLICES; s++)
		free(part[s]);
	free(z); free(got_grad); free(zd); free(want_loss); free(want_grad); free(want_part);
	return "xent_part and xent_part_grad over 4 slices";
}

/* One slice of the whole vocabulary (v0 0, valid V) against xent: losses,
 * gradient, max and target logit exactly the row's, sync: 4 checks. */
static const char *test_one_slice(lt_backend *be, struct rng *r, enum lt_dtype t)
{
	char name[64];
	struct arrays a = { .be = be };
	label(name, sizeof name, be, t);
	const int N = N_, V = V_;
	const float grad_scale = 0.7f / N_;
	size_t nl = (size_t)N * V;
	int32_t targets[N_];
	make_targets(r, targets, N, V);
	float *z = random_values(r, nl, -4, 4, t);
	lt_ref rt = ids(&a, targets, N), rz = values(&a, t, z, nl), rx = values(&a, t, z, nl);
	lt_ref rp = new_array(&a, LT_F32, 3 * (size_t)N), rxl = new_array(&a, LT_F32, (size_t)N);
	be->ops->xent_part(be, rp, rz, rt, N, V, V, 0);
	be->ops->xent(be, rxl, rx, rt, N, V, grad_scale);
	float *part = downloaded(&a, rp, 3 * (size_t)N), *xl = downloaded(&a, rxl, (size_t)N);
	float *xg = downloaded(&a, rx, nl), lse[N_], loss[N_];
	combine(lse, loss, &part, 1, targets, N);
	lt_ref rl = values(&a, LT_F32, lse, (size_t)N);
	be->ops->xent_part_grad(be, rz, rl, rt, N, V, V, 0, grad_scale);
	float *g = downloaded(&a, rz, nl);

	double *xld = widened(xl, (size_t)N), *xgd = widened(xg, nl);
	check_close(TOL, loss, xld, (size_t)N, "%s one slice: combined losses against xent's", name);
	check_close(t == LT_BF16 ? BF16_TOL(1) : TOL, g, xgd, nl,
		    "%s one slice: xent_part_grad against xent's gradient", name);
	int exact = 1;
	for (int n = 0; n < N; n++) {
		float mx = -INFINITY;
		for (int v = 0; v < V; v++)
			mx = z[(size_t)n * V + v] > mx ? z[(size_t)n * V + v] : mx;
		exact &= part[3 * n] == mx;
		exact &= part[3 * n + 2] == (targets[n] < 0 ? 0.0f : z[(size_t)n * V + targets[n]]);
	}
	tap_ok(exact, "%s one slice: part's max and target logit are the row's, bitwise", name);
	check_sync_and_guards_then_free(&a, name, "xent_part against xent");
	free(z); free(part); free(xl); free(xg); free(g); free(xld); free(xgd);
	return "one slice against xent";
}

/* embedding_forward and _backward with negative tokens: forward against
 * the reference, its rows bitwise (the table's, or zeros), backward into a
 * non-zero table, sync: 4 checks. */
static const char *test_embedding(lt_backend *be, struct rng *r, enum lt_dtype t)
{
	char name[64];
	struct arrays a = { .be = be };
	label(name, sizeof name, be, t);
	const int N = N_, C = C_, R = TABLE_ROWS;
	size_t NC = (size_t)N * C, RC = (size_t)R * C;
	int32_t tokens[N_];
	for (int n = 0; n < N; n++)
		tokens[n] = (int32_t)(rng_next(r) % (uint64_t)R);
	tokens[0] = -1;
	tokens[5] = tokens[6] = -2;
	tokens[17] = INT32_MIN;
	tokens[N - 1] = -1000000;
	tokens[3] = tokens[11] = tokens[29] = 7;  /* repeats, near and far */
	tokens[12] = 0;
	tokens[13] = R - 1;
	float *table = random_values(r, RC, -1, 1, t), *dtable = random_values(r, RC, -1, 1, LT_F32);
	float *dout = random_values(r, NC, -1, 1, t);
	double *tabd = widened(table, RC), *want_out = zeroed(NC * 8);
	double *want_dt = widened(dtable, RC), *doutd = widened(dout, NC);
	reference_embedding_forward(want_out, tokens, tabd, N, C);
	reference_embedding_backward(want_dt, tokens, doutd, N, C);

	lt_ref rtok = ids(&a, tokens, N), rtab = values(&a, t, table, RC);
	lt_ref rout = new_array(&a, t, NC);
	be->ops->embedding_forward(be, rout, rtok, rtab, N, C);
	float *got = downloaded(&a, rout, NC);
	check_close(TOL, got, want_out, NC, "%s embedding_forward with 5 negative tokens N=%d C=%d",
		    name, N, C);
	int exact = 1;
	for (int n = 0; n < N; n++)
		for (int c = 0; c < C; c++)
			exact &= got[(size_t)n * C + c] ==
				 (tokens[n] < 0 ? 0.0f : table[(size_t)tokens[n] * C + c]);
	tap_ok(exact, "%s embedding_forward: zero rows for negative tokens, the table's rows "
	       "bitwise for the others", name);
	free(got);

	lt_ref rdt = values(&a, LT_F32, dtable, RC), rdout = values(&a, t, dout, NC);
	be->ops->embedding_backward(be, rdt, rtok, rdout, N, C);
	got = downloaded(&a, rdt, RC);
	check_close(TOL, got, want_dt, RC, "%s embedding_backward += skipping 5 negative tokens "
		    "(repeated tokens, non-zero start) N=%d C=%d rows=%d", name, N, C, R);
	free(got);
	check_sync_and_guards_then_free(&a, name, "embedding with negative tokens");
	free(table); free(dtable); free(dout); free(tabd); free(want_out); free(want_dt); free(doutd);
	return "embedding with negative tokens";
}

typedef const char *group_fn(lt_backend *be, struct rng *r, enum lt_dtype t);
static group_fn *const groups[GROUPS] = { test_split, test_one_slice, test_embedding };

/* Group g on be after the CPU with the same inputs (its checks muted),
 * then one more check: every download within TWIN_TOL of the CPU's. */
static void run_beside_cpu(lt_backend *be, lt_backend *cpu, struct rng *r, int g,
			   enum lt_dtype t)
{
	struct rng saved = *r;
	char name[64];
	label(name, sizeof name, be, t);
	twin.mode = TWIN_RECORD;
	tap_mute(1);
	groups[g](cpu, r, t);
	tap_mute(0);
	*r = saved;
	twin.mode = TWIN_COMPARE;
	const char *what = groups[g](be, r, t);
	tap_ok(twin.pos == twin.count && twin.worst <= TWIN_TOL(t),
	       "%s against the cpu backend, %s: %d of %d downloads, worst rel L2 %.3g <= %.3g",
	       name, what, twin.pos, twin.count, twin.worst, TWIN_TOL(t));
	for (int i = 0; i < twin.count; i++)
		free(twin.arr[i]);
	memset(&twin, 0, sizeof twin);
}

static int checks_for(const char *spec)
{
	return 1 + 2 * MODE_CHECKS + (strcmp(spec, "cpu") ? 2 * GROUPS : 0);
}

static void test_backend(const char *spec)
{
	lt_backend *be = NULL, *cpu = NULL;
	lt_errmsg_clear();
	enum lt_status st = lt_backend_new(spec, 0, &be);
	if (!tap_ok(st == LT_OK, "backend '%s' opens (%s%s%s)", spec, lt_status_str(st),
		    st == LT_OK ? "" : ": ", st == LT_OK ? "" : lt_errmsg())) {
		for (int i = 1; i < checks_for(spec); i++)
			tap_ok(0, "backend '%s' did not open", spec);
		return;
	}
	if (strcmp(spec, "cpu") && lt_backend_new("cpu", 0, &cpu) != LT_OK)
		bail_out("the cpu backend does not open: %s", lt_errmsg());
	struct rng r = { .s = 424242 };
	static const enum lt_dtype modes[2] = { LT_F32, LT_BF16 };
	for (int m = 0; m < 2; m++)
		for (int g = 0; g < GROUPS; g++) {
			if (cpu)
				run_beside_cpu(be, cpu, &r, g, modes[m]);
			else
				groups[g](be, &r, modes[m]);
		}
	lt_backend_free(cpu);
	lt_backend_free(be);
}

int main(void)
{
	/* LT_TEST_BACKENDS="cpu,opencl:0.1" tests those specs; otherwise every
	 * compiled-in backend. */
	const char *env = getenv("LT_TEST_BACKENDS"), *specs[64];
	char *list = NULL;
	int n_specs = 0;
	if (env && *env) {
		list = zeroed(strlen(env) + 1);
		memcpy(list, env, strlen(env) + 1);
		for (char *tok = strtok(list, ","); tok && n_specs < 64; tok = strtok(NULL, ","))
			specs[n_specs++] = tok;
	} else {
		for (const char *const *nm = lt_backend_names(); *nm && n_specs < 64; nm++)
			specs[n_specs++] = *nm;
	}
	int plan = REFERENCE_CHECKS;
	for (int i = 0; i < n_specs; i++)
		plan += checks_for(specs[i]);
	tap_plan(plan);
	struct rng r = { .s = 20240607 };
	prove_references(&r);
	for (int i = 0; i < n_specs; i++)
		test_backend(specs[i]);
	free(list);
	return tap_done();
}
