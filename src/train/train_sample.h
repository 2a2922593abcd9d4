/* The sample a run prints at its cadence: run.sample_tokens tokens
 * generated after the end-of-text token, said through the metrics and
 * kept there as text. Borrows everything. */
#ifndef LT_TRAIN_SAMPLE_H
#define LT_TRAIN_SAMPLE_H

#include "conf.h"
#include "io/metrics.h"
#include "model.h"
#include "status.h"
#include "text/tokenizer.h"

/* Rank 0's sample at step (temperature 0.8, top-k 40, top-p 0.95, drawn
 * from train.seed + step); none, said in a line, where the tokenizer has
 * no end-of-text token. */
enum lt_status lt_train_sample(lt_model *m, const lt_tokenizer *tok, lt_metrics *mt,
			       const struct lt_conf *c, long step);

#endif
