/* Pipeline parallelism in the trainer: the 1F1B schedule of a step and the
 * split of the blocks into stages. */
#include "config.h"
#include "train/pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

/* Messages go to one side: NEXT (later stage) or PREV. */
enum { PREV, NEXT };

/* Each message ends with the time it left (a double in two floats), for
 * the emulated link of benchmarks (LLTRAIN_BENCH_LINK_GBITS). */
#define STAMP 2

struct lt_pipeline {
	lt_dist *pp;
	int stage, stages;
	lt_model *m;
	lt_zero *z;
	size_t n;           /* floats of a boundary tensor: rows x seq x dim */
	int rows, seq, sets;
	int exact;          /* each backward's gradient into ZeRO's exact sum */
	int ahead;          /* forwards beyond the warm-up of 1F1B */
	int32_t *tokens, *targets;
	/* receives posted ahead, two at a time: the inputs of forwards
	 * (from PREV) and the output gradients of backwards (from NEXT) */
	float *in[2], *gin[2];
	int in_msg[2], gin_msg[2];
	/* sends under way: outputs (one per activation set) and input
	 * gradients (two) */
	float **out, *gout[2];
	int *out_msg, gout_msg[2];
	double compute_s, wait_s;
	double cross_s;     /* a boundary tensor's trip to a neighbour, measured */
	double link_bps;    /* > 0: the emulated link's bits a second, and then */
	double link_free[2];  /* when each side's link is free again */
};

/* ------------------------------------------------------------ the split */

/* FLOPs per token of one block's forward and backward: the matrices'
 * 6 per weight and the attention's scores and values, 12 x seq x width. */
static double block_cost(const struct lt_model_config *c, int seq)
{
	return 6.0 * (double)lt_model_config_block_params(c) +
	       12.0 * seq * (double)c->n_heads * lt_model_config_head_dim(c);
}

/* Whether L blocks split into pp stages that each take at most `most`
 * seconds, stage s running speed[s] FLOPs a second (NULL: 1), the first
 * carrying `first` more FLOPs and the last `last` more: each stage but
 * the last takes what it can, leaving a block for each stage after it;
 * the stages' first blocks into start[pp + 1] when they do. */
static int fits(int L, int pp, double block, double first, double last, const double *speed,
		double most, int *start)
{
	int b = 0;
	for (int s = 0; s < pp - 1; s++) {
		double cost = s == 0 ? first : 0, room = most * (speed ? speed[s] : 1);
		start[s] = b;
		while (b < L - (pp - 1 - s) && cost + block <= room) {
			cost += block;
			b++;
		}
		if (b == start[s])
			return 0;
	}
	start[pp - 1] = b;
	start[pp] = L;
	return (double)(L - b) * block + last + (pp == 1 ? first : 0) <=
	       most * (speed ? speed[pp - 1] : 1);
}

/* The FLOPs a token costs the stage of blocks [b0, b1) of L: the head's
 * with the last. */
static double stage_cost(const struct lt_model_config *c, int seq, int b0, int b1)
{
	double head = b1 == c->n_layers ? 6.0 * (double)c->vocab_size * c->dim : 0;
	return (b1 - b0) * block_cost(c, seq) + head;
}

/* The stages' first blocks into start[pp + 1] for stages of speed[pp]
 * (NULL: equal): the least bound on a stage's time under which the
 * blocks fit, searched. */
static void split_for(const struct lt_model_config *c, int seq, int pp, const double *speed,
		      int *start)
{
	int L = c->n_layers;
	double block = block_cost(c, seq), first = 0;
	double last = stage_cost(c, seq, L, L);  /* the head; the lookup is free */
	double slowest = 1;
	for (int s = 0; speed && s < pp; s++)
		if (speed[s] < slowest || s == 0)
			slowest = speed[s];
	double lo = 0, hi = (first + last + L * block) / slowest;
	for (int i = 0; i < 200 && hi - lo > 1e-9 * hi; i++) {
		double mid = (lo + hi) / 2;
		if (fits(L, pp, block, first, last, speed, mid, start))
			hi = mid;
		else
			lo = mid;
	}
	int ok = fits(L, pp, block, first, last, speed, hi, start);
	LT_ASSERT(ok);
}

