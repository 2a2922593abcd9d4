/* Rank agreement: whether every rank of a job succeeded at a step of a
 * run, so that a failure on one rank ends them all in step with a line
 * naming it, and whether every rank runs the same config, data, model and
 * step before any training.
 *
 * Ownership: the caller owns struct lt_agreement and borrows its lt_dist
 * to it; the functions borrow their other arguments. */
#ifndef LT_AGREE_H
#define LT_AGREE_H

#include <stdint.h>

#include "conf.h"
#include "dist/dist.h"
#include "status.h"

struct lt_agreement {
	lt_dist *dist;
	double timeout;        /* the watchdog's limit between agreements (dist.comm_timeout) */
	int failed_together;   /* the last agreement found a failure every rank knows of:
				  the job may end without lt_dist_abort */
};

/* Whether every rank succeeded at `what` (st: this rank's outcome). A
 * rank that failed gets its own status back, its message kept; the others
 * LT_ERR_COMM with "WHAT failed on rank N (its message says why)". The
 * agreement waits up to `wait` seconds (rank 0 may be working alone) or
 * the timeout, whichever is longer. Collective, except that a rank whose
 * st is LT_ERR_COMM (it lost touch with the others) returns it at once
 * without failed_together: it must end the job with lt_dist_abort. */
enum lt_status lt_agree(struct lt_agreement *g, enum lt_status st, const char *what, double wait);

/* What the ranks must share besides the config. */
struct lt_agree_facts {
	uint64_t train_tokens, val_tokens;  /* of the prepared data */
	int vocab;                          /* the tokenizer's */
	long step;                          /* optimizer steps done */
	uint64_t samples;                   /* the data cursor */
};

/* Refuses ranks that disagree with rank 0 on the config (less the per-rank
 * keys run.device and run.threads) or the facts: LT_ERR_CONFIG on the rank
 * that differs, with "rank N (host H) does not agree with rank 0 in
 * [SECTION]: 'LINE' here, 'LINE' on rank 0", LT_ERR_COMM naming it on the
 * others. Collective. */
enum lt_status lt_agree_on_run(struct lt_agreement *g, const struct lt_conf *c,
			       const struct lt_agree_facts *f);

#endif
