/* The planner's search: every layout of a model on a cluster, checked as
 * the configuration is, fitted into each rank's memory by the layout's
 * estimate, and timed by a cost model of the step (compute from FLOPs and
 * each rank's measured speed; the tensor-parallel sums, the pipeline's
 * bubble and boundary messages, ZeRO's exchange from bytes over the
 * links, with what overlaps backward hidden; AdamW's pass over memory). */
#include "config.h"
#include "train/plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/shares.h"
#include "model.h"
#include "train/layout.h"

/* Bytes per second of a rank's memory that AdamW's pass reads and writes
 * (28 bytes a parameter: the parameter, its gradient and two moments read,
 * three written), on a CPU rank per thread (up to the node's) and on a
 * GPU. */
#define CPU_MEM_BW_THREAD 4e9
#define CPU_MEM_BW_NODE 40e9
#define GPU_MEM_BW 1e12
#define ADAMW_BYTES 28.0
/* Several CPU ranks of a node together against one rank over all its
 * cores, at most: bench/plan_bench.sh measured 1.06x (15M, 4 ranks of 4
 * threads against one of 16, 16 cores) and 1.08x (2 ranks of 1 thread
 * against one of 2, 2 cores). */
#define NODE_GAIN 1.08
/* ZeRO 3 on CPU ranks: its gathers into the blocks' slots and their
 * reduce-scatters over MPI moved bytes at a sixth of the link's
 * bandwidth in bench/plan_bench.sh (110M and 15M, 4 ranks of 4 threads). */
#define ZERO3_CPU_SLOWDOWN 6.0
/* The share of a boundary message's time a 1F1B stage does not hide
 * behind its compute (bench/pp_bench.sh measured 55% hidden). */
#define P2P_EXPOSED 0.45

/* One rank of a layout's ranks: where it is, what it has, how fast. */
struct prank {
	int node, gpu, threads;
	double mem, f32, bf16;    /* a block's step speed, FLOP/s */
	double head_ratio;        /* the head's speed over a block's */
	double micro_s;           /* a micro-batch's own seconds, fp32 */
	double micro_bf16_s;      /* ... bf16 */
};

/* What one search works on. */
struct search {
	const struct lt_conf *conf;
	const struct lt_plan_cluster *c;
	const struct lt_plan_limits *lim;
	struct lt_plan_result *out;
	size_t cap;
	struct prank *r;
	int n, cpu_r, cpu_t, gpus_only;
	double f_block, f_head;   /* FLOPs per token of a block and of the head */
};

/* A CPU rank of t threads on node n among `ranks` CPU ranks there:
 * Amdahl's law over its one-thread speed, but the ranks together at most
 * NODE_GAIN times as fast as one rank over all the node's cores (ranks
 * sharing a node share its memory's bandwidth). */
static double cpu_speed(const struct lt_plan_node *n, int t, int ranks, int bf16)
{
	double one = bf16 ? n->core_bf16 : n->core_f32;
	double alone = one * t / (1 + n->serial * (t - 1));
	double node = one * n->cores / (1 + n->serial * (n->cores - 1));
	return fmin(alone, (ranks > 1 ? NODE_GAIN : 1) * node / (ranks > 0 ? ranks : 1));
}

/* Rank p on node nd (index node): a GPU, or one of `cpus` CPU ranks of
 * `threads` threads sharing the node's cores and memory. */
static void place_rank(struct prank *p, const struct lt_plan_node *nd, int node, int gpu,
		       int threads, int cpus)
{
	p->node = node;
	p->gpu = gpu;
	p->threads = gpu ? 1 : threads;
	p->mem = gpu ? nd->gpu_mem : nd->cpu_mem / cpus;
	p->f32 = gpu ? nd->gpu_f32 : cpu_speed(nd, threads, cpus, 0);
	p->bf16 = gpu ? nd->gpu_bf16 : cpu_speed(nd, threads, cpus, 1);
	p->head_ratio = gpu ? nd->gpu_head_ratio : nd->cpu_head_ratio;
	p->micro_s = gpu ? nd->gpu_micro_s : nd->cpu_micro_s;
	p->micro_bf16_s = gpu ? nd->gpu_micro_bf16_s : nd->cpu_micro_bf16_s;
}