double lt_pipeline_resplit(const struct lt_model_config *c, int seq, int pp, const int *start,
			   const double *seconds, int *better)
{
	double *speed = calloc((size_t)pp, sizeof *speed), now = 0, then = 0;
	LT_ASSERT(speed);
	for (int s = 0; s < pp; s++) {
		double sec = seconds[s] > 0 ? seconds[s] : 1e-9;
		speed[s] = stage_cost(c, seq, start[s], start[s + 1]) / sec;
		now = seconds[s] > now ? seconds[s] : now;
	}
	split_for(c, seq, pp, speed, better);
	for (int s = 0; s < pp; s++) {
		double t = stage_cost(c, seq, better[s], better[s + 1]) / speed[s];
		then = t > then ? t : then;
	}
	free(speed);
	return now > 0 ? then / now : 1;
}

enum lt_status lt_pipeline_starts(const struct lt_model_config *c, int seq, int pp,
				  const int *layers, int **start)
{
	LT_ASSERT(pp >= 1 && pp <= c->n_layers);
	if (!(*start = malloc((size_t)(pp + 1) * sizeof **start))) {
		lt_errmsg_set("cannot allocate the stages' table");
		return LT_ERR_NOMEM;
	}
	if (!layers || layers[0] == 0) {
		split_for(c, seq, pp, NULL, *start);
		return LT_OK;
	}
	(*start)[0] = 0;
	for (int s = 0; s < pp; s++)
		(*start)[s + 1] = (*start)[s] + layers[s];
	LT_ASSERT((*start)[pp] == c->n_layers);
	return LT_OK;
}

void lt_pipeline_say(lt_metrics *mt, const int *start, int pp, int micro)
{
	char line[2048];
	size_t at = 0;
	at += (size_t)snprintf(line, sizeof line, "pipeline: %d stages, 1F1B over %d "
			       "micro-batches a step (ideal bubble %.1f%%):", pp, micro,
			       100.0 * (pp - 1) / (micro + pp - 1));
	for (int s = 0; s < pp && at < sizeof line; s++)
		at += (size_t)snprintf(line + at, sizeof line - at, "%s stage %d blocks %d-%d%s",
				       s ? ";" : "", s, start[s], start[s + 1] - 1,
				       s == 0 ? " and the embedding"
				       : s == pp - 1 ? ", the final norm and the head" : "");
	lt_metrics_say(mt, "%s", line);
}

/* ------------------------------------------------------------ the stage */

void lt_pipeline_free(lt_pipeline *p)
{
	if (!p)
		return;
	for (int i = 0; i < 2; i++) {
		free(p->in[i]);
		free(p->gin[i]);
		free(p->gout[i]);
	}
	for (int k = 0; p->out && k < p->sets; k++)
		free(p->out[k]);
	free(p->out);
	free(p->out_msg);
	free(p->tokens);
	free(p->targets);
	free(p);
}

/* One trip of a boundary tensor from `from` to `to` (the others idle). */
static enum lt_status trip(lt_pipeline *p, int from, int to, float *buf)
{
	int msg;
	enum lt_status st = LT_OK;
	if (p->stage == from)
		st = lt_dist_send_start(p->pp, buf, p->n, to, "the pipeline's probe", &msg);
	else if (p->stage == to)
		st = lt_dist_recv_start(p->pp, buf, p->n, from, "the pipeline's probe", &msg);
	else
		return LT_OK;
	return st == LT_OK ? lt_dist_msg_wait(p->pp, msg) : st;
}

/* Collective: the seconds a boundary tensor takes between neighbours,
 * the least of a few round trips of each pair, halved; the slowest
 * pair's. */
