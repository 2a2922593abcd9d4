/* The gradient exchange through a node's shared memory. */
#include "config.h"
#include "dist/node_sum.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "dist/reduce.h"
#include "dist/sum_thread.h"

/* Bytes of a page: the parts' sections start on one. */
#define PAGE 4096
/* Spans of a rank's piece of the embedding table that threads take in
 * turn as they add the ranks' lookup rows. */
#define LOOKUP_SPANS 64
/* Blocks whose gradients a part holds at once with a summing thread: a
 * rank may run as many blocks ahead of the node's slowest before it waits
 * for that one's sum. */
#define PART_SLOTS 4

struct lt_node_sum {
	lt_dist *dist;
	lt_model *model;
	int stage;
	const size_t *off;             /* [ranks + 1] the ranges */
	size_t numel;
	int local, locals, nodes;      /* this rank's index on its node, the node's ranks, nodes */
	int *rank;                     /* [locals] the job rank of each of the node's ranks */
	int scatter;                   /* stages 1 and 2 over consecutive nodes: the sum between
					  nodes is a reduce-scatter to the owners' nodes */
	size_t *cut;                   /* [nodes + 1]: where each node's owners' range starts */
	int async_copies;
	struct lt_grad_slots grads;    /* the model's gradient buffer */
	struct lt_grad_slots parts;    /* the gradients in a part: as grads, or PART_SLOTS */
	/* Local rank j's part holds its gradients, its lookup rows, its
	 * summing thread's counts, its shard (stages 1 and 2) and, for j = 0,
	 * the parameters. */
	lt_dist_shared *shared;
	float **grads_of, **shard_of;  /* [locals]: each rank's sections */
	float *params;                 /* stages 1 and 2: local rank 0's parameters */
	struct lt_reduce_node owners;  /* the parts as lt_reduce_to_owners sees them */
	void *pins[2];                 /* the backend's pins of this rank's part and of
					  local rank 0's parameters */
	size_t bytes, gbytes;          /* this rank's part, and its gradients' section */
	/* a bucket whose copy to the host is under way */
	struct { int on, add; size_t lo, hi; } copying;
	/* a sum between the nodes under way, of elements [a, b) of the bucket
	 * from lo */
	struct { int on, add; size_t lo, a, b; } across;
	/* lookup rows: after the gradients, each part holds the count and
	 * tokens of its rank's rows (lookup_cap at most) and then their
	 * gradients */
	int lookup_rows;
	size_t lookup_cap, table;      /* table: the flat element of the embedding's row 0 */
	lt_sum_thread *thread;         /* one node, every rank in host memory, stage 2 */
	uint64_t table_bucket, rows_added;  /* with the thread and lookup rows: the table's last
					       bucket, and the last mark that this rank added
					       the lookup rows */
	char how[256];
};

/* Bytes of a section of n floats, on whole pages. */
static size_t section_bytes(size_t n)
{
	return (n * sizeof(float) + PAGE - 1) / PAGE * PAGE;
}

/* Lookup rows: local rank j's, their count first, then the tokens. */
static int32_t *lookup_tokens(const lt_node_sum *n, int j)
{
	return (int32_t *)((char *)n->grads_of[j] + n->gbytes);
}

/* Lookup rows: the gradients of local rank j's, [count, dim]. */
static float *lookup_grads(const lt_node_sum *n, int j)
{
	return (float *)((char *)lookup_tokens(n, j) + section_bytes(n->lookup_cap + 1));
}

/* Where the gradient of flat element lo lies in a part. */
static size_t part_index(const lt_node_sum *n, size_t lo)
{
	return lt_grad_slots_index(&n->parts, lo);
}

/* This rank's copy of the gradient of flat element lo: the range [lo, hi)
 * that backward reports is contiguous in the gradient buffer. */
static float *host_grads(const lt_node_sum *n, size_t lo)
{
	return n->grads_of[n->local] + part_index(n, lo);
}

/* The gradient of flat element lo in the backend's buffer. */
static lt_ref device_grads(const lt_node_sum *n, size_t lo)
{
	return lt_ref_at(lt_model_grads(n->model), lt_grad_slots_index(&n->grads, lo));
}

/* Copies the gradients of flat elements [lo, hi) to this rank's part. */
static void fetch_grads(lt_node_sum *n, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(n->model);
	if (hi > lo)
		be->ops->read(be, host_grads(n, lo), device_grads(n, lo), hi - lo);
}

