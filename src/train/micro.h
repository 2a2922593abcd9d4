/* train.micro_batch: how an optimizer step's sequences (train.batch x
 * train.grad_accum) split into micro-batches -- in micro-batches of a given
 * size, or of the largest size whose training memory fits every rank (the
 * layout's estimate, which `train` then checks by a trial step).
 *
 * Ownership: plain functions of their arguments; nothing is kept. */
#ifndef LT_TRAIN_MICRO_H
#define LT_TRAIN_MICRO_H

#include "conf.h"

/* c's step in micro-batches of m sequences (m divides batch x grad_accum):
 * train.batch m, train.grad_accum the rest. */
void lt_micro_batch_set(struct lt_conf *c, int m);

/* A numeric train.micro_batch applied to c; nothing for 0, auto or a
 * size that does not divide the step (lt_conf_check refuses it). */
void lt_micro_batch_apply(struct lt_conf *c);

/* The largest micro-batch below `below` (0: no bound) that divides c's
 * step, that gives each data-parallel rank of a layout of `ranks` ranks a
 * sequence (all the same with stages), that lt_conf_check accepts, and
 * whose estimated training memory on a rank of `threads` threads fits
 * (1 - margin) x have bytes; 0 when none does. *need gets that size's
 * estimate, or, when none fits, the smallest allowed size's (0 when no
 * size is allowed). */
/* The estimated training memory of a rank of `ranks` ranks of `threads`
 * threads under c as it is, bytes. */
double lt_micro_batch_need(const struct lt_conf *c, int ranks, int threads);

int lt_micro_batch_fit(const struct lt_conf *c, int ranks, int threads, double have,
		       double margin, int below, double *need);

#endif
