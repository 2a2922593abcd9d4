/* Tests of the model's pipeline stages: stage models drawn by lt_model_init
 * hold the whole model's tensors bitwise, a chain of stages fed micro-batch
 * by micro-batch gives the whole model's losses and gradients bitwise (in
 * fp32 and bf16, with and without recompute, in fill-drain and 1F1B order),
 * the gradient hook's ranges on stages, lt_model_pp_check's refusals, and
 * the chain on OpenCL against the CPU. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "tap.h"

#define LT_DIM 32

/* 4 layers, untied: stages refuse a tied embedding */
static const struct lt_model_config lt_tiny = {
	.vocab_size = 96, .dim = LT_DIM, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 80, .max_seq = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

#define LT_SEED 11
#define LT_B 2
#define LT_T 16
#define LT_N (LT_B * LT_T)
#define LT_M 3          /* micro-batches */
#define LT_MAX_STAGES 4

/* How a split cuts the 4 layers: layers[s] for each of n stages. */
struct lt_split {
	int n;
	int layers[LT_MAX_STAGES];
};
static const struct lt_split lt_splits[] = {
	{ 2, { 2, 2 } },
	{ 2, { 1, 3 } },
	{ 3, { 2, 1, 1 } },
};
#define LT_N_SPLITS ((int)(sizeof lt_splits / sizeof lt_splits[0]))

/* The order each stage runs its micro-batches' forwards and backwards in. */
enum lt_order { LT_FILL_DRAIN, LT_ONE_F_ONE_B };
#define LT_N_ORDERS 2

/* What a run's settings are: recompute and precision. */
struct lt_variant {
	enum lt_recompute recompute;
	enum lt_precision precision;
	const char *name;
};
static const struct lt_variant lt_variants[] = {
	{ LT_RECOMPUTE_NONE, LT_PRECISION_FP32, "fp32" },
	{ LT_RECOMPUTE_BLOCK, LT_PRECISION_FP32, "fp32, recompute = block" },
	{ LT_RECOMPUTE_NONE, LT_PRECISION_BF16, "bf16" },
	{ LT_RECOMPUTE_BLOCK, LT_PRECISION_BF16, "bf16, recompute = block" },
};
#define LT_N_VARIANTS ((int)(sizeof lt_variants / sizeof lt_variants[0]))

/* The micro-batches: tokens[M][N] and targets[M][N] (some ignored). */
static int32_t lt_tok[LT_M][LT_N], lt_tgt[LT_M][LT_N];

static void make_batches(void)
{
	int V = lt_tiny.vocab_size;
	for (int k = 0; k < LT_M; k++)
		for (int i = 0; i < LT_N; i++) {
			lt_tok[k][i] = (int32_t)((i * 37 + k * 53 + 5) % V);
			lt_tgt[k][i] = (int32_t)((i * 61 + k * 29 + 17) % V);
		}
	/* micro-batch 1 predicts fewer targets */
	lt_tgt[1][3] = lt_tgt[1][20] = lt_tgt[1][31] = -1;
}

static void split_name(const struct lt_split *sp, char *buf, size_t n)
{
	size_t at = 0;
	for (int s = 0; s < sp->n && at < n; s++)
		at += (size_t)snprintf(buf + at, n - at, "%s%d", s ? "+" : "", sp->layers[s]);
}

/* A model's flat parameters or gradients r[n], read to the host
 * (malloc'd; NULL on failure). */
static float *read_flat(lt_model *m, lt_ref r, size_t n)
{
	lt_backend *be = lt_model_backend(m);
	float *x = malloc(n * sizeof *x);
	if (!x)
		return NULL;
	be->ops->read(be, x, r, n);
	if (be->ops->sync(be) != LT_OK) {
		free(x);
		return NULL;
	}
	return x;
}

/* ------------------------------------------------------------- stages */

/* A chain of stage models for a split (all NULL until made). */
struct lt_chain {
	int n;
	lt_model *st[LT_MAX_STAGES];
};

static void chain_free(struct lt_chain *ch)
{
	for (int s = 0; s < ch->n; s++)
		lt_model_free(ch->st[s]);
	memset(ch, 0, sizeof *ch);
}

/* Makes the split's stages on be, with sets activation sets (0: leave the
 * default), the variant's settings and the seed's weights, planned for
 * (B, T) when plan is set. */
static enum lt_status chain_new(lt_backend *be, const struct lt_split *sp,
				const struct lt_variant *v, int sets, int plan,
				struct lt_chain *ch)
{
	enum lt_status st = LT_OK;
	memset(ch, 0, sizeof *ch);
	ch->n = sp->n;
	int layer0 = 0;
	for (int s = 0; s < sp->n && st == LT_OK; s++) {
		struct lt_stage stage = { layer0, sp->layers[s] };
		layer0 += sp->layers[s];
		if ((st = lt_model_new_stage(be, &lt_tiny, &stage, &ch->st[s])) != LT_OK)
			break;
		lt_model *m = ch->st[s];
		if (sets > 0 && (st = lt_model_set_act_sets(m, sets)) != LT_OK)
			break;
		if (v) {
			lt_model_set_recompute(m, v->recompute);
			if ((st = lt_model_set_precision(m, v->precision)) != LT_OK)
				break;
		}
		if ((st = lt_model_init(m, LT_SEED)) != LT_OK)
			break;
		if (plan && (st = lt_model_plan(m, LT_B, LT_T)) != LT_OK)
			break;
		lt_model_zero_grads(m);
	}
	return st;
}

/* The stage that holds layer l under a split. */
static int stage_of_layer(const struct lt_split *sp, int l)
{
	for (int s = 0, l0 = 0; s < sp->n; l0 += sp->layers[s++])
		if (l < l0 + sp->layers[s])
			return s;
	return -1;
}

/* Check 1 for a split: every stage tensor is named and placed as the
 * whole model's, each whole tensor lies on exactly one stage (the one
 * whose layers hold it; the embedding on the first, the norm and the head
 * on the last), and the stages' drawn values equal the whole's bitwise. */
static void check_init(lt_backend *be, const struct lt_split *sp, const lt_model *whole,
		       const float *wparams)
{
	char sname[32];
	split_name(sp, sname, sizeof sname);
	struct lt_chain ch;
	enum lt_status st = chain_new(be, sp, NULL, 0, 0, &ch);
	int nw = lt_model_num_tensors(whole);
	int *owner = malloc((size_t)nw * sizeof *owner);
	int tables_ok = st == LT_OK && owner, flags_ok = 1, placed_ok = 1;
	size_t differ = 0, compared = 0;
	const char *bad = "";
	for (int i = 0; owner && i < nw; i++)
		owner[i] = -1;
	for (int s = 0; tables_ok && s < ch.n; s++) {
		lt_model *m = ch.st[s];
		const lt_model *mw = lt_model_stage_whole(m);
		flags_ok &= lt_model_stage_first(m) == (s == 0) &&
			    lt_model_stage_last(m) == (s == ch.n - 1) &&
			    lt_model_num_tensors(mw) == nw;
		float *p = read_flat(m, lt_model_params(m), lt_model_num_params(m));
		if (!p) {
			tables_ok = 0;
			break;
		}
		for (int i = 0; i < lt_model_num_tensors(m); i++) {
			const struct lt_tensor *t = lt_model_tensor(m, i);
			int w = lt_model_stage_index(m, i);
			const struct lt_tensor *tw = lt_model_tensor(whole, w);
			/* the stage's map agrees with the real whole model's table */
			if (!tw || strcmp(tw->name, t->name) || tw->numel != t->numel ||
			    strcmp(lt_model_tensor(mw, w)->name, t->name) ||
			    lt_model_tensor(mw, w)->off != tw->off || owner[w] != -1) {
				tables_ok = 0;
				bad = t->name;
				break;
			}
			owner[w] = s;
			differ += (size_t)(memcmp(p + t->off, wparams + tw->off,
						  t->numel * sizeof *p) != 0);
			compared++;
		}
		free(p);
	}
	/* where each whole tensor landed */
	for (int i = 0; tables_ok && i < nw; i++) {
		const char *name = lt_model_tensor(whole, i)->name;
		int l, want;
		if (sscanf(name, "model.layers.%d.", &l) == 1)
			want = stage_of_layer(sp, l);
		else if (!strcmp(name, "model.embed_tokens.weight"))
			want = 0;
		else
			want = sp->n - 1;  /* model.norm.weight, lm_head.weight */
		if (owner[i] != want && placed_ok) {
			placed_ok = 0;
			bad = name;
		}
	}
	/* the brief's example, by name through lt_model_find */
	const char *probe = "model.layers.2.mlp.down_proj.weight";
	int probe_on = -1;
	for (int s = 0; tables_ok && s < ch.n; s++)
		if (lt_model_find(ch.st[s], probe))
			probe_on = probe_on == -1 ? s : -2;
	tap_ok(tables_ok && flags_ok && placed_ok && probe_on == stage_of_layer(sp, 2),
	       "split %s: the stages' %d tensors carry the whole model's names and sizes, each on the "
	       "stage that holds its layer (embedding first, norm and head last; %s on stage %d); "
	       "first/last flags right%s%s%s%s", sname, nw, probe, probe_on,
	       st == LT_OK ? "" : ": ", st == LT_OK ? "" : lt_errmsg(), *bad ? "; wrong: " : "", bad);
	tap_ok(tables_ok && compared == (size_t)nw && differ == 0,
	       "split %s: lt_model_init(%d) draws every stage tensor as the whole model's, bitwise "
	       "(%zu of %zu compared differ)", sname, LT_SEED, differ, compared);
	free(owner);
	chain_free(&ch);
}

/* ------------------------------------------------ the whole model's run */

/* A reference run's results: each micro-batch's loss and targets, their
 * sum, and the final gradients (whole model's flat layout). */
struct lt_ref_run {
	double loss[LT_M], loss_sum;
	long n[LT_M], n_sum;
	float *grads;  /* [numel of the whole model] */
	size_t numel;
};

static float grad_scale(void)
{
	return 1.0f / (float)(LT_M * LT_N);
}

/* The whole model on be with the variant's settings: zero grads, then
 * forward + backward of each micro-batch in turn. */
static enum lt_status whole_run(lt_backend *be, const struct lt_variant *v, struct lt_ref_run *r)
{
	lt_model *m = NULL;
	memset(r, 0, sizeof *r);
	enum lt_status st = lt_model_new(be, &lt_tiny, &m);
	if (st == LT_OK) {
		lt_model_set_recompute(m, v->recompute);
		st = lt_model_set_precision(m, v->precision);
	}
	if (st == LT_OK && (st = lt_model_init(m, LT_SEED)) == LT_OK)
		st = lt_model_plan(m, LT_B, LT_T);
	if (st == LT_OK)
		lt_model_zero_grads(m);
	for (int k = 0; k < LT_M && st == LT_OK; k++) {
		st = lt_model_forward(m, lt_tok[k], lt_tgt[k], grad_scale(), &r->loss[k], &r->n[k]);
		if (st == LT_OK)
			st = lt_model_backward(m);
		r->loss_sum += r->loss[k];
		r->n_sum += r->n[k];
	}
	if (st == LT_OK) {
		r->numel = lt_model_num_params(m);
		if (!(r->grads = read_flat(m, lt_model_grads(m), r->numel)))
			st = LT_ERR_NOMEM;
	}
	lt_model_free(m);
	return st;
}

/* --------------------------------------------------- the chain's run */

/* The per-stage op list of an order: op > 0 is micro-batch op-1's
 * forward, op < 0 micro-batch -op-1's backward; 2 M ops. */
static void stage_ops(enum lt_order order, int s, int n_stages, int *ops)
{
	int at = 0, f = 0, b = 0;
	if (order == LT_FILL_DRAIN) {
		for (int k = 0; k < LT_M; k++)
			ops[at++] = k + 1;
		for (int k = 0; k < LT_M; k++)
			ops[at++] = -(k + 1);
		return;
	}
	/* 1F1B: n - s - 1 forwards to warm up, then a forward and a backward
	 * in turn, then the backwards left */
	int warm = n_stages - s - 1 < LT_M ? n_stages - s - 1 : LT_M;
	while (f < warm)
		ops[at++] = ++f;
	while (f < LT_M) {
		ops[at++] = ++f;
		ops[at++] = -(++b);
	}
	while (b < LT_M)
		ops[at++] = -(++b);
}

/* What crosses between stages: out[s][k] stage s's output of micro-batch
 * k, gin[s][k] its input's gradient (host floats [N, dim]), with flags. */
struct lt_wires {
	float out[LT_MAX_STAGES][LT_M][LT_N * LT_DIM];
	float gin[LT_MAX_STAGES][LT_M][LT_N * LT_DIM];
	int have_out[LT_MAX_STAGES][LT_M], have_gin[LT_MAX_STAGES][LT_M];
	float scratch[LT_N * LT_DIM];
};

/* Runs op on stage s if its inputs are there: 1 run (or failed, *st
 * saying so), 0 not yet. */
static int run_op(struct lt_chain *ch, int s, int op, struct lt_wires *w, struct lt_ref_run *r,
		  enum lt_status *st_out)
{
	lt_model *m = ch->st[s];
	size_t n = (size_t)LT_N * lt_tiny.dim;
	int last = s == ch->n - 1, k = op > 0 ? op - 1 : -op - 1;
	enum lt_status st;
	*st_out = LT_OK;
	if (op > 0) {
		if (s > 0 && !w->have_out[s - 1][k])
			return 0;
		lt_model_use_acts(m, k);
		st = LT_OK;
		if (s > 0) {  /* the write may overwrite what it is given */
			memcpy(w->scratch, w->out[s - 1][k], n * sizeof *w->scratch);
			st = lt_model_stage_write_input(m, w->scratch);
		}
		double loss = NAN;
		long nt = -1;
		if (st == LT_OK)
			st = lt_model_forward(m, lt_tok[k], lt_tgt[k], grad_scale(), &loss, &nt);
		if (st == LT_OK && last) {
			r->loss[k] = loss;
			r->n[k] = nt;
			r->loss_sum += loss;
			r->n_sum += nt;
		} else if (st == LT_OK) {
			/* an earlier stage counts nothing */
			if (loss != 0 || nt != 0) {
				lt_errmsg_set("stage %d of %d reports a loss of %g over %ld targets",
					      s, ch->n, loss, nt);
				st = LT_ERR_CONFIG;
			} else {
				st = lt_model_stage_read_output(m, w->out[s][k]);
				w->have_out[s][k] = 1;
			}
		}
		*st_out = st;
		return 1;
	}
	if (!last && !w->have_gin[s + 1][k])
		return 0;
	lt_model_use_acts(m, k);
	st = LT_OK;
	if (!last) {
		memcpy(w->scratch, w->gin[s + 1][k], n * sizeof *w->scratch);
		st = lt_model_stage_write_output_grad(m, w->scratch);
	}
	if (st == LT_OK)
		st = lt_model_backward(m);
	if (st == LT_OK && s > 0) {
		st = lt_model_stage_read_input_grad(m, w->gin[s][k]);
		w->have_gin[s][k] = 1;
	}
	*st_out = st;
	return 1;
}

/* The split's chain on be in an order: each stage runs its op list,
 * stages taking turns, each op as soon as what it reads has crossed.
 * Fills r (grads gathered into the whole model's flat layout). */
static enum lt_status chain_run(lt_backend *be, const struct lt_split *sp,
				const struct lt_variant *v, enum lt_order order,
				struct lt_ref_run *r)
{
	struct lt_chain ch;
	struct lt_wires *w = calloc(1, sizeof *w);
	int ops[LT_MAX_STAGES][2 * LT_M], next[LT_MAX_STAGES] = { 0 };
	memset(r, 0, sizeof *r);
	memset(&ch, 0, sizeof ch);
	enum lt_status st = w ? chain_new(be, sp, v, LT_M, 1, &ch) : LT_ERR_NOMEM;
	for (int s = 0; st == LT_OK && s < ch.n; s++) {
		stage_ops(order, s, ch.n, ops[s]);
		if (lt_model_act_sets(ch.st[s]) != LT_M) {
			lt_errmsg_set("stage %d keeps %d activation sets, not %d", s,
				      lt_model_act_sets(ch.st[s]), LT_M);
			st = LT_ERR_CONFIG;
		}
	}
	for (int progress = 1; st == LT_OK && progress;) {
		progress = 0;
		for (int s = 0; s < ch.n && st == LT_OK; s++) {
			if (next[s] == 2 * LT_M)
				continue;
			if (run_op(&ch, s, ops[s][next[s]], w, r, &st)) {
				next[s]++;
				progress = 1;
			}
		}
	}
	for (int s = 0; st == LT_OK && s < ch.n; s++)
		if (next[s] != 2 * LT_M) {
			lt_errmsg_set("stage %d stalled at op %d", s, next[s]);
			st = LT_ERR_CONFIG;
		}
	/* the stages' gradients, each at its tensor's whole-model offset */
	if (st == LT_OK) {
		const lt_model *mw = lt_model_stage_whole(ch.st[0]);
		r->numel = lt_model_num_params(mw);
		if (!(r->grads = calloc(r->numel, sizeof *r->grads)))
			st = LT_ERR_NOMEM;
	}
	for (int s = 0; st == LT_OK && s < ch.n; s++) {
		lt_model *m = ch.st[s];
		float *g = read_flat(m, lt_model_grads(m), lt_model_num_params(m));
		if (!g) {
			st = LT_ERR_NOMEM;
			break;
		}
		const lt_model *mw = lt_model_stage_whole(m);
		for (int i = 0; i < lt_model_num_tensors(m); i++) {
			const struct lt_tensor *t = lt_model_tensor(m, i);
			const struct lt_tensor *tw = lt_model_tensor(mw, lt_model_stage_index(m, i));
			memcpy(r->grads + tw->off, g + t->off, t->numel * sizeof *g);
		}
		free(g);
	}
	chain_free(&ch);
	free(w);
	return st;
}

/* The largest gap |a - b| and the count of elements whose bits differ,
 * and the first tensor where they do. */
struct lt_gap {
	size_t differ;
	double worst;           /* the largest absolute gap */
	double worst_rel;       /* the largest per-tensor relative L2 gap */
	const char *first_bad;  /* a whole tensor's name, or "" */
};

static struct lt_gap grads_gap(const lt_model *whole, const float *a, const float *b)
{
	struct lt_gap g = { 0, 0, 0, "" };
	for (int i = 0; i < lt_model_num_tensors(whole); i++) {
		const struct lt_tensor *t = lt_model_tensor(whole, i);
		double *ref = malloc(t->numel * sizeof *ref);
		for (size_t j = 0; ref && j < t->numel; j++)
			ref[j] = b[t->off + j];
		double rel = ref ? tap_rel_l2_f(a + t->off, ref, (long)t->numel) : NAN;
		g.worst_rel = tap_worst(g.worst_rel, rel);
		free(ref);
		size_t d = 0;
		for (size_t j = t->off; j < t->off + t->numel; j++) {
			d += memcmp(&a[j], &b[j], sizeof *a) != 0;
			g.worst = tap_worst(g.worst, fabs((double)a[j] - b[j]));
		}
		if (d && !*g.first_bad)
			g.first_bad = t->name;
		g.differ += d;
	}
	return g;
}

static const char *order_name(enum lt_order o)
{
	return o == LT_FILL_DRAIN ? "all forwards, then backwards" : "1F1B";
}

/* Checks 2 and 3: the split's chain in an order against the whole
 * model's run (both on the CPU), bitwise: two checks. */
static void check_chain(lt_backend *be, const lt_model *whole, const struct lt_split *sp,
			const struct lt_variant *v, enum lt_order order,
			const struct lt_ref_run *ref)
{
	char sname[32];
	split_name(sp, sname, sizeof sname);
	struct lt_ref_run r;
	enum lt_status st = chain_run(be, sp, v, order, &r);
	int ok = st == LT_OK;
	tap_ok(ok && !memcmp(r.loss, ref->loss, sizeof r.loss) &&
	       !memcmp(&r.loss_sum, &ref->loss_sum, sizeof r.loss_sum) &&
	       !memcmp(r.n, ref->n, sizeof r.n),
	       "%s, split %s, %s: the last stage's losses (%.9g, %.9g, %.9g; sum %.12g over %ld "
	       "targets) are the whole model's bitwise (%.12g over %ld)%s%s", v->name, sname,
	       order_name(order), r.loss[0], r.loss[1], r.loss[2], r.loss_sum, r.n_sum,
	       ref->loss_sum, ref->n_sum, ok ? "" : ": ", ok ? "" : lt_errmsg());
	struct lt_gap g = { 0, NAN, NAN, "" };
	if (ok)
		g = grads_gap(whole, r.grads, ref->grads);
	tap_ok(ok && g.differ == 0,
	       "%s, split %s, %s: every stage gradient is the whole model's bitwise over %zu "
	       "elements (%zu differ, largest gap %.3g, worst tensor rel L2 %.3g%s%s)", v->name,
	       sname, order_name(order), ref->numel, g.differ, g.worst, g.worst_rel,
	       *g.first_bad ? ", first in " : "", g.first_bad);
	free(r.grads);
}

/* ------------------------------------------------------ gradient hook */

/* What a stage's gradient hook saw: how often each element was reported
 * ready, empty ranges, and the lookup's calls. */
struct lt_hook_log {
	unsigned char *seen;  /* [numel] */
	size_t numel;
	int ranges, empty, lookups, lookup_rows;
};

static enum lt_status log_ready(void *ctx, size_t begin, size_t end)
{
	struct lt_hook_log *h = ctx;
	h->ranges++;
	h->empty += begin >= end;
	for (size_t i = begin; i < end && i < h->numel; i++)
		h->seen[i]++;
	return LT_OK;
}

static enum lt_status log_lookup(void *ctx, size_t table, const int32_t *rows, int count,
				 lt_ref grads)
{
	struct lt_hook_log *h = ctx;
	(void)table;
	(void)rows;
	(void)grads;
	h->lookups++;
	h->lookup_rows += count;
	return LT_OK;
}

/* Each stage of split 2+2 with a gradient hook (and the lookup apart when
 * lookup is set), one micro-batch through the chain: every stage's ranges
 * cover its gradient buffer once, none empty, and the lookup is handed
 * over by the first stage alone. One check. */
static void check_stage_hook(lt_backend *be, int lookup)
{
	struct lt_chain ch;
	struct lt_hook_log h[2] = { { 0 }, { 0 } };
	static float x[LT_N * LT_DIM];
	double loss;
	long nt;
	enum lt_status st = chain_new(be, &lt_splits[0], NULL, 0, 1, &ch);
	for (int s = 0; s < 2 && st == LT_OK; s++) {
		h[s].numel = lt_model_grads_numel(ch.st[s]);
		if (!(h[s].seen = calloc(h[s].numel, 1))) {
			st = LT_ERR_NOMEM;
			break;
		}
		lt_model_set_grad_hook(ch.st[s],
				       &(struct lt_grad_hook){ .ctx = &h[s], .ready = log_ready,
							       .lookup_ready = lookup ? log_lookup
										: NULL });
	}
	if (st == LT_OK)
		st = lt_model_forward(ch.st[0], lt_tok[0], lt_tgt[0], grad_scale(), &loss, &nt);
	if (st == LT_OK && (st = lt_model_stage_read_output(ch.st[0], x)) == LT_OK &&
	    (st = lt_model_stage_write_input(ch.st[1], x)) == LT_OK)
		st = lt_model_forward(ch.st[1], lt_tok[0], lt_tgt[0], grad_scale(), &loss, &nt);
	if (st == LT_OK && (st = lt_model_backward(ch.st[1])) == LT_OK &&
	    (st = lt_model_stage_read_input_grad(ch.st[1], x)) == LT_OK &&
	    (st = lt_model_stage_write_output_grad(ch.st[0], x)) == LT_OK)
		st = lt_model_backward(ch.st[0]);
	size_t once[2] = { 0, 0 };
	for (int s = 0; s < 2 && st == LT_OK; s++)
		for (size_t i = 0; i < h[s].numel; i++)
			once[s] += h[s].seen[i] == 1;
	int want_lookups = lookup ? 1 : 0;
	tap_ok(st == LT_OK && once[0] == h[0].numel && once[1] == h[1].numel &&
	       !h[0].empty && !h[1].empty && h[0].lookups == want_lookups && !h[1].lookups,
	       "split 2+2, gradient hook%s: the stages' ranges (%d and %d, %d and %d empty) cover "
	       "%zu of %zu and %zu of %zu elements once; lookups handed over %d and %d times "
	       "(%d rows)%s%s", lookup ? " with the lookup apart" : "", h[0].ranges, h[1].ranges,
	       h[0].empty, h[1].empty, once[0], h[0].numel, once[1], h[1].numel, h[0].lookups,
	       h[1].lookups, h[0].lookup_rows, st == LT_OK ? "" : ": ",
	       st == LT_OK ? "" : lt_errmsg());
	free(h[0].seen);
	free(h[1].seen);
	chain_free(&ch);
}

/* ------------------------------------------------------------ refusals */

/* Whether msg names the number n as a whole number (not inside another). */
static int names_number(const char *msg, int n)
{
	char want[16];
	int len = snprintf(want, sizeof want, "%d", n);
	for (const char *p = strstr(msg, want); p; p = strstr(p + 1, want))
		if ((p == msg || !isdigit((unsigned char)p[-1])) && !isdigit((unsigned char)p[len]))
			return 1;
	return 0;
}

/* Check 4: lt_model_pp_check refuses more stages than layers and a tied
 * embedding split in two, naming the numbers; one stage of a tied model is
 * fine, and lt_model_new_stage refuses a tied model's part. */
static void check_refusals(lt_backend *be)
{
	struct lt_model_config c = lt_tiny;
	enum lt_status st = lt_model_pp_check(&c, 5);
	char msg[256];
	snprintf(msg, sizeof msg, "%s", lt_errmsg());
	tap_ok(st == LT_ERR_CONFIG && names_number(msg, 5) && names_number(msg, 4),
	       "pp 5 of 4 layers: LT_ERR_CONFIG (%d) naming 5 and 4: \"%s\"", (int)st, msg);
	st = lt_model_pp_check(&c, 4);
	tap_ok(st == LT_OK, "pp 4 of 4 layers (untied) is accepted (%d)", (int)st);
	c.tied = 1;
	st = lt_model_pp_check(&c, 2);
	snprintf(msg, sizeof msg, "%s", lt_errmsg());
	tap_ok(st == LT_ERR_CONFIG && names_number(msg, 2) && strstr(msg, "tied"),
	       "pp 2 of a tied model: LT_ERR_CONFIG (%d) naming 2 and the tied embedding: \"%s\"",
	       (int)st, msg);
	st = lt_model_pp_check(&c, 1);
	tap_ok(st == LT_OK, "pp 1 of a tied model is accepted (%d)", (int)st);
	lt_model *m = NULL;
	struct lt_stage half = { 0, 2 };
	st = lt_model_new_stage(be, &c, &half, &m);
	tap_ok(st == LT_ERR_CONFIG && !m,
	       "lt_model_new_stage refuses the first half of a tied model (%d, model %s): \"%s\"",
	       (int)st, m ? "made" : "none", lt_errmsg());
	lt_model_free(m);
	m = NULL;
	struct lt_stage all = { 0, 4 };
	st = lt_model_new_stage(be, &c, &all, &m);
	tap_ok(st == LT_OK && m && lt_model_stage_first(m) && lt_model_stage_last(m) &&
	       lt_model_find(m, "lm_head.weight") == NULL &&
	       lt_model_num_tensors(m) == lt_model_num_tensors(lt_model_stage_whole(m)),
	       "a single stage of all 4 layers of a tied model is made, first and last, with the "
	       "whole's %d tensors%s%s", m ? lt_model_num_tensors(m) : -1, st == LT_OK ? "" : ": ",
	       st == LT_OK ? "" : lt_errmsg());
	lt_model_free(m);
}

/* -------------------------------------------------------------- OpenCL */

#define LT_CL_TOL 1e-5

/* Why OpenCL is not tried, or NULL: LT_TEST_BACKENDS names the backends
 * to test where it is set. */
static const char *opencl_excluded(void)
{
	const char *env = getenv("LT_TEST_BACKENDS");
	if (!env || !*env)
		return NULL;
	char *list = strdup(env);
	int named = 0;
	for (char *t = list ? strtok(list, ",") : NULL; t; t = strtok(NULL, ","))
		named |= !strcmp(t, "opencl");
	free(list);
	return named ? NULL : "LT_TEST_BACKENDS leaves out opencl";
}

/* Check 5: the fp32 chain on OpenCL (every split and order) within
 * LT_CL_TOL of the CPU's whole run, losses relative and each tensor's
 * gradients in relative L2, and bitwise the whole model's run on OpenCL
 * itself: 3 checks a chain. */
static int opencl_checks(void)
{
	return LT_N_SPLITS * LT_N_ORDERS * 3;
}

static void check_opencl(const lt_model *whole, const struct lt_ref_run *cpu)
{
	const char *why = opencl_excluded();
	lt_backend *be = NULL;
	if (!why && lt_backend_new("opencl", 0, &be) != LT_OK)
		why = lt_errmsg();
	if (why) {
		for (int i = 0; i < opencl_checks(); i++)
			tap_skip("opencl: the backend is not run here: %s", why);
		return;
	}
	lt_backend_set_matmul(be, LT_MATMUL_FP32);
	struct lt_device_info info;
	be->ops->info(be, &info);
	tap_diag("opencl: %s; GEMMs: %s", info.name, info.gemm);
	struct lt_ref_run own;
	enum lt_status own_st = whole_run(be, &lt_variants[0], &own);
	if (own_st != LT_OK)
		tap_diag("opencl: the whole model's run failed: %s", lt_errmsg());
	for (int i = 0; i < LT_N_SPLITS; i++)
		for (int o = 0; o < LT_N_ORDERS; o++) {
			char sname[32];
			split_name(&lt_splits[i], sname, sizeof sname);
			struct lt_ref_run r;
			enum lt_status st = chain_run(be, &lt_splits[i], &lt_variants[0], o, &r);
			int ok = st == LT_OK;
			double worst = ok ? 0 : NAN;
			for (int k = 0; ok && k < LT_M; k++)
				worst = tap_worst(worst, fabs(r.loss[k] - cpu->loss[k]) /
							   fabs(cpu->loss[k]));
			tap_ok(ok && worst <= LT_CL_TOL && !memcmp(r.n, cpu->n, sizeof r.n),
			       "opencl, split %s, %s: the losses (sum %.9g over %ld) within %g of the "
			       "cpu's whole model (%.9g over %ld): worst relative gap %.3g%s%s",
			       sname, order_name(o), r.loss_sum, r.n_sum, LT_CL_TOL, cpu->loss_sum,
			       cpu->n_sum, worst, ok ? "" : ": ", ok ? "" : lt_errmsg());
			struct lt_gap g = { 0, NAN, NAN, "" };
			if (ok)
				g = grads_gap(whole, r.grads, cpu->grads);
			tap_ok(ok && g.worst_rel <= LT_CL_TOL,
			       "opencl, split %s, %s: each tensor's gradients within rel L2 %g of the "
			       "cpu's whole model: worst %.3g (largest gap %.3g)", sname,
			       order_name(o), LT_CL_TOL, g.worst_rel, g.worst);
			struct lt_gap own_g = { 0, NAN, NAN, "" };
			if (ok && own_st == LT_OK)
				own_g = grads_gap(whole, r.grads, own.grads);
			tap_ok(ok && own_st == LT_OK && own_g.differ == 0 &&
			       !memcmp(r.loss, own.loss, sizeof r.loss),
			       "opencl, split %s, %s: the losses and gradients are the whole model's "
			       "on opencl bitwise (%zu of %zu gradients differ%s%s)", sname,
			       order_name(o), own_g.differ, own.numel,
			       *own_g.first_bad ? ", first in " : "", own_g.first_bad);
			free(r.grads);
		}
	free(own.grads);
	lt_backend_free(be);
}

int main(void)
{
	lt_backend *be = NULL;
	lt_model *whole = NULL;
	make_batches();
	if (lt_backend_new("cpu", 0, &be) != LT_OK) {
		printf("Bail out! cannot open the cpu backend: %s\n", lt_errmsg());
		return 1;
	}
	tap_plan(2 * LT_N_SPLITS + LT_N_VARIANTS * LT_N_SPLITS * LT_N_ORDERS * 2 + 2 + 6 +
		 opencl_checks());

	/* check 1: the whole model's drawn weights against each split's */
	float *wparams = NULL;
	if (lt_model_new(be, &lt_tiny, &whole) != LT_OK || lt_model_init(whole, LT_SEED) != LT_OK ||
	    !(wparams = read_flat(whole, lt_model_params(whole), lt_model_num_params(whole)))) {
		printf("Bail out! cannot make the whole tiny model: %s\n", lt_errmsg());
		return 1;
	}
	for (int i = 0; i < LT_N_SPLITS; i++)
		check_init(be, &lt_splits[i], whole, wparams);
	free(wparams);

	/* checks 2 and 3: the chains against the whole model, per variant */
	struct lt_ref_run fp32_ref = { 0 };
	for (int v = 0; v < LT_N_VARIANTS; v++) {
		struct lt_ref_run ref;
		enum lt_status st = whole_run(be, &lt_variants[v], &ref);
		if (st != LT_OK)
			tap_diag("%s: the whole model's run failed: %s", lt_variants[v].name,
				 lt_errmsg());
		for (int i = 0; i < LT_N_SPLITS; i++)
			for (int o = 0; o < LT_N_ORDERS; o++) {
				if (st == LT_OK) {
					check_chain(be, whole, &lt_splits[i], &lt_variants[v], o, &ref);
					continue;
				}
				tap_ok(0, "%s: no whole run to compare the losses with",
				       lt_variants[v].name);
				tap_ok(0, "%s: no whole run to compare the gradients with",
				       lt_variants[v].name);
			}
		if (v == 0)
			fp32_ref = ref;
		else
			free(ref.grads);
	}

	check_stage_hook(be, 0);
	check_stage_hook(be, 1);
	check_refusals(be);
	check_opencl(whole, &fp32_ref);
	free(fp32_ref.grads);
	lt_model_free(whole);
	lt_backend_free(be);
	return tap_done();
}
