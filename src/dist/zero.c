/* ZeRO data parallelism: gradient reduction by stage, the sharded AdamW
 * step, the parameter all-gather, and the exact sum of deterministic runs. */
#include "config.h"
#include "dist/zero.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dist/exact_sum.h"
#include "dist/grad_slots.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Range boundaries fall on multiples of this many elements. */
#define ALIGN 16
/* Elements a thread sums at once through shared memory. */
#define SUM_CHUNK 2048
/* Bytes of a page: the shared parts' sections start on one. */
#define PAGE 4096
/* Spans of a rank's piece of the embedding table that threads take in
 * turn as they add the ranks' lookup rows. */
#define LOOKUP_SPANS 64
/* Blocks whose gradients a part of the node's memory holds at once, with
 * a summer: a rank may run as many blocks ahead of the node's slowest
 * before it waits for that one's sum. */
#define PART_SLOTS 4
/* With a summer, buckets of at least SUB_MIN elements go to the summing
 * thread in SUB_BUCKETS pieces. */
#define SUB_BUCKETS 4
#define SUB_MIN 65536

/* A bucket of gradients handed to the summing thread: flat elements
 * [lo, hi), added to the shards' earlier sums when `add`; `taken` once the
 * thread or, at backward's end, the main thread took it. */
struct bucket {
	size_t lo, hi;
	int add;
	atomic_int taken;
};

/* The summing thread of a rank and what its waits read. Bucket k (from 1
 * on, the same on every rank) sits in queue[k % cap]; each rank's control
 * page counts the buckets it posted and those it summed. In backward only
 * the thread sums, in order, so that a count of k means buckets 1 to k;
 * once every rank posted its last, the main thread sums too, from the
 * last bucket back. */
struct summer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int ready, started;            /* ready: lock and wake initialized */
	atomic_int stop;
	_Atomic uint64_t passed;       /* the buckets the thread summed or found taken */
	struct bucket *queue;
	uint64_t cap, posted;          /* posted: under lock */
	_Atomic uint64_t **posted_of;  /* [locals], in the control pages */
	_Atomic uint64_t **summed_of;  /* [locals] */
	uint64_t want;                 /* what the main thread's wait waits for */
	uint64_t table, added;         /* apart: the table's last bucket, and the last mark
					  that this rank added the lookup rows */
	size_t *region_at;             /* [regions]: where a bucket starts in the parts, */
	uint64_t *region_last;         /* and the last bucket that used it */
	int regions, max_regions;
};

struct lt_zero {
	lt_dist *dist;
	lt_model *model;
	lt_optim *opt;
	int stage, deterministic, armed;
	int rank;
	size_t numel, begin, end;  /* this rank's range */
	size_t *off;               /* [size + 1] */
	float *grads_host;         /* the gradient on the host: the backend's own or a copy */
	float *params_host;        /* the parameters on the host: the backend's own or a copy */
	float *shard;              /* [end - begin], reduced gradient of the range (host) */
	int slots;                 /* stage 2 over ranks: the blocks' gradient slots */
	struct lt_grad_slots grads_layout;  /* the model's gradient buffer (slots or whole) */
	struct lt_grad_slots parts_layout;  /* the host copy of the gradients (node: the parts) */
	lt_buf *shard_buf;         /* slots: where AdamW reads the shard (the shard's memory or not) */
	size_t *marks;             /* slots: [layers] collectives started up to each block's */
	int backwards;             /* slots: the backwards armed this step */
	lt_exact_sum *exact;       /* deterministic: the sum of the step's sequences */
	size_t bytes;              /* what this holds besides the model */
	int own_grads, own_params, own_shard;
	/* node: the ranks of each node exchange through its memory, and the
	 * nodes (as many ranks each) through MPI, rank i of each with rank i of
	 * the others. Local rank j's part holds its gradients, its shard, and
	 * (j = 0) the parameters the all-gather assembles. */
	int node;
	int copies_beside;             /* some rank's backend copies to the host beside its work */
	int local, locals, nodes;      /* this rank's index on its node, the node's ranks, nodes */
	int scatter;                   /* stages 1 and 2 over consecutive nodes: the sum between
					  nodes is a reduce-scatter to the owners' nodes */
	size_t *cut;                   /* [nodes + 1]: where each node's owners' range starts */
	lt_dist_shared *shared;
	float **grads_of, **shard_of;  /* [locals]: each rank's sections */
	void *pins[2];                 /* the backend's pins of this rank's part and of
					  local rank 0's parameters */
	int held;                      /* a bucket whose copy to the host is under way */
	int crossing;                  /* a sum between the nodes under way, of elements
					  [cross_a, cross_b) of the bucket from cross_lo */
	size_t cross_lo, cross_a, cross_b;
	size_t held_lo, held_hi;
	/* node mode on one node, exchanging in backward beside a device: the
	 * embedding lookup's gradient comes apart, as rows; each part holds, after
	 * the gradients, the count and tokens of its rank's rows (lookup_cap at
	 * most) and then their gradients */
	int apart;
	size_t lookup_cap, gbytes;
	/* node mode on one node, every rank in host memory, stage 2: each
	 * rank's thread of its own sums the buckets beside backward */
	struct summer *summer;
	char exchange[256];            /* how the ranks exchange, and why */
};

/* off[r]: equal ranges of ALIGN-element blocks. */
static void plan_ranges(size_t numel, int size, size_t *off)
{
	size_t blocks = (numel + ALIGN - 1) / ALIGN;
	for (int r = 0; r <= size; r++) {
		size_t b = blocks * (size_t)r / (size_t)size * ALIGN;
		off[r] = b < numel ? b : numel;
	}
}

/* A host view of buffer r of n elements: the backend's memory, or a copy. */
static enum lt_status host_view(lt_zero *z, lt_ref r, size_t n, float **out, int *own)
{
	lt_backend *be = lt_model_backend(z->model);
	*out = be->ops->host_ptr ? be->ops->host_ptr(be, r) : NULL;
	*own = *out == NULL;
	if (*out)
		return LT_OK;
	if (!(*out = malloc((n ? n : 1) * sizeof **out))) {
		lt_errmsg_set("cannot allocate %.1f MiB of host staging for the exchange",
			      (double)n * 4 / 1048576.0);
		return LT_ERR_NOMEM;
	}
	z->bytes += n * sizeof **out;
	return LT_OK;
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
	if ((st = lt_buf_new(be, n ? n : 1, &z->shard_buf)) != LT_OK) {
		lt_errmsg_prefix("the gradient shard of %zu elements", n);
		return st;
	}
	lt_optim_set_grads(z->opt, (lt_ref){ z->shard_buf, 0 });
	return z->node ? LT_OK : host_view(z, (lt_ref){ z->shard_buf, 0 }, n, &z->shard,
					       &z->own_shard);
}