/* Stage 0: the summed gradients of [lo, hi) back to the device, without
 * waiting where the backend can (its sync waits). */
static void put_grads(lt_node_sum *n, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(n->model);
	if (be->ops->write_start)
		be->ops->write_start(be, device_grads(n, lo), host_grads(n, lo), hi - lo);
	else
		be->ops->write(be, device_grads(n, lo), host_grads(n, lo), hi - lo);
}

/* Over several nodes, once the sum between the nodes that start_across
 * started completed: from this rank's part back into every part of the
 * node (stage 0) or into the shards of the node's owners (the elements
 * [a, b) of the bucket from lo, at part index at). */
static enum lt_status spread_across(lt_node_sum *n, size_t lo, size_t at, size_t a, size_t b,
				    int add)
{
	enum lt_status st = lt_dist_wait_all(n->dist);
	if (st != LT_OK)
		return st;
	const float *sum = n->grads_of[n->local] + at + (a - lo);
	double t0 = lt_seconds();
	for (int j = 0; j < n->locals; j++) {
		size_t x, len;
		if (n->stage == 0 && j != n->local)
			memcpy(n->grads_of[j] + at + (a - lo), sum, (b - a) * sizeof *sum);
		int r = n->rank[j];
		if (n->stage == 0 || !(len = lt_reduce_owned(n->off, r, a, b, &x)))
			continue;
		float *to = n->shard_of[j] + (x - n->off[r]);
		const float *from = sum + (x - a);
		for (size_t i = 0; i < len; i++)
			to[i] = add ? to[i] + from[i] : from[i];
	}
	lt_dist_add_wait_seconds(n->dist, lt_seconds() - t0);
	return LT_OK;
}

/* Over several nodes: completes the sum between the nodes that backward
 * left under way (none: nothing to do). */
static enum lt_status finish_across(lt_node_sum *n)
{
	if (!n->across.on)
		return LT_OK;
	n->across.on = 0;
	return spread_across(n, n->across.lo, part_index(n, n->across.lo), n->across.a,
			     n->across.b, n->across.add);
}

/* Over several nodes: the sum of flat elements [a, b) (of the bucket from
 * lo, at part index at) over the node's parts into this rank's part, then
 * the start of their sum over the nodes (at stages 1 and 2, to only the
 * range the node's ranks own, where they are consecutive). Stage 0 waits
 * for it and spreads it at once; stages 1 and 2 leave it under way, for
 * finish_across, while backward goes on. */
static enum lt_status start_across(lt_node_sum *n, size_t lo, size_t at, size_t a, size_t b,
				   int add)
{
	float *sum = n->grads_of[n->local] + at + (a - lo);
	enum lt_status st = finish_across(n);  /* the bucket before's */
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	lt_reduce_sum(n->grads_of, n->locals, at + (a - lo), b - a, sum, 0, 1);
	lt_dist_add_wait_seconds(n->dist, lt_seconds() - t0);
	if (n->scatter) {
		/* node i's ranks own [off[i * locals], off[(i + 1) * locals]) */
		for (int i = 0; i <= n->nodes; i++) {
			size_t x = n->off[i * n->locals];
			n->cut[i] = (x < a ? a : x > b ? b : x) - a;
		}
		st = lt_dist_cross_sum_scatter_start(n->dist, sum, n->cut,
						     "the gradient reduce-scatter between nodes");
	} else {
		st = lt_dist_cross_sum_start(n->dist, sum, b - a,
					     "the gradient exchange between nodes");
	}
	if (st != LT_OK || n->stage == 0)
		return st == LT_OK ? spread_across(n, lo, at, a, b, add) : st;
	n->across.on = 1;
	n->across.add = add;
	n->across.lo = lo;
	n->across.a = a;
	n->across.b = b;
	return LT_OK;
}

/* Whether a bucket summed in backward can skip the sync after its sum.
 * With every rank in host memory, each sums the copied bucket before it
 * fetches the next (copy_bucket), so the parts of a bucket are written
 * again, by the fetch two buckets later, only after every rank passed the
 * next bucket's first sync, and so finished this sum. Stage 0 keeps it:
 * each rank then reads the sums the others wrote. */
static int sync_after_sum(const lt_node_sum *n, int last)
{
	return last || n->stage == 0 || n->async_copies;
}

