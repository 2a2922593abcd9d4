/* A learning-rate range test's curve (lltrain tune-lr, train.lr = auto):
 * the rate of each step, rising exponentially from min_lr to max_lr, the
 * training loss each step gave and its exponentially smoothed value, the
 * stop at divergence, the suggested rate and the curve as JSON Lines. The
 * steps themselves are the trainer's (train/trainer.h, struct
 * lt_trainer_probe); this module keeps the numbers and judges them.
 *
 * Ownership: lt_lr_find_new gives a curve that lt_lr_find_free releases;
 * lt_lr_find_jsonl's text is the caller's to free. */
#ifndef LT_LR_FIND_H
#define LT_LR_FIND_H

#include "status.h"

/* The test's settings; lt_lr_find_new refuses any outside its range. */
struct lt_lr_find_config {
	double min_lr, max_lr;  /* step 1's rate and the last step's: 0 < min_lr < max_lr */
	int steps;              /* the steps over which the rate rises: at least 10 */
	double smooth;          /* each loss's weight in the smoothed loss, in (0, 1) */
	double diverge;         /* stop once the smoothed loss passes this times its least
				   (> 1), or a loss is not finite */
};

/* The defaults: 1e-6 to 1 over 200 steps, smoothing 0.05, divergence at 4x. */
struct lt_lr_find_config lt_lr_find_defaults(void);

/* One step of the test. smoothed is the bias-corrected exponential
 * average of the losses so far, s_i = a_i / (1 - (1 - w)^i) with
 * a_i = (1 - w) a_(i-1) + w loss_i, a_0 = 0; NAN from a non-finite loss on. */
struct lt_lr_find_point {
	int step;        /* from 1 */
	double lr, loss, smoothed;
};

/* Why the test ended. */
enum lt_lr_find_end {
	LT_LR_FIND_RUNNING,      /* it has steps to go */
	LT_LR_FIND_STEPS,        /* its steps are done */
	LT_LR_FIND_DIVERGED,     /* the loss diverged (see diverge) */
	LT_LR_FIND_INTERRUPTED,  /* a signal stopped it (lt_lr_find_interrupt) */
};

typedef struct lt_lr_find lt_lr_find;

/* A curve of no steps yet; LT_ERR_ARG naming the setting and its range
 * for a bad config, LT_ERR_NOMEM. */
enum lt_status lt_lr_find_new(const struct lt_lr_find_config *cfg, lt_lr_find **out);
void lt_lr_find_free(lt_lr_find *f);

/* Step i's rate (1 <= i <= steps): min_lr (max_lr / min_lr)^((i - 1) /
 * (steps - 1)), the same ratio from each step to the next. */
double lt_lr_find_rate(const lt_lr_find *f, int i);
/* Records the next step's rate and loss; returns nonzero when the test
 * should stop after it (its steps done, or the loss diverged). */
int lt_lr_find_add(lt_lr_find *f, double lr, double loss);
/* Marks the test as stopped by a signal (when it still had steps to go). */
void lt_lr_find_interrupt(lt_lr_find *f);

/* The points so far, in step order, and how the test ended. */
const struct lt_lr_find_point *lt_lr_find_points(const lt_lr_find *f, int *n);
enum lt_lr_find_end lt_lr_find_end(const lt_lr_find *f);
/* "steps", "diverged", "interrupted" (or "running"). */
const char *lt_lr_find_end_name(enum lt_lr_find_end e);

/* The suggestion's share of the rate where the loss falls fastest. */
#define LT_LR_FIND_FRACTION 0.1
/* The least fall of the smoothed loss, as a share of its value after the
 * settling steps, that counts as a descent (less is noise). */
#define LT_LR_FIND_MIN_FALL 0.01

/* The suggested rate: a tenth (LT_LR_FIND_FRACTION) of the rate where the
 * loss falls fastest against ln(lr), at least min_lr. The slope at step i
 * is the least-squares one of the losses themselves over steps i - h ..
 * i + h (h = steps / 20, at least 2): a window centred on the step, where
 * the smoothed loss would lag by (1 - w) / w steps and put the steepest
 * point too late. It is looked for from the first tenth of the configured
 * steps on up to the least smoothed loss before any divergence (the end
 * of the descent). The test holds each rate for a single step: the rate
 * that gains most in one step lies near the edge of what a whole run can
 * hold at its peak for hundreds of steps, so the suggestion stays a decade
 * below it. *at gets the steepest point's index. LT_ERR_NUMERIC,
 * saying why, when the smoothed loss never fell below its value after the
 * first tenth of the steps by LT_LR_FIND_MIN_FALL of it (raise max_lr or
 * steps, or lower min_lr). */
enum lt_status lt_lr_find_suggest(const lt_lr_find *f, double *lr, int *at);

/* The curve as JSON Lines: one {"step", "lr", "loss", "smoothed"} per
 * step (null for a value that is not finite), then {"suggested_lr",
 * "stopped", "min_lr", "max_lr", "steps", "smooth", "diverge"}, with
 * "suggested_lr" null when there is none (suggested not finite). A new
 * malloc'd NUL-terminated string in *out. */
enum lt_status lt_lr_find_jsonl(const lt_lr_find *f, double suggested, char **out);

#endif
