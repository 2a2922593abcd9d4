/* The planner's measurements of a launch (dist/probe.h): each rank times
 * square GEMMs and a forward + backward of one block of the model on its
 * device (a CPU rank also at fewer threads), the ranks exchange their
 * figures, then ranks 0 and a partner time the links.
 *
 * The ranks of one host that compute on its CPU (the CPU backend, or an
 * OpenCL CPU device such as PoCL) time one after the other, each while the
 * others wait at a barrier: ranks sharing the cores would each measure a
 * share of them, and a CPU rank's thread scaling must be its own. GPU
 * ranks time at once, in the first turn, each on its own device (ranks
 * that share one GPU measure their shares of it). A turn lasts a few
 * budgets (pc->seconds each figure) plus the models' set-up: the
 * watchdog's limit (lt_dist_set_timeout) must be longer. GEMMs run in
 * the backend's matmul mode as the caller set it (train.matmul).
 *
 * An OpenCL CPU device counts as gpu = 0 (the planner takes it for a CPU
 * rank): its memory is the host's MemAvailable shared by the node's CPU
 * ranks, its threads the device's compute units, and its one thread point
 * is the step at those (PoCL fixes its threads when it starts).
 *
 * Under LLTRAIN_BENCH_LINK_GBITS the dist layer holds collectives between
 * nodes to the emulated link, but not messages between two ranks (the
 * pipeline holds its own transfers to it, at the link's full rate). So
 * the all-reduce here, started and waited for as training's exchange of
 * gradients is, reports the emulated speed, and the bandwidth between
 * nodes is what the messages reached, capped at the link's rate as the
 * pipeline's transfers are; the latency is the real one (the emulation
 * adds none). */
#include "config.h"
#include "dist/probe.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "optim.h"
#include "rng.h"

#define DEFAULT_SECONDS 0.3
#define MICRO_FACTOR 4   /* step_speeds' second batch: this many times the probe's */
#define GEMM_MIN 256      /* the first square GEMM's side */
#define GEMM_MAX 4096     /* the largest: 200 MiB of f32 operands and product */
#define MAX_REPS 5        /* timed repetitions of a figure at most */
#define PING_FLOATS 2     /* 8 bytes: the latency's message */
#define PINGS 20          /* timed round trips of it */
#define BW_FLOATS (1u << 20)   /* 4 MiB: the bandwidth's message */
#define BW_REPS 3
#define SUM_FLOATS (2u << 20)  /* 8 MiB: the all-reduce's buffer */
#define SUM_REPS 3
/* A GPU's steps are timed at batches of at least this many tokens (at
 * the larger of step_speeds' two), where a few sequences would leave most
 * of it idle and the speeds measured would not carry over to training. */
#define GPU_TOKENS 16384

static double budget_of(const struct lt_probe_config *pc)
{
	return pc->seconds > 0 ? pc->seconds : DEFAULT_SECONDS;
}

/* ------------------------------------------------------------ GEMMs */

/* n^3 products of operands of type t, C f32, on be after one untimed:
 * *best the quickest. With `grow` set it stops after one timed product
 * that took under `grow` seconds (*grown = 1), n being too small to tell
 * the device's speed; else it times up to MAX_REPS within `budget`. */
static enum lt_status time_products(lt_backend *be, enum lt_dtype t, int n, double budget,
				    double grow, double *best, int *grown)
{
	size_t nn = (size_t)n * (size_t)n;
	lt_buf *ab = NULL, *c = NULL;
	enum lt_status st = lt_buf_new(be, t, 2 * nn, &ab);
	if (st == LT_OK)
		st = lt_buf_new(be, LT_F32, nn, &c);
	struct lt_gemm g = { .m = n, .n = n, .k = n, .alpha = 1.0f, .lda = n, .ldb = n, .ldc = n,
			     .batch = 1 };
	lt_ref a = { ab, 0 }, b = { ab, nn }, out = { c, 0 };
	double spent = 0;
	*best = 0;
	*grown = 0;
	if (st == LT_OK)
		be->ops->fill(be, a, 2 * nn, 0.25f);
	for (int r = 0; st == LT_OK && r <= MAX_REPS && (r < 2 || spent < budget); r++) {
		double t0 = lt_seconds();
		be->ops->gemm(be, &g, a, b, out);
		st = be->ops->sync(be);
		double dt = lt_seconds() - t0;
		if (r == 0)
			continue;  /* the first one warms up */
		spent += dt;
		if (*best == 0 || dt < *best)
			*best = dt;
		if (grow > 0 && dt < grow) {
			*grown = 1;
			break;
		}
	}
	lt_buf_free(be, ab);
	lt_buf_free(be, c);
	return st;
}

