/* The summing thread of a rank of a node whose ranks all compute in host
 * memory (ZeRO stage 2 through the node's memory): while backward goes on,
 * it sums this rank's piece of each bucket of gradients that every rank of
 * the node posted, on a core that backward's threads leave free, so that a
 * rank may run a few blocks ahead of the node's slowest before it waits.
 *
 * Bucket k (from 1 on, the same on every rank) sits in a queue entry of
 * its own, k modulo the queue's length; each rank's control page (in its
 * part of the node's memory) counts the buckets it posted and those its
 * thread summed. In backward only the thread sums, in order, so that a
 * count of k means buckets 1 to k; once every rank posted its last, the
 * main thread sums too, from the last bucket back. An empty bucket is a
 * mark that the other ranks can wait for.
 *
 * Ownership: lt_sum_thread_new gives a thread state (not yet running) that
 * lt_sum_thread_free stops and releases; it borrows the ranks, the node's
 * memory and the control pages, which must outlive it. */
#ifndef LT_SUM_THREAD_H
#define LT_SUM_THREAD_H

#include <stddef.h>
#include <stdint.h>

#include "dist/dist.h"

/* Bytes of each rank's control page in the node's memory. */
#define LT_SUM_THREAD_PAGE 4096

typedef struct lt_sum_thread lt_sum_thread;

/* Sums this rank's piece of the bucket of flat elements [lo, hi) over the
 * node's parts into the owners' shards, added to their earlier sums when
 * `add`; on OpenMP's threads when `threads` (the main thread), else on the
 * calling thread alone. */
typedef void (*lt_sum_piece_fn)(void *ctx, size_t lo, size_t hi, int add, int threads);

/* State for a thread that calls sum(ctx, ...) on the buckets: a queue for
 * two backwards' buckets of a model of `layers` blocks (each in pieces). */
enum lt_status lt_sum_thread_new(lt_dist *d, int layers, lt_sum_piece_fn sum, void *ctx,
				 lt_sum_thread **out);
void lt_sum_thread_free(lt_sum_thread *t);
/* Where the counts of the node's rank `local` live: its control page of
 * LT_SUM_THREAD_PAGE bytes. Every rank's, before lt_sum_thread_start. */
void lt_sum_thread_place_counts(lt_sum_thread *t, int local, void *page);
/* Zeroes this rank's counts, waits until every rank of the node did (a
 * sync of `shared`), and starts the thread. */
enum lt_status lt_sum_thread_start(lt_sum_thread *t, lt_dist_shared *shared);

/* Before a bucket of flat elements [lo, hi), whose copy starts at element
 * `at` of the parts, is copied there: waits until every rank's thread
 * summed what that region of the parts held before, and the queue has room
 * for it. An empty bucket (a mark) waits for room only. */
enum lt_status lt_sum_thread_make_room(lt_sum_thread *t, size_t at, size_t lo, size_t hi);
/* Hands the bucket just copied to the thread (a large one in pieces, so
 * that at backward's end the main thread can take some of the last), its
 * sum added to the shards' earlier sums when `add`, and counts it as
 * posted. Returns the count of buckets posted, the bucket's last. */
uint64_t lt_sum_thread_post(lt_sum_thread *t, size_t lo, size_t hi, int add);
/* The buckets this rank posted so far. */
uint64_t lt_sum_thread_posted(const lt_sum_thread *t);

/* Waits until every rank of the node posted bucket k (as at a barrier:
 * for slower ranks) ... */
enum lt_status lt_sum_thread_wait_posts(lt_sum_thread *t, uint64_t k);
/* ... and then until every rank's thread summed it. */
enum lt_status lt_sum_thread_wait_sums(lt_sum_thread *t, uint64_t k);
/* After backward: once every rank posted its last bucket, sums from the
 * last bucket back, on OpenMP's threads, those the thread has yet to take,
 * then waits until every rank summed all. */
enum lt_status lt_sum_thread_finish(lt_sum_thread *t);

#endif