static enum lt_status probe_crossing(lt_pipeline *p)
{
	float *buf = calloc(p->n, sizeof *buf);
	double most = 0;
	enum lt_status st = buf ? LT_OK : LT_ERR_NOMEM;
	if (!buf)
		lt_errmsg_set("cannot allocate the pipeline's probe");
	for (int s = 0; s + 1 < p->stages && st == LT_OK; s++) {
		double least = 1e30;
		for (int r = 0; r < 4 && st == LT_OK; r++) {
			double t0 = lt_seconds();
			if ((st = trip(p, s, s + 1, buf)) == LT_OK)
				st = trip(p, s + 1, s, buf);
			double t = (lt_seconds() - t0) / 2;
			least = t < least ? t : least;
		}
		most = least > most && (p->stage == s || p->stage == s + 1) ? least : most;
	}
	free(buf);
	if (st == LT_OK)
		st = lt_dist_allreduce(p->pp, &most, 1, LT_DIST_F64, LT_DIST_MAX,
				       "the pipeline's probe");
	p->cross_s = most;
	return st;
}

double lt_pipeline_cross_seconds(const lt_pipeline *p)
{
	return p->cross_s;
}

size_t lt_pipeline_host_bytes(int pp, int s, size_t n, int sets)
{
	/* inputs and input gradients (2 each) but on the first, output
	 * gradients (2) and outputs (one a set) but on the last */
	int buffers = (s > 0 ? 4 : 0) + (s < pp - 1 ? 2 + sets : 0);
	return (size_t)buffers * (n + STAMP) * sizeof(float);
}

int lt_pipeline_in_flight(int pp, int s, int ahead)
{
	return pp - s + (s < pp - 1 ? ahead : 0);
}

enum lt_status lt_pipeline_new(lt_dist *pp, lt_model *m, lt_zero *z, int rows, int seq,
			       int exact, int ahead, lt_pipeline **out)
{
	lt_pipeline *p = calloc(1, sizeof *p);
	*out = NULL;
	if (!p)
		goto nomem;
	*p = (struct lt_pipeline){ .pp = pp, .stage = lt_dist_rank(pp), .stages = lt_dist_size(pp),
				   .m = m, .z = z, .rows = rows, .seq = seq, .exact = exact,
				   .ahead = ahead,
				   .sets = lt_model_act_sets(m) };
	p->n = (size_t)rows * seq * lt_model_config_of(m)->dim;
	p->link_bps = lt_dist_link_gbits(pp) * 1e9;
	size_t ids = (size_t)rows * seq;
	p->tokens = malloc(ids * sizeof *p->tokens);
	p->targets = malloc(ids * sizeof *p->targets);
	p->out = calloc((size_t)p->sets, sizeof *p->out);
	p->out_msg = malloc((size_t)p->sets * sizeof *p->out_msg);
	if (!p->tokens || !p->targets || !p->out || !p->out_msg)
		goto nomem;
	for (int k = 0; k < p->sets; k++) {
		p->out_msg[k] = -1;
		if (p->stage < p->stages - 1 && !(p->out[k] = malloc((p->n + STAMP) * sizeof(float))))
			goto nomem;
	}
	for (int i = 0; i < 2; i++) {
		p->in_msg[i] = p->gin_msg[i] = p->gout_msg[i] = -1;
		int later = p->stage < p->stages - 1, earlier = p->stage > 0;
		size_t bytes = (p->n + STAMP) * sizeof(float);
		if ((earlier && !(p->in[i] = malloc(bytes))) ||
		    (later && !(p->gin[i] = malloc(bytes))) ||
		    (earlier && !(p->gout[i] = malloc(bytes))))
			goto nomem;
	}
	enum lt_status st = probe_crossing(p);
	if (st != LT_OK) {
		lt_pipeline_free(p);
		return st;
	}
	*out = p;
	return LT_OK;
nomem:
	lt_pipeline_free(p);
	lt_errmsg_set("cannot allocate the pipeline's boundary buffers");
	return LT_ERR_NOMEM;
}

/* Waits for message *msg if one is under way (the seconds counted as the
 * stage's wait). */
static enum lt_status finish(lt_pipeline *p, int *msg)
{
	if (*msg < 0)
		return LT_OK;
	double t0 = lt_seconds();
	enum lt_status st = lt_dist_msg_wait(p->pp, *msg);
	p->wait_s += lt_seconds() - t0;
	*msg = -1;
	return st;
}

/* A message into buf under way to `side`: its time of leaving stamped, and
 * sent. */
