/* ZeRO data parallelism: the stages (arming backward, completing the
 * gradient reduction, the sharded AdamW step, the parameter all-gather)
 * over the exchange path chosen once: MPI collectives, the node's shared
 * memory, or the exact sum of deterministic runs. */
#include "config.h"
#include "dist/zero.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist/exact_sum.h"
#include "dist/grad_slots.h"
#include "dist/node_sum.h"
#include "dist/reduce.h"
#include "dist/zero3.h"

/* How the ranks move gradients and parameters: one path, chosen in
 * lt_zero_new. Each member takes the lt_zero. */
struct path {
	/* The step's reduction after its last backward: the summed gradient
	 * where AdamW reads it, and its global norm. */
	enum lt_status (*reduce)(lt_zero *z, double *norm);
	/* (optional: never armed) In an armed backward, the gradients of flat
	 * elements [lo, hi) are complete: starts their exchange. */
	enum lt_status (*ready)(lt_zero *z, size_t lo, size_t hi);
	/* (optional: nothing) Before each backward with slots: completes what
	 * the previous one left under way. */
	enum lt_status (*settle)(lt_zero *z);
	/* (optional: nothing) After the last backward: completes what backward
	 * left under way. */
	enum lt_status (*finish)(lt_zero *z);
	/* (optional: never unarmed) After a backward that exchanged nothing:
	 * starts the exchange of the whole buffer. */
	enum lt_status (*whole)(lt_zero *z);
	/* (optional: stage 0 does not reduce by buckets) Stage 0, once the sum
	 * is complete: the summed gradient in the model's buffer. */
	enum lt_status (*land)(lt_zero *z);
	/* (optional: one rank) Stages 1 and 2, after AdamW: every rank's range
	 * of the parameters on every rank. */
	enum lt_status (*gather)(lt_zero *z);
};

struct lt_zero {
	lt_dist *dist;
	lt_model *model;
	lt_optim *opt;
	const struct path *path;
	int stage, deterministic, armed;
	int rank;
	size_t numel, begin, end;  /* this rank's range */
	size_t *off;               /* [size + 1] */
	/* The host sides of the exchange, each a view of a backend buffer
	 * whose host memory is the backend's own, a staging copy the view
	 * owns (lt_host_view_free releases it), or the node's shared memory. */
	struct lt_host_view grads;   /* MPI: the gradient buffer */
	struct lt_host_view params;  /* stages 1 and 2: the parameters */
	struct lt_host_view shard;   /* stages 1 and 2, not --deterministic: [end - begin], the
				      * reduced gradient of the range, a view of where AdamW
				      * reads it (shard_buf with slots, else the gradient
				      * buffer's range) */
	int slots;                 /* stage 2 over ranks: the blocks' gradient slots */
	struct lt_grad_slots grads_layout;  /* the model's gradient buffer: slots or whole */
	lt_buf *shard_buf;         /* slots: where AdamW reads the shard (the shard's memory or not) */
	size_t *marks;             /* slots, MPI: [layers] collectives started up to each block's */
	int backwards;             /* slots: the backwards armed this step */
	int embed_sent;            /* shared slots: the table's range was exchanged in this
				    * backward (a tied head's part) */
	int async_copies;          /* some rank's backend copies to the host beside its work */
	lt_node_sum *node;         /* the node's shared memory, where the ranks exchange there */
	int lookup_rows;           /* node: the embedding lookup's gradient comes as rows */
	lt_exact_sum *exact;       /* deterministic: the sum of the step's sequences */
	lt_zero3 *params3;         /* stage 3: this rank's parameters and the block gathers */
	size_t bytes;              /* what this holds besides the model */
	char exchange[256];        /* how the ranks exchange, and why */
};

/* Points v at the n elements at r (what names them, for an error); a
 * staging copy counts in z->bytes. */
static enum lt_status map_view(lt_zero *z, struct lt_host_view *v, lt_ref r, size_t n,
			       const char *what)
{
	enum lt_status st = lt_host_view_map(v, lt_model_backend(z->model), r, n);
	if (st != LT_OK) {
		lt_errmsg_prefix("the exchange's host view of %s", what);
		return st;
	}
	if (v->staged)
		z->bytes += n * sizeof *v->p;
	return LT_OK;
}