/* Bytes of a section of n floats, on whole pages. */
static size_t section_bytes(size_t n)
{
	return (n * sizeof(float) + PAGE - 1) / PAGE * PAGE;
}

/* The elements of job rank r's range. */
static size_t range_of(const lt_zero *z, int r)
{
	return z->off[r + 1] - z->off[r];
}

/* Apart: local rank j's lookup rows, their count first, then the tokens. */
static int32_t *lookup_tokens(const lt_zero *z, int j)
{
	return (int32_t *)((char *)z->grads_of[j] + z->gbytes);
}

/* Apart: the gradients of local rank j's lookup rows, [count, dim]. */
static float *lookup_grads(const lt_zero *z, int j)
{
	return (float *)((char *)lookup_tokens(z, j) + section_bytes(z->lookup_cap + 1));
}

/* A summer's view of local rank j's counts, in its control page (the two
 * on cache lines of their own: the main thread writes one, the summing
 * thread the other). */
static void place_counts(struct summer *u, int j, char *page)
{
	u->posted_of[j] = (_Atomic uint64_t *)page;
	u->summed_of[j] = (_Atomic uint64_t *)(page + 64);
}

static void free_summer(lt_zero *z)
{
	struct summer *u = z->summer;
	if (!u)
		return;
	if (u->started) {
		pthread_mutex_lock(&u->lock);
		atomic_store(&u->stop, 1);
		pthread_cond_signal(&u->wake);
		pthread_mutex_unlock(&u->lock);
		pthread_join(u->thread, NULL);
	}
	if (u->ready) {
		pthread_cond_destroy(&u->wake);
		pthread_mutex_destroy(&u->lock);
	}
	free(u->queue);
	free(u->posted_of);
	free(u->region_at);
	free(u->region_last);
	free(u);
	z->summer = NULL;
}

/* A summer for z, its thread not yet started: a queue for two backwards'
 * buckets (each in pieces), and room for as many regions as a backward has
 * buckets. */
static enum lt_status new_summer(lt_zero *z)
{
	int layers = lt_model_config_of(z->model)->n_layers;
	struct summer *u = z->summer = calloc(1, sizeof *u);
	if (u) {
		u->cap = 2 * ((uint64_t)layers + 4) * SUB_BUCKETS;
		u->max_regions = layers + 4;
		u->queue = calloc(u->cap, sizeof *u->queue);
		u->posted_of = calloc(2 * (size_t)z->locals, sizeof *u->posted_of);
		u->region_at = calloc((size_t)u->max_regions, sizeof *u->region_at);
		u->region_last = calloc((size_t)u->max_regions, sizeof *u->region_last);
		if (!pthread_mutex_init(&u->lock, NULL)) {
			if (!pthread_cond_init(&u->wake, NULL))
				u->ready = 1;
			else
				pthread_mutex_destroy(&u->lock);
		}
	}
	if (!u || !u->queue || !u->posted_of || !u->region_at || !u->region_last || !u->ready) {
		free_summer(z);
		lt_errmsg_set("cannot allocate the gradient-summing thread's state");
		return LT_ERR_NOMEM;
	}
	u->summed_of = u->posted_of + z->locals;
	atomic_init(&u->stop, 0);
	atomic_init(&u->passed, 0);
	return LT_OK;
}

static void *sum_beside(void *arg);

/* Lets the summing thread run on every core of OpenMP's places, not only
 * on the one that OpenMP binds the main thread to where places are set:
 * the scheduler then gives it a core that backward's threads leave free. */
static void let_run_on_every_place(pthread_attr_t *attr)
{
#ifdef _OPENMP
	int places = omp_get_num_places();
	cpu_set_t cores;
	CPU_ZERO(&cores);
	for (int p = 0; p < places; p++) {
		int n = omp_get_place_num_procs(p), ids[CPU_SETSIZE];
		if (n > CPU_SETSIZE)
			return;
		omp_get_place_proc_ids(p, ids);
		for (int i = 0; i < n; i++)
			if (ids[i] >= 0 && ids[i] < CPU_SETSIZE)
				CPU_SET(ids[i], &cores);
	}
	if (CPU_COUNT(&cores) > 0)
		pthread_attr_setaffinity_np(attr, sizeof cores, &cores);
#else
	(void)attr;
#endif
}

/* Zeroes this rank's counts, waits until every rank of the node did, and
 * starts the summing thread. */
static enum lt_status start_summer(lt_zero *z)
{
	struct summer *u = z->summer;
	atomic_store(u->posted_of[z->local], 0);
	atomic_store(u->summed_of[z->local], 0);
	enum lt_status st = lt_dist_shared_sync(z->dist, z->shared,
						"the start of the gradient exchange");
	if (st != LT_OK)
		return st;
	pthread_attr_t attr;
	int err = pthread_attr_init(&attr);
	if (!err) {
		let_run_on_every_place(&attr);
		err = pthread_create(&u->thread, &attr, sum_beside, z);
		pthread_attr_destroy(&attr);
	}
	if (err) {
		lt_errmsg_set("cannot start the gradient-summing thread: %s", strerror(err));
		return LT_ERR_NOMEM;
	}
	u->started = 1;
	snprintf(z->exchange, sizeof z->exchange,
		 "through the shared memory of the ranks' one node, each rank summing on a "
		 "thread of its own beside backward");
	return LT_OK;
}

/* Node mode: local rank j's part of the node's memory holds its gradient
 * buffer, its lookup rows (apart), its summing thread's counts (a page,
 * with a summer), its shard (stages 1 and 2) and, for j = 0, the
 * parameters; the grads, shard and params host copies are these
 * sections. */
