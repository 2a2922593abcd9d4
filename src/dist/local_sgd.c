/* Local SGD across nodes: rounds of inner steps, then the nodes' mean move
 * and the outer Nesterov step. */
#include "config.h"
#include "dist/local_sgd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "clock.h"

struct lt_local_sgd {
	lt_dist *dist, *inner;     /* the job; this node's ranks as a job */
	int nodes, local_rank, local_size;
	int local_steps, weighted;
	long steps;                /* train.steps */
	float lr, mu;
	lt_model *model;
	size_t numel;
	size_t *cut;               /* [local_size + 1]: local rank j's slice of the move */
	float *shared;             /* [numel] the parameters the nodes last shared */
	float *momentum;           /* [numel] the outer momentum */
	float *move;               /* [numel] this round's move, base - local */
	float *base;               /* [numel] where the round began: shared, or
				      overlapped its own copy */
	float *sent;               /* [numel] the move summed between nodes, then their mean */
	float sent_weight;         /* its weight, then the nodes' */
	int overlap, pending;      /* dist.outer_overlap; a sum is under way */
	int bf16;                  /* dist.outer_dtype = bf16: moves cross as bf16 */
	uint16_t *half;            /* bf16: [nodes + 1, slice] every node's slice, then this
				      rank's */
	int in_round;              /* inner steps since the last exchange */
	double tokens;             /* this node's tokens in the round */
	double round_s;            /* dist.round_seconds: > 0, rounds of wall time */
	double round_t0;           /* when this round began, by this rank's clock */
	long carry;                /* timed rounds: the nodes' steps not yet a job step */
};