/* The ranks: the launch's in its order, or per node its GPUs then cpu_r
 * CPU ranks of cpu_t threads (none with gpus_only). */
static int build_ranks(struct search *s)
{
	const struct lt_plan_cluster *c = s->c;
	int n = 0;
	if (c->launched && s->lim->fixed_launch) {
		for (int i = 0; i < c->n_ranks; i++) {
			const struct lt_plan_node *nd = &c->node[c->rank_node[i]];
			struct prank *p = &s->r[n++];
			place_rank(p, nd, c->rank_node[i], c->rank_gpu[i], nd->cpu_threads,
				   nd->cpu_ranks);
			if (c->rank_f32[i] > 0)
				p->f32 *= c->rank_f32[i];
			if (c->rank_bf16[i] > 0)
				p->bf16 *= c->rank_bf16[i];
		}
		return n;
	}
	for (int k = 0; k < c->n_nodes; k++) {
		const struct lt_plan_node *nd = &c->node[k];
		int cpus = nd->cores && !s->gpus_only ? s->cpu_r : 0;
		for (int g = 0; g < nd->gpus + cpus && n < LT_PLAN_MAX_RANKS; g++)
			place_rank(&s->r[n++], nd, k, g < nd->gpus, s->cpu_t, cpus);
	}
	return n;
}

/* FLOPs per token of a block and of the head (final norm and lm_head),
 * from the model's count at one and two blocks. */
static void block_flops(const struct lt_conf *conf, double *block, double *head)
{
	struct lt_model_config one = conf->model, two = conf->model;
	one.n_layers = 1;
	two.n_layers = 2;
	double f1 = lt_model_config_flops_per_token(&one, conf->train.seq);
	*block = lt_model_config_flops_per_token(&two, conf->train.seq) - f1;
	*head = f1 - *block;
}

/* Seconds of a ring all-reduce of `bytes` over n ranks (reduce-scatter
 * plus all-gather: each half is half of this). */
static double ring_s(double bytes, int n, double bw, double lat)
{
	return n < 2 ? 0 : 2.0 * (n - 1) / n * bytes / bw + 2.0 * (n - 1) * lat;
}

/* Rank of mesh place (stage, d, t), as lt_mesh_new numbers them. */
static int mesh_rank(const struct lt_plan_layout *l, int stage, int d, int t)
{
	return (stage * l->dp + d) * l->tp + t;
}

/* Whether ranks a..b (by mesh_rank over one index) share a node. */
static int same_node(const struct search *s, const int *ranks, int n)
{
	for (int i = 1; i < n; i++)
		if (s->r[ranks[i]].node != s->r[ranks[0]].node)
			return 0;
	return 1;
}

/* A tensor-parallel group of stage st, data index d: its seconds per
 * token of a block (rc: recompute's factor) and of the head (they run at
 * the slowest member's pace, each member a tp-th of the work), and a
 * micro-batch's own seconds. */
struct pace {
	double block, head, micro;
};

static struct pace group_pace(const struct search *s, const struct lt_plan_layout *l, int st,
			      int d, double rc)
{
	struct pace g = { 0, 0, 0 };
	for (int t = 0; t < l->tp; t++) {
		const struct prank *p = &s->r[mesh_rank(l, st, d, t)];
		double f = l->precision == LT_PRECISION_BF16 ? p->bf16 : p->f32;
		g.block = fmax(g.block, s->f_block * rc / (f * l->tp));
		g.head = fmax(g.head, s->f_head / (f * p->head_ratio * l->tp));
		g.micro = fmax(g.micro, l->precision == LT_PRECISION_BF16 ? p->micro_bf16_s
									: p->micro_s);
	}
	return g;
}

/* Seconds of one micro-batch's tensor-parallel sums on stage st: two
 * all-reduces of [tokens, dim] floats per block forward (two more under
 * recompute) and two backward. */