static enum lt_status share_node_memory(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	int sharded = z->stage > 0;
	size_t gbytes = section_bytes(lt_grad_slots_numel(&z->parts_layout));
	size_t lbytes = z->apart ? section_bytes(z->lookup_cap + 1) +
				   section_bytes(z->lookup_cap *
						 (size_t)lt_model_config_of(z->model)->dim)
				 : 0;
	size_t cbytes = z->summer ? PAGE : 0;
	size_t mine = gbytes + lbytes + cbytes +
		      (sharded ? section_bytes(z->end - z->begin) : 0) +
		      (sharded && z->local == 0 ? section_bytes(z->numel) : 0);
	enum lt_status st;
	if (!(z->grads_of = calloc(2 * (size_t)z->locals, sizeof *z->grads_of))) {
		lt_errmsg_set("cannot allocate the shared memory's views");
		return LT_ERR_NOMEM;
	}
	z->shard_of = z->grads_of + z->locals;
	if ((st = lt_dist_shared_new(z->dist, mine, &z->shared)) == LT_ERR_NOMEM) {
		/* too little room on the node (every rank learns it): use MPI */
		snprintf(z->exchange, sizeof z->exchange, "MPI collectives (%s)", lt_errmsg());
		lt_errmsg_clear();
		free(z->grads_of);
		z->grads_of = NULL;
		z->node = z->apart = 0;
		free_summer(z);
		z->parts_layout = z->grads_layout;
		return LT_OK;
	}
	if (st != LT_OK)
		return st;
	z->bytes += mine;
	z->gbytes = gbytes;
	for (int j = 0; j < z->locals; j++) {
		z->grads_of[j] = lt_dist_shared_at(z->shared, j);
		z->shard_of[j] = (float *)((char *)z->grads_of[j] + gbytes + lbytes + cbytes);
		if (z->summer)
			place_counts(z->summer, j, (char *)z->grads_of[j] + gbytes + lbytes);
	}
	z->grads_host = z->grads_of[z->local];
	z->own_grads = 1;
	if (sharded) {
		size_t first = range_of(z, lt_dist_rank_of_local(z->dist, 0));
		z->shard = z->shard_of[z->local];
		z->own_shard = 1;
		z->params_host = (float *)((char *)z->shard_of[0] + section_bytes(first));
		z->own_params = 1;
	}
	if (be->ops->pin) {
		z->pins[0] = be->ops->pin(be, z->grads_host, mine);
		if (sharded && z->local != 0)
			z->pins[1] = be->ops->pin(be, z->params_host, section_bytes(z->numel));
	}
	return LT_OK;
}

static int overlap_pays(const lt_zero *z);

static enum lt_status allocate(lt_zero *z)
{
	int size = lt_dist_size(z->dist), sharded = z->stage > 0 && size > 1;
	size_t n = z->end - z->begin;
	enum lt_status st;
	if ((st = lt_optim_new(z->model, z->begin, z->end, &z->opt)) != LT_OK)
		return st;
	if (size == 1 && !z->deterministic)
		return LT_OK;
	/* slots first: the node's memory holds a copy of the smaller buffer */
	if (sharded && z->stage == 2 && !z->deterministic) {
		z->slots = LT_ZERO_GRAD_SLOTS;
		lt_grad_slots_of(z->model, z->slots, &z->grads_layout);
		z->parts_layout = z->grads_layout;
		if ((st = lt_grad_slots_apply(z->model, &z->grads_layout)) != LT_OK)
			return st;
	}
	/* on one node, where the exchange runs in backward (over several
	 * nodes, the nodes exchange whole tables) */
	z->apart = z->node && z->nodes == 1 && (z->slots || overlap_pays(z));
	/* ranks all in host memory sum on a thread of their own, beside the
	 * cores backward uses */
	if (z->node && z->nodes == 1 && !z->copies_beside && z->slots &&
	    (st = new_summer(z)) != LT_OK)
		return st;
	if (z->summer)
		lt_grad_slots_of(z->model, PART_SLOTS, &z->parts_layout);
	if (z->node && (st = share_node_memory(z)) != LT_OK)
		return st;
	if (z->summer && (st = start_summer(z)) != LT_OK)
		return st;
	if (z->slots && (st = use_slots(z)) != LT_OK)
		return st;
	if (z->node)
		return LT_OK;
	if ((st = host_view(z, lt_model_grads(z->model), lt_model_grads_numel(z->model),
			    &z->grads_host, &z->own_grads)) != LT_OK)
		return st;
	if (sharded && (st = host_view(z, lt_model_params(z->model), z->numel, &z->params_host,
				       &z->own_params)) != LT_OK)
		return st;
	if (sharded && !z->deterministic && !z->slots) {
		if (!(z->shard = malloc((n ? n : 1) * sizeof *z->shard))) {
			lt_errmsg_set("cannot allocate the gradient shard of %zu elements", n);
			return LT_ERR_NOMEM;
		}
		z->bytes += n * sizeof *z->shard;
	}
	if (z->deterministic) {
		if ((st = lt_exact_sum_new(z->numel, &z->exact)) != LT_OK)
			return st;
		z->bytes += lt_exact_sum_bytes(z->exact);
	}
	return LT_OK;
}