enum lt_status lt_local_sgd_check(const lt_dist *d)
{
	int nodes = lt_dist_nodes(d), size = lt_dist_size(d);
	if (nodes == 0) {
		lt_errmsg_set("dist.sync = local: the nodes run different numbers of ranks; local "
			      "SGD needs as many on each node");
		return LT_ERR_CONFIG;
	}
	if (nodes < 2) {
		lt_errmsg_set("dist.sync = local: the job's %d rank%s run%s on one node; local SGD "
			      "needs two nodes or more (dist.sync = step for one node; "
			      "LLTRAIN_NODE_RANKS=K makes each K ranks a node)", size,
			      size == 1 ? "" : "s", size == 1 ? "s" : "");
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

enum lt_status lt_local_sgd_check_rounds(const lt_dist *d, const struct lt_conf *c)
{
	int nodes = lt_dist_nodes(d);
	if (!(c->dist.round_seconds > 0) || nodes < 1 || c->train.batch % nodes == 0)
		return LT_OK;
	lt_errmsg_set("dist.round_seconds = %g with train.batch = %d: each of the %d nodes steps "
		      "on its own with an equal share of the batch; use a multiple of %d",
		      c->dist.round_seconds, c->train.batch, nodes, nodes);
	return LT_ERR_CONFIG;
}

enum lt_status lt_local_sgd_new(lt_dist *d, const struct lt_conf *c, lt_local_sgd **out)
{
	*out = NULL;
	enum lt_status st = lt_local_sgd_check(d);
	if (st != LT_OK)
		return st;
	lt_local_sgd *ls = calloc(1, sizeof *ls);
	if (!ls) {
		lt_errmsg_set("cannot allocate the local SGD state");
		return LT_ERR_NOMEM;
	}
	ls->dist = d;
	ls->nodes = lt_dist_nodes(d);
	ls->local_rank = lt_dist_local_rank(d);
	ls->local_size = lt_dist_local_size(d);
	ls->local_steps = c->dist.local_steps;
	/* nodes that take unequal shares, or unequal steps, weigh by tokens */
	ls->weighted = c->dist.balance == LT_BALANCE_AUTO || c->dist.round_seconds > 0;
	ls->lr = (float)c->dist.outer_lr;
	ls->mu = (float)c->dist.outer_momentum;
	ls->overlap = c->dist.outer_overlap;
	ls->bf16 = c->dist.outer_dtype == LT_OUTER_BF16;
	ls->steps = c->train.steps;
	ls->round_s = c->dist.round_seconds;
	if ((st = lt_dist_node_new(d, &ls->inner)) != LT_OK) {
		lt_local_sgd_free(ls);
		return st;
	}
	*out = ls;
	return LT_OK;
}

void lt_local_sgd_free(lt_local_sgd *ls)
{
	if (!ls)
		return;
	if (ls->model && ls->overlap)
		lt_model_set_param_hook(ls->model, NULL);
	lt_dist_node_free(ls->inner);
	free(ls->cut);
	free(ls->shared);
	free(ls->momentum);
	free(ls->move);
	free(ls->sent);
	free(ls->half);
	if (ls->base != ls->shared)
		free(ls->base);
	free(ls);
}

lt_dist *lt_local_sgd_inner(const lt_local_sgd *ls) { return ls->inner; }

void lt_local_sgd_state(lt_local_sgd *ls, struct lt_local_sgd_state *out)
{
	*out = (struct lt_local_sgd_state){ .shared = ls->shared, .momentum = ls->momentum,
					    .base = ls->base != ls->shared ? ls->base : NULL,
					    .numel = ls->numel, .in_round = &ls->in_round,
					    .tokens = &ls->tokens, .carry = &ls->carry,
					    .nodes = ls->nodes,
					    .node = lt_dist_node_index(ls->dist) };
}
int lt_local_sgd_nodes(const lt_local_sgd *ls) { return ls->nodes; }
double lt_local_sgd_round_seconds(const lt_local_sgd *ls) { return ls->round_s; }

void lt_local_sgd_round_restart(lt_local_sgd *ls) { ls->round_t0 = lt_seconds(); }

int lt_local_sgd_round_due(const lt_local_sgd *ls)
{
	return ls->round_s > 0 && ls->local_rank == 0 && lt_seconds() - ls->round_t0 >= ls->round_s;
}

void lt_local_sgd_describe(const lt_local_sgd *ls, char *buf, size_t cap)
{
	char every[64];
	if (ls->round_s > 0)
		snprintf(every, sizeof every, "%g s of wall time", ls->round_s);
	else
		snprintf(every, sizeof every, "%d step%s", ls->local_steps,
			 ls->local_steps == 1 ? "" : "s");
	snprintf(buf, cap, "local SGD: %d nodes of %d rank%s, an outer Nesterov step every %s "
		 "(lr %g, momentum %g), moves in %s%s%s", ls->nodes, ls->local_size,
		 ls->local_size == 1 ? "" : "s", every,
		 (double)ls->lr, (double)ls->mu, ls->bf16 ? "bf16" : "fp32",
		 ls->overlap ? ", overlapped" : "", ls->weighted ? ", weighted by tokens" : "");
}

double lt_local_sgd_scale(const lt_local_sgd *ls, const size_t *rows)
{
	size_t all = 0, mine = 0;
	for (int r = 0; r < lt_dist_size(ls->dist); r++)
		all += rows[r];
	for (int j = 0; j < ls->local_size; j++)
		mine += rows[lt_dist_rank_of_local(ls->dist, j)];
	return mine ? (double)all / (double)mine : 1.0;
}

/* Overlapped, the model asks before each block of a pass: MPI moves a
 * nonblocking collective on only inside its calls, so without these the
 * round's sum would advance once a step and be mostly left for the wait
 * at the next round's end. The parameters are in place (no ZeRO stage 3
 * with local SGD): nothing else to do. */
static enum lt_status progress_hook(void *ctx, int block, int backward)
{
	lt_local_sgd *ls = ctx;
	(void)block;
	(void)backward;
	return ls->pending ? lt_dist_progress(ls->dist) : LT_OK;
}

enum lt_status lt_local_sgd_start(lt_local_sgd *ls, lt_model *m)
{
	lt_backend *be = lt_model_backend(m);
	size_t n = lt_model_num_params(m);
	ls->model = m;
	ls->numel = n;
	ls->cut = malloc(((size_t)ls->local_size + 1) * sizeof *ls->cut);
	ls->shared = malloc(n * sizeof *ls->shared);
	ls->momentum = calloc(n, sizeof *ls->momentum);
	ls->move = malloc(n * sizeof *ls->move);
	ls->sent = malloc(n * sizeof *ls->sent);
	ls->base = ls->overlap ? malloc(n * sizeof *ls->base) : ls->shared;
	size_t slice = n / (size_t)ls->local_size + 1;
	if (ls->bf16)
		ls->half = malloc(((size_t)ls->nodes + 1) * slice * sizeof *ls->half);
	if (!ls->cut || !ls->shared || !ls->momentum || !ls->move || !ls->sent || !ls->base ||
	    (ls->bf16 && !ls->half)) {
		lt_errmsg_set("cannot allocate the local SGD state of %zu parameters (%zu bytes)", n,
			      (4 + (size_t)ls->overlap) * n * sizeof(float));
		return LT_ERR_NOMEM;
	}
	for (int j = 0; j <= ls->local_size; j++)
		ls->cut[j] = n / (size_t)ls->local_size * (size_t)j +
			     (n % (size_t)ls->local_size) * (size_t)j / (size_t)ls->local_size;
	/* touched now, not at the first round's end, whose exchange would
	 * otherwise pay for the pages */
	memset(ls->move, 0, n * sizeof *ls->move);
	memset(ls->sent, 0, n * sizeof *ls->sent);
	be->ops->read(be, ls->shared, lt_model_params(m), n);
	if (ls->base != ls->shared)
		memcpy(ls->base, ls->shared, n * sizeof *ls->base);
	if (ls->overlap)
		lt_model_set_param_hook(m, &(struct lt_param_hook){ .ctx = ls,
								    .need = progress_hook });
	ls->round_t0 = lt_seconds();
	return be->ops->sync(be);
}

void lt_local_sgd_outer(float *shared, float *momentum, const float *move, size_t n, float lr,
			float mu)
{
	for (size_t i = 0; i < n; i++) {
		float g = move[i];
		momentum[i] = mu * momentum[i] + g;
		shared[i] -= lr * (g + mu * momentum[i]);
	}
}

/* The parameters' move this round, base - local, into ls->move. */
static enum lt_status read_own_move(lt_local_sgd *ls)
{
	lt_backend *be = lt_model_backend(ls->model);
	be->ops->read(be, ls->move, lt_model_params(ls->model), ls->numel);
	enum lt_status st = be->ops->sync(be);
	for (size_t i = 0; i < ls->numel; i++)
		ls->move[i] = ls->base[i] - ls->move[i];
	return st;
}

/* Starts the sum over the nodes of this rank's slice of the move,
 * weighted, and of the weight. */
static enum lt_status start_move(lt_local_sgd *ls, float weight)
{
	size_t lo = ls->cut[ls->local_rank], hi = ls->cut[ls->local_rank + 1];
	enum lt_status st;
	uint16_t *mine = ls->half ? ls->half + (size_t)ls->nodes * (hi - lo) : NULL;
	for (size_t i = lo; i < hi; i++)
		ls->sent[i] = weight * ls->move[i];
	for (size_t i = lo; mine && i < hi; i++)
		mine[i - lo] = lt_bf16_from_f32(ls->sent[i]);
	ls->sent_weight = weight;
	if (mine)
		st = lt_dist_cross_allgather_start(ls->dist, mine, ls->half, (hi - lo) * sizeof *mine,
						   "the parameters' moves between nodes (bf16)");
	else
		st = lt_dist_cross_sum_start(ls->dist, ls->sent + lo, hi - lo,
					     "the parameters' moves between nodes");
	if (st != LT_OK ||
	    (st = lt_dist_cross_sum_start(ls->dist, &ls->sent_weight, 1,
					  "the nodes' weights")) != LT_OK)
		return st;
	ls->pending = 1;
	return LT_OK;
}

/* bf16: this rank's slice of the move summed in f32 over the nodes' bf16
 * slices, in the nodes' order. */
static void sum_halves(lt_local_sgd *ls)
{
	size_t lo = ls->cut[ls->local_rank], hi = ls->cut[ls->local_rank + 1], s = hi - lo;
	for (size_t i = 0; i < s; i++) {
		float sum = 0;
		for (int k = 0; k < ls->nodes; k++)
			sum += lt_bf16_to_f32(ls->half[(size_t)k * s + i]);
		ls->sent[lo + i] = sum;
	}
}

/* Ends the sum under way: the node's ranks hand each other their slices,
 * and the outer step takes the nodes' mean move. */
static enum lt_status finish_move(lt_local_sgd *ls)
{
	enum lt_status st;
	if (!ls->pending)
		return LT_OK;
	ls->pending = 0;
	if ((st = lt_dist_wait_all(ls->dist)) != LT_OK)
		return st;
	if (ls->half)
		sum_halves(ls);
	if ((st = lt_dist_allgatherv_f32(ls->inner, ls->sent, ls->cut,
					 "the nodes' mean move within the node")) != LT_OK)
		return st;
	if (!(ls->sent_weight > 0)) {
		lt_errmsg_set("local SGD: the nodes trained no tokens in the round");
		return LT_ERR_NUMERIC;
	}
	float inv = 1.0f / ls->sent_weight;
	for (size_t i = 0; i < ls->numel; i++)
		ls->sent[i] *= inv;
	lt_local_sgd_outer(ls->shared, ls->momentum, ls->sent, ls->numel, ls->lr, ls->mu);
	return LT_OK;
}

/* Every rank's model takes p. */
static enum lt_status put_params(lt_local_sgd *ls, const float *p)
{
	lt_backend *be = lt_model_backend(ls->model);
	be->ops->write(be, lt_model_params(ls->model), p, ls->numel);
	return be->ops->sync(be);
}

/* The end of a round: the nodes' mean move and the outer step, after
 * which every rank's model holds the new shared parameters. Overlapped
 * (and not `last`), the round's move is only started: the last round's,
 * now summed, makes the outer step, and the node goes on from the new
 * shared parameters moved by its own move of this round. */
static enum lt_status end_round(lt_local_sgd *ls, int last)
{
	float weight = ls->weighted ? (float)ls->tokens : 1.0f;
	enum lt_status st;
	ls->in_round = 0;
	ls->tokens = 0;
	ls->round_t0 = lt_seconds();
	if ((st = read_own_move(ls)) != LT_OK || (st = finish_move(ls)) != LT_OK ||
	    (st = start_move(ls, weight)) != LT_OK)
		return st;
	if (!ls->overlap || last) {
		if ((st = finish_move(ls)) != LT_OK)
			return st;
		if (ls->base != ls->shared)
			memcpy(ls->base, ls->shared, ls->numel * sizeof *ls->base);
		return put_params(ls, ls->shared);
	}
	for (size_t i = 0; i < ls->numel; i++)
		ls->base[i] = ls->shared[i] - ls->move[i];
	return put_params(ls, ls->base);
}

enum lt_status lt_local_sgd_settle(lt_local_sgd *ls)
{
	return finish_move(ls);
}

enum lt_status lt_local_sgd_land(lt_local_sgd *ls)
{
	enum lt_status st;
	if (!ls->pending)
		return LT_OK;
	if ((st = finish_move(ls)) != LT_OK)
		return st;
	memcpy(ls->base, ls->shared, ls->numel * sizeof *ls->base);
	return put_params(ls, ls->shared);
}

enum lt_status lt_local_sgd_after_step(lt_local_sgd *ls, long step, int stop, double tokens,
				       int due, double *outer_s)
{
	/* the run ends with shared parameters; a signal's checkpoint keeps
	 * the round, to be resumed. Rounds of wall time end at any stop, each
	 * node on its own: whether the run ends is known only after the
	 * exchange, so an overlapped sum lands with lt_local_sgd_land */
	int timed = ls->round_s > 0;
	int end = timed ? step >= ls->steps || stop || due : step >= ls->steps || stop == 2;
	*outer_s = 0;
	ls->in_round++;
	ls->tokens += tokens;
	if ((timed || ls->in_round < ls->local_steps) && !end)
		return ls->pending ? lt_dist_progress(ls->dist) : LT_OK;
	double t0 = lt_seconds();
	enum lt_status st = end_round(ls, end && !timed);
	*outer_s = lt_seconds() - t0;
	return st;
}

int lt_local_sgd_in_round(const lt_local_sgd *ls) { return ls->in_round; }
