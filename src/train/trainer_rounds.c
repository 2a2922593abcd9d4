/* Local SGD in the trainer: its setup, and its rounds of wall time
 * (dist.round_seconds), in which each node steps on its own until its
 * clock ends the round, then the nodes exchange their moves and agree on
 * the job's progress. */
#include "config.h"
#include "train/trainer_impl.h"

#include <math.h>
#include <stdlib.h>

#include "clock.h"
#include "train/rank_report.h"

/* Local SGD's state over the job's nodes; with rounds of wall time a
 * step's sums, shares and agreement go over the node's ranks, which take
 * the node's share of train.batch. */
enum lt_status lt_trainer_setup_local(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	enum lt_status st = LT_OK;
	if (c->dist.sync != LT_SYNC_LOCAL)
		return LT_OK;
	/* a range test or a micro-batch trial ties the nodes' steps: its rounds
	 * are of steps, each rank's share of a step the same as timed */
	struct lt_conf lc = *c;
	if (t->probe)
		lc.dist.round_seconds = 0;
	if ((st = lt_trainer_agree(t, lt_local_sgd_new(t->dist, &lc, &t->local), "local SGD",
				   0)) != LT_OK || !(lc.dist.round_seconds > 0))
		return st;
	int nodes = lt_local_sgd_nodes(t->local);
	if ((st = lt_trainer_agree(t, lt_local_sgd_check_rounds(t->dist, c),
				   "local SGD's rounds of wall time", 0)) != LT_OK)
		return st;
	t->timed = 1;
	t->step_dist = lt_local_sgd_inner(t->local);
	t->rank = lt_dist_rank(t->step_dist);
	t->ranks = lt_dist_size(t->step_dist);
	t->batch = c->train.batch / nodes;
	t->node_row0 = lt_dist_node_index(t->job) * t->batch;
	t->node_agreement = (struct lt_agreement){ .dist = t->step_dist,
						   .timeout = c->dist.comm_timeout };
	t->expect = calloc((size_t)nodes, sizeof *t->expect);
	if (!t->expect) {
		lt_errmsg_set("cannot allocate the rounds' steps of %d nodes", nodes);
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

/* Node j's blocks of a round: the nodes' expected steps e (the last
 * round's) lie one after another, node j's from the sum of those before
 * it (*first), and the blocks a node takes beyond its own expectation
 * come after all of them, dealt in turn over the nodes (*past: their
 * start, the sum of e). */
static void expected_blocks(const long *e, int nodes, int j, uint64_t *first, uint64_t *past)
{
	*first = *past = 0;
	for (int i = 0; i < nodes; i++) {
		*first += i < j ? (uint64_t)e[i] : 0;
		*past += (uint64_t)e[i];
	}
}

/* Block i (from 0) of node j's round. */
static uint64_t block_of(const long *e, int nodes, int j, uint64_t i)
{
	uint64_t first, past;
	expected_blocks(e, nodes, j, &first, &past);
	if (i < (uint64_t)e[j])
		return first + i;
	return past + (i - (uint64_t)e[j]) * (uint64_t)nodes + (uint64_t)j;
}

/* Each node reads its own blocks, so the nodes never train on the same
 * sequences; a round laid out for the speeds of the last leaves few
 * blocks unread between the nodes' (the first round deals them in turn). */
uint64_t lt_trainer_round_block(const lt_trainer *t)
{
	return block_of(t->expect, lt_local_sgd_nodes(t->local), lt_dist_node_index(t->job),
			(uint64_t)t->round_steps);
}

/* The job's step that this node's k-th step of the round (from 1)
 * stands for: the nodes were expected to take sum(e) steps in it, which
 * make sum(e) / nodes of the job's, this node e[k] of them (the first
 * round: a step each). At most train.steps. */
static long job_step_at(const lt_trainer *t, long from, long k)
{
	int nodes = lt_local_sgd_nodes(t->local), j = lt_dist_node_index(t->job);
	uint64_t first, past;
	expected_blocks(t->expect, nodes, j, &first, &past);
	long step = from + k;
	if (t->expect[j] > 0)  /* ceil(k past / (nodes e[j])) */
		step = from + (long)(((uint64_t)k * past + (uint64_t)nodes * (uint64_t)t->expect[j] - 1) /
				     ((uint64_t)nodes * (uint64_t)t->expect[j]));
	return step < t->conf.train.steps ? step : t->conf.train.steps;
}

/* The ranks' list: their shares of a step, each rank's of its node's with
 * rounds of wall time. */
enum lt_status lt_trainer_report_ranks(lt_trainer *t, const struct lt_rank_layout *l)
{
	int per_step = t->batch * t->conf.train.grad_accum, n = lt_dist_size(t->job);
	if (!t->timed)
		return lt_rank_report_list(l, t->be, t->rows, per_step);
	double *all = calloc((size_t)n, sizeof *all);
	size_t *rows = calloc((size_t)n, sizeof *rows);
	enum lt_status st = LT_ERR_NOMEM;
	if (!all || !rows)
		lt_errmsg_set("cannot allocate the ranks' shares of %d ranks", n);
	else {
		all[lt_dist_rank(t->job)] = (double)t->rows[t->rank];
		st = lt_dist_allreduce(t->job, all, (size_t)n, LT_DIST_F64, LT_DIST_SUM,
				       "the ranks' shares");
	}
	for (int i = 0; st == LT_OK && i < n; i++)
		rows[i] = (size_t)all[i];
	if (st == LT_OK)
		st = lt_rank_report_list(l, t->be, rows, per_step);
	free(all);
	free(rows);
	return st;
}

/* Where a round's numbers come together, summed over the job: each
 * node's steps (one slot a node), then the tokens and the two votes to
 * stop. Every rank of a node puts in the same, hence the division by the
 * ranks of a node. */
enum { V_TOKENS, V_SIGNAL, V_BUDGET, V_COUNT };

/* Rank 0's line at a round's end: each node's steps and the job's. */
static void say_round(lt_trainer *t, const long *steps, int nodes, long from)
{
	char line[1024];
	size_t len = 0;
	len += (size_t)snprintf(line, sizeof line, "round: steps per node");
	for (int k = 0; k < nodes && len < sizeof line; k++)
		len += (size_t)snprintf(line + len, sizeof line - len, " %ld", steps[k]);
	if (len < sizeof line)
		snprintf(line + len, sizeof line - len, "; job step %ld to %ld/%d", from,
			 t->state.step, t->conf.train.steps);
	if (t->lead)
		lt_metrics_say(t->metrics, "%s", line);
}

/* The end of a round on every rank of the job (the exchange is behind):
 * the job's step becomes the one it began at plus the nodes' steps over
 * the nodes (what does not make a whole step is carried to the next
 * round), the data position moves past the most steps a node took, and
 * *stop gets the votes of any node (1 signal, 2 time budget). */
static enum lt_status agree_round(lt_trainer *t, long from, int *stop)
{
	const struct lt_conf *c = &t->conf;
	int nodes = lt_local_sgd_nodes(t->local), k = lt_dist_node_index(t->job);
	double per = (double)lt_dist_local_size(t->job);
	double *v = calloc((size_t)nodes + V_COUNT, sizeof *v);
	long *steps = calloc((size_t)nodes, sizeof *steps);
	struct lt_local_sgd_state o;
	enum lt_status st;
	if (!v || !steps) {
		free(v);
		free(steps);
		lt_errmsg_set("cannot allocate a round's sums of %d nodes", nodes);
		return LT_ERR_NOMEM;
	}
	v[k] = (double)t->round_steps;
	v[nodes + V_TOKENS] = t->round_tokens;
	v[nodes + V_SIGNAL] = t->stop == 1;
	v[nodes + V_BUDGET] = t->stop == 2;
	st = lt_dist_allreduce(t->job, v, (size_t)nodes + V_COUNT, LT_DIST_F64, LT_DIST_SUM,
			       "the round's steps between nodes");
	if (st == LT_OK) {
		long sum = 0;
		uint64_t read = 0;  /* the blocks up to the last any node read */
		for (int j = 0; j < nodes; j++) {
			steps[j] = lround(v[j] / per);
			sum += steps[j];
			uint64_t top = steps[j] > 0 ? block_of(t->expect, nodes, j,
							       (uint64_t)steps[j] - 1) + 1 : 0;
			read = top > read ? top : read;
		}
		lt_local_sgd_state(t->local, &o);
		long all = sum + *o.carry;
		*o.carry = all % nodes;
		t->state.step = from + all / nodes < c->train.steps ? from + all / nodes
								     : c->train.steps;
		t->state.samples += read * (uint64_t)t->batch * (uint64_t)c->train.grad_accum;
		for (int j = 0; j < nodes; j++)
			t->expect[j] = steps[j];
		t->state.tokens += lround(v[nodes + V_TOKENS] / per);
		*stop = v[nodes + V_SIGNAL] > 0 ? 1 : v[nodes + V_BUDGET] > 0 ? 2 : 0;
		say_round(t, steps, nodes, from);
	}
	free(v);
	free(steps);
	return st;
}

/* One of this node's steps, its learning rate's step `step`, logged as
 * the lead's node's; *last is when the previous one ended. */
static enum lt_status node_step(lt_trainer *t, long step, double t0, double elapsed0,
				double *last)
{
	const struct lt_conf *c = &t->conf;
	struct lt_step_metrics sm = { .step = step, .total_steps = c->train.steps,
				      .ranks = t->ranks, .nodes = lt_dist_nodes(t->job) };
	enum lt_status st = lt_trainer_step(t, step, t0, &sm);
	if (st != LT_OK)
		return st;
	double now = lt_seconds();
	t->round_steps++;
	t->round_tokens += (double)sm.tokens;
	t->state.elapsed = elapsed0 + (now - t0);
	lt_trainer_measure(t, &sm, t->state.tokens + (long)t->round_tokens, now, last);
	/* (a node faster than the others takes more than one step to the
	 * job's, and logs each under the job's step it stands for) */
	if (t->metrics && (st = lt_metrics_step(t->metrics, &sm)) != LT_OK)
		return st;
	if ((st = lt_trainer_check_bad_steps(t, step, sm.skipped)) != LT_OK)
		return st;
	return t->balance ? lt_trainer_rebalance(t, step) : LT_OK;
}

/* The loop of rounds. Within a round a node's step k (from 1) trains at
 * the learning rate of the job's step it stands for (job_step_at); the
 * node ends its round when that reaches train.steps, its clock says, or
 * a vote to stop comes. Evaluation, samples and checkpoints fall due at
 * the rounds' ends. */
enum lt_status lt_trainer_rounds(lt_trainer *t)
{
	const struct lt_conf *c = &t->conf;
	double t0 = lt_seconds(), last = t0, elapsed0 = t->state.elapsed;
	long from = t->state.step;
	enum lt_status st = LT_OK;
	int stop = 0;
	lt_step_time_start(&t->time, t->step_dist);
	lt_dist_take_cross_bytes(t->dist);
	t->round_steps = 0;
	t->round_tokens = 0;
	lt_local_sgd_round_restart(t->local);  /* (the setup is not the first round's) */
	while (t->state.step < c->train.steps) {
		if ((st = node_step(t, job_step_at(t, from, t->round_steps + 1), t0, elapsed0,
				    &last)) != LT_OK)
			return st;
		if (!t->round_ended) {
			lt_step_time_between(&t->time);
			continue;
		}
		if ((st = agree_round(t, from, &stop)) != LT_OK ||
		    (st = lt_trainer_after(t, from, t->state.step)) != LT_OK)
			return st;
		lt_local_sgd_round_restart(t->local);
		from = t->state.step;
		t->round_steps = 0;
		t->round_tokens = 0;
		if (stop)
			break;
		lt_step_time_between(&t->time);
	}
	if ((st = lt_local_sgd_land(t->local)) != LT_OK)
		return st;
	if (stop == 1) {
		int sigint = t->stop_signal && *t->stop_signal == SIGINT;
		if (t->lead)
			lt_metrics_say(t->metrics, "%s at step %ld: saving a checkpoint",
				       sigint ? "interrupted" : "terminated", t->state.step);
		return LT_ERR_INTERRUPTED;
	}
	if (stop == 2 && t->lead)
		lt_metrics_say(t->metrics, "time budget of %g minutes reached at step %ld",
			       c->train.max_minutes, t->state.step);
	return LT_OK;
}