enum lt_status lt_zero_new(lt_dist *d, lt_model *m, int stage, int deterministic,
			   int node_memory, size_t tokens, lt_zero **out)
{
	int size = lt_dist_size(d), rank = lt_dist_rank(d);
	/* the ranks' exchanges must pair up: they agree on overlap_pays */
	double beside = lt_model_backend(m)->ops->read_start != NULL;
	enum lt_status st = lt_dist_allreduce(d, &beside, 1, LT_DIST_F64, LT_DIST_MAX,
					      "the agreement on the exchange's copies");
	*out = NULL;
	if (st != LT_OK)
		return st;
	struct lt_zero *z = calloc(1, sizeof *z);
	if (z) {
		z->off = calloc((size_t)size + 1, sizeof *z->off);
		z->cut = calloc((size_t)lt_dist_nodes(d) + 1, sizeof *z->cut);
	}
	if (!z || !z->off || !z->cut) {
		if (z)
			free(z->off);
		free(z);
		lt_errmsg_set("cannot allocate the data-parallel state");
		return LT_ERR_NOMEM;
	}
	z->rank = rank;
	z->dist = d;
	z->model = m;
	z->stage = stage;
	z->deterministic = deterministic;
	z->local = lt_dist_local_rank(d);
	z->locals = lt_dist_local_size(d);
	z->nodes = lt_dist_nodes(d);
	z->node = node_memory && !deterministic && size > 1 && z->nodes > 0 &&
		  (z->nodes == 1 || z->locals > 1);
	z->scatter = stage > 0 && lt_dist_nodes_consecutive(d);
	if (z->node && z->nodes > 1)
		snprintf(z->exchange, sizeof z->exchange,
			 "through the shared memory of each node's %d ranks, and MPI collectives "
			 "between the %d nodes (gradients: %s)", z->locals, z->nodes,
			 stage == 0 ? "all-reduce" :
			 z->scatter ? "reduce-scatter to the owners' nodes" :
			 "all-reduce, as the nodes' ranks are not consecutive");
	else
		snprintf(z->exchange, sizeof z->exchange, "%s",
			 size == 1 ? "none (one rank)" :
			 z->node ? "through the shared memory of the ranks' one node" :
			 deterministic ? "MPI collectives (exact sums of --deterministic)" :
			 !node_memory ? "MPI collectives (--exchange mpi)" :
			 z->nodes == 0 ? "MPI collectives (the nodes run different numbers of ranks)" :
			 "MPI collectives (one rank on each node)");
	z->copies_beside = beside > 0;
	z->numel = lt_model_num_params(m);
	z->lookup_cap = (size_t)lt_model_config_of(m)->vocab_size;
	if (tokens < z->lookup_cap)
		z->lookup_cap = tokens;
	plan_ranges(z->numel, size, z->off);
	lt_grad_slots_of(m, 0, &z->grads_layout);
	z->parts_layout = z->grads_layout;
	z->begin = stage > 0 ? z->off[rank] : 0;
	z->end = stage > 0 ? z->off[rank + 1] : z->numel;
	st = allocate(z);
	if (st != LT_OK) {
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
	free_summer(z);
	lt_backend *be = lt_model_backend(z->model);
	if (z->node)
		be->ops->sync(be);  /* copies to or from the shared memory end */
	for (int i = 0; i < 2 && be->ops->unpin; i++)
		be->ops->unpin(be, z->pins[i]);
	if (z->node) {
		lt_dist_shared_free(z->shared);
		free(z->grads_of);
	} else {
		if (z->own_grads)
			free(z->grads_host);
		if (z->own_params)
			free(z->params_host);
		if (z->own_shard || !z->slots)
			free(z->shard);
	}
	lt_buf_free(be, z->shard_buf);
	free(z->marks);
	lt_exact_sum_free(z->exact);
	free(z->off);
	free(z->cut);
	free(z);
}

void lt_zero_estimate(struct lt_mem_estimate *e, const struct lt_model_config *c, int ranks,
		      int stage, int deterministic)
{
	size_t P = lt_model_config_params(c);
	if (stage == 0 || ranks < 2)
		return;
	e->total -= e->optimizer + e->grads;
	e->optimizer = (e->optimizer + (size_t)ranks - 1) / (size_t)ranks;
	if (stage == 2 && !deterministic)
		e->grads = lt_grad_slots_config_numel(c, LT_ZERO_GRAD_SLOTS) * 4 +
			   (P * 4 + (size_t)ranks - 1) / (size_t)ranks;
	e->total += e->optimizer + e->grads;
}

lt_optim *lt_zero_optim(const lt_zero *z) { return z->opt; }
const char *lt_zero_exchange(const lt_zero *z) { return z->exchange; }
const size_t *lt_zero_ranges(const lt_zero *z) { return z->off; }
size_t lt_zero_bytes(const lt_zero *z) { return z->bytes; }

/* Where the gradient of flat element lo lies in the host copy: as in the
 * gradient buffer, but with a summer, in PART_SLOTS blocks' room. */
static size_t part_index(const lt_zero *z, size_t lo)
{
	return lt_grad_slots_index(&z->parts_layout, lo);
}

/* The host copy of the gradient of flat element lo: the range [lo, hi)
 * that backward reports is contiguous in the gradient buffer. */
static float *host_grads(const lt_zero *z, size_t lo)
{
	return z->grads_host + part_index(z, lo);
}

/* The gradient of flat element lo in the backend's buffer. */
static lt_ref device_grads(const lt_zero *z, size_t lo)
{
	return lt_ref_at(lt_model_grads(z->model), lt_grad_slots_index(&z->grads_layout, lo));
}

/* The length of the part of [lo, hi) in rank r's range, from *from. */
static size_t owned_part(const lt_zero *z, int r, size_t lo, size_t hi, size_t *from)
{
	size_t a = lo > z->off[r] ? lo : z->off[r], b = hi < z->off[r + 1] ? hi : z->off[r + 1];
	*from = a;
	return b > a ? b - a : 0;
}

/* Brings the gradients of flat elements [lo, hi) to the host copy (a no-op
 * when the backend's memory is the host's). */
static void fetch_grads(lt_zero *z, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(z->model);
	if (z->own_grads && hi > lo)
		be->ops->read(be, host_grads(z, lo), device_grads(z, lo), hi - lo);
}

/* Node mode, stage 0: the summed gradients of [lo, hi) back to the
 * device, without waiting where the backend can (its sync waits). */
static void put_grads(lt_zero *z, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(z->model);
	if (be->ops->write_start)
		be->ops->write_start(be, device_grads(z, lo), host_grads(z, lo), hi - lo);
	else
		be->ops->write(be, device_grads(z, lo), host_grads(z, lo), hi - lo);
}


/* Chunk c (of SUM_CHUNK elements) of sum_parts's work. */
static void sum_chunk(float *const *parts, int size, size_t at, size_t n, float *out, int add,
		      long c)
{
	size_t lo = (size_t)c * SUM_CHUNK, m = n - lo < SUM_CHUNK ? n - lo : SUM_CHUNK;
	float acc[SUM_CHUNK];
	const float *p0 = parts[0] + at + lo;
#pragma omp simd
	for (size_t i = 0; i < m; i++)
		acc[i] = out && add ? out[lo + i] + p0[i] : p0[i];
	for (int r = 1; r < size; r++) {
		const float *p = parts[r] + at + lo;
#pragma omp simd
		for (size_t i = 0; i < m; i++)
			acc[i] += p[i];
	}
	for (int r = 0; !out && r < size; r++)
		memcpy(parts[r] + at + lo, acc, m * sizeof *acc);
	if (out)
		memcpy(out + lo, acc, m * sizeof *acc);
}

/* The sum over the node's parts[size] of their elements [at, at + n):
 * into out[n] (added to what it holds when add), or, with out NULL, back
 * into every part; on the backend's threads when `threads`, else on the
 * calling thread alone, outside OpenMP (whose first parallel region would
 * bind a thread of ours to one of its places). The same order for every
 * element on every rank. */
static void sum_parts(float *const *parts, int size, size_t at, size_t n, float *out, int add,
		      int threads)
{
	long chunks = (long)((n + SUM_CHUNK - 1) / SUM_CHUNK);
	if (!threads) {
		for (long c = 0; c < chunks; c++)
			sum_chunk(parts, size, at, n, out, add, c);
		return;
	}
#pragma omp parallel for schedule(static)
	for (long c = 0; c < chunks; c++)
		sum_chunk(parts, size, at, n, out, add, c);
}

/* Where piece j of `parts` equal pieces of n elements starts (on ALIGN). */
static size_t piece_at(size_t n, int parts, int j)
{
	return j == parts ? n : n / ALIGN * (size_t)j / (size_t)parts * ALIGN;
}

/* The flat offset of the embedding table's row 0. */
static size_t table_of(const lt_zero *z)
{
	return lt_model_tensor(z->model, 0)->off;
}

/* Node mode over several nodes, once the sum between the nodes that
 * sum_across_nodes started completed: from this rank's part back into
 * every part of the node (stage 0) or into the shards of the node's owners
 * (the elements [a, b) of the bucket from lo, at grad index at). */
static enum lt_status spread_node_sum(lt_zero *z, size_t lo, size_t at, size_t a, size_t b)
{
	enum lt_status st = lt_dist_wait_all(z->dist);
	if (st != LT_OK)
		return st;
	const float *sum = z->grads_host + at + (a - lo);
	double t0 = lt_seconds();
	for (int j = 0; j < z->locals; j++) {
		size_t x, len;
		if (z->stage == 0 && j != z->local)
			memcpy(z->grads_of[j] + at + (a - lo), sum, (b - a) * sizeof *sum);
		int r = lt_dist_rank_of_local(z->dist, j);
		if (z->stage == 0 || !(len = owned_part(z, r, a, b, &x)))
			continue;
		float *to = z->shard_of[j] + (x - z->off[r]);
		const float *from = sum + (x - a);
		for (size_t i = 0; i < len; i++)
			to[i] = z->backwards > 1 ? to[i] + from[i] : from[i];
	}
	lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	return LT_OK;
}

/* Node mode over several nodes: completes the sum between the nodes that
 * backward left under way (none: nothing to do). */
static enum lt_status finish_node_sum(lt_zero *z)
{
	if (!z->crossing)
		return LT_OK;
	z->crossing = 0;
	return spread_node_sum(z, z->cross_lo, part_index(z, z->cross_lo),
			       z->cross_a, z->cross_b);
}

/* Node mode over several nodes: the sum of flat elements [a, b) (of the
 * bucket from lo, at grad index at) over the node's parts into this
 * rank's part, then the start of their sum over the nodes (at stages 1
 * and 2, to only the range the node's ranks own, where they are
 * consecutive). Stage 0 waits for it and spreads it at once; stages 1 and
 * 2 leave it under way, for finish_node_sum, while backward goes on. */
static enum lt_status sum_across_nodes(lt_zero *z, size_t lo, size_t at, size_t a, size_t b)
{
	float *sum = z->grads_host + at + (a - lo);
	enum lt_status st = finish_node_sum(z);  /* the bucket before's */
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	sum_parts(z->grads_of, z->locals, at + (a - lo), b - a, sum, 0, 1);
	lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	if (z->scatter) {
		/* node i's ranks own [off[i * locals], off[(i + 1) * locals]) */
		for (int i = 0; i <= z->nodes; i++) {
			size_t x = z->off[i * z->locals];
			z->cut[i] = (x < a ? a : x > b ? b : x) - a;
		}
		st = lt_dist_cross_sum_scatter_start(z->dist, sum, z->cut,
						     "the gradient reduce-scatter between nodes");
	} else {
		st = lt_dist_cross_sum_start(z->dist, sum, b - a,
					     "the gradient exchange between nodes");
	}
	if (st != LT_OK || z->stage == 0)
		return st == LT_OK ? spread_node_sum(z, lo, at, a, b) : st;
	z->crossing = 1;
	z->cross_lo = lo;
	z->cross_a = a;
	z->cross_b = b;
	return LT_OK;
}

/* Stages 1 and 2 on one node: the sum of flat elements [a, b) (of the
 * bucket from lo, whose copy starts at element at of the parts) over the
 * node's parts into each owner's shard, added to what the shard holds
 * when `add`. */
static void sum_to_owners(lt_zero *z, size_t lo, size_t at, size_t a, size_t b, int add,
			  int threads)
{
	for (int j = 0; j < z->locals; j++) {
		int r = lt_dist_rank_of_local(z->dist, j);
		size_t x, len = owned_part(z, r, a, b, &x);
		if (len)
			sum_parts(z->grads_of, z->locals, at + (x - lo), len,
				  z->shard_of[j] + (x - z->off[r]), add, threads);
	}
}

/* Node mode: whether a bucket summed in backward can skip the sync after
 * its sum. With every rank in host memory, each sums the held bucket
 * before it fetches the next (hold_bucket), so the parts of a bucket are
 * written again, by the fetch two buckets later, only after every rank
 * passed the next bucket's first sync, and so finished this sum. Stage 0
 * keeps it: each rank then reads the sums the others wrote. */
static int sync_after_sum(const lt_zero *z, int last)
{
	return last || z->stage == 0 || z->copies_beside;
}

/* Node mode: every rank's gradients of flat elements [lo, hi) lie in its
 * part of the node's memory. Local rank j sums the j-th of `locals` pieces
 * over the parts (and, over several nodes, with rank j of the others): at
 * stage 0 back into every part, else into each owner's shard (adding to
 * the earlier backwards' sum after the step's first). The sync after frees
 * the parts for the next gradients (where sync_after_sum says; `last`:
 * backward's last bucket). */
static enum lt_status sum_on_node(lt_zero *z, size_t lo, size_t hi, int last)
{
	int size = z->locals;
	size_t at = part_index(z, lo);
	size_t a = lo + piece_at(hi - lo, size, z->local), b = lo + piece_at(hi - lo, size, z->local + 1);
	enum lt_status st = lt_dist_shared_sync(z->dist, z->shared, "the gradient exchange");
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	if (z->nodes > 1) {
		st = sum_across_nodes(z, lo, at, a, b);
		if (st == LT_OK && last)
			st = finish_node_sum(z);
	} else if (z->stage == 0) {
		sum_parts(z->grads_of, size, at + (a - lo), b - a, NULL, 0, 1);
	} else if (z->stage > 0) {
		sum_to_owners(z, lo, at, a, b, z->backwards > 1, 1);
	}
	if (z->nodes == 1)
		lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	if (st == LT_OK && sync_after_sum(z, last))
		st = lt_dist_shared_sync(z->dist, z->shared, "the gradient exchange");
	if (st != LT_OK)
		return st;
	/* apart, the table goes back once the lookup's rows are in */
	if (z->stage == 0 && !(z->apart && lo == table_of(z)))
		put_grads(z, lo, hi);
	return LT_OK;
}

/* Node mode: sums the held bucket once its copy to the host is done (the
 * newest `keep` copies may still run; none when it is backward's last). */
static enum lt_status exchange_held(lt_zero *z, int keep)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if (!z->held)
		return LT_OK;
	z->held = 0;
	if (be->ops->reads_wait && (st = be->ops->reads_wait(be, keep)) != LT_OK)
		return st;
	return sum_on_node(z, z->held_lo, z->held_hi, keep == 0);
}