static double tp_seconds(const struct search *s, const struct lt_plan_layout *l, int st,
			 int layers)
{
	if (l->tp == 1)
		return 0;
	int members[64], n = l->tp < 64 ? l->tp : 64;
	double worst = 0, bytes = (double)l->micro * s->conf->train.seq * s->conf->model.dim * 4;
	for (int d = 0; d < l->dp; d++) {
		for (int t = 0; t < n; t++)
			members[t] = mesh_rank(l, st, d, t);
		int within = same_node(s, members, n);
		double bw = within ? s->c->within_bw : s->c->between_bw;
		double lat = within ? s->c->within_lat : s->c->between_lat;
		worst = fmax(worst, ring_s(bytes, l->tp, bw, lat));
	}
	return worst * layers * (l->recompute ? 6 : 4);
}

/* The blocks of each stage: the split that evens the stages' times at
 * their paces (their FLOPs alone when the paces are equal), by dynamic
 * programming over contiguous splits. */
static void split_stages(const struct search *s, const struct pace *pace, int pp, int *layers)
{
	int L = s->conf->model.n_layers;
	static double best[65][257];
	static int from[65][257];
	for (int k = 0; k <= pp; k++)
		for (int j = 0; j <= L; j++)
			best[k][j] = INFINITY;
	best[0][0] = 0;
	for (int k = 1; k <= pp; k++)
		for (int j = k; j <= L - (pp - k); j++)
			for (int i = k - 1; i < j; i++) {
				const struct pace *g = &pace[k - 1];
				double w = (j - i) * g->block + (k == pp ? g->head : 0);
				double t = fmax(best[k - 1][i], w);
				if (t < best[k][j]) {
					best[k][j] = t;
					from[k][j] = i;
				}
			}
	for (int k = pp, j = L; k > 0; j = from[k][j], k--)
		layers[k - 1] = j - from[k][j];
}

/* The stage sizes as dist.pp_layers text, into conf. */
static void set_pp_layers(struct lt_conf *conf, const int *layers, int pp)
{
	size_t at = 0;
	conf->dist.pp_layers[0] = 0;
	for (int k = 0; k < pp && at < sizeof conf->dist.pp_layers; k++)
		at += (size_t)snprintf(conf->dist.pp_layers + at, sizeof conf->dist.pp_layers - at,
				       "%s%d", k ? "," : "", layers[k]);
}

/* How much longer than an ideal split by speed a step takes once the step's
 * sequences are shared in whole sequences, each group keeping at least one
 * a micro-batch, as --balance auto shares them (lt_shares_split): a group
 * far slower than the rest still computes accum sequences. */
static double share_overhead(const struct lt_plan_layout *l, const double *block_pace)
{
	double w[64] = { 0 }, total = 0, slow = 0;
	size_t counts[64];
	int n = l->dp < 64 ? l->dp : 64;
	size_t items = (size_t)l->micro * (size_t)l->dp * (size_t)l->accum;
	if (n < l->dp || items < (size_t)n * (size_t)l->accum)
		return 1;
	for (int d = 0; d < n; d++) {
		w[d] = 1 / block_pace[d];
		total += w[d];
	}
	lt_shares_split(items, w, n, (size_t)l->accum, counts);
	for (int d = 0; d < n; d++)
		slow = fmax(slow, (double)counts[d] * block_pace[d]);
	return fmax(1, slow * total / (double)items);
}

/* A stage's pace per token: its data-parallel groups together (by their
 * speeds under balance auto, in whole sequences, else each a dp-th at the
 * slowest's pace). */
static struct pace stage_pace(const struct search *s, const struct lt_plan_layout *l, int st,
			      double rc)
{
	struct pace low = { 0, 0, 0 }, sum = { 0, 0, 0 };
	double block[64];
	for (int d = 0; d < l->dp; d++) {
		struct pace g = group_pace(s, l, st, d, rc);
		low.block = fmax(low.block, g.block);
		low.head = fmax(low.head, g.head);
		low.micro = fmax(low.micro, g.micro);
		sum.block += 1 / g.block;
		sum.head += 1 / g.head;
		if (d < 64)
			block[d] = g.block;
	}
	if (!l->balance_auto)
		return (struct pace){ low.block / l->dp, low.head / l->dp, low.micro };
	double over = share_overhead(l, block);
	return (struct pace){ over / sum.block, over / sum.head, low.micro };
}