/* A view of the n elements at r through host memory p that is not the
 * backend's: always staged, so that read and write copy. With own, p is
 * the view's staging copy, which lt_host_view_free releases; without, p
 * belongs to someone else (the node's shared memory). */
static struct lt_host_view staged_view(const lt_zero *z, lt_ref r, size_t n, float *p, int own)
{
	return (struct lt_host_view){ .p = p, .n = n, .staged = 1,
				      .be = lt_model_backend(z->model), .ref = r,
				      .staging = own ? p : NULL, .staging_n = own ? (n ? n : 1) : 0 };
}

/* Elements [off, off + n) of v: a view of v's memory that owns nothing. */
static struct lt_host_view part(const struct lt_host_view *v, size_t off, size_t n)
{
	return (struct lt_host_view){ .p = v->p + off, .n = n, .staged = v->staged, .be = v->be,
				      .ref = lt_ref_at(v->ref, off) };
}

/* Where AdamW reads this rank's range of the summed gradient: the shard
 * the backend holds with slots, else the range of the gradient buffer. */
static lt_ref shard_ref(const lt_zero *z)
{
	return z->slots ? (lt_ref){ z->shard_buf, 0 }
			: lt_ref_at(lt_model_grads(z->model), z->begin);
}

/* Where the gradient of flat element lo lies in the model's buffer, and
 * so in its host view. */
static size_t grad_index(const lt_zero *z, size_t lo)
{
	return lt_grad_slots_index(&z->grads_layout, lo);
}

/* The host view of the gradient of flat element lo: the range [lo, hi)
 * that backward reports is contiguous in the gradient buffer. */
static float *host_grads(const lt_zero *z, size_t lo)
{
	return z->grads.p + grad_index(z, lo);
}

/* Brings the gradients of flat elements [lo, hi) to the host view (a no-op
 * when the backend's memory is the host's). */
static void fetch_grads(lt_zero *z, size_t lo, size_t hi)
{
	struct lt_host_view v = part(&z->grads, grad_index(z, lo), hi - lo);
	lt_host_view_read(&v);
}

/* Stage 2, once the model keeps z->slots blocks' gradients: AdamW reads
 * this rank's range of the summed gradient from a shard the backend
 * holds. */
static enum lt_status use_slots(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	size_t n = z->end - z->begin;
	enum lt_status st;
	if (!(z->marks = calloc((size_t)lt_model_config_of(z->model)->n_layers, sizeof *z->marks))) {
		lt_errmsg_set("cannot allocate the gradient slots' marks");
		return LT_ERR_NOMEM;
	}
	if ((st = lt_buf_new(be, LT_F32, n ? n : 1, &z->shard_buf)) != LT_OK) {
		lt_errmsg_prefix("the gradient shard of %zu elements", n);
		return st;
	}
	lt_optim_set_grads(z->opt, (lt_ref){ z->shard_buf, 0 });
	return LT_OK;
}

/* --- the paths: MPI collectives --- */

/* Starts the exchange of the gradients of flat elements [lo, hi): at stage
 * 0 their all-reduce in place; else the sum of each rank's part of them,
 * into its shard (one reduce per owner: a reduce-scatter of pieces this
 * uneven runs through rank 0 in some MPI libraries). With slots, after the
 * step's first backward the shard already holds the earlier backwards'
 * sum: its owner adds that into what it sends, and the reduce replaces it. */