/* Node mode, in backward: starts copying the gradients of [lo, hi) to the
 * host and sums the bucket before it meanwhile, so the device goes on with
 * backward while the host adds; a backend in host memory sums the bucket
 * before first, then copies. */
static enum lt_status hold_bucket(lt_zero *z, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(z->model);
	/* the copy below may reuse the slot whose sum between nodes runs */
	enum lt_status st = finish_node_sum(z);
	if (st != LT_OK)
		return st;
	if (be->ops->read_start) {
		be->ops->read_start(be, host_grads(z, lo), device_grads(z, lo), hi - lo);
		st = exchange_held(z, 1);
	} else if ((st = exchange_held(z, 1)) == LT_OK) {
		fetch_grads(z, lo, hi);
	}
	z->held = 1;
	z->held_lo = lo;
	z->held_hi = hi;
	return st;
}

/* Starts the exchange of the gradients of flat elements [lo, hi): at stage
 * 0 their all-reduce in place; else the sum of each rank's part of them,
 * into its shard (one reduce per owner: a reduce-scatter of pieces this
 * uneven runs through rank 0 in some MPI libraries). With slots, after the
 * step's first backward the shard already holds the earlier backwards'
 * sum: its owner adds that into what it sends, and the reduce replaces it. */
static enum lt_status start_bucket(lt_zero *z, size_t lo, size_t hi)
{
	enum lt_status st = LT_OK;
	float *g = host_grads(z, lo);
	if (z->node)
		return sum_on_node(z, lo, hi, 1);
	if (z->stage == 0)
		st = lt_dist_allreduce_start(z->dist, g, hi - lo, "the gradient all-reduce");
	for (int r = 0; z->stage > 0 && r < lt_dist_size(z->dist) && st == LT_OK; r++) {
		size_t a, n = owned_part(z, r, lo, hi, &a);
		if (!n)
			continue;
		float *mine = r == z->rank ? z->shard + (a - z->begin) : NULL;
		for (size_t i = 0; mine && z->backwards > 1 && i < n; i++)
			g[a - lo + i] += mine[i];
		st = lt_dist_reduce_start(z->dist, g + (a - lo), mine, n, r,
					  "the gradient reduce-scatter");
	}
	return st == LT_OK ? lt_dist_progress(z->dist) : st;
}