/* Every rank's gradients of flat elements [lo, hi) lie in its part. Local
 * rank j sums the j-th of `locals` pieces over the parts (and, over
 * several nodes, with rank j of the others): at stage 0 back into every
 * part, else into each owner's shard (adding to the earlier backwards'
 * sum when `add`). The sync after frees the parts for the next gradients
 * (where sync_after_sum says; `last`: backward's last bucket). */
static enum lt_status sum_on_node(lt_node_sum *n, size_t lo, size_t hi, int last, int add)
{
	size_t at = part_index(n, lo);
	size_t a = lo + lt_reduce_piece_at(hi - lo, n->locals, n->local);
	size_t b = lo + lt_reduce_piece_at(hi - lo, n->locals, n->local + 1);
	enum lt_status st = lt_dist_shared_sync(n->dist, n->shared, "the gradient exchange");
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	if (n->nodes > 1) {
		st = start_across(n, lo, at, a, b, add);
		if (st == LT_OK && last)
			st = finish_across(n);
	} else if (n->stage == 0) {
		lt_reduce_sum(n->grads_of, n->locals, at + (a - lo), b - a, NULL, 0, 1);
	} else {
		lt_reduce_to_owners(&n->owners, lo, at, a, b, add, 1);
	}
	if (n->nodes == 1)
		lt_dist_add_wait_seconds(n->dist, lt_seconds() - t0);
	if (st == LT_OK && sync_after_sum(n, last))
		st = lt_dist_shared_sync(n->dist, n->shared, "the gradient exchange");
	if (st != LT_OK)
		return st;
	/* with lookup rows, the table goes back once the rows are in */
	if (n->stage == 0 && !(n->lookup_rows && lo == n->table))
		put_grads(n, lo, hi);
	return LT_OK;
}

/* Sums the bucket whose copy to the host is under way once the copy is
 * done (the newest `keep` copies may still run; none when it is
 * backward's last). */
static enum lt_status sum_copied(lt_node_sum *n, int keep)
{
	lt_backend *be = lt_model_backend(n->model);
	enum lt_status st;
	if (!n->copying.on)
		return LT_OK;
	n->copying.on = 0;
	if (be->ops->reads_wait && (st = be->ops->reads_wait(be, keep)) != LT_OK)
		return st;
	return sum_on_node(n, n->copying.lo, n->copying.hi, keep == 0, n->copying.add);
}

/* In backward: starts copying the gradients of [lo, hi) to the host and
 * sums the bucket before it meanwhile, so the device goes on with backward
 * while the host adds; a backend in host memory sums the bucket before
 * first, then copies. */
static enum lt_status copy_bucket(lt_node_sum *n, size_t lo, size_t hi, int add)
{
	lt_backend *be = lt_model_backend(n->model);
	/* the copy below may reuse the slot whose sum between nodes runs */
	enum lt_status st = finish_across(n);
	if (st != LT_OK)
		return st;
	if (be->ops->read_start) {
		be->ops->read_start(be, host_grads(n, lo), device_grads(n, lo), hi - lo);
		st = sum_copied(n, 1);
	} else if ((st = sum_copied(n, 1)) == LT_OK) {
		fetch_grads(n, lo, hi);
	}
	n->copying.on = 1;
	n->copying.add = add;
	n->copying.lo = lo;
	n->copying.hi = hi;
	return st;
}

/* The summing thread's work: this rank's piece of the bucket [lo, hi)
 * into the owners' shards. */
static void sum_piece(void *ctx, size_t lo, size_t hi, int add, int threads)
{
	lt_node_sum *n = ctx;
	size_t len = hi - lo;
	lt_reduce_to_owners(&n->owners, lo, part_index(n, lo),
			    lo + lt_reduce_piece_at(len, n->locals, n->local),
			    lo + lt_reduce_piece_at(len, n->locals, n->local + 1), add, threads);
}

/* With the thread, in backward: once every rank's thread summed what the
 * bucket's region of the parts held before (and the queue has room),
 * copies the gradients of [lo, hi) there and hands the bucket to the
 * thread. An empty bucket is a mark that the others can wait for. */
static enum lt_status post_bucket(lt_node_sum *n, size_t lo, size_t hi, int add)
{
	lt_sum_thread *t = n->thread;
	/* with lookup rows, the table waits until every rank added the rows
	 * before */
	int table = n->lookup_rows && hi > lo && lo == n->table;
	enum lt_status st = table ? lt_sum_thread_wait_posts(t, n->rows_added) : LT_OK;
	if (st == LT_OK)
		st = lt_sum_thread_make_room(t, part_index(n, lo), lo, hi);
	if (st != LT_OK)
		return st;
	fetch_grads(n, lo, hi);
	uint64_t k = lt_sum_thread_post(t, lo, hi, add);
	if (table)
		n->table_bucket = k;
	return LT_OK;
}

