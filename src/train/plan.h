/* The planner: for a model, a global batch and a cluster (the ranks of a
 * launch as they measured themselves, or a described one), every layout
 * (data x tensor x pipeline ranks, ZeRO stage, precision, recompute,
 * micro-batch and accumulation, and on CPU nodes ranks x threads) that
 * fits each rank's memory, ranked by a cost model of the step's time.
 *
 * Ownership: a cluster is a plain struct (fixed arrays); lt_plan_search
 * fills a result whose layouts lt_plan_result_free releases. */
#ifndef LT_TRAIN_PLAN_H
#define LT_TRAIN_PLAN_H

#include <stddef.h>

#include "conf.h"
#include "dist/probe.h"
#include "status.h"

#define LT_PLAN_MAX_NODES 256
/* Amdahl's share of a CPU rank's step that more threads do not speed up,
 * where no probe measured it (fitted to the 15M preset: 8 ranks of 2
 * threads trained 2.26x as fast as one rank of 16). */
#define LT_PLAN_CPU_SERIAL 0.1
#define LT_PLAN_MAX_RANKS 4096

/* One node: its GPUs (one rank each) and its CPU cores. Speeds are what
 * a training step reaches (FLOP/s), not a GEMM's peak. */
struct lt_plan_node {
	int gpus;
	double gpu_mem;               /* bytes each GPU's rank may fill */
	double gpu_f32, gpu_bf16;     /* a GPU's step speed */
	int cores;                    /* 0: no CPU ranks on this node */
	double cpu_mem;               /* bytes the node's CPU ranks share */
	double core_f32, core_bf16;   /* the step speed of one thread alone */
	double serial;                /* Amdahl's share of a CPU rank's step that
				       * more threads do not speed up */
	double gpu_head_ratio, cpu_head_ratio; /* the head's step speed over a block's */
	double gpu_micro_s, cpu_micro_s;       /* a micro-batch's own seconds, fp32 */
	double gpu_micro_bf16_s, cpu_micro_bf16_s; /* ... bf16 */
	double gpu_adamw;             /* parameters a second AdamW updates on a GPU */
	double cpu_adamw;             /* ... on a CPU rank of cpu_threads (0: assumed) */
	int cpu_ranks;                /* the launch's CPU ranks here (0 when described) */
	int cpu_threads;              /* ... and their threads each */
};

/* The cluster: its nodes and the links within and between them. */
struct lt_plan_cluster {
	int n_nodes;
	struct lt_plan_node node[LT_PLAN_MAX_NODES];
	double within_bw, within_lat;   /* bytes/s and seconds between two ranks of a node */
	double between_bw, between_lat; /* ... of different nodes */
	int launched;                   /* from a probe: the ranks of this launch */
	/* The launch's ranks in order (launched): each one's node and kind. */
	int n_ranks;
	short rank_node[LT_PLAN_MAX_RANKS];
	unsigned char rank_gpu[LT_PLAN_MAX_RANKS];
	/* ... and its speed over its node's (the node's GPUs', or its CPU
	 * ranks'), f32 and bf16: 1 for the slowest device of the node, more
	 * for a faster one (a CPU backend's rank beside PoCL's); ranks of one
	 * device share its slowest figure, so the probe's noise makes no
	 * ranks unequal (0: not measured, the node's). */
	float rank_f32[LT_PLAN_MAX_RANKS], rank_bf16[LT_PLAN_MAX_RANKS];
	int other_device;               /* launched: the first rank whose device is not
					 * rank 0's (0: they all compute on one kind) */
};

/* A described cluster, e.g. "8x24GiB@100TFLOPs,4xcpu@1.5TFLOPs": items
 * split by ',', each [NODES x] PART ['+' PART ...] where a PART is
 * [COUNT x] MEM @ SPEED (GPUs) or cpu[CORES][:MEM] @ SPEED (a node's CPU);
 * SPEED is its GEMM speed, f32[/bf16] in TFLOPs (or GFLOPs), of which a
 * training step reaches `efficiency`. LT_ERR_CONFIG with one line naming
 * the place and what was expected. */