/* With slots, after block b's exchange started: the next block (b - 1)
 * reuses block b - 1 + slots's slot, so that block's exchange must be
 * done. */
static enum lt_status free_next_slot(lt_zero *z, size_t lo)
{
	int b = lt_grad_slots_block_of(&z->grads_layout, lo), reused = b - 1 + z->slots;
	if (b < 0)
		return LT_OK;
	z->marks[b] = lt_dist_mark(z->dist);
	if (b == 0 || reused >= lt_model_config_of(z->model)->n_layers)
		return LT_OK;
	return lt_dist_wait_to(z->dist, z->marks[reused]);
}

/* A summer: whether every rank of the node posted (counts: posted_of) or
 * summed (summed_of) bucket `want` (ctx: z). */
static int all_reached(const lt_zero *z, _Atomic uint64_t *const *counts)
{
	for (int j = 0; j < z->locals; j++)
		if (atomic_load_explicit(counts[j], memory_order_acquire) < z->summer->want)
			return 0;
	return 1;
}

static int all_posted(void *ctx)
{
	const lt_zero *z = ctx;
	return all_reached(z, z->summer->posted_of);
}

/* ... and this rank's thread went past it, so that its queue entry may
 * take another bucket. */
static int all_summed(void *ctx)
{
	const lt_zero *z = ctx;
	return all_reached(z, z->summer->summed_of) &&
	       atomic_load_explicit(&z->summer->passed, memory_order_acquire) >= z->summer->want;
}

/* The last bucket before k that used the parts' region from element at
 * (0: none), k now taking it. A region table that is full starts over,
 * after all of the buckets before k. */
static uint64_t take_region(struct summer *u, size_t at, uint64_t k)
{
	for (int i = 0; i < u->regions; i++) {
		if (u->region_at[i] == at) {
			uint64_t last = u->region_last[i];
			u->region_last[i] = k;
			return last;
		}
	}
	uint64_t last = 0;
	if (u->regions == u->max_regions) {
		u->regions = 0;
		last = k - 1;
	}
	u->region_at[u->regions] = at;
	u->region_last[u->regions++] = k;
	return last;
}

/* With a summer: waits for the node's slower ranks to post bucket want
 * (as at a barrier). */
static enum lt_status wait_for_posts(lt_zero *z, uint64_t want)
{
	z->summer->want = want;
	return lt_dist_wait_until(z->dist, all_posted, z, "the gradient exchange", 1);
}

/* ... and then for every rank to have summed it. */
static enum lt_status wait_for_sums(lt_zero *z, uint64_t want)
{
	enum lt_status st = wait_for_posts(z, want);
	return st == LT_OK ? lt_dist_wait_until(z->dist, all_summed, z, "the gradient exchange", 0)
			   : st;
}

/* With a summer, in backward: once every rank's thread summed what the
 * bucket's region of the parts held before (and the queue has room),
 * copies the gradients of [lo, hi) there and hands the bucket to the
 * thread, a large one in SUB_BUCKETS pieces (so that at backward's end
 * the main thread can take some of the last block's). An empty bucket is
 * a mark that the others can wait for. */
static enum lt_status post_bucket(lt_zero *z, size_t lo, size_t hi)
{
	struct summer *u = z->summer;
	int pieces = hi - lo >= SUB_MIN ? SUB_BUCKETS : 1;
	uint64_t k = u->posted + (uint64_t)pieces, room = k > u->cap ? k - u->cap : 0;
	uint64_t last = hi > lo ? take_region(u, part_index(z, lo), k) : 0;
	/* apart, the table waits until every rank added the rows before */
	int table = z->apart && hi > lo && lo == table_of(z);
	enum lt_status st = table ? wait_for_posts(z, u->added) : LT_OK;
	if (st == LT_OK)
		st = wait_for_sums(z, last > room ? last : room);
	if (st != LT_OK)
		return st;
	if (table)
		u->table = k;
	fetch_grads(z, lo, hi);
	pthread_mutex_lock(&u->lock);
	for (int i = 0; i < pieces; i++) {
		struct bucket *b = &u->queue[(u->posted + 1 + (uint64_t)i) % u->cap];
		b->lo = lo + piece_at(hi - lo, pieces, i);
		b->hi = lo + piece_at(hi - lo, pieces, i + 1);
		b->add = z->backwards > 1;
		atomic_store(&b->taken, 0);
	}
	u->posted = k;
	pthread_cond_signal(&u->wake);
	pthread_mutex_unlock(&u->lock);
	atomic_store_explicit(u->posted_of[z->local], k, memory_order_release);
	return LT_OK;
}

/* The summing thread's wait until every rank of the node posted bucket k:
 * 0 when told to stop first. */
static int others_posted(lt_zero *z, uint64_t k)
{
	struct summer *u = z->summer;
	double t0 = lt_seconds();
	for (;;) {
		int j = 0;
		while (j < z->locals &&
		       atomic_load_explicit(u->posted_of[j], memory_order_acquire) >= k)
			j++;
		if (j == z->locals)
			return 1;
		if (atomic_load(&u->stop))
			return 0;
		if (lt_seconds() - t0 < 0.001)
			sched_yield();
		else
			usleep(50);
	}
}

/* Sums this rank's piece of bucket b into the owners' shards (on the
 * backend's threads when `threads`) and counts it. */
