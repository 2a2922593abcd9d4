/* Local SGD with an outer optimizer across nodes (dist.sync = local): the
 * ranks of a node train synchronously among themselves (their own ZeRO
 * exchange, over the node's job that lt_local_sgd_inner gives), and every
 * dist.local_steps steps the nodes average how far their parameters moved
 * since the parameters they last shared, in one all-reduce between nodes,
 * and take an outer Nesterov step with that mean move as the gradient.
 * Each node keeps its own AdamW moments. Local rank j carries the j-th
 * slice of the move between the nodes, so a node sends the parameters
 * once per round, not once per rank. With dist.outer_overlap the round's
 * sum runs during the next round and its outer step lands at that
 * round's end, each node going on meanwhile from its own parameters;
 * the model's parameter hook, which lt_local_sgd_start takes then, moves
 * the sum on before each block of a pass.
 * With dist.round_seconds a round is instead so many seconds of wall
 * time, each node stepping on its own until its local rank 0's clock ends
 * it (src/train/trainer_rounds.c keeps the job's count of steps).
 *
 * Ownership: lt_local_sgd_new gives a state that lt_local_sgd_free
 * releases with the node's job; it borrows the ranks and, from
 * lt_local_sgd_start on, the model. */
#ifndef LT_LOCAL_SGD_H
#define LT_LOCAL_SGD_H

#include <stddef.h>

#include "conf.h"
#include "dist/dist.h"
#include "model.h"

typedef struct lt_local_sgd lt_local_sgd;

/* LT_ERR_CONFIG, in one line, when the job d runs on one node or its
 * nodes run different numbers of ranks: local SGD needs two or more of
 * equal size. */
enum lt_status lt_local_sgd_check(const lt_dist *d);
/* LT_ERR_CONFIG, in one line, when c asks for rounds of wall time
 * (dist.round_seconds > 0) and train.batch does not split evenly over
 * the nodes of d. */
enum lt_status lt_local_sgd_check_rounds(const lt_dist *d, const struct lt_conf *c);
/* Local SGD over the nodes of d with c's keys (collective over d), which
 * lt_local_sgd_check must pass. */
enum lt_status lt_local_sgd_new(lt_dist *d, const struct lt_conf *c, lt_local_sgd **out);
void lt_local_sgd_free(lt_local_sgd *ls);

/* The ranks of this rank's node as a job of their own: the inner
 * exchange runs over it. */
lt_dist *lt_local_sgd_inner(const lt_local_sgd *ls);
/* One line on the rounds, for the run's start: "local SGD: 2 nodes of 2
 * ranks, an outer Nesterov step every 20 steps (lr 0.7, momentum 0.9),
 * moves in fp32, overlapped". */
void lt_local_sgd_describe(const lt_local_sgd *ls, char *buf, size_t cap);
/* How many nodes share the parameters. */
int lt_local_sgd_nodes(const lt_local_sgd *ls);
/* dist.round_seconds: > 0 when a round is that much wall time, each node
 * stepping on its own until its local rank 0's clock says so. */
double lt_local_sgd_round_seconds(const lt_local_sgd *ls);
/* With rounds of wall time, on the node's local rank 0: whether this
 * round has lasted dist.round_seconds (0 on the node's other ranks, which
 * learn it from the node's sum). */
int lt_local_sgd_round_due(const lt_local_sgd *ls);
/* The round's clock starts again (after work between rounds, such as a
 * checkpoint, that no node's steps should pay for). */
void lt_local_sgd_round_restart(lt_local_sgd *ls);
/* The factor that turns the step's gradient scale (one over the tokens of
 * the whole step's batch) into one over the tokens of this node's share,
 * rows[rank] being each job rank's sequences of a step. */
double lt_local_sgd_scale(const lt_local_sgd *ls, const size_t *rows);

/* Once m holds its first parameters (initialised, imported or resumed):
 * they become the shared ones, the outer momentum zero. Overlapped, it
 * sets m's parameter hook (free with ZeRO stage 1 or 2, which local SGD
 * runs with), which lt_local_sgd_free clears. */
enum lt_status lt_local_sgd_start(lt_local_sgd *ls, lt_model *m);
/* After inner step `step`, of `tokens` trained tokens of this node (the
 * move's weight with dist.balance = auto): ends the round, when it holds
 * dist.local_steps steps, or the step is the last (train.steps, or `stop`
 * is 2: the time budget is spent), with the exchange between the nodes
 * and the outer step; every rank's model then holds the new shared
 * parameters. With rounds of wall time the round ends instead when `due`
 * (the node's clock said so), at the last step or at any stop, and an
 * overlapped sum stays under way (lt_local_sgd_land ends it). *outer_s
 * gets the seconds the exchange and the outer step took (0 when the round
 * goes on). */
enum lt_status lt_local_sgd_after_step(lt_local_sgd *ls, long step, int stop, double tokens,
				       int due, double *outer_s);
/* Inner steps since the last exchange (0 right after a round's end). */
int lt_local_sgd_in_round(const lt_local_sgd *ls);
/* Overlapped rounds of wall time, once the nodes agree the run ends: the
 * sum under way makes its outer step and every rank's model takes the
 * shared parameters; a no-op when none is under way. */
enum lt_status lt_local_sgd_land(lt_local_sgd *ls);

/* The outer state, for checkpoints: pointers into ls, read and written
 * by the caller. */
struct lt_local_sgd_state {
	float *shared, *momentum;   /* [numel] */
	float *base;                /* [numel] where the node's round began when
				       overlapped (else NULL: the shared ones) */
	size_t numel;
	int *in_round;              /* inner steps since the last exchange */
	double *tokens;             /* this node's tokens in them */
	long *carry;                /* rounds of wall time: the nodes' steps short of a job
				       step */
	int nodes, node;            /* the nodes, and this rank's (0 to nodes - 1) */
};
/* After lt_local_sgd_start. */
void lt_local_sgd_state(lt_local_sgd *ls, struct lt_local_sgd_state *out);
/* Overlapped: completes the exchange under way, which makes its outer
 * step (the rounds that follow are the same whenever it lands), so that
 * the state holds no message in flight; a no-op otherwise. */
enum lt_status lt_local_sgd_settle(lt_local_sgd *ls);

/* The outer step on n elements: with the nodes' mean move g = shared -
 * local (each node's weighted), momentum v = mu v + g, then shared -= lr
 * (g + mu v) (Nesterov). */
void lt_local_sgd_outer(float *shared, float *momentum, const float *move, size_t n, float lr,
			float mu);

#endif