/* ZeRO's exchange of one stage in seconds: its bytes over the link its
 * data-parallel ranks share, less what backward hides (`backward_s` of
 * each micro-batch's). */
static double exchange_seconds(const struct search *s, const struct lt_plan_layout *l, int st,
			       size_t params, double backward_s)
{
	if (l->dp == 1)
		return 0;
	int within = 1;
	for (int d = 1; d < l->dp; d++)
		for (int t = 0; t < l->tp; t++)
			if (s->r[mesh_rank(l, st, d, t)].node != s->r[mesh_rank(l, st, 0, t)].node)
				within = 0;
	int cpu = 0;
	for (int d = 0; d < l->dp; d++)
		for (int t = 0; t < l->tp; t++)
			cpu |= !s->r[mesh_rank(l, st, d, t)].gpu;
	double bw = within ? s->c->within_bw : s->c->between_bw;
	double lat = within ? s->c->within_lat : s->c->between_lat;
	if (cpu && l->zero == 3)
		bw /= ZERO3_CPU_SLOWDOWN;
	double all = ring_s(4.0 * params / l->tp, l->dp, bw, lat), half = all / 2;
	double hidden, after;   /* under backward; after the last backward */
	switch (l->zero) {
	case 0:
	case 1:
		hidden = all, after = 0;
		break;
	case 2:
		hidden = half * l->accum, after = half;
		break;
	default:  /* two gathers and a reduce-scatter a micro-batch */
		hidden = 3 * half * l->accum, after = 0;
		break;
	}
	/* stage 3 on CPU ranks waits for each gather (the cores that would
	 * move the bytes are computing); else backward hides what it can */
	double cover = cpu && l->zero == 3 ? 0 : l->zero <= 1 ? backward_s
						   : backward_s * l->accum * 1.5;
	return fmax(0, hidden - cover) + after;
}

/* Parameters a second AdamW updates on rank p: as measured (a CPU rank's
 * in proportion to its threads, up to the node's memory bandwidth), else
 * assumed from a memory's bandwidth. */
static double adamw_rate(const struct search *s, const struct prank *p)
{
	const struct lt_plan_node *nd = &s->c->node[p->node];
	if (p->gpu)
		return nd->gpu_adamw > 0 ? nd->gpu_adamw : GPU_MEM_BW / ADAMW_BYTES;
	if (nd->cpu_adamw > 0 && nd->cpu_threads > 0)
		return nd->cpu_adamw * fmin((double)p->threads / nd->cpu_threads,
					    CPU_MEM_BW_NODE / CPU_MEM_BW_THREAD / nd->cpu_threads);
	return fmin(CPU_MEM_BW_NODE, CPU_MEM_BW_THREAD * p->threads) / ADAMW_BYTES;
}

/* AdamW's pass: each rank's share of its stage's parameters at its rate;
 * the slowest rank's. */
static double optim_seconds(const struct search *s, const struct lt_plan_layout *l,
			    const size_t *stage_params)
{
	double worst = 0;
	for (int i = 0; i < l->ranks; i++) {
		int st = i / (l->dp * l->tp);
		double share = (double)stage_params[st] / l->tp / (l->zero ? l->dp : 1);
		worst = fmax(worst, share / adamw_rate(s, &s->r[i]));
	}
	return worst;
}

/* Parameters of each stage's blocks, embedding (first) and head (last). */
static void stage_params(const struct lt_conf *conf, const int *layers, int pp, size_t *out)
{
	const struct lt_model_config *c = &conf->model;
	size_t block = lt_model_config_block_params(c);
	size_t rest = lt_model_config_params(c) - block * (size_t)c->n_layers;
	for (int k = 0; k < pp; k++)
		out[k] = block * (size_t)layers[k] + (k == 0 ? rest / 2 : 0) +
			 (k == pp - 1 ? rest - rest / 2 : 0);
}