/* FLOP/s of a square GEMM of operands of type t: the side doubles from
 * GEMM_MIN while a product takes under a sixteenth of the budget (a
 * product too small for the device would read as a slow device), then
 * the best of the products of that side that fit in the budget. */
static enum lt_status gemm_speed(lt_backend *be, enum lt_dtype t, double budget, double *flops)
{
	int n = GEMM_MIN, grown = 1;
	double best = 0;
	enum lt_status st = LT_OK;
	while (st == LT_OK && grown) {
		st = time_products(be, t, n, budget, n < GEMM_MAX ? budget / 16 : 0, &best, &grown);
		if (grown)
			n *= 2;
	}
	if (st != LT_OK) {
		lt_errmsg_prefix("the probe's %d^3 %s GEMM", n, t == LT_BF16 ? "bf16" : "f32");
		return st;
	}
	*flops = 2.0 * n * (double)n * n / best;
	return LT_OK;
}

/* ---------------------------------------------------- training steps */

/* The probe's micro-batch: random tokens, each one's target the next. */
static enum lt_status probe_batch(const struct lt_probe_config *pc, int32_t **tokens,
				  int32_t **targets)
{
	size_t n = MICRO_FACTOR * (size_t)pc->batch * (size_t)pc->seq;  /* and step_speeds' larger batch */
	*tokens = malloc(n * sizeof **tokens);
	*targets = malloc(n * sizeof **targets);
	if (!*tokens || !*targets) {
		free(*tokens);
		free(*targets);
		*tokens = *targets = NULL;
		lt_errmsg_set("cannot allocate the probe's %zu tokens", n);
		return LT_ERR_NOMEM;
	}
	struct lt_rng rng;
	lt_rng_seed(&rng, 1, 0);
	for (size_t i = 0; i < n; i++)
		(*tokens)[i] = (int32_t)lt_rng_below(&rng, (uint64_t)pc->model->vocab_size);
	for (size_t i = 0; i < n; i++)
		(*targets)[i] = (i + 1) % (size_t)pc->seq ? (*tokens)[i + 1] : (*tokens)[i];
	return LT_OK;
}

/* What a step needs: the configuration and the micro-batch. */
struct step_input {
	const struct lt_probe_config *pc;
	const int32_t *tokens, *targets;
	double budget;
};

/* One timed thing of the probe: a model's training step or AdamW's. */
struct timed {
	lt_backend *be;
	lt_model *model;
	lt_optim *optim;      /* NULL: the step; else AdamW's update */
	const struct step_input *in;
	int batch;
};