static enum lt_status send_on(lt_pipeline *p, int side, float *buf, int *msg)
{
	double now = lt_seconds();
	memcpy(buf + p->n, &now, sizeof now);
	return lt_dist_send_start(p->pp, buf, p->n + STAMP, p->stage + (side == NEXT ? 1 : -1),
				  side == NEXT ? "a pipeline stage's output"
				  : "a pipeline stage's input gradient", msg);
}

/* Waits for the receive *msg into buf from `side`; with an emulated link,
 * also until the link would have carried it, from the time it left after
 * the side's message before it (the seconds are the stage's wait). */
static enum lt_status receive(lt_pipeline *p, int side, float *buf, int *msg)
{
	enum lt_status st = finish(p, msg);
	if (st != LT_OK || p->link_bps <= 0)
		return st;
	double left, now = lt_seconds();
	memcpy(&left, buf + p->n, sizeof left);
	double start = left > p->link_free[side] ? left : p->link_free[side];
	double due = start + (double)(p->n + STAMP) * sizeof(float) * 8 / p->link_bps;
	p->link_free[side] = due;
	if (due > now) {
		usleep((useconds_t)((due - now) * 1e6));
		p->wait_s += lt_seconds() - now;
	}
	return LT_OK;
}

/* Posts the receive of micro-batch a's input (from PREV) or of its
 * output's gradient (from NEXT), if the stage has such a neighbour. */
static enum lt_status post_receive(lt_pipeline *p, int side, int a, int micro)
{
	int peer = side == PREV ? p->stage - 1 : p->stage + 1;
	if (a >= micro || peer < 0 || peer >= p->stages)
		return LT_OK;
	float *buf = side == PREV ? p->in[a % 2] : p->gin[a % 2];
	int *msg = side == PREV ? &p->in_msg[a % 2] : &p->gin_msg[a % 2];
	return lt_dist_recv_start(p->pp, buf, p->n + STAMP, peer,
				  side == PREV ? "a pipeline stage's input" : "a pipeline stage's "
				  "output gradient", msg);
}

/* Forward of micro-batch a in its activation set: its input received (and
 * the next one's receive posted), its output sent on. */
static enum lt_status forward(lt_pipeline *p, int a, int micro, float scale, double *sums)
{
	int k = a % p->sets;
	double loss = 0;
	long n = 0;
	lt_model_use_acts(p->m, k);
	enum lt_status st = LT_OK;
	if (p->stage > 0 && (st = receive(p, PREV, p->in[a % 2], &p->in_msg[a % 2])) == LT_OK &&
	    (st = lt_model_stage_write_input(p->m, p->in[a % 2])) == LT_OK)
		st = post_receive(p, PREV, a + 1, micro);
	double t0 = lt_seconds();
	if (st == LT_OK)
		st = lt_model_forward(p->m, p->tokens, p->targets, scale, &loss, &n);
	p->compute_s += lt_seconds() - t0;
	sums[0] += loss;
	sums[1] += (double)n;
	if (st != LT_OK || p->stage == p->stages - 1)
		return st;
	/* the set's last output has left: its buffer is free */
	if ((st = finish(p, &p->out_msg[k])) == LT_OK &&
	    (st = lt_model_stage_read_output(p->m, p->out[k])) == LT_OK)
		st = send_on(p, NEXT, p->out[k], &p->out_msg[k]);
	return st;
}

/* Backward of micro-batch a in its activation set: its output's gradient
 * received (and the next one's posted), its input's gradient sent back. */
static enum lt_status backward(lt_pipeline *p, int a, int micro)
{
	int k = a % p->sets, g = a % 2;
	lt_model_use_acts(p->m, k);
	enum lt_status st = LT_OK;
	if (p->stage < p->stages - 1 && (st = receive(p, NEXT, p->gin[g], &p->gin_msg[g])) == LT_OK &&
	    (st = lt_model_stage_write_output_grad(p->m, p->gin[g])) == LT_OK)
		st = post_receive(p, NEXT, a + 2, micro);
	double t0 = lt_seconds();
	if (st == LT_OK)
		st = lt_zero_arm(p->z, a == micro - 1);
	if (st == LT_OK)
		st = lt_model_backward(p->m);
	if (st == LT_OK && p->exact)
		st = lt_zero_add_sequence(p->z);
	p->compute_s += lt_seconds() - t0;
	if (st != LT_OK || p->stage == 0)
		return st;
	if ((st = finish(p, &p->gout_msg[g])) == LT_OK &&
	    (st = lt_model_stage_read_input_grad(p->m, p->gout[g])) == LT_OK)
		st = send_on(p, PREV, p->gout[g], &p->gout_msg[g]);
	return st;
}

