/* The summing thread of a node's rank, beside backward. */
#include "config.h"
#include "dist/sum_thread.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dist/reduce.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Buckets of at least SUB_MIN elements go to the thread in SUB_BUCKETS
 * pieces. */
#define SUB_BUCKETS 4
#define SUB_MIN 65536

/* A bucket of gradients handed to the thread: flat elements [lo, hi),
 * added to the shards' earlier sums when `add`; `taken` once the thread
 * or, at backward's end, the main thread took it. */
struct bucket {
	size_t lo, hi;
	int add;
	atomic_int taken;
};

struct lt_sum_thread {
	lt_dist *dist;
	lt_sum_piece_fn sum;
	void *ctx;
	int local, locals;             /* this rank's index on its node, the node's ranks */
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
	size_t *region_at;             /* [regions]: where a bucket starts in the parts, */
	uint64_t *region_last;         /* and the last bucket that used it */
	int regions, max_regions;
};

void lt_sum_thread_free(lt_sum_thread *t)
{
	if (!t)
		return;
	if (t->started) {
		pthread_mutex_lock(&t->lock);
		atomic_store(&t->stop, 1);
		pthread_cond_signal(&t->wake);
		pthread_mutex_unlock(&t->lock);
		pthread_join(t->thread, NULL);
	}
	if (t->ready) {
		pthread_cond_destroy(&t->wake);
		pthread_mutex_destroy(&t->lock);
	}
	free(t->queue);
	free(t->posted_of);
	free(t->region_at);
	free(t->region_last);
	free(t);
}

/* The queue holds two backwards' buckets (each in pieces), and the region
 * table as many regions as a backward has buckets. */
enum lt_status lt_sum_thread_new(lt_dist *d, int layers, lt_sum_piece_fn sum, void *ctx,
				 lt_sum_thread **out)
{
	lt_sum_thread *t = calloc(1, sizeof *t);
	*out = NULL;
	if (t) {
		t->locals = lt_dist_local_size(d);
		t->cap = 2 * ((uint64_t)layers + 4) * SUB_BUCKETS;
		t->max_regions = layers + 4;
		t->queue = calloc(t->cap, sizeof *t->queue);
		t->posted_of = calloc(2 * (size_t)t->locals, sizeof *t->posted_of);
		t->region_at = calloc((size_t)t->max_regions, sizeof *t->region_at);
		t->region_last = calloc((size_t)t->max_regions, sizeof *t->region_last);
		if (!pthread_mutex_init(&t->lock, NULL)) {
			if (!pthread_cond_init(&t->wake, NULL))
				t->ready = 1;
			else
				pthread_mutex_destroy(&t->lock);
		}
	}
	if (!t || !t->queue || !t->posted_of || !t->region_at || !t->region_last || !t->ready) {
		lt_sum_thread_free(t);
		lt_errmsg_set("cannot allocate the gradient-summing thread's state");
		return LT_ERR_NOMEM;
	}
	t->dist = d;
	t->sum = sum;
	t->ctx = ctx;
	t->local = lt_dist_local_rank(d);
	t->summed_of = t->posted_of + t->locals;
	atomic_init(&t->stop, 0);
	atomic_init(&t->passed, 0);
	*out = t;
	return LT_OK;
}

/* The two counts on cache lines of their own: the main thread writes one,
 * the summing thread the other. */
void lt_sum_thread_place_counts(lt_sum_thread *t, int local, void *page)
{
	t->posted_of[local] = (_Atomic uint64_t *)page;
	t->summed_of[local] = (_Atomic uint64_t *)((char *)page + 64);
}

/* Whether every rank of the node posted (counts: posted_of) or summed
 * (summed_of) bucket `want`. */
static int all_reached(const lt_sum_thread *t, _Atomic uint64_t *const *counts)
{
	for (int j = 0; j < t->locals; j++)
		if (atomic_load_explicit(counts[j], memory_order_acquire) < t->want)
			return 0;
	return 1;
}

static int all_posted(void *ctx)
{
	const lt_sum_thread *t = ctx;
	return all_reached(t, t->posted_of);
}

/* ... and this rank's thread went past it, so that its queue entry may
 * take another bucket. */
static int all_summed(void *ctx)
{
	const lt_sum_thread *t = ctx;
	return all_reached(t, t->summed_of) &&
	       atomic_load_explicit(&t->passed, memory_order_acquire) >= t->want;
}

enum lt_status lt_sum_thread_wait_posts(lt_sum_thread *t, uint64_t k)
{
	t->want = k;
	return lt_dist_wait_until(t->dist, all_posted, t, "the gradient exchange", 1);
}

enum lt_status lt_sum_thread_wait_sums(lt_sum_thread *t, uint64_t k)
{
	enum lt_status st = lt_sum_thread_wait_posts(t, k);
	return st == LT_OK ? lt_dist_wait_until(t->dist, all_summed, t, "the gradient exchange", 0)
			   : st;
}

/* The summing thread's wait until every rank of the node posted bucket k:
 * 0 when told to stop first. */
static int others_posted(lt_sum_thread *t, uint64_t k)
{
	double t0 = lt_seconds();
	for (;;) {
		int j = 0;
		while (j < t->locals &&
		       atomic_load_explicit(t->posted_of[j], memory_order_acquire) >= k)
			j++;
		if (j == t->locals)
			return 1;
		if (atomic_load(&t->stop))
			return 0;
		if (lt_seconds() - t0 < 0.001)
			sched_yield();
		else
			usleep(50);
	}
}

