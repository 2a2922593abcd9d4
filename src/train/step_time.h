/* Where a training step's seconds went, and the memory it held at its end,
 * for its metrics line: this rank's
 * forward and backward less the waits inside them, its waits for slower
 * ranks, for the gradient exchange and the loss all-reduce, and its
 * update less the waits after it. The step calls the marks below in its
 * order; each takes the waits lt_dist counted since the one before
 * (lt_dist_take_wait_seconds, lt_dist_take_barrier_seconds), so that
 * every second of waiting is counted once, where it belongs.
 *
 * Ownership: the caller owns struct lt_step_time and borrows its lt_dist
 * to it. */
#ifndef LT_STEP_TIME_H
#define LT_STEP_TIME_H

#include "backend.h"
#include "dist/dist.h"
#include "io/metrics.h"

struct lt_step_time {
	lt_dist *dist;
	double mark;              /* when the part being timed began */
	double compute_s;         /* this step's forward + backward seconds, less the
				     exchanges they waited for (stage 2 waits inside) */
	double sync_s;            /* this step's wait for slower ranks: their forward +
				     backward, and their arrival at node barriers */
	double comm_s;            /* this step's wait for the gradient exchange */
	double loss_wait_s;       /* this step's wait for the loss all-reduce */
	double update_s;          /* this step's AdamW, parameter all-gather and copies */
};

/* Before the first step: the waits so far belong to no step. */
void lt_step_time_start(struct lt_step_time *t, lt_dist *d);
/* A step begins with its forward and backward passes. */
void lt_step_time_begin(struct lt_step_time *t);
/* The passes are done: compute_s is their time less the exchanges and
 * barriers they waited at. */
void lt_step_time_passes_done(struct lt_step_time *t);
/* The ranks agreed that the passes succeeded: the first exchange after
 * the passes waits for the slowest rank. */
void lt_step_time_agreed(struct lt_step_time *t);
/* The gradient exchange is done. */
void lt_step_time_reduced(struct lt_step_time *t);
/* The update begins (a step that skips it has no update time): the waits
 * before it, for the loss all-reduce and at barriers, are counted. */
void lt_step_time_update_begin(struct lt_step_time *t);
void lt_step_time_update_done(struct lt_step_time *t);
/* The step is done: sm's comm_s, reduce_s, sync_s, compute_s and
 * update_s, the update's time less the waits it held. */
void lt_step_time_end(struct lt_step_time *t, struct lt_step_metrics *sm);
/* The memory held at the step's end: sm's mem_bytes and mem_peak_bytes,
 * the backend's buffers now and at most (0 when it cannot say), and
 * rss_bytes and rss_peak_bytes, the process's resident set now and at
 * most (0 where /proc/self/statm cannot be read). */
void lt_step_time_memory(lt_backend *be, struct lt_step_metrics *sm);
/* After a step's evaluation, sample and checkpoint: their waits for
 * collectives belong to no step (their barriers count as the next
 * step's waits for slower ranks). */
void lt_step_time_between(struct lt_step_time *t);

#endif