enum lt_status lt_plan_cluster_parse(const char *spec, double efficiency,
				     struct lt_plan_cluster *out);
/* A link, "10Gbit/s", "25Gbit", "12GB/s" (bytes/s into *bw) with an
 * optional latency after '@' ("10Gbit@50us"). */
enum lt_status lt_plan_link_parse(const char *spec, double *bw, double *lat);
/* The cluster that a launch's probe measured: one node per node index,
 * its CPU ranks' per-thread speed and serial share fitted to their
 * thread points. */
enum lt_status lt_plan_cluster_from_probe(const struct lt_probe_rank *r, int n,
					  const struct lt_probe_links *links,
					  struct lt_plan_cluster *out);

/* What the search may change: each `fixed_*` keeps the conf's value. */
struct lt_plan_limits {
	int fixed_tp, fixed_pp, fixed_zero, fixed_precision, fixed_recompute;
	int fixed_batch;           /* the micro-batch split (train.batch, train.grad_accum) */
	int fixed_launch;          /* launched: only the launch's ranks as they are */
	int fixed_pp_layers;       /* dist.pp_layers was given (train --plan auto keeps it;
				    * else a resumed run's stages are split anew) */
	int given_batch;           /* train.batch or train.grad_accum was given (train
				    * --plan auto: a resumed run's global batch is theirs,
				    * not the checkpoint's planned split with one of them
				    * given again over it) */
	double margin;             /* the share of each rank's memory left free (0.1) */
};

/* One layout and what it costs. */
struct lt_plan_layout {
	int dp, tp, pp, zero, recompute;
	enum lt_precision precision;
	int micro;                 /* sequences per micro-batch of a data-parallel rank */
	int accum;                 /* micro-batches per step */
	int cpu_ranks_per_node;    /* CPU nodes' ranks (0: none) and their threads */
	int cpu_threads;
	int gpus_only;             /* the CPU ranks are left out */
	int ranks;
	int balance_auto;          /* unequal ranks share by speed */
	char pp_layers[64];        /* the stages' blocks ("" with one stage) */
	double mem_need;           /* the fullest rank's estimate, bytes */
	double mem_have;           /* ... and the memory it has */
	int mem_rank;              /* which rank that is */
	int fits;
	double compute_s, tp_s, bubble_s, p2p_s, exchange_s, optim_s; /* the step's parts */
	double step_s, tokens_per_s;
};

struct lt_plan_result {
	struct lt_plan_layout *v;  /* fitting first, fastest first; then the rest */
	size_t n, n_fit;
	long global_seqs;          /* sequences per step searched for */
};

/* The limits that conf itself adds to lim: under dist.deterministic,
 * dist.tp and train.precision stay as configured. A deterministic run is
 * bitwise the same for any data-parallel ranks, ZeRO stage, pipeline
 * split, recompute and micro-batch split, but another tensor-parallel
 * width or precision sums in another order: chosen from the probe's
 * timings, they would make two runs of one command differ. */
void lt_plan_limits_of(const struct lt_conf *conf, struct lt_plan_limits *lim);

/* Every layout of conf's model and global batch (train.batch x
 * train.grad_accum sequences of train.seq) on cluster c within limits
 * (and lt_plan_limits_of's). */
enum lt_status lt_plan_search(const struct lt_conf *conf, const struct lt_plan_cluster *c,
			      const struct lt_plan_limits *lim, struct lt_plan_result *out);
void lt_plan_result_free(struct lt_plan_result *r);

/* conf with layout l applied (dist.tp, dist.pp, dist.zero, dist.balance,
 * train.precision, train.recompute, train.batch, train.grad_accum,
 * run.threads of CPU ranks). */
void lt_plan_apply(const struct lt_plan_layout *l, struct lt_conf *conf);

#endif
