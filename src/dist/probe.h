/* What the planner measures of the ranks of a launch: each rank's device
 * (its kind, node, threads, free memory, GEMM speed and the speed a
 * training step of the model reaches there, with its scaling over
 * threads on a CPU) and the links between ranks (point-to-point bandwidth
 * and latency within a node and between nodes, and an all-reduce).
 *
 * Ownership: lt_probe_ranks fills an array the caller owns and sizes
 * (lt_dist_size entries); nothing is kept between calls. */
#ifndef LT_DIST_PROBE_H
#define LT_DIST_PROBE_H

#include "backend.h"
#include "dist/dist.h"
#include "model.h"
#include "status.h"

#define LT_PROBE_THREADS 8  /* thread counts a CPU rank times its step at */

/* One rank, as it measured itself. */
struct lt_probe_rank {
	int node;                 /* lt_dist_node_index (0 with one node) */
	int gpu;                  /* 1: an accelerator (an OpenCL device that is not a CPU) */
	int threads;              /* the CPU threads it runs (run.threads or OpenMP's) */
	int node_cores;           /* the cores its node has (online processors) */
	double mem;               /* bytes it may still fill: the device's free (or global)
				   * memory; on a CPU, MemAvailable shared evenly by the
				   * node's CPU ranks */
	double gemm_f32;          /* FLOP/s of a square fp32 GEMM (best of a few) */
	double gemm_bf16;         /* ... with bf16 operands (0 where the backend has none) */
	double step_f32;          /* FLOP/s a forward + backward of one block of the model
				   * reaches at 4 x the probe's micro-batch, fp32 (a model
				   * of three blocks' time less one's) */
	double step_bf16;         /* ... in bf16 (0 where not measured) */
	double head_f32;          /* FLOP/s of the rest of a one-block model's step (the
				   * embedding, the final norm, the head and the loss),
				   * its FLOPs the head's, less micro_s */
	double head_bf16;         /* ... in bf16 (0 where not measured) */
	double micro_s;           /* seconds a micro-batch costs beyond its tokens' (from
				   * one-block steps at two batches), fp32 */
	double micro_bf16_s;      /* ... in bf16 */
	double adamw;             /* parameters a second AdamW's step updates (fp32, the
				   * one-block model's whole buffer) */
	/* CPU ranks: the same step's FLOP/s at fewer threads, thread_n[i]
	 * threads giving thread_flops[i], n_thread_points of them (the last
	 * is `threads`); 0 points on a GPU. */
	int n_thread_points;
	int thread_n[LT_PROBE_THREADS];
	double thread_flops[LT_PROBE_THREADS];
	char host[64];            /* lt_dist_host */
	char device[96];          /* the device's name */
};

/* The links, as measured between ranks of the launch (0 where the launch
 * has no such pair: one node has no "between"). */
struct lt_probe_links {
	double within_bw, within_lat;   /* bytes/s and seconds, two ranks of one node */
	double between_bw, between_lat; /* two ranks of different nodes */
	double allreduce_bw;            /* bytes/s of the whole job's all-reduce of a large
					 * buffer, as a ring's 2 (n - 1) / n bytes per byte */
};

/* What the probe runs: the model whose block it times, at batch x seq
 * tokens (a small batch keeps the probe short; a GPU rank's grows until
 * the device is busy: see probe.c's GPU_TOKENS). */
struct lt_probe_config {
	const struct lt_model_config *model;
	int batch, seq;
	int bf16;                 /* also time the step in bf16 */
	double seconds;           /* about how long each timing may take (0: 0.3 s) */
};

/* The host's available memory, bytes: MemAvailable of /proc/meminfo, else
 * the free pages sysconf counts. */
double lt_probe_host_memory(void);
/* What be may still fill, bytes: its GPU's memory less what its buffers
 * hold; on a CPU, the host's available memory (the node's ranks share it). */
double lt_probe_free_memory(lt_backend *be);

/* Collective: every rank times its device on be, then the ranks exchange
 * their figures, so that out[r] (lt_dist_size(d) entries) is rank r's on
 * every rank; then the links are measured and *links filled. */
enum lt_status lt_probe_ranks(lt_dist *d, lt_backend *be, const struct lt_probe_config *pc,
			      struct lt_probe_rank *out, struct lt_probe_links *links);

#endif