static enum lt_status start_collectives(lt_zero *z, size_t lo, size_t hi)
{
	enum lt_status st = LT_OK;
	float *g = host_grads(z, lo);
	if (z->stage == 0)
		st = lt_dist_allreduce_start(z->dist, g, hi - lo, "the gradient all-reduce");
	for (int r = 0; z->stage > 0 && r < lt_dist_size(z->dist) && st == LT_OK; r++) {
		size_t a, n = lt_reduce_owned(z->off, r, lo, hi, &a);
		if (!n)
			continue;
		float *mine = r == z->rank ? z->shard.p + (a - z->begin) : NULL;
		int more = z->backwards > 1 || (lo < z->grads_layout.first && z->embed_sent);
		for (size_t i = 0; mine && more && i < n; i++)
			g[a - lo + i] += mine[i];
		st = lt_dist_reduce_start(z->dist, g + (a - lo), mine, n, r,
					  "the gradient reduce-scatter");
	}
	return st == LT_OK ? lt_dist_progress(z->dist) : st;
}

/* With slots, after block b's exchange started: the next block (b - 1)
 * reuses block b - 1 + slots's slot (with one slot, block b's own), so
 * that block's exchange must be done. Where the slots lie over the
 * embedding's range, its exchange (a tied head's part, after the head)
 * is done before a block writes there, and block 0's before the
 * lookup's gradient does. */
static enum lt_status free_next_slot(lt_zero *z, size_t lo)
{
	int b = lt_grad_slots_block_of(&z->grads_layout, lo), reused = b - 1 + z->slots;
	int shared = z->grads_layout.shared;
	if (b < 0 && shared && lo < z->grads_layout.first) {
		z->embed_sent = 1;
		return lt_dist_wait_to(z->dist, lt_dist_mark(z->dist));
	}
	if (b < 0)
		return LT_OK;
	z->marks[b] = lt_dist_mark(z->dist);
	if (b == 0 && shared)
		return lt_dist_wait_to(z->dist, z->marks[0]);
	if (b == 0 || reused >= lt_model_config_of(z->model)->n_layers)
		return LT_OK;
	return lt_dist_wait_to(z->dist, z->marks[reused]);
}

static enum lt_status ready_mpi(lt_zero *z, size_t lo, size_t hi)
{
	fetch_grads(z, lo, hi);
	enum lt_status st = start_collectives(z, lo, hi);
	return st == LT_OK && z->slots ? free_next_slot(z, lo) : st;
}

static enum lt_status whole_mpi(lt_zero *z)
{
	fetch_grads(z, 0, z->numel);
	return start_collectives(z, 0, z->numel);
}

static enum lt_status land_mpi(lt_zero *z)
{
	lt_host_view_write(&z->grads);
	return LT_OK;
}

/* AdamW wrote this rank's range of the parameters on the device: its copy
 * to the host view, for the all-gather. */
static void put_own_range(lt_zero *z)
{
	struct lt_host_view own = part(&z->params, z->begin, z->end - z->begin);
	lt_host_view_read(&own);
}

/* After the all-gather: the other ranks' ranges back to the device. */
static void take_other_ranges(lt_zero *z)
{
	struct lt_host_view before = part(&z->params, 0, z->begin);
	struct lt_host_view after = part(&z->params, z->end, z->numel - z->end);
	lt_host_view_write(&before);
	lt_host_view_write(&after);
}

static enum lt_status gather_mpi(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	put_own_range(z);
	enum lt_status st = lt_dist_allgatherv_f32(z->dist, z->params.p, z->off,
						   "the parameter all-gather");
	if (st != LT_OK)
		return st;
	take_other_ranges(z);
	return be->ops->sync(be);
}

/* --- the paths: the node's shared memory --- */

static enum lt_status ready_node(lt_zero *z, size_t lo, size_t hi)
{
	return lt_node_sum_ready(z->node, lo, hi, z->backwards > 1);
}

static enum lt_status settle_node(lt_zero *z) { return lt_node_sum_settle(z->node); }
static enum lt_status finish_node(lt_zero *z) { return lt_node_sum_finish(z->node); }

static enum lt_status whole_node(lt_zero *z)
{
	return lt_node_sum_whole(z->node, z->backwards > 1);
}

/* Stage 0: each bucket went back to the device as it was summed. */
static enum lt_status land_node(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	return be->ops->sync(be);
}

