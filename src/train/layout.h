/* The training memory of one rank of a parallel layout (data x tensor x
 * pipeline, ZeRO stage, precision, recompute), from the model's estimate:
 * what info and bench print and what the planner fits into devices.
 *
 * Ownership: plain functions of their arguments; nothing is kept. */
#ifndef LT_TRAIN_LAYOUT_H
#define LT_TRAIN_LAYOUT_H

#include "conf.h"
#include "model.h"
#include "status.h"

/* The estimate of a rank of pipeline stage s in the layout of conf over
 * `ranks` (dist.pp > 1), its blocks into *stage. */
enum lt_status lt_layout_stage_estimate(const struct lt_conf *conf, int ranks, int threads, int s,
					struct lt_stage *stage, struct lt_mem_estimate *est);
/* The training memory of one of `ranks` ranks running conf's layout
 * (dist.tp, dist.zero; adapters where lora->rank > 0), each data-parallel
 * rank taking its share of train.batch; with stages, the largest stage's. */
void lt_layout_estimate(const struct lt_conf *conf, const struct lt_lora *lora, int ranks,
			int threads, struct lt_mem_estimate *est);

#endif