static enum lt_status run_once(const struct timed *w, int rep)
{
	double value;  /* the loss, or the gradient's norm */
	long n;
	static const struct lt_optim_config oc = { .lr = 1e-4f, .min_lr = 1e-5f,
		.warmup_steps = 1, .total_steps = 100, .beta1 = 0.9f, .beta2 = 0.95f,
		.eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	enum lt_status st;
	if (w->optim) {
		st = lt_optim_step(w->optim, &oc, rep + 1, &value);
	} else {
		float scale = 1.0f / (float)(w->batch * w->in->pc->seq);
		st = lt_model_forward(w->model, w->in->tokens, w->in->targets, scale, &value, &n);
		if (st == LT_OK)
			st = lt_model_backward(w->model);
	}
	return st == LT_OK ? w->be->ops->sync(w->be) : st;
}

/* w run once untimed, then the quickest of up to MAX_REPS within the
 * budget (one at least) into *best. */
static enum lt_status best_time(const struct timed *w, double *best)
{
	double spent = 0;
	enum lt_status st = LT_OK;
	*best = 0;
	for (int r = 0; st == LT_OK && r <= MAX_REPS && (r < 2 || spent < w->in->budget); r++) {
		double t0 = lt_seconds();
		st = run_once(w, r);
		double dt = lt_seconds() - t0;
		if (r == 0)
			continue;
		spent += dt;
		if (*best == 0 || dt < *best)
			*best = dt;
	}
	return st;
}

/* Seconds of a forward + backward of pc's model cut to `layers` blocks
 * at `batch` sequences, on be in precision p: one untimed step, then the
 * best of up to MAX_REPS within the budget (one at least). */
static enum lt_status step_time(lt_backend *be, const struct step_input *in,
				enum lt_precision p, int layers, int batch, double *seconds)
{
	struct lt_model_config cut = *in->pc->model;
	int T = in->pc->seq;
	lt_model *m = NULL;
	cut.n_layers = layers;
	enum lt_status st = lt_model_new(be, &cut, &m);
	if (st == LT_OK && p != LT_PRECISION_FP32)
		st = lt_model_set_precision(m, p);
	if (st == LT_OK)
		st = lt_model_init(m, 1);
	if (st == LT_OK)
		st = lt_model_plan(m, batch, T);
	if (st == LT_OK)
		lt_model_zero_grads(m);
	struct timed w = { be, m, NULL, in, batch };
	double best = 0;
	if (st == LT_OK)
		st = best_time(&w, &best);
	lt_model_free(m);
	if (st != LT_OK) {
		lt_errmsg_prefix("the probe's %s step of %d block%s at batch %d x seq %d",
				 p == LT_PRECISION_BF16 ? "bf16" : "fp32", layers,
				 layers > 1 ? "s" : "", batch, T);
		return st;
	}
	*seconds = best;
	return LT_OK;
}

/* What a step's parts reach in precision p: a block's FLOP/s (three
 * blocks' time less one's, over two), the rest's (embedding, head and
 * loss, counted at the head's FLOPs) and a micro-batch's own seconds
 * (where a one-block step at MICRO_FACTOR times the batch meets the line
 * through it and the step at one: what a micro-batch costs whatever its
 * tokens, such as the bf16 copy of the weights). The speeds are those at
 * the larger batch, nearer the micro-batches trained. Differences of
 * timings can come out near zero or below on a busy machine: each part
 * keeps at least a twentieth of the one-block step. */
static enum lt_status step_speeds(lt_backend *be, const struct step_input *in,
				  enum lt_precision p, double *block, double *head, double *micro)
{
	struct lt_model_config one = *in->pc->model, two = *in->pc->model;
	int B = in->pc->batch, T = in->pc->seq, K = MICRO_FACTOR;
	double t1, t3, tk;
	one.n_layers = 1;
	two.n_layers = 2;
	enum lt_status st = step_time(be, in, p, 1, B, &t1);
	if (st == LT_OK)
		st = step_time(be, in, p, 3, K * B, &t3);
	if (st == LT_OK)
		st = step_time(be, in, p, 1, K * B, &tk);
	if (st != LT_OK)
		return st;
	double f1 = lt_model_config_flops_per_token(&one, T);
	double fb = lt_model_config_flops_per_token(&two, T) - f1, fh = f1 - fb;
	/* t(b) = o + b c through (B, t1) and (K B, tk) */
	double o = fmin(fmax((K * t1 - tk) / (K - 1), 0), tk / 2);
	double tb = fmax((t3 - tk) / 2, tk / 20), th = fmax(tk - tb - o, tk / 20);
	*block = fb * K * B * T / tb;
	*head = fh * K * B * T / th;
	*micro = o;
	return LT_OK;
}

/* Parameters a second that AdamW's step updates on be: the one-block
 * model's, best of a few after one untimed. */
static enum lt_status adamw_speed(lt_backend *be, const struct step_input *in, double *rate)
{
	struct lt_model_config one = *in->pc->model;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	one.n_layers = 1;
	enum lt_status st = lt_model_new(be, &one, &m);
	if (st == LT_OK)
		st = lt_model_init(m, 1);
	if (st == LT_OK) {
		lt_model_zero_grads(m);
		st = lt_optim_new(m, 0, lt_model_num_params(m), &o);
	}
	struct timed w = { be, m, o, in, 0 };
	double best = 0;
	if (st == LT_OK)
		st = best_time(&w, &best);
	size_t n = m ? lt_model_num_params(m) : 0;
	lt_optim_free(o);
	lt_model_free(m);
	if (st != LT_OK) {
		lt_errmsg_prefix("the probe's AdamW step");
		return st;
	}
	*rate = (double)n / best;
	return LT_OK;
}

/* A CPU rank's fp32 step at threads, threads / 2, threads / 4, ... down
 * to 1 (LT_PROBE_THREADS counts at most), ascending into r; the last is
 * the step already timed on the rank's backend. Each count runs on a CPU
 * backend of its own; opening one sets OpenMP's and OpenBLAS's thread
 * count, so one opened at r->threads sets them back. */
static enum lt_status thread_points(const struct step_input *in, struct lt_probe_rank *r)
{
	int k = 0, counts[LT_PROBE_THREADS];
	for (int t = r->threads; t >= 1 && k < LT_PROBE_THREADS; t /= 2)
		counts[k++] = t;
	enum lt_status st = LT_OK;
	for (int i = 0; i < k; i++) {
		double flops = r->step_f32, head, micro;
		lt_backend *tb = NULL;
		if (i > 0 && st == LT_OK && (st = lt_backend_new("cpu", counts[i], &tb)) == LT_OK)
			st = step_speeds(tb, in, LT_PRECISION_FP32, &flops, &head, &micro);
		lt_backend_free(tb);
		r->thread_n[k - 1 - i] = counts[i];
		r->thread_flops[k - 1 - i] = flops;
	}
	lt_backend *back = NULL;
	enum lt_status bst = k > 1 ? lt_backend_new("cpu", r->threads, &back) : LT_OK;
	lt_backend_free(back);
	if (st == LT_OK && bst != LT_OK)
		lt_errmsg_prefix("setting the CPU's %d threads back after the probe", r->threads);
	r->n_thread_points = k;
	return st != LT_OK ? st : bst;
}

/* The batch a rank's steps are timed at: the config's, and on a GPU
 * larger, until the larger batch holds GPU_TOKENS tokens or three blocks'
 * training at it would need more than half the rank's free memory. */
static int rank_batch(const struct lt_probe_config *pc, const struct lt_probe_rank *r)
{
	struct lt_model_config three = *pc->model;
	struct lt_mem_estimate est;
	int b = pc->batch;
	three.n_layers = 3;
	while (r->gpu && (long)MICRO_FACTOR * 2 * b * pc->seq <= GPU_TOKENS) {
		lt_model_estimate_memory(&three, MICRO_FACTOR * 2 * b, pc->seq, 1,
					 LT_RECOMPUTE_NONE, LT_PRECISION_FP32, &est);
		if ((double)est.total > r->mem / 2)
			break;
		b *= 2;
	}
	return b;
}

/* This rank's device figures into r (its kind, threads and memory already
 * there). */
static enum lt_status time_rank(lt_backend *be, const struct lt_probe_config *config,
				struct lt_probe_rank *r)
{
	struct lt_probe_config pc_rank = *config, *pc = &pc_rank;
	pc->batch = rank_batch(config, r);
	struct step_input in = { .pc = pc, .budget = budget_of(pc) };
	int32_t *tokens = NULL, *targets = NULL;
	enum lt_status st = probe_batch(pc, &tokens, &targets);
	in.tokens = tokens;
	in.targets = targets;
	if (st == LT_OK)
		st = gemm_speed(be, LT_F32, in.budget, &r->gemm_f32);
	if (st == LT_OK)
		st = gemm_speed(be, LT_BF16, in.budget, &r->gemm_bf16);
	if (st == LT_OK)
		st = step_speeds(be, &in, LT_PRECISION_FP32, &r->step_f32, &r->head_f32, &r->micro_s);
	if (st == LT_OK)
		st = adamw_speed(be, &in, &r->adamw);
	if (st == LT_OK && pc->bf16)
		st = step_speeds(be, &in, LT_PRECISION_BF16, &r->step_bf16, &r->head_bf16,
				 &r->micro_bf16_s);
	if (st == LT_OK && !strcmp(be->ops->name, "cpu")) {
		st = thread_points(&in, r);
	} else if (st == LT_OK && !r->gpu) {
		r->n_thread_points = 1;
		r->thread_n[0] = r->threads;
		r->thread_flops[0] = r->step_f32;
	}
	free(tokens);
	free(targets);
	return st;
}

/* ------------------------------------------------ the ranks' places */

double lt_probe_host_memory(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	double kib = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	if (kib >= 0)
		return kib * 1024.0;
	long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

/* What this rank is, before any timing: its node (where the nodes differ
 * in size, which lt_dist_node_index does not number, -1 - the job rank of
 * its node's first local rank, for place_ranks to number), its kind,
 * threads and cores, and its memory (on a CPU the host's, until
 * place_ranks shares it out). */
static void describe(lt_dist *d, lt_backend *be, struct lt_probe_rank *r)
{
	struct lt_device_info dev;
	be->ops->info(be, &dev);
	memset(r, 0, sizeof *r);
	r->node = lt_dist_nodes(d) > 0 ? lt_dist_node_index(d) : -1 - lt_dist_rank_of_local(d, 0);
	r->gpu = dev.gpu;
	/* a GPU rank's host work runs on OpenMP's threads; PoCL's on its own */
	r->threads = r->gpu ? omp_get_max_threads() : dev.compute_units;
	if (r->threads < 1)
		r->threads = 1;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	r->node_cores = cores > 0 ? (int)cores : 1;
	snprintf(r->host, sizeof r->host, "%.63s", lt_dist_host(d));
	snprintf(r->device, sizeof r->device, "%.95s", dev.name);
	r->mem = lt_probe_free_memory(be);
}

double lt_probe_free_memory(lt_backend *be)
{
	struct lt_device_info dev;
	size_t now = 0, peak = 0;
	be->ops->info(be, &dev);
	if (!dev.gpu)
		return lt_probe_host_memory();
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &now, &peak);
	return dev.mem_bytes > now ? (double)(dev.mem_bytes - now) : 0;
}

/* Over the gathered all[n]: nodes of different sizes numbered in the
 * order of their first ranks, and each CPU rank's memory the host's
 * shared evenly by its node's CPU ranks. */
static void place_ranks(struct lt_probe_rank *all, int n)
{
	for (int r = 0, nodes = 0; r < n; r++) {
		int id = all[r].node;
		if (id >= 0)
			continue;
		for (int s = r; s < n; s++)
			if (all[s].node == id)
				all[s].node = nodes;
		nodes++;
	}
	for (int r = 0; r < n; r++) {
		if (all[r].gpu)
			continue;
		int cpus = 0;
		for (int s = 0; s < n; s++)
			cpus += !all[s].gpu && all[s].node == all[r].node;
		all[r].mem /= cpus;
	}
}

/* Rank r's turn to time: GPU ranks all in the first; a host's CPU ranks
 * one after the other, in rank order. */
static int turn_of(const struct lt_probe_rank *all, int r)
{
	int turn = 0;
	for (int s = 0; s < r && !all[r].gpu; s++)
		turn += !all[s].gpu && !strcmp(all[s].host, all[r].host);
	return turn;
}

/* Whether every rank succeeded (local: this rank's outcome), so that all
 * stop together: a rank that failed gets its own status back, its message
 * kept, the others LT_ERR_COMM naming it. Collective. */
static enum lt_status agree(lt_dist *d, enum lt_status local)
{
	char why[1024];
	snprintf(why, sizeof why, "%s", lt_errmsg());
	double failed = local != LT_OK ? lt_dist_rank(d) + 1 : 0;
	enum lt_status st = lt_dist_allreduce(d, &failed, 1, LT_DIST_F64, LT_DIST_MAX,
					      "the probe's outcome");
	if (st != LT_OK)
		return st;
	if (local != LT_OK) {
		lt_errmsg_set("%s", why);
		return local;
	}
	if (failed > 0) {
		lt_errmsg_set("the probe failed on rank %d (its message says why)", (int)failed - 1);
		return LT_ERR_COMM;
	}
	return LT_OK;
}

/* Each rank times its device in its turn, the others waiting. */
static enum lt_status time_in_turns(lt_dist *d, lt_backend *be, const struct lt_probe_config *pc,
				    const struct lt_probe_rank *all, struct lt_probe_rank *mine)
{
	int n = lt_dist_size(d), turns = 0, my_turn = turn_of(all, lt_dist_rank(d));
	for (int r = 0; r < n; r++) {
		int t = turn_of(all, r);
		turns = t + 1 > turns ? t + 1 : turns;
	}
	enum lt_status local = LT_OK, st;
	for (int t = 0; t < turns; t++) {
		if (t == my_turn)
			local = time_rank(be, pc, mine);
		if ((st = lt_dist_barrier(d, "the probe's turns")) != LT_OK)
			return st;
	}
	return agree(d, local);
}

/* ------------------------------------------------------------ links */

/* One message of n floats to or from peer, waited for. */
static enum lt_status one_way(lt_dist *d, float *buf, size_t n, int peer, int send)
{
	const char *what = "the probe's messages";
	int msg;
	enum lt_status st = send ? lt_dist_send_start(d, buf, n, peer, what, &msg)
				 : lt_dist_recv_start(d, buf, n, peer, what, &msg);
	return st == LT_OK ? lt_dist_msg_wait(d, msg) : st;
}

/* warm + reps round trips of n floats with peer (`first`: this rank sends
 * first), the reps timed: *best the quickest. */
static enum lt_status round_trips(lt_dist *d, int peer, int first, float *buf, size_t n,
				  int warm, int reps, double *best)
{
	enum lt_status st = LT_OK;
	*best = 0;
	for (int i = 0; i < warm + reps && st == LT_OK; i++) {
		double t0 = lt_seconds();
		st = one_way(d, buf, n, peer, first);
		if (st == LT_OK)
			st = one_way(d, buf, n, peer, !first);
		double dt = lt_seconds() - t0;
		if (i >= warm && (*best == 0 || dt < *best))
			*best = dt;
	}
	return st;
}

/* The latency (half the quickest 8-byte round trip) and bandwidth (of
 * 4 MiB messages, both ways) between ranks 0 and peer, as rank 0 sees
 * them; no pair where peer < 0. Collective: the other ranks wait. */
static enum lt_status time_pair(lt_dist *d, int peer, float *buf, double *bw, double *lat)
{
	int me = lt_dist_rank(d);
	enum lt_status st = LT_OK;
	if (peer > 0 && (me == 0 || me == peer)) {
		int other = me == 0 ? peer : 0;
		double rt = 0;
		st = round_trips(d, other, me == 0, buf, PING_FLOATS, 3, PINGS, &rt);
		if (st == LT_OK)
			*lat = rt / 2;
		if (st == LT_OK)
			st = round_trips(d, other, me == 0, buf, BW_FLOATS, 1, BW_REPS, &rt);
		if (st == LT_OK)
			*bw = 2.0 * BW_FLOATS * sizeof(float) / rt;
	}
	return st != LT_OK ? st : lt_dist_barrier(d, "the probe's links");
}

/* The all-reduce of SUM_FLOATS over the job, started and waited for as
 * the gradients' exchange is (one untimed, then the best of SUM_REPS, each
 * from a barrier), as a ring's bytes a second. */
static enum lt_status time_allreduce(lt_dist *d, float *buf, double *bw)
{
	int n = lt_dist_size(d);
	double best = 0;
	enum lt_status st = LT_OK;
	memset(buf, 0, SUM_FLOATS * sizeof *buf);
	for (int i = 0; i <= SUM_REPS && st == LT_OK; i++) {
		if ((st = lt_dist_barrier(d, "the probe's all-reduce")) != LT_OK)
			break;
		double t0 = lt_seconds();
		st = lt_dist_allreduce_start(d, buf, SUM_FLOATS, "the probe's all-reduce");
		if (st == LT_OK)
			st = lt_dist_wait_all(d);
		double dt = lt_seconds() - t0;
		if (i > 0 && (best == 0 || dt < best))
			best = dt;
	}
	if (st == LT_OK)
		*bw = SUM_FLOATS * sizeof *buf * 2.0 * (n - 1) / n / best;
	return st;
}

/* The links of the job whose ranks are all[n], into *links on every rank. */
static enum lt_status time_links(lt_dist *d, const struct lt_probe_rank *all,
				 struct lt_probe_links *links)
{
	int n = lt_dist_size(d), within = -1, between = -1;
	memset(links, 0, sizeof *links);
	if (n == 1)
		return LT_OK;
	/* the first rank of rank 0's node, and the first of another */
	for (int r = 1; r < n; r++) {
		if (all[r].node == all[0].node && within < 0)
			within = r;
		if (all[r].node != all[0].node && between < 0)
			between = r;
	}
	size_t floats = BW_FLOATS > SUM_FLOATS ? BW_FLOATS : SUM_FLOATS;
	float *buf = calloc(floats, sizeof *buf);
	if (!buf)
		lt_errmsg_set("cannot allocate the probe's %zu MiB of messages",
			      floats * sizeof *buf >> 20);
	enum lt_status st = agree(d, buf ? LT_OK : LT_ERR_NOMEM);
	if (st == LT_OK)
		st = time_pair(d, within, buf, &links->within_bw, &links->within_lat);
	if (st == LT_OK)
		st = time_pair(d, between, buf, &links->between_bw, &links->between_lat);
	double link = lt_dist_link_gbits(d) * 1e9 / 8;
	if (st == LT_OK && link > 0 && links->between_bw > link)
		links->between_bw = link;
	if (st == LT_OK)
		st = time_allreduce(d, buf, &links->allreduce_bw);
	free(buf);
	if (st == LT_OK)
		st = lt_dist_bcast(d, links, sizeof *links, 0, "the probe's links");
	return st;
}

/* ------------------------------------------------------------------ */

enum lt_status lt_probe_ranks(lt_dist *d, lt_backend *be, const struct lt_probe_config *pc,
			      struct lt_probe_rank *out, struct lt_probe_links *links)
{
	const struct lt_model_config *mc = pc->model;
	memset(links, 0, sizeof *links);
	if (!mc || pc->batch < 1 || pc->seq < 1 || pc->seq > mc->max_seq || pc->seconds < 0) {
		lt_errmsg_set("the probe's step: batch %d x seq %d, %g s a figure (expected a batch "
			      "and seq of 1 or more, seq at most the model's max_seq %d)",
			      pc->batch, pc->seq, pc->seconds, mc ? mc->max_seq : 0);
		return LT_ERR_ARG;
	}
	struct lt_probe_rank mine;
	int me = lt_dist_rank(d), n = lt_dist_size(d);
	describe(d, be, &mine);
	enum lt_status st = lt_dist_allgather(d, &mine, out, sizeof mine, "the probe's ranks");
	if (st != LT_OK)
		return st;
	place_ranks(out, n);
	mine = out[me];
	if ((st = time_in_turns(d, be, pc, out, &mine)) != LT_OK)
		return st;
	if ((st = lt_dist_allgather(d, &mine, out, sizeof mine, "the probe's figures")) != LT_OK)
		return st;
	return time_links(d, out, links);
}
