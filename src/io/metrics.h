/* Training progress: one JSON object per line in RUN/metrics.jsonl for
 * every step and every evaluation, the same numbers as TensorBoard scalars
 * in RUN/tb/ when asked (io/tboard.h: each value rounded once, as the JSON
 * line writes it, and given to both), and a human view on stdout: a single
 * refreshed line on a terminal, plain lines every N steps otherwise.
 *
 * Ownership: lt_metrics_open returns a writer the caller closes
 * (lt_metrics_close), which owns the TensorBoard writer it opened. */
#ifndef LT_METRICS_H
#define LT_METRICS_H

#include <stdio.h>

#include "io/tboard.h"
#include "status.h"

struct lt_step_metrics {
	long step, total_steps;
	double loss, lr, grad_norm;
	double tokens_per_s, tflops;   /* this step's rate, model FLOPs */
	double elapsed;                /* training seconds since the run began */
	long tokens;                   /* trained so far */
	int skipped;                   /* a NaN/Inf loss: no update was made */
	int distilled;                 /* against a teacher (distill.teacher), and then */
	double kl;                     /* the mean T^2 KL(teacher || model) per target */
	int ranks;                     /* > 1: a data-parallel step, and then */
	double comm_s;                 /* seconds it waited for exchanges to finish */
	double reduce_s;               /* of comm_s, the gradient exchange's */
	double sync_s;                 /* seconds it waited for slower ranks' compute */
	double compute_s;              /* this rank's forward + backward, less its waits */
	double update_s;               /* its AdamW step, all-gather and copies, less waits */
	int nodes;                     /* > 1: the ranks run on several nodes, and then */
	double xnode_bytes;            /* bytes rank 0 sent to other nodes in the step */
	double outer_s;                /* seconds of local SGD's exchange and outer step */
	int stages;                    /* > 1: a pipeline's step, and then */
	double bubble;                 /* the stages' mean share of their passes spent waiting */
	const double *stage_s;         /* [2 * stages]: each stage's compute, then wait seconds
					  (the first LT_METRICS_STAGES stages are logged) */
	/* at the step's end: the backend's buffers now and at most (0 when it
	 * cannot say), the process's resident set now and at most */
	size_t mem_bytes, mem_peak_bytes, rss_bytes, rss_peak_bytes;
};

/* The pipeline stages whose times a step's line holds. */
#define LT_METRICS_STAGES 8

typedef struct lt_metrics lt_metrics;

/* Opens (appending to) path; log_every is the plain-line period when
 * stdout is not a terminal (a terminal gets the refreshed line). */
enum lt_status lt_metrics_open(const char *path, int log_every, lt_metrics **out);
/* From now on each step and evaluation also goes to TensorBoard event
 * files in dir (see lt_tboard_open for `step` and notes). */
enum lt_status lt_metrics_open_tboard(lt_metrics *mt, const char *dir, long step,
				      struct lt_tboard_notes *notes);
/* Flushes and closes; finishes the refreshed line with a newline. */
void lt_metrics_close(lt_metrics *mt);
/* A step's line. Each line goes to the file in one write as it comes; a
 * write that fails (LT_ERR_IO "PATH: write failed: REASON") leaves no part
 * of its line behind in a regular file, so the file keeps whole lines. */
enum lt_status lt_metrics_step(lt_metrics *mt, const struct lt_step_metrics *s);
/* An evaluation: {"step", "val_loss", "val_ppl", "elapsed"}, and a line. */
enum lt_status lt_metrics_eval(lt_metrics *mt, long step, double val_loss, double elapsed);
/* Text under tag at step for TensorBoard's Text tab (nothing without
 * event files): the resolved config, a sample. */
enum lt_status lt_metrics_text(lt_metrics *mt, long step, const char *tag, const char *text);
/* Prints a message line on stdout without breaking the progress line. */
void lt_metrics_say(lt_metrics *mt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