/* Waits for every message still under way. */
static enum lt_status finish_all(lt_pipeline *p, enum lt_status st)
{
	/* after a failure the job ends: a neighbour that stalled would hold
	 * each wait to the watchdog's time */
	for (int i = 0; i < 2 && st == LT_OK; i++)
		if ((st = finish(p, &p->in_msg[i])) == LT_OK &&
		    (st = finish(p, &p->gin_msg[i])) == LT_OK)
			st = finish(p, &p->gout_msg[i]);
	for (int k = 0; k < p->sets && st == LT_OK; k++)
		st = finish(p, &p->out_msg[k]);
	return st;
}

/* Micro-batch a's data into the pipeline's batch buffers. */
static enum lt_status fetch(lt_pipeline *p, const struct lt_pipeline_source *src, int a)
{
	return src->batch(src->ctx, a, p->tokens, p->targets);
}

enum lt_status lt_pipeline_step(lt_pipeline *p, int micro, const struct lt_pipeline_source *src,
				float scale, double *sums)
{
	/* a warm-up of forwards fills the stages after this one (and runs
	 * `ahead` more, so that messages have a forward's time to travel);
	 * then each forward is followed by the oldest backward, and the
	 * cool-down runs the backwards left */
	int warm = lt_pipeline_in_flight(p->stages, p->stage, p->ahead) - 1, f = 0, b = 0;
	enum lt_status st;
	if (warm > micro)
		warm = micro;
	LT_ASSERT(p->sets >= (warm + 1 < micro ? warm + 1 : micro));
	p->compute_s = p->wait_s = 0;
	/* the first receives of each side, and the second gradient's */
	if ((st = post_receive(p, PREV, 0, micro)) == LT_OK &&
	    (st = post_receive(p, NEXT, 0, micro)) == LT_OK)
		st = post_receive(p, NEXT, 1, micro);
	while (st == LT_OK && b < micro) {
		if (f < micro && (f < warm || f - b <= warm)) {
			if ((st = fetch(p, src, f)) == LT_OK)
				st = forward(p, f, micro, scale, sums);
			f++;
		} else {
			st = backward(p, b++, micro);
		}
	}
	return finish_all(p, st);
}

enum lt_status lt_pipeline_forward(lt_pipeline *p, const int32_t *tokens, const int32_t *targets,
				   double *loss, long *n)
{
	double sums[2] = { 0, 0 };
	enum lt_status st = post_receive(p, PREV, 0, 1);
	for (size_t i = 0; i < (size_t)p->rows * p->seq; i++) {
		p->tokens[i] = tokens[i];
		p->targets[i] = targets[i];
	}
	if (st == LT_OK)
		st = forward(p, 0, 1, 0.0f, sums);
	*loss = sums[0];
	*n = (long)sums[1];
	return finish_all(p, st);
}

enum lt_status lt_pipeline_times(const lt_pipeline *p, double *all, double *bubble)
{
	double *both = malloc(2 * (size_t)p->stages * sizeof *both);
	double mine[2] = { p->compute_s, p->wait_s };
	if (!both) {
		lt_errmsg_set("cannot allocate the stages' times");
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_dist_allgather(p->pp, mine, both, sizeof mine, "the stages' times");
	*bubble = 0;
	for (int s = 0; s < p->stages && st == LT_OK; s++) {
		all[s] = both[2 * s];
		all[p->stages + s] = both[2 * s + 1];
		double busy = all[s] + all[p->stages + s];
		*bubble += busy > 0 ? all[p->stages + s] / busy / p->stages : 0;
	}
	free(both);
	return st;
}