static void sum_bucket(lt_zero *z, const struct bucket *b, int threads)
{
	size_t at = part_index(z, b->lo), n = b->hi - b->lo;
	sum_to_owners(z, b->lo, at, b->lo + piece_at(n, z->locals, z->local),
		      b->lo + piece_at(n, z->locals, z->local + 1), b->add, threads);
	atomic_fetch_add_explicit(z->summer->summed_of[z->local], 1, memory_order_release);
}

/* The summing thread: takes the buckets in order and, once every rank
 * posted one, sums it on its one core (unless the main thread took it). */
static void *sum_beside(void *arg)
{
	lt_zero *z = arg;
	struct summer *u = z->summer;
	for (uint64_t k = 1;; k++) {
		pthread_mutex_lock(&u->lock);
		while (u->posted < k && !atomic_load(&u->stop))
			pthread_cond_wait(&u->wake, &u->lock);
		struct bucket *b = &u->queue[k % u->cap];
		pthread_mutex_unlock(&u->lock);
		if (atomic_load(&u->stop) || !others_posted(z, k))
			return NULL;
		if (!atomic_exchange(&b->taken, 1))
			sum_bucket(z, b, 0);
		atomic_store_explicit(&u->passed, k, memory_order_release);
	}
}

/* With a summer, after backward: once every rank posted its last bucket
 * (waiting as at a barrier), sums from the last bucket back, on the
 * backend's threads, those the thread has yet to take, then waits for
 * every rank to have summed all. */
static enum lt_status finish_sums(lt_zero *z)
{
	struct summer *u = z->summer;
	enum lt_status st = wait_for_posts(z, u->posted);
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	for (uint64_t k = u->posted; k > 0; k--) {
		struct bucket *b = &u->queue[k % u->cap];
		if (atomic_exchange(&b->taken, 1))
			break;
		sum_bucket(z, b, 1);
	}
	lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	return lt_dist_wait_until(z->dist, all_summed, z, "the gradient exchange", 0);
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
	if (z->summer)
		return post_bucket(z, lo, hi);
	if (z->node)
		return hold_bucket(z, lo, hi);
	fetch_grads(z, lo, hi);
	enum lt_status st = start_bucket(z, lo, hi);
	return st == LT_OK && z->slots ? free_next_slot(z, lo) : st;
}

/* Apart: adds the n gradients from src to flat elements [e, e + n): at
 * stage 0 into every part, else into their owners' shards. */
static void add_lookup_row(lt_zero *z, size_t e, const float *src, size_t n)
{
	size_t at = part_index(z, e);
	for (int j = 0; j < z->locals; j++) {
		float *to = z->grads_of[j] + at;
		const float *from = src;
		size_t len = n;
		if (z->stage > 0) {  /* the part of [e, e + n) that local rank j owns */
			int r = lt_dist_rank_of_local(z->dist, j);
			size_t x;
			if (!(len = owned_part(z, r, e, e + n, &x)))
				continue;
			to = z->shard_of[j] + (x - z->off[r]);
			from = src + (x - e);
		}
		for (size_t i = 0; i < len; i++)
			to[i] += from[i];
	}
}

/* The first of tokens[n] (ascending) that is at least v. */
static int first_at_least(const int32_t *tokens, int n, int v)
{
	int lo = 0, hi = n;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (tokens[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Apart: every rank's lookup rows that fall in this rank's piece of the
 * table (whose row 0 is flat element `table`), added rank by rank: the
 * same order for every element on every rank. Threads take spans of the
 * piece's rows. */
static void add_lookups(lt_zero *z, size_t table)
{
	const struct lt_model_config *c = lt_model_config_of(z->model);
	size_t C = (size_t)c->dim;
	long V = c->vocab_size, lo = V * z->local / z->locals, hi = V * (z->local + 1) / z->locals;
#pragma omp parallel for schedule(dynamic)
	for (long s = 0; s < LOOKUP_SPANS; s++) {
		int a = (int)(lo + (hi - lo) * s / LOOKUP_SPANS);
		int b = (int)(lo + (hi - lo) * (s + 1) / LOOKUP_SPANS);
		for (int k = 0; k < z->locals; k++) {
			const int32_t *tokens = lookup_tokens(z, k) + 1;
			const float *g = lookup_grads(z, k);
			int n = tokens[-1];
			for (int i = first_at_least(tokens, n, a); i < n && tokens[i] < b; i++)
				add_lookup_row(z, table + (size_t)tokens[i] * C, g + (size_t)i * C, C);
		}
	}
}

/* With a summer, apart: marks this rank's lookup rows as in its part;
 * once every rank's are, and every rank summed the table's bucket, adds
 * the rows of its piece of the table to the owners' shards, and marks
 * that done (the wait after backward waits for every rank's mark). */
static enum lt_status add_rows_beside(lt_zero *z, size_t table)
{
	struct summer *u = z->summer;
	enum lt_status st = post_bucket(z, 0, 0);
	if (st == LT_OK)
		st = wait_for_posts(z, u->posted);
	if (st == LT_OK)
		st = wait_for_sums(z, u->table);
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	add_lookups(z, table);
	lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	st = post_bucket(z, 0, 0);
	u->added = u->posted;
	return st;
}

/* The model's lookup function, apart: once the last block's bucket is
 * summed, this rank's lookup rows go to its part; after every rank's are
 * there, each adds the rows of its piece of the table; at stage 0 the
 * table, now whole, goes back to the device. */
static enum lt_status on_lookup_ready(void *ctx, size_t table, const int32_t *rows, int count,
				      lt_ref grads)
{
	lt_zero *z = ctx;
	lt_backend *be = lt_model_backend(z->model);
	const struct lt_model_config *c = lt_model_config_of(z->model);
	enum lt_status st = exchange_held(z, 0);
	if (st != LT_OK)
		return st;
	LT_ASSERT(count >= 0 && (size_t)count <= z->lookup_cap);
	/* (with a summer, the table's bucket waited until the others added
	 * the rows before) */
	int32_t *mine = lookup_tokens(z, z->local);
	mine[0] = count;
	memcpy(mine + 1, rows, (size_t)count * sizeof *rows);
	be->ops->read(be, lookup_grads(z, z->local), grads, (size_t)count * (size_t)c->dim);
	if ((st = be->ops->sync(be)) != LT_OK || z->summer)
		return st == LT_OK ? add_rows_beside(z, table) : st;
	if ((st = lt_dist_shared_sync(z->dist, z->shared, "the gradient exchange")) != LT_OK)
		return st;
	double t0 = lt_seconds();
	add_lookups(z, table);
	lt_dist_add_wait_seconds(z->dist, lt_seconds() - t0);
	if ((st = lt_dist_shared_sync(z->dist, z->shared, "the gradient exchange")) != LT_OK)
		return st;
	if (z->stage == 0)
		put_grads(z, table, table + (size_t)c->vocab_size * (size_t)c->dim);
	return LT_OK;
}

/* Whether stage 0 gains from exchanging each layer's gradients as backward
 * finishes them (every rank decides alike). Through the node's memory it
 * does only where copies to the host run beside a device: ranks all in
 * host memory would sum with the cores backward uses, waiting at two node
 * barriers per layer for the slowest rank, where summing once after
 * backward waits at two. */
static int overlap_pays(const lt_zero *z)
{
	return z->stage == 0 && lt_dist_size(z->dist) > 1 && !z->deterministic &&
	       (!z->node || z->copies_beside);
}

/* With slots (stage 2) every backward exchanges its gradients, once the
 * previous one's exchanges are done (backward zeroes its buffer as it
 * starts); stage 0 exchanges each layer's gradients in the step's last
 * backward as it finishes them where that pays; the others after
 * backward. */
enum lt_status lt_zero_arm(lt_zero *z, int last)
{
	int overlap = z->slots || (last && overlap_pays(z));
	if (overlap) {
		z->armed = 1;
		struct lt_grad_hook hook = { .ctx = z, .ready = on_grads_ready,
					     .between_ops = between_ops,
					     .lookup_ready = z->apart ? on_lookup_ready : NULL };
		lt_model_set_grad_hook(z->model, &hook);
	}
	if (!z->slots)
		return LT_OK;
	enum lt_status st = exchange_held(z, 0);
	z->backwards++;
	return st == LT_OK ? lt_dist_wait_all(z->dist) : st;
}

enum lt_status lt_zero_add_sequence(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK)
		return st;
	fetch_grads(z, 0, z->numel);
	lt_exact_sum_add(z->exact, z->grads_host);
	lt_model_zero_grads(z->model);
	return be->ops->sync(be);
}

/* Deterministic: sums the exact sums over the ranks and writes the
 * rounded result as the gradient of every element. */
static enum lt_status reduce_exact(lt_zero *z, double *norm)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st = lt_exact_sum_allreduce(z->exact, z->dist, z->grads_host, norm);
	if (st != LT_OK)
		return st;
	if (z->own_grads)
		be->ops->write(be, lt_model_grads(z->model), z->grads_host, z->numel);
	return be->ops->sync(be);
}

/* Completes the step's gradient exchange: starts it over the whole buffer
 * unless backward did layer by layer, disarms, and waits for it. */
static enum lt_status finish_exchange(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if ((st = exchange_held(z, 0)) != LT_OK ||
	    (z->summer && (st = finish_sums(z)) != LT_OK))
		return st;
	if (!z->armed) {
		if ((st = be->ops->sync(be)) != LT_OK)
			return st;
		fetch_grads(z, 0, z->numel);
		if ((st = start_bucket(z, 0, z->numel)) != LT_OK)
			return st;
	}
	lt_model_set_grad_hook(z->model, NULL);
	z->armed = 0;
	z->backwards = 0;
	return lt_dist_wait_all(z->dist);
}

/* Stage 0: every rank gets the whole summed gradient. */
static enum lt_status reduce_all(lt_zero *z, double *norm)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if ((st = finish_exchange(z)) != LT_OK)
		return st;
	/* node: each bucket went back as it was summed */
	if (z->own_grads && !z->node)
		be->ops->write(be, lt_model_grads(z->model), z->grads_host, z->numel);
	else if (z->node && (st = be->ops->sync(be)) != LT_OK)
		return st;
	return lt_optim_grad_norm(z->opt, norm);
}