enum lt_status lt_node_sum_ready(lt_node_sum *n, size_t lo, size_t hi, int add)
{
	return n->thread ? post_bucket(n, lo, hi, add) : copy_bucket(n, lo, hi, add);
}

enum lt_status lt_node_sum_settle(lt_node_sum *n)
{
	return sum_copied(n, 0);
}

enum lt_status lt_node_sum_finish(lt_node_sum *n)
{
	enum lt_status st = sum_copied(n, 0);
	return st == LT_OK && n->thread ? lt_sum_thread_finish(n->thread) : st;
}

enum lt_status lt_node_sum_whole(lt_node_sum *n, int add)
{
	fetch_grads(n, 0, n->numel);
	return sum_on_node(n, 0, n->numel, 1, add);
}

/* Lookup rows: adds the n gradients from src to flat elements [e, e + n):
 * at stage 0 into every part, else into their owners' shards. */
static void add_lookup_row(lt_node_sum *n, size_t e, const float *src, size_t len)
{
	size_t at = part_index(n, e);
	for (int j = 0; j < n->locals; j++) {
		float *to = n->grads_of[j] + at;
		const float *from = src;
		size_t m = len;
		if (n->stage > 0) {  /* the part of [e, e + len) that local rank j owns */
			int r = n->rank[j];
			size_t x;
			if (!(m = lt_reduce_owned(n->off, r, e, e + len, &x)))
				continue;
			to = n->shard_of[j] + (x - n->off[r]);
			from = src + (x - e);
		}
		for (size_t i = 0; i < m; i++)
			to[i] += from[i];
	}
}

