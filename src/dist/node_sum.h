/* The gradient exchange through a node's shared memory, for ranks that
 * all run on one node, or as many on each of several nodes (then rank i of
 * each node with rank i of the others through MPI).
 *
 * Each rank copies a bucket of its gradients into its part of the node's
 * memory (the backend pins it, and copies while backward goes on), and
 * local rank j sums the j-th piece of the bucket over all the parts: at
 * stage 0 back into every part, at stages 1 and 2 into the shard of the
 * piece's owner (over several nodes, first into its own part, then with
 * rank j of the other nodes, to the owners' nodes where they are
 * consecutive). The parameters travel through one shared copy, in local
 * rank 0's part.
 *
 * On one node, when backward exchanges as it goes, the embedding's
 * gradient travels in two parts: the tied head's, summed while backward
 * runs the blocks, and the lookup's, as the rows of the batch's distinct
 * tokens only (the model hook's lookup_ready), so no whole table is left
 * to copy and sum once backward ends. Ranks that all compute in host
 * memory sum on a thread of their own (dist/sum_thread.h).
 *
 * Ownership: lt_node_sum_new gives an exchange that lt_node_sum_free
 * releases with the node's memory; it borrows the ranks, the model and the
 * ranges. */
#ifndef LT_NODE_SUM_H
#define LT_NODE_SUM_H

#include <stddef.h>
#include <stdint.h>

#include "dist/dist.h"
#include "dist/grad_slots.h"
#include "model.h"

typedef struct lt_node_sum lt_node_sum;

struct lt_node_sum_plan {
	int stage;                  /* 0: every rank gets the sum; 1, 2: each owner its range */
	const size_t *off;          /* [ranks + 1] the ranges (borrowed) */
	struct lt_grad_slots grads; /* the layout of the model's gradient buffer */
	int async_copies;           /* some rank's backend copies to the host beside its work */
	int lookup_rows;            /* the embedding lookup's gradient comes as rows (one node) */
	size_t lookup_cap;          /* the most rows a backward gives */
	int thread;                 /* sum on a thread of one's own (one node, host memory) */
};

/* Sets up the node's memory for p (collective over the job). When a node
 * has too little room, *out is NULL, `why` says so and the status is
 * LT_OK: the caller then exchanges through MPI instead. */
enum lt_status lt_node_sum_new(lt_dist *d, lt_model *m, const struct lt_node_sum_plan *p,
			       lt_node_sum **out, char *why, size_t why_size);
void lt_node_sum_free(lt_node_sum *n);

/* How the ranks exchange, for the run's report. */
const char *lt_node_sum_how(const lt_node_sum *n);
/* The node's memory this rank asked for, in bytes. */
size_t lt_node_sum_bytes(const lt_node_sum *n);
/* Stages 1 and 2: this rank's shard of the summed gradient, and the
 * parameters' shared copy (every range, [numel]). */
float *lt_node_sum_shard(const lt_node_sum *n);
float *lt_node_sum_params(const lt_node_sum *n);

/* In backward: the gradients of flat elements [lo, hi) are complete in
 * the model's buffer. Starts their copy to this rank's part and sums the
 * bucket before meanwhile, or hands them to the summing thread; the sums
 * are added to the shards' earlier ones when `add`. */
enum lt_status lt_node_sum_ready(lt_node_sum *n, size_t lo, size_t hi, int add);
/* In backward, with lookup rows: the lookup's gradient (see struct
 * lt_grad_hook's lookup_ready), added to the owners' shards (stage 0:
 * every part, then the whole table back to the device). */
enum lt_status lt_node_sum_lookup(lt_node_sum *n, size_t table, const int32_t *rows, int count,
				  lt_ref grads);
/* Sums the bucket whose copy is still under way, and ends a sum between
 * the nodes it started. */
enum lt_status lt_node_sum_settle(lt_node_sum *n);
/* After backward: settles, then waits until the summing thread's every
 * bucket is summed on every rank. */
enum lt_status lt_node_sum_finish(lt_node_sum *n);
/* After a backward that exchanged nothing: the whole gradient buffer at
 * once. */
enum lt_status lt_node_sum_whole(lt_node_sum *n, int add);
/* Stages 1 and 2, after AdamW wrote this rank's range into the shared
 * copy of the parameters: the other nodes' ranges, then a node sync, so
 * the copy holds every range. */
enum lt_status lt_node_sum_gather(lt_node_sum *n);
/* A sync of the node's ranks (its memory's writes seen by all). */
enum lt_status lt_node_sum_sync(lt_node_sum *n, const char *what);

#endif