static enum lt_status gather_node(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	put_own_range(z);
	enum lt_status st = lt_node_sum_gather(z->node);
	if (st != LT_OK)
		return st;
	take_other_ranges(z);
	if ((st = be->ops->sync(be)) != LT_OK)
		return st;
	/* the next step's ranges go where the others read these */
	return lt_node_sum_sync(z->node, "the parameter all-gather");
}

/* --- the paths' reductions --- */

/* One rank: its gradient is the sum. */
static enum lt_status reduce_alone(lt_zero *z, double *norm)
{
	return lt_optim_grad_norm(z->opt, norm);
}

/* Deterministic: sums the exact sums over the ranks and writes the
 * rounded result as the gradient of every element. */
static enum lt_status reduce_exact(lt_zero *z, double *norm)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st = lt_exact_sum_allreduce(z->exact, z->dist, z->grads.p, norm);
	if (st != LT_OK)
		return st;
	lt_host_view_write(&z->grads);
	return be->ops->sync(be);
}

/* The model's hook between two ops of an armed backward: lets the started
 * exchanges advance. */
static enum lt_status between_ops(void *ctx)
{
	lt_zero *z = ctx;
	return lt_dist_progress(z->dist);
}

/* The model's hook in an armed backward: the gradients of [lo, hi) are
 * complete. */
static enum lt_status on_grads_ready(void *ctx, size_t lo, size_t hi)
{
	lt_zero *z = ctx;
	return z->path->ready(z, lo, hi);
}

/* The model's hook with lookup rows: the lookup's gradient, as rows. */
static enum lt_status on_lookup_ready(void *ctx, size_t table, const int32_t *rows, int count,
				      lt_ref grads)
{
	lt_zero *z = ctx;
	return lt_node_sum_lookup(z->node, table, rows, count, grads);
}

/* Completes the step's gradient exchange: starts it over the whole buffer
 * unless backward did layer by layer, disarms, and waits for it. */
static enum lt_status finish_exchange(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if (z->path->finish && (st = z->path->finish(z)) != LT_OK)
		return st;
	if (!z->armed) {
		if ((st = be->ops->sync(be)) != LT_OK || (st = z->path->whole(z)) != LT_OK)
			return st;
	}
	lt_model_set_grad_hook(z->model, NULL);
	z->armed = 0;
	z->backwards = 0;
	return lt_dist_wait_all(z->dist);
}

/* MPI or the node: stage 0 gives every rank the whole summed gradient;
 * stages 1 and 2 this rank's range of it, and the norm from every range's
 * sum of squares. */
static enum lt_status reduce_summed(lt_zero *z, double *norm)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	size_t n = z->end - z->begin;
	if ((st = finish_exchange(z)) != LT_OK)
		return st;
	if (z->stage == 0)
		return (st = z->path->land(z)) == LT_OK ? lt_optim_grad_norm(z->opt, norm) : st;
	/* the range's sum where AdamW reads it */
	lt_host_view_write(&z->shard);
	double sq = 0;
	for (size_t i = 0; i < n; i++)
		sq += (double)z->shard.p[i] * z->shard.p[i];
	if ((st = lt_dist_allreduce(z->dist, &sq, 1, LT_DIST_F64, LT_DIST_SUM,
				    "the gradient-norm all-reduce")) != LT_OK)
		return st;
	*norm = sqrt(sq);
	return be->ops->sync(be);
}

static const struct path by_mpi = {
	.reduce = reduce_summed, .ready = ready_mpi, .whole = whole_mpi, .land = land_mpi,
	.gather = gather_mpi,
};
static const struct path by_node = {
	.reduce = reduce_summed, .ready = ready_node, .settle = settle_node,
	.finish = finish_node, .whole = whole_node, .land = land_node, .gather = gather_node,
};
static const struct path by_exact_sum = { .reduce = reduce_exact, .gather = gather_mpi };
static const struct path alone = { .reduce = reduce_alone };

/* --- setting up --- */

/* Whether stage 0 gains from exchanging each layer's gradients as backward
 * finishes them (every rank decides alike). Through the node's memory
 * (`node`) it does only where copies to the host run beside a device:
 * ranks all in host memory would sum with the cores backward uses,
 * waiting at two node barriers per layer for the slowest rank, where
 * summing once after backward waits at two. */