/* Sums this rank's piece of bucket b (on OpenMP's threads when `threads`)
 * and counts it. */
static void sum_bucket(lt_sum_thread *t, const struct bucket *b, int threads)
{
	t->sum(t->ctx, b->lo, b->hi, b->add, threads);
	atomic_fetch_add_explicit(t->summed_of[t->local], 1, memory_order_release);
}

/* The thread: takes the buckets in order and, once every rank posted one,
 * sums it on its one core (unless the main thread took it). */
static void *thread_main(void *arg)
{
	lt_sum_thread *t = arg;
	for (uint64_t k = 1;; k++) {
		pthread_mutex_lock(&t->lock);
		while (t->posted < k && !atomic_load(&t->stop))
			pthread_cond_wait(&t->wake, &t->lock);
		struct bucket *b = &t->queue[k % t->cap];
		pthread_mutex_unlock(&t->lock);
		if (atomic_load(&t->stop) || !others_posted(t, k))
			return NULL;
		if (!atomic_exchange(&b->taken, 1))
			sum_bucket(t, b, 0);
		atomic_store_explicit(&t->passed, k, memory_order_release);
	}
}

/* Lets the thread run on every core of OpenMP's places, not only on the
 * one that OpenMP binds the main thread to where places are set: the
 * scheduler then gives it a core that backward's threads leave free. */
static void allow_every_omp_place(pthread_attr_t *attr)
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

enum lt_status lt_sum_thread_start(lt_sum_thread *t, lt_dist_shared *shared)
{
	atomic_store(t->posted_of[t->local], 0);
	atomic_store(t->summed_of[t->local], 0);
	enum lt_status st = lt_dist_shared_sync(t->dist, shared,
						"the start of the gradient exchange");
	if (st != LT_OK)
		return st;
	pthread_attr_t attr;
	int err = pthread_attr_init(&attr);
	if (!err) {
		allow_every_omp_place(&attr);
		err = pthread_create(&t->thread, &attr, thread_main, t);
		pthread_attr_destroy(&attr);
	}
	if (err) {
		lt_errmsg_set("cannot start the gradient-summing thread: %s", strerror(err));
		return LT_ERR_NOMEM;
	}
	t->started = 1;
	return LT_OK;
}

/* The last bucket before k that used the parts' region from element at
 * (0: none), k now taking it. A region table that is full starts over,
 * after all of the buckets before k. */
static uint64_t take_region(lt_sum_thread *t, size_t at, uint64_t k)
{
	for (int i = 0; i < t->regions; i++) {
		if (t->region_at[i] == at) {
			uint64_t last = t->region_last[i];
			t->region_last[i] = k;
			return last;
		}
	}
	uint64_t last = 0;
	if (t->regions == t->max_regions) {
		t->regions = 0;
		last = k - 1;
	}
	t->region_at[t->regions] = at;
	t->region_last[t->regions++] = k;
	return last;
}

/* The pieces a bucket of n elements goes to the thread in. */
static int pieces_of(size_t n)
{
	return n >= SUB_MIN ? SUB_BUCKETS : 1;
}

enum lt_status lt_sum_thread_make_room(lt_sum_thread *t, size_t at, size_t lo, size_t hi)
{
	uint64_t k = t->posted + (uint64_t)pieces_of(hi - lo), room = k > t->cap ? k - t->cap : 0;
	uint64_t last = hi > lo ? take_region(t, at, k) : 0;
	return lt_sum_thread_wait_sums(t, last > room ? last : room);
}

uint64_t lt_sum_thread_post(lt_sum_thread *t, size_t lo, size_t hi, int add)
{
	int pieces = pieces_of(hi - lo);
	uint64_t k = t->posted + (uint64_t)pieces;
	pthread_mutex_lock(&t->lock);
	for (int i = 0; i < pieces; i++) {
		struct bucket *b = &t->queue[(t->posted + 1 + (uint64_t)i) % t->cap];
		b->lo = lo + lt_reduce_piece_at(hi - lo, pieces, i);
		b->hi = lo + lt_reduce_piece_at(hi - lo, pieces, i + 1);
		b->add = add;
		atomic_store(&b->taken, 0);
	}
	t->posted = k;
	pthread_cond_signal(&t->wake);
	pthread_mutex_unlock(&t->lock);
	atomic_store_explicit(t->posted_of[t->local], k, memory_order_release);
	return k;
}

uint64_t lt_sum_thread_posted(const lt_sum_thread *t) { return t->posted; }

enum lt_status lt_sum_thread_finish(lt_sum_thread *t)
{
	enum lt_status st = lt_sum_thread_wait_posts(t, t->posted);
	if (st != LT_OK)
		return st;
	double t0 = lt_seconds();
	for (uint64_t k = t->posted; k > 0; k--) {
		struct bucket *b = &t->queue[k % t->cap];
		if (atomic_exchange(&b->taken, 1))
			break;
		sum_bucket(t, b, 1);
	}
	lt_dist_add_wait_seconds(t->dist, lt_seconds() - t0);
	return lt_dist_wait_until(t->dist, all_summed, t, "the gradient exchange", 0);
}
