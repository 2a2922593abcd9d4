/* The memory of one rank of a parallel layout, for info and bench. */
#include "config.h"
#include "cmd/cmd.h"

#include "dist/zero.h"

/* The part's estimate at tp > 1 (adapters are refused there), ZeRO's
 * over the data-parallel ranks. */
void lt_cmd_layout_estimate(const struct lt_conf *conf, const struct lt_lora *lora, int ranks,
			    int threads, struct lt_mem_estimate *est)
{
	const struct lt_model_config *c = &conf->model;
	int tp = conf->dist.tp, dp = ranks / tp, seq = conf->train.seq;
	int batch = (conf->train.batch + dp - 1) / dp;
	struct lt_model_config part = *c;
	if (tp > 1) {
		lt_model_tp_part_config(c, tp, &part);
		lt_model_tp_estimate(c, tp, batch, seq, threads, conf->train.recompute,
				     conf->train.precision, est);
	} else {
		lt_model_estimate_memory_lora(c, batch, seq, threads, conf->train.recompute,
					      conf->train.precision, lora, est);
	}
	if (dp > 1)
		lt_zero_estimate(est, &part, dp, conf->dist.zero, conf->dist.deterministic);
}