static int overlap_pays(const lt_zero *z, int node)
{
	return z->stage == 0 && lt_dist_size(z->dist) > 1 && !z->deterministic &&
	       (!node || z->async_copies);
}

/* Through the node's shared memory: on one node, the lookup's gradient as
 * rows where backward exchanges as it goes, and, ranks all in host memory
 * at stage 2, a summing thread beside the cores backward uses. Where a
 * node has too little room, the ranks exchange through MPI instead. */
static enum lt_status use_node_memory(lt_zero *z, size_t tokens)
{
	int one_node = lt_dist_nodes(z->dist) == 1;
	size_t cap = (size_t)lt_model_config_of(z->model)->vocab_size;
	/* (with adapters the embedding is frozen, and a later pipeline stage
	 * holds none: no lookup to exchange) */
	z->lookup_rows = one_node && (z->slots || overlap_pays(z, 1)) &&
			 lt_model_lora(z->model)->rank == 0 && lt_model_stage_first(z->model);
	struct lt_node_sum_plan p = {
		.stage = z->stage, .off = z->off, .grads = z->grads_layout,
		.async_copies = z->async_copies, .lookup_rows = z->lookup_rows,
		.lookup_cap = tokens < cap ? tokens : cap,
		.thread = one_node && !z->async_copies && z->slots,
	};
	char why[200];
	enum lt_status st = lt_node_sum_new(z->dist, z->model, &p, &z->node, why, sizeof why);
	if (st != LT_OK)
		return st;
	if (!z->node) {
		snprintf(z->exchange, sizeof z->exchange, "MPI collectives (%s)", why);
		z->lookup_rows = 0;
		return LT_OK;
	}
	snprintf(z->exchange, sizeof z->exchange, "%s", lt_node_sum_how(z->node));
	z->bytes += lt_node_sum_bytes(z->node);
	return LT_OK;
}

/* Through the node, stages 1 and 2: the parameters and the range's sum
 * in its shared memory, as views of where they belong on the device. */
static void view_node_memory(lt_zero *z)
{
	if (z->stage == 0)
		return;
	z->params = staged_view(z, lt_model_params(z->model), z->numel,
				lt_node_sum_params(z->node), 0);
	z->shard = staged_view(z, shard_ref(z), z->end - z->begin, lt_node_sum_shard(z->node), 0);
}

/* MPI's collectives: host views of the gradients and (stages 1 and 2)
 * the parameters, and of the range's sum: the slots' shard, or else a
 * copy of its own, apart from the gradients the reduce sends. */
static enum lt_status use_mpi(lt_zero *z)
{
	int sharded = z->stage > 0 && lt_dist_size(z->dist) > 1;
	size_t n = z->end - z->begin;
	float *sum;
	enum lt_status st;
	if ((st = map_view(z, &z->grads, lt_model_grads(z->model), lt_model_grads_numel(z->model),
			   "the gradients")) != LT_OK)
		return st;
	if (sharded && z->stage < 3 && (st = map_view(z, &z->params, lt_model_params(z->model), z->numel,
				      "the parameters")) != LT_OK)
		return st;
	if (!sharded || z->deterministic)
		return LT_OK;
	if (z->slots)  /* (stage 3: once sliced, lt_zero_shard) */
		return z->stage < 3 ? map_view(z, &z->shard, shard_ref(z), n, "the gradient shard")
				    : LT_OK;
	if (!(sum = malloc((n ? n : 1) * sizeof *sum))) {
		lt_errmsg_set("cannot allocate the gradient shard of %zu elements", n);
		return LT_ERR_NOMEM;
	}
	z->shard = staged_view(z, shard_ref(z), n, sum, 1);
	z->bytes += n * sizeof *sum;
	return LT_OK;
}

/* The exchange over MPI of a run that is not --deterministic, and why not
 * through the node's memory (`node_memory`: it was asked for). */