/* The step's time of layout l, its parts into l. */
static void cost(const struct search *s, struct lt_plan_layout *l, const int *layers)
{
	const struct lt_conf *conf = s->conf;
	double rc = l->recompute ? 4.0 / 3.0 : 1;
	double tokens = (double)l->micro * l->dp * conf->train.seq, worst = 0, tp_worst = 0;
	double exch = 0;
	size_t params[64];
	stage_params(conf, layers, l->pp, params);
	for (int st = 0; st < l->pp; st++) {
		struct pace g = stage_pace(s, l, st, rc);
		double t = tokens * (layers[st] * g.block + (st == l->pp - 1 ? g.head : 0)) + g.micro;
		double tps = tp_seconds(s, l, st, layers[st]);
		worst = fmax(worst, t + tps);
		tp_worst = fmax(tp_worst, tps);
		exch = fmax(exch, exchange_seconds(s, l, st, params[st], t * 2 / 3));
	}
	l->compute_s = (worst - tp_worst) * l->accum;
	l->tp_s = tp_worst * l->accum;
	l->bubble_s = (l->pp - 1) * worst;
	l->p2p_s = 0;
	if (l->pp > 1) {
		double bytes = (double)l->micro * conf->train.seq * conf->model.dim * 4;
		double bw = s->c->between_bw, lat = s->c->between_lat;
		if (s->r[0].node == s->r[l->ranks - 1].node)
			bw = s->c->within_bw, lat = s->c->within_lat;
		l->p2p_s = P2P_EXPOSED * 2 * l->accum * (bytes / bw + lat);
	}
	l->exchange_s = exch;
	l->optim_s = optim_seconds(s, l, params);
	l->step_s = l->compute_s + l->tp_s + l->bubble_s + l->p2p_s + l->exchange_s + l->optim_s;
	l->tokens_per_s = (double)l->micro * l->dp * l->accum * conf->train.seq / l->step_s;
}

/* Each rank's memory against the layout's estimate (conf lc, its stages
 * `layers`): the fullest rank's need and have into l. */
static void fit(const struct search *s, const struct lt_conf *lc, struct lt_plan_layout *l)
{
	struct lt_lora lora = { 0 };
	struct lt_mem_estimate est = { 0 };
	int last_st = -1, last_threads = -1;
	double worst = -1;
	lt_conf_lora(lc, &lora);
	for (int i = 0; i < l->ranks; i++) {
		const struct prank *p = &s->r[i];
		int st = i / (l->dp * l->tp);
		if (st != last_st || p->threads != last_threads) {
			struct lt_stage stage;
			if (l->pp > 1)
				lt_layout_stage_estimate(lc, l->ranks, p->threads, st, &stage, &est);
			else
				lt_layout_estimate(lc, &lora, l->ranks, p->threads, &est);
			last_st = st, last_threads = p->threads;
		}
		double ratio = (double)est.total / p->mem;
		if (ratio > worst) {
			worst = ratio;
			l->mem_need = (double)est.total;
			l->mem_have = p->mem;
			l->mem_rank = i;
		}
	}
	l->fits = worst <= 1 - s->lim->margin;
}

static enum lt_status keep(struct search *s, const struct lt_plan_layout *l)
{
	struct lt_plan_result *o = s->out;
	if (o->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		struct lt_plan_layout *v = realloc(o->v, cap * sizeof *v);
		if (!v) {
			lt_errmsg_set("cannot allocate the planner's %zu layouts", cap);
			return LT_ERR_NOMEM;
		}
		o->v = v;
		s->cap = cap;
	}
	o->v[o->n++] = *l;
	return LT_OK;
}

/* Layout l (its mesh, ZeRO, precision, recompute, micro-batch set) on
 * the search's ranks: its stages, the configuration's check, its fit and
 * cost; kept unless the configuration refuses it. */