/* The first of tokens[count] (ascending) that is at least v. */
static int first_at_least(const int32_t *tokens, int count, int v)
{
	int lo = 0, hi = count;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (tokens[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Lookup rows: every rank's rows that fall in this rank's piece of the
 * table (whose row 0 is flat element `table`), added rank by rank: the
 * same order for every element on every rank. Threads take spans of the
 * piece's rows. */
static void add_lookups(lt_node_sum *n, size_t table)
{
	const struct lt_model_config *c = lt_model_config_of(n->model);
	size_t C = (size_t)c->dim;
	long V = c->vocab_size, lo = V * n->local / n->locals, hi = V * (n->local + 1) / n->locals;
#pragma omp parallel for schedule(dynamic)
	for (long s = 0; s < LOOKUP_SPANS; s++) {
		int a = (int)(lo + (hi - lo) * s / LOOKUP_SPANS);
		int b = (int)(lo + (hi - lo) * (s + 1) / LOOKUP_SPANS);
		for (int k = 0; k < n->locals; k++) {
			const int32_t *tokens = lookup_tokens(n, k) + 1;
			const float *g = lookup_grads(n, k);
			int count = tokens[-1];
			for (int i = first_at_least(tokens, count, a); i < count && tokens[i] < b; i++)
				add_lookup_row(n, table + (size_t)tokens[i] * C, g + (size_t)i * C, C);
		}
	}
}

/* With the thread: marks this rank's lookup rows as in its part; once
 * every rank's are, and every rank summed the table's bucket, adds the
 * rows of its piece of the table to the owners' shards, and marks that
 * done (the wait after backward waits for every rank's mark). */
static enum lt_status add_rows_with_thread(lt_node_sum *n, size_t table)
{
	lt_sum_thread *t = n->thread;
	enum lt_status st = post_bucket(n, 0, 0, 0);
	if (st == LT_OK)
		st = lt_sum_thread_wait_posts(t, lt_sum_thread_posted(t));
	if (st == LT_OK)
		st = lt_sum_thread_wait_sums(t, n->table_bucket);
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	add_lookups(n, table);
	lt_dist_add_wait_seconds(n->dist, lt_seconds() - t0);
	st = post_bucket(n, 0, 0, 0);
	n->rows_added = lt_sum_thread_posted(t);
	return st;
}

/* Once the last block's bucket is summed, this rank's lookup rows go to
 * its part; after every rank's are there, each adds the rows of its piece
 * of the table; at stage 0 the table, now whole, goes back to the device. */
enum lt_status lt_node_sum_lookup(lt_node_sum *n, size_t table, const int32_t *rows, int count,
				  lt_ref grads)
{
	lt_backend *be = lt_model_backend(n->model);
	const struct lt_model_config *c = lt_model_config_of(n->model);
	enum lt_status st = sum_copied(n, 0);
	if (st != LT_OK)
		return st;
	LT_ASSERT(count >= 0 && (size_t)count <= n->lookup_cap);
	/* (with the thread, the table's bucket waited until the others added
	 * the rows before) */
	int32_t *mine = lookup_tokens(n, n->local);
	mine[0] = count;
	memcpy(mine + 1, rows, (size_t)count * sizeof *rows);
	be->ops->read(be, lookup_grads(n, n->local), grads, (size_t)count * (size_t)c->dim);
	if ((st = be->ops->sync(be)) != LT_OK || n->thread)
		return st == LT_OK ? add_rows_with_thread(n, table) : st;
	if ((st = lt_dist_shared_sync(n->dist, n->shared, "the gradient exchange")) != LT_OK)
		return st;
	double t0 = lt_seconds();
	add_lookups(n, table);
	lt_dist_add_wait_seconds(n->dist, lt_seconds() - t0);
	if ((st = lt_dist_shared_sync(n->dist, n->shared, "the gradient exchange")) != LT_OK)
		return st;
	if (n->stage == 0)
		put_grads(n, table, table + (size_t)c->vocab_size * (size_t)c->dim);
	return LT_OK;
}

enum lt_status lt_node_sum_gather(lt_node_sum *n)
{
	enum lt_status st = lt_dist_cross_allgatherv_f32(n->dist, n->params, n->off,
							 "the parameter all-gather between nodes");
	return st == LT_OK ? lt_dist_shared_sync(n->dist, n->shared, "the parameter all-gather")
			   : st;
}

enum lt_status lt_node_sum_sync(lt_node_sum *n, const char *what)
{
	return lt_dist_shared_sync(n->dist, n->shared, what);
}

const char *lt_node_sum_how(const lt_node_sum *n) { return n->how; }
size_t lt_node_sum_bytes(const lt_node_sum *n) { return n->bytes; }
float *lt_node_sum_shard(const lt_node_sum *n) { return n->shard_of[n->local]; }
float *lt_node_sum_params(const lt_node_sum *n) { return n->params; }

/* How the ranks exchange, for the run's report. */
static void describe(lt_node_sum *n)
{
	if (n->nodes > 1)
		snprintf(n->how, sizeof n->how,
			 "through the shared memory of each node's %d ranks, and MPI collectives "
			 "between the %d nodes (gradients: %s)", n->locals, n->nodes,
			 n->stage == 0 ? "all-reduce" :
			 n->scatter ? "reduce-scatter to the owners' nodes" :
			 "all-reduce, as the nodes' ranks are not consecutive");
	else if (n->thread)
		snprintf(n->how, sizeof n->how,
			 "through the shared memory of the ranks' one node, each rank summing on a "
			 "thread of its own beside backward");
	else
		snprintf(n->how, sizeof n->how, "through the shared memory of the ranks' one node");
}

void lt_node_sum_free(lt_node_sum *n)
{
	if (!n)
		return;
	lt_sum_thread_free(n->thread);
	lt_backend *be = lt_model_backend(n->model);
	if (n->shared)
		be->ops->sync(be);  /* copies to or from the shared memory end */
	for (int i = 0; i < 2 && be->ops->unpin; i++)
		be->ops->unpin(be, n->pins[i]);
	lt_dist_shared_free(n->shared);
	free(n->grads_of);
	free(n->rank);
	free(n->cut);
	free(n);
}

/* Local rank j's part of the node's memory: its gradients (gbytes), its
 * lookup rows (lbytes), its summing thread's counts (cbytes), its shard
 * (stages 1 and 2) and, for j = 0, the parameters. Gives this rank its
 * part; LT_ERR_NOMEM from lt_dist_shared_new means too little room. */
static enum lt_status share_node_memory(lt_node_sum *n)
{
	lt_backend *be = lt_model_backend(n->model);
	int sharded = n->stage > 0, r = lt_dist_rank(n->dist);
	size_t gbytes = section_bytes(lt_grad_slots_numel(&n->parts));
	size_t lbytes = n->lookup_rows ? section_bytes(n->lookup_cap + 1) +
					 section_bytes(n->lookup_cap *
						       (size_t)lt_model_config_of(n->model)->dim)
				       : 0;
	size_t cbytes = n->thread ? LT_SUM_THREAD_PAGE : 0;
	size_t mine = gbytes + lbytes + cbytes +
		      (sharded ? section_bytes(n->off[r + 1] - n->off[r]) : 0) +
		      (sharded && n->local == 0 ? section_bytes(n->numel) : 0);
	enum lt_status st = lt_dist_shared_new(n->dist, mine, &n->shared);
	if (st != LT_OK)
		return st;
	n->bytes = mine;
	n->gbytes = gbytes;
	for (int j = 0; j < n->locals; j++) {
		n->grads_of[j] = lt_dist_shared_at(n->shared, j);
		n->shard_of[j] = (float *)((char *)n->grads_of[j] + gbytes + lbytes + cbytes);
		if (n->thread)
			lt_sum_thread_place_counts(n->thread, j, (char *)n->grads_of[j] + gbytes + lbytes);
	}
	if (sharded) {
		int first = n->rank[0];
		n->params = (float *)((char *)n->shard_of[0] +
				      section_bytes(n->off[first + 1] - n->off[first]));
	}
	if (be->ops->pin) {
		n->pins[0] = be->ops->pin(be, n->grads_of[n->local], mine);
		if (sharded && n->local != 0)
			n->pins[1] = be->ops->pin(be, n->params, section_bytes(n->numel));
	}
	return LT_OK;
}

/* The parts' layout, the ranks' tables and the thread's state, before the
 * node's memory. */
static enum lt_status plan_node(lt_node_sum *n, const struct lt_node_sum_plan *p)
{
	int layers = lt_model_config_of(n->model)->n_layers;
	n->grads = p->grads;
	n->parts = p->grads;
	if (p->thread)
		lt_grad_slots_of(n->model, PART_SLOTS, &n->parts);
	n->grads_of = calloc(2 * (size_t)n->locals, sizeof *n->grads_of);
	n->rank = calloc((size_t)n->locals, sizeof *n->rank);
	n->cut = calloc((size_t)n->nodes + 1, sizeof *n->cut);
	if (!n->grads_of || !n->rank || !n->cut) {
		lt_errmsg_set("cannot allocate the shared memory's views");
		return LT_ERR_NOMEM;
	}
	n->shard_of = n->grads_of + n->locals;
	for (int j = 0; j < n->locals; j++)
		n->rank[j] = lt_dist_rank_of_local(n->dist, j);
	n->owners = (struct lt_reduce_node){ .grads = n->grads_of, .shards = n->shard_of,
					     .rank = n->rank, .off = n->off, .count = n->locals };
	return p->thread ? lt_sum_thread_new(n->dist, layers, sum_piece, n, &n->thread) : LT_OK;
}

enum lt_status lt_node_sum_new(lt_dist *d, lt_model *m, const struct lt_node_sum_plan *p,
			       lt_node_sum **out, char *why, size_t why_size)
{
	lt_node_sum *n = calloc(1, sizeof *n);
	*out = NULL;
	if (!n) {
		lt_errmsg_set("cannot allocate the node's exchange");
		return LT_ERR_NOMEM;
	}
	n->dist = d;
	n->model = m;
	n->stage = p->stage;
	n->off = p->off;
	n->numel = lt_model_num_params(m);
	n->local = lt_dist_local_rank(d);
	n->locals = lt_dist_local_size(d);
	n->nodes = lt_dist_nodes(d);
	n->scatter = p->stage > 0 && lt_dist_nodes_consecutive(d);
	n->async_copies = p->async_copies;
	n->lookup_rows = p->lookup_rows;
	n->lookup_cap = p->lookup_cap;
	n->table = lt_model_tensor(m, 0)->off;
	enum lt_status st = plan_node(n, p);
	if (st == LT_OK && (st = share_node_memory(n)) == LT_ERR_NOMEM) {
		/* too little room on the node (every rank learns it) */
		snprintf(why, why_size, "%s", lt_errmsg());
		lt_errmsg_clear();
		lt_node_sum_free(n);
		return LT_OK;
	}
	if (st == LT_OK && n->thread)
		st = lt_sum_thread_start(n->thread, n->shared);
	if (st != LT_OK) {
		lt_node_sum_free(n);
		return st;
	}
	describe(n);
	*out = n;
	return LT_OK;
}