static void say_mpi(lt_zero *z, int node_memory)
{
	int nodes = lt_dist_nodes(z->dist);
	snprintf(z->exchange, sizeof z->exchange, "%s",
		 !node_memory ? "MPI collectives (--exchange mpi)" :
		 nodes == 0 ? "MPI collectives (the nodes run different numbers of ranks)" :
		 "MPI collectives (one rank on each node)");
}

/* The optimizer for this rank's range, the path, and the buffers it
 * needs. */
static enum lt_status allocate(lt_zero *z, int node_memory, size_t tokens)
{
	int size = lt_dist_size(z->dist), nodes = lt_dist_nodes(z->dist);
	enum lt_status st;
	/* slots first: the whole gradient buffer goes before the moments come,
	 * and the node's memory holds a copy of the smaller buffer (a model of
	 * lt_model_new_sliced gets its first gradient buffer here) */
	z->slots = lt_zero_grad_slots(z->stage, size, z->deterministic);
	if (!z->slots && !lt_model_grads(z->model).buf &&
	    (st = lt_model_set_grad_layout(z->model, NULL)) != LT_OK)
		return st;
	if (z->slots > 0) {
		lt_grad_slots_of(z->model, z->slots, &z->grads_layout);
		/* stage 3, a whole model: one buffer for a block's gradients and
		 * the embedding's, which come after block 0's */
		if (z->stage == 3 && lt_model_stage_first(z->model) && lt_model_stage_last(z->model))
			lt_grad_slots_share(&z->grads_layout);
		if ((st = lt_grad_slots_apply(z->model, &z->grads_layout)) != LT_OK)
			return st;
	}
	/* stage 3's moments come once the whole parameters are gone
	 * (lt_zero_shard), so that the two never take room at once */
	if (z->stage < 3 && (st = lt_optim_new(z->model, z->begin, z->end, &z->opt)) != LT_OK)
		return st;
	if (z->stage == 3 && (st = lt_zero3_new(z->dist, z->model, z->off, &z->params3)) != LT_OK)
		return st;
	if (size == 1 && !z->deterministic) {
		z->path = &alone;
		snprintf(z->exchange, sizeof z->exchange, "none (one rank)");
		return LT_OK;
	}
	if (z->deterministic) {
		z->path = &by_exact_sum;
		snprintf(z->exchange, sizeof z->exchange, "%s",
			 size == 1 ? "none (one rank)" : "MPI collectives (exact sums of --deterministic)");
		if ((st = use_mpi(z)) != LT_OK || (st = lt_exact_sum_new(z->numel, &z->exact)) != LT_OK)
			return st;
		z->bytes += lt_exact_sum_bytes(z->exact);
		return LT_OK;
	}
	say_mpi(z, node_memory);
	/* the node's memory would hold a whole copy of the parameters */
	if (z->stage == 3)
		snprintf(z->exchange, sizeof z->exchange, "MPI collectives (ZeRO stage 3)");
	if (node_memory && z->stage < 3 && nodes > 0 && (nodes == 1 || lt_dist_local_size(z->dist) > 1) &&
	    (st = use_node_memory(z, tokens)) != LT_OK)
		return st;
	z->path = z->node ? &by_node : &by_mpi;
	if (z->slots && z->stage < 3 && (st = use_slots(z)) != LT_OK)
		return st;
	if (!z->node)
		return use_mpi(z);
	view_node_memory(z);
	return LT_OK;
}