static enum lt_status try_layout(struct search *s, struct lt_plan_layout *l)
{
	struct lt_conf lc = *s->conf;
	int layers[64] = { 0 };
	struct pace pace[64];
	l->balance_auto = 0;
	for (int i = 1; i < l->ranks; i++)
		if (s->r[i].f32 != s->r[0].f32 || s->r[i].bf16 != s->r[0].bf16)
			l->balance_auto = l->dp > 1 || l->pp > 1;
	l->pp_layers[0] = 0;
	if (l->pp > 1) {
		for (int st = 0; st < l->pp && st < 64; st++)
			pace[st] = stage_pace(s, l, st, l->recompute ? 4.0 / 3.0 : 1);
		if (l->pp <= 64 && s->conf->model.n_layers <= 256 && !s->conf->dist.pp_layers[0]) {
			split_stages(s, pace, l->pp, layers);
			set_pp_layers(&lc, layers, l->pp);
		}
	}
	lt_plan_apply(l, &lc);
	if (l->pp > 1)
		snprintf(l->pp_layers, sizeof l->pp_layers, "%s", lc.dist.pp_layers);
	if (lt_conf_check(&lc) != LT_OK || (l->pp > 1 && lt_conf_pp_layers(&lc, layers) != LT_OK))
		return LT_OK;  /* a layout the configuration refuses is no layout */
	if (l->pp == 1)
		layers[0] = lc.model.n_layers;
	fit(s, &lc, l);
	cost(s, l, layers);
	return keep(s, l);
}

/* The micro-batch splits of the global batch over dp ranks: micro x dp x
 * accum sequences, every accum from 1 (or the configured split). */
static enum lt_status try_micro(struct search *s, struct lt_plan_layout *l)
{
	const struct lt_conf *conf = s->conf;
	long g = s->out->global_seqs;
	enum lt_status st = LT_OK;
	if (s->lim->fixed_batch) {
		if (conf->train.batch % l->dp)
			return LT_OK;
		l->micro = conf->train.batch / l->dp;
		l->accum = conf->train.grad_accum;
		return try_layout(s, l);
	}
	if (g % l->dp)
		return LT_OK;
	for (long m = 1; m <= g / l->dp && st == LT_OK; m++)
		if ((g / l->dp) % m == 0) {
			l->micro = (int)m;
			l->accum = (int)(g / l->dp / m);
			st = try_layout(s, l);
		}
	return st;
}

/* ZeRO stages, precisions and recompute over one mesh. */
static enum lt_status try_modes(struct search *s, struct lt_plan_layout *l)
{
	const struct lt_conf *conf = s->conf;
	const struct lt_plan_limits *lim = s->lim;
	enum lt_status st = LT_OK;
	for (int z = 0; z <= 3 && st == LT_OK; z++) {
		if ((lim->fixed_zero && z != conf->dist.zero) || (l->dp == 1 && z > 0))
			continue;
		for (int p = 0; p < 2 && st == LT_OK; p++) {
			if (lim->fixed_precision && p != (int)conf->train.precision)
				continue;
			for (int rc = 0; rc < 2 && st == LT_OK; rc++) {
				if (lim->fixed_recompute && rc != (int)conf->train.recompute)
					continue;
				l->zero = z;
				l->precision = (enum lt_precision)p;
				l->recompute = rc;
				st = try_micro(s, l);
			}
		}
	}
	return st;
}

/* Every tp x pp (x dp, the rest) of the search's ranks. */
static enum lt_status try_meshes(struct search *s)
{
	const struct lt_conf *conf = s->conf;
	enum lt_status st = LT_OK;
	int w = s->n;
	for (int tp = 1; tp <= w && st == LT_OK; tp++) {
		if (w % tp || (s->lim->fixed_tp && tp != conf->dist.tp))
			continue;
		for (int pp = 1; pp <= w / tp && pp <= 64 && st == LT_OK; pp++) {
			if ((w / tp) % pp || (s->lim->fixed_pp && pp != conf->dist.pp))
				continue;
			struct lt_plan_layout l = { .dp = w / tp / pp, .tp = tp, .pp = pp, .ranks = w,
						    .cpu_ranks_per_node = s->cpu_r,
						    .cpu_threads = s->cpu_t,
						    .gpus_only = s->gpus_only };
			st = try_modes(s, &l);
		}
	}
	return st;
}

/* Fitting layouts first, fastest first; then the rest, closest to
 * fitting first. */