/* Puts the reduced gradient of this rank's range where AdamW reads it:
 * the backend's shard with slots, else the range of the gradient buffer. */
static void place_shard(lt_zero *z)
{
	lt_backend *be = lt_model_backend(z->model);
	size_t n = z->end - z->begin;
	if (z->slots && z->own_shard)
		be->ops->write(be, (lt_ref){ z->shard_buf, 0 }, z->shard, n);
	else if (!z->slots && z->own_grads)
		be->ops->write(be, lt_ref_at(lt_model_grads(z->model), z->begin), z->shard, n);
	else if (!z->slots)
		memcpy(z->grads_host + z->begin, z->shard, n * sizeof *z->shard);
}

/* Stages 1 and 2: this rank's range of the summed gradient, and the norm
 * from every range's sum of squares. */
static enum lt_status reduce_range(lt_zero *z, double *norm)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	size_t n = z->end - z->begin;
	if ((st = finish_exchange(z)) != LT_OK)
		return st;
	place_shard(z);
	double sq = 0;
	for (size_t i = 0; i < n; i++)
		sq += (double)z->shard[i] * z->shard[i];
	if ((st = lt_dist_allreduce(z->dist, &sq, 1, LT_DIST_F64, LT_DIST_SUM,
				    "the gradient-norm all-reduce")) != LT_OK)
		return st;
	*norm = sqrt(sq);
	return be->ops->sync(be);
}

enum lt_status lt_zero_reduce(lt_zero *z, double *norm)
{
	if (z->deterministic)
		return reduce_exact(z, norm);
	if (lt_dist_size(z->dist) == 1)
		return lt_optim_grad_norm(z->opt, norm);
	return z->stage == 0 ? reduce_all(z, norm) : reduce_range(z, norm);
}

enum lt_status lt_zero_update(lt_zero *z, const struct lt_optim_config *oc, int step, double norm)
{
	lt_backend *be = lt_model_backend(z->model);
	lt_ref params = lt_model_params(z->model);
	enum lt_status st = lt_optim_update(z->opt, oc, step, norm);
	if (st != LT_OK || z->stage == 0 || lt_dist_size(z->dist) == 1)
		return st;
	if (z->own_params)
		be->ops->read(be, z->params_host + z->begin, lt_ref_at(params, z->begin),
			      z->end - z->begin);
	if (z->node && (st = lt_dist_cross_allgatherv_f32(z->dist, z->params_host, z->off,
							  "the parameter all-gather between nodes")) == LT_OK)
		st = lt_dist_shared_sync(z->dist, z->shared, "the parameter all-gather");
	else if (!z->node)
		st = lt_dist_allgatherv_f32(z->dist, z->params_host, z->off,
					    "the parameter all-gather");
	if (st != LT_OK)
		return st;
	if (z->own_params) {
		be->ops->write(be, params, z->params_host, z->begin);
		be->ops->write(be, lt_ref_at(params, z->end), z->params_host + z->end,
			       z->numel - z->end);
	}
	/* node: the next step's ranges go where the others read these */
	if ((st = be->ops->sync(be)) != LT_OK || !z->node)
		return st;
	return lt_dist_shared_sync(z->dist, z->shared, "the parameter all-gather");
}