enum lt_status lt_zero_new(lt_dist *d, lt_model *m, int stage, int deterministic,
			   int node_memory, size_t tokens, lt_zero **out)
{
	int size = lt_dist_size(d), rank = lt_dist_rank(d);
	/* the ranks' exchanges must pair up: they agree on overlap_pays */
	double async_copies = lt_model_backend(m)->ops->read_start != NULL;
	enum lt_status st = lt_dist_allreduce(d, &async_copies, 1, LT_DIST_F64, LT_DIST_MAX,
					      "the agreement on the exchange's copies");
	*out = NULL;
	if (st != LT_OK)
		return st;
	struct lt_zero *z = calloc(1, sizeof *z);
	if (!z || !(z->off = calloc((size_t)size + 1, sizeof *z->off))) {
		free(z);
		lt_errmsg_set("cannot allocate the data-parallel state");
		return LT_ERR_NOMEM;
	}
	z->rank = rank;
	z->dist = d;
	z->model = m;
	z->stage = stage;
	z->deterministic = deterministic;
	z->async_copies = async_copies > 0;
	z->numel = lt_model_num_params(m);
	lt_reduce_ranges(z->numel, size, z->off);
	z->begin = stage > 0 ? z->off[rank] : 0;
	z->end = stage > 0 ? z->off[rank + 1] : z->numel;
	lt_grad_slots_of(m, 0, &z->grads_layout);
	if ((st = allocate(z, node_memory, tokens)) != LT_OK) {
		lt_zero_free(z);
		return st;
	}
	*out = z;
	return LT_OK;
}

void lt_zero_free(lt_zero *z)
{
	if (!z)
		return;
	lt_model_set_grad_hook(z->model, NULL);
	lt_optim_free(z->opt);
	lt_host_view_free(&z->grads);
	lt_host_view_free(&z->params);
	lt_host_view_free(&z->shard);
	lt_node_sum_free(z->node);
	lt_buf_free(lt_model_backend(z->model), z->shard_buf);
	free(z->marks);
	lt_exact_sum_free(z->exact);
	lt_zero3_free(z->params3);
	free(z->off);
	free(z);
}

int lt_zero_grad_slots(int stage, int ranks, int deterministic)
{
	if (stage < 2 || ranks < 2 || deterministic)
		return 0;
	return stage == 3 ? LT_ZERO3_GRAD_SLOTS : LT_ZERO_GRAD_SLOTS;
}

/* Stage 3's parameters: this rank's range (f32), and the slots the
 * model gathers blocks, the embedding table and the output range into
 * (with their bf16 compute copy in bf16, which the one-process estimate
 * counts as 2 bytes a parameter). */
static void stage3_estimate(struct lt_mem_estimate *e, const struct lt_model_config *c,
			    int ranks)
{
	size_t P = lt_model_config_params(c), each = e->params >= P * 6 ? 6 : 4;
	e->total -= e->params;
	e->params = (P + (size_t)ranks - 1) / (size_t)ranks * 4;
	e->gathered = lt_zero3_numel(c) * each;
	e->total += e->params + e->gathered;
}

void lt_zero_estimate(struct lt_mem_estimate *e, const struct lt_model_config *c, int ranks,
		      int stage, int deterministic, int head)
{
	/* the trainable parameters: the model's, or with LoRA the adapters',
	 * which are blocks alone */
	/* (a pipeline stage's parameters: its blocks, and maybe the embedding
	 * or the head) */
	size_t P = e->grads / 4, block = lt_model_config_block_params(c);
	int L = c->n_layers, adapters = P < (size_t)L * block;
	int k = lt_zero_grad_slots(stage, ranks, deterministic);
	k = k < L ? k : L;
	size_t slots = adapters ? P / (size_t)L * (size_t)k : P - (size_t)(L - k) * block;
	/* stage 3: the slots over the embedding's range (lt_grad_slots_share) */
	size_t table = (size_t)c->vocab_size * c->dim;
	if (stage == 3 && !adapters && k > 0 && P >= table + (size_t)L * block)
		slots -= table < (size_t)k * block ? table : (size_t)k * block;
	if (stage == 0 || ranks < 2)
		return;
	e->total -= e->optimizer + e->grads;
	e->optimizer = (e->optimizer + (size_t)ranks - 1) / (size_t)ranks;
	if (stage >= 2 && !deterministic)
		e->grads = slots * 4 + (P * 4 + (size_t)ranks - 1) / (size_t)ranks;
	e->total += e->optimizer + e->grads;
	if (stage == 3 && !adapters)
		stage3_estimate(e, c, ranks);
	/* stage 3's head's weight gradient goes into the gradient buffer */
	if (stage == 3 && !adapters && !deterministic && head) {
		size_t own = (size_t)c->vocab_size * c->dim * 4;
		e->activations -= own;
		e->total -= own;
	}
}