static int by_cost(const void *pa, const void *pb)
{
	const struct lt_plan_layout *a = pa, *b = pb;
	if (a->fits != b->fits)
		return b->fits - a->fits;
	double x = a->fits ? a->step_s : a->mem_need / a->mem_have;
	double y = b->fits ? b->step_s : b->mem_need / b->mem_have;
	if (fabs(x - y) <= 1e-9 * fmax(x, y))  /* as fast: the one with more room */
		x = a->mem_need / a->mem_have, y = b->mem_need / b->mem_have;
	return (x > y) - (x < y);
}

/* The CPU nodes' choices: each divisor r of their cores as ranks of
 * cores / r threads (the launch's alone when it is fixed); and, when the
 * cluster has GPUs too, the GPUs without the CPU ranks. */
static enum lt_status try_launches(struct search *s)
{
	const struct lt_plan_cluster *c = s->c;
	int cores = 0, gpus = 0;
	enum lt_status st = LT_OK;
	for (int k = 0; k < c->n_nodes; k++) {
		gpus += c->node[k].gpus;
		if (c->node[k].cores && (!cores || c->node[k].cores < cores))
			cores = c->node[k].cores;
	}
	if (c->launched && s->lim->fixed_launch) {
		s->n = build_ranks(s);
		s->cpu_r = s->cpu_t = 0;
		for (int i = 0; i < s->n; i++)
			if (!s->r[i].gpu)
				s->cpu_t = s->r[i].threads, s->cpu_r++;
		return try_meshes(s);
	}
	for (int r = 1; r <= (cores ? cores : 1) && st == LT_OK; r++) {
		if (cores && cores % r)
			continue;
		s->cpu_r = cores ? r : 0;
		s->cpu_t = cores ? cores / r : 0;
		s->gpus_only = 0;
		if ((s->n = build_ranks(s)) > 0)
			st = try_meshes(s);
	}
	if (gpus && cores && st == LT_OK) {
		s->gpus_only = 1;
		s->cpu_r = s->cpu_t = 0;
		s->n = build_ranks(s);
		st = try_meshes(s);
	}
	return st;
}

void lt_plan_limits_of(const struct lt_conf *conf, struct lt_plan_limits *lim)
{
	if (conf->dist.deterministic)
		lim->fixed_tp = lim->fixed_precision = 1;
}

enum lt_status lt_plan_search(const struct lt_conf *conf, const struct lt_plan_cluster *c,
			      const struct lt_plan_limits *given, struct lt_plan_result *out)
{
	struct lt_plan_limits lim = *given;
	lt_plan_limits_of(conf, &lim);
	struct search s = { .conf = conf, .c = c, .lim = &lim, .out = out };
	memset(out, 0, sizeof *out);
	out->global_seqs = (long)conf->train.batch * conf->train.grad_accum;
	block_flops(conf, &s.f_block, &s.f_head);
	s.r = calloc(LT_PLAN_MAX_RANKS, sizeof *s.r);
	if (!s.r) {
		lt_errmsg_set("cannot allocate the planner's ranks");
		return LT_ERR_NOMEM;
	}
	enum lt_status st = try_launches(&s);
	free(s.r);
	if (st != LT_OK) {
		lt_plan_result_free(out);
		return st;
	}
	qsort(out->v, out->n, sizeof *out->v, by_cost);
	while (out->n_fit < out->n && out->v[out->n_fit].fits)
		out->n_fit++;
	return LT_OK;
}

void lt_plan_result_free(struct lt_plan_result *r)
{
	free(r->v);
	memset(r, 0, sizeof *r);
}

void lt_plan_apply(const struct lt_plan_layout *l, struct lt_conf *conf)
{
	conf->dist.tp = l->tp;
	conf->dist.pp = l->pp;
	conf->dist.zero = l->zero;
	if (l->balance_auto)
		conf->dist.balance = LT_BALANCE_AUTO;
	conf->train.precision = l->precision;
	conf->train.recompute = l->recompute ? LT_RECOMPUTE_BLOCK : LT_RECOMPUTE_NONE;
	conf->train.batch = l->micro * l->dp;
	conf->train.grad_accum = l->accum;
	if (l->pp_layers[0])
		snprintf(conf->dist.pp_layers, sizeof conf->dist.pp_layers, "%s", l->pp_layers);
	if (l->cpu_threads)
		conf->run.threads = l->cpu_threads;
}
