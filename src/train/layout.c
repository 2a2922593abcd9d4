/* The memory of one rank of a parallel layout, for info, bench and the
 * planner. */
#include "config.h"
#include "train/layout.h"

#include <stdlib.h>
#include <string.h>

#include "dist/zero.h"
#include "train/pipeline.h"

enum lt_status lt_layout_stage_estimate(const struct lt_conf *conf, int ranks, int threads, int s,
				     struct lt_stage *stage, struct lt_mem_estimate *est)
{
	const struct lt_model_config *c = &conf->model;
	int pp = conf->dist.pp, tp = conf->dist.tp, dp = ranks / tp / pp, seq = conf->train.seq;
	int batch = (conf->train.batch + dp - 1) / dp, *start, *layers = malloc((size_t)pp * sizeof *layers);
	int micro = conf->train.grad_accum * (conf->dist.deterministic ? batch : 1);
	int sets = lt_pipeline_in_flight(pp, s, conf->dist.pp_ahead);
	enum lt_status st = layers ? lt_conf_pp_layers(conf, layers) : LT_ERR_NOMEM;
	if (st == LT_OK)
		st = lt_pipeline_starts(c, seq, pp, layers, &start);
	free(layers);
	if (st != LT_OK)
		return st;
	*stage = (struct lt_stage){ start[s], start[s + 1] - start[s] };
	free(start);
	struct lt_model_config part = *c;
	if (tp > 1)
		lt_model_tp_part_config(c, tp, &part);
	if (conf->dist.deterministic)
		batch = 1;
	lt_model_estimate_stage(&part, stage, batch, seq, threads, conf->train.recompute,
				conf->train.precision, sets < micro ? sets : micro, est);
	if (tp > 1) {  /* as lt_model_tp_estimate adds */
		size_t N = (size_t)batch * seq;
		est->activations += 4 * N * sizeof(float);
		est->exchange = N * (size_t)c->dim * sizeof(float) + N * (3 * sizeof(double) + 4);
		est->total += 4 * N * sizeof(float);
	}
	size_t host = lt_pipeline_host_bytes(pp, s, (size_t)batch * seq * c->dim,
					     sets < micro ? sets : micro);
	est->exchange += host;
	est->total += est->exchange;
	part.n_layers = stage->layers;
	/* (a last stage of one set holds the head's gradient as a whole model does) */
	if (dp > 1)
		lt_zero_estimate(est, &part, dp, conf->dist.zero, conf->dist.deterministic,
				 s == pp - 1 && (sets < micro ? sets : micro) == 1);
	return LT_OK;
}

/* The part's estimate at tp > 1 (adapters are refused there), ZeRO's
 * over the data-parallel ranks; with stages, the largest stage's. */
void lt_layout_estimate(const struct lt_conf *conf, const struct lt_lora *lora, int ranks,
			    int threads, struct lt_mem_estimate *est)
{
	const struct lt_model_config *c = &conf->model;
	int tp = conf->dist.tp, dp = ranks / tp, seq = conf->train.seq;
	if (conf->dist.pp > 1) {
		struct lt_mem_estimate e;
		struct lt_stage stage;
		memset(est, 0, sizeof *est);
		for (int s = 0; s < conf->dist.pp; s++)
			if (lt_layout_stage_estimate(conf, ranks, threads, s, &stage, &e) == LT_OK &&
			    e.total > est->total)
				*est = e;
		return;
	}
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
		lt_zero_estimate(est, &part, dp, conf->dist.zero, conf->dist.deterministic, 1);
}