lt_optim *lt_zero_optim(const lt_zero *z) { return z->opt; }
const char *lt_zero_exchange(const lt_zero *z) { return z->exchange; }
const size_t *lt_zero_ranges(const lt_zero *z) { return z->off; }
size_t lt_zero_bytes(const lt_zero *z) { return z->bytes; }

/* --- the step --- */

/* With slots (stage 2) every backward exchanges its gradients, once the
 * previous one's exchanges are done (backward zeroes its buffer as it
 * starts); stage 0 exchanges each layer's gradients in the step's last
 * backward as it finishes them where that pays; the others after
 * backward. */
enum lt_status lt_zero_arm(lt_zero *z, int last)
{
	if (z->slots || (last && overlap_pays(z, z->node != NULL))) {
		z->armed = 1;
		struct lt_grad_hook hook = { .ctx = z, .ready = on_grads_ready,
					     .between_ops = between_ops,
					     .lookup_ready = z->lookup_rows ? on_lookup_ready : NULL };
		lt_model_set_grad_hook(z->model, &hook);
	}
	if (!z->slots)
		return LT_OK;
	enum lt_status st = z->path->settle ? z->path->settle(z) : LT_OK;
	z->backwards++;
	z->embed_sent = 0;
	return st == LT_OK ? lt_dist_wait_all(z->dist) : st;
}

enum lt_status lt_zero_add_sequence(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	LT_ASSERT(z->exact);
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK)
		return st;
	fetch_grads(z, 0, z->numel);
	lt_exact_sum_add(z->exact, z->grads.p);
	lt_model_zero_grads(z->model);
	return be->ops->sync(be);
}

enum lt_status lt_zero_reduce(lt_zero *z, double *norm)
{
	return z->path->reduce(z, norm);
}

enum lt_status lt_zero_update(lt_zero *z, const struct lt_optim_config *oc, int step, double norm)
{
	enum lt_status st = lt_optim_update(z->opt, oc, step, norm);
	if (st == LT_OK && z->params3)
		return lt_zero3_updated(z->params3);
	if (st != LT_OK || z->stage == 0 || lt_dist_size(z->dist) == 1)
		return st;
	return z->path->gather(z);
}

/* Stage 3's moments and gradient shard come once the whole parameters
 * are gone, so that they never take room at once. */
enum lt_status lt_zero_shard(lt_zero *z)
{
	enum lt_status st = z->params3 ? lt_zero3_slice(z->params3) : LT_OK;
	if (st != LT_OK || !z->params3)
		return st;
	if (!z->opt) {
		if ((st = lt_optim_new(z->model, z->begin, z->end, &z->opt)) != LT_OK)
			return st;
		lt_optim_set_params(z->opt, lt_zero3_range(z->params3));
	}
	if (!z->slots)
		return st;
	/* the parameter hook waits for the exchanges before the head (dist/zero3.h) */
	lt_model_set_head_grad_direct(z->model, 1);
	if (z->shard_buf)
		return st;
	if ((st = use_slots(z)) != LT_OK)
		return st;
	return map_view(z, &z->shard, shard_ref(z), z->end - z->begin, "the gradient shard");
}

enum lt_status lt_zero_whole(lt_zero *z)
{
	if (z->params3)
		lt_model_set_head_grad_direct(z->model, 0);
	return z->params3 ? lt_zero3_whole(z->params3) : LT_OK;
}

enum lt_status lt_zero_catch_up(lt_zero *z, int passes, int backward)
{
	double most = passes;
	if (!z->params3)
		return LT_OK;
	enum lt_status st = lt_dist_allreduce(z->dist, &most, 1, LT_DIST_F64, LT_DIST_MAX,
					      "the count of the ranks' passes");
	for (int i = passes; i < (int)most && st == LT_OK; i++)
		st = lt_zero3_idle_pass(z->params3, backward);
	return st;
}
