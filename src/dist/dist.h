/* The ranks of a job and the collectives between them: MPI when lltrain
 * runs under an MPI launcher (mpiexec, mpirun, srun), one rank otherwise.
 *
 * Every collective runs non-blocking under a watchdog: when one makes no
 * progress for the timeout, the waiting rank asks every other rank where it
 * is, and fails with LT_ERR_COMM and a line naming the step, the
 * collective and the ranks that did not answer (died or stalled). The
 * caller then reports and calls lt_dist_abort, which ends the whole job.
 *
 * Built without MPI (dist_none.c), a job is one rank: every collective is
 * a no-op or a copy, and node-shared memory is the rank's own.
 *
 * Ownership: lt_dist_init gives an lt_dist that lt_dist_finalize releases
 * (once, at the end of the process: MPI cannot be started again);
 * lt_dist_shared_new gives memory that lt_dist_shared_free releases. */
#ifndef LT_DIST_H
#define LT_DIST_H

#include <stddef.h>

#include "status.h"

typedef struct lt_dist lt_dist;

enum lt_dist_type { LT_DIST_F32, LT_DIST_F64, LT_DIST_I128 };
enum lt_dist_op { LT_DIST_SUM, LT_DIST_MAX };

/* ------------------------------------------------------------- the job */

/* 1 when this lltrain was built with MPI. */
int lt_dist_have_mpi(void);
/* Starts MPI when the environment says a launcher started this process
 * (LLTRAIN_MPI=0 or 1 overrides), else gives a job of one rank. */
enum lt_status lt_dist_init(int *argc, char ***argv, lt_dist **out);
/* Ends MPI (after a barrier) and frees d. */
void lt_dist_finalize(lt_dist *d);
/* Ends every rank of the job at once with exit status `code`, once the
 * launcher has read what this rank wrote (a second at most). */
_Noreturn void lt_dist_abort(lt_dist *d, int code);

/* ----------------------------------------------------- ranks and nodes */

int lt_dist_rank(const lt_dist *d);
int lt_dist_size(const lt_dist *d);
/* This rank's index among the ranks of its node, and their number. */
int lt_dist_local_rank(const lt_dist *d);
int lt_dist_local_size(const lt_dist *d);
/* The number of nodes when every node runs as many ranks, else 0 (1
 * without MPI). LLTRAIN_NODE_RANKS=K makes each K ranks in a row a node;
 * K:dealt deals the ranks over the nodes in turn. */
int lt_dist_nodes(const lt_dist *d);
/* Whether every node's ranks are consecutive job ranks, so that node i
 * (lt_dist_nodes > 0) holds ranks [i * local_size, (i + 1) * local_size). */
int lt_dist_nodes_consecutive(const lt_dist *d);
/* This rank's node, 0 to nodes - 1 in the order of their first ranks
 * (lt_dist_nodes > 0). */
int lt_dist_node_index(const lt_dist *d);
/* The job rank of the rank of this node whose local index is `local`. */
int lt_dist_rank_of_local(const lt_dist *d, int local);
/* The node's name (gethostname). */
const char *lt_dist_host(const lt_dist *d);
/* The ranks of this rank's node as a job of their own (collective over
 * d): one node, its collectives among them alone; lt_dist_node_free
 * releases it (before d is finalized). */
enum lt_status lt_dist_node_new(lt_dist *d, lt_dist **out);
void lt_dist_node_free(lt_dist *nd);
/* The ranks of d with this rank's `color` as a job of their own
 * (collective over d), numbered by `key` (ties by their rank in d): a
 * group of the mesh. Its nodes are those of d; its watchdog names ranks
 * and steps as d does. lt_dist_group_free releases it (before d is
 * finalized). */
enum lt_status lt_dist_group_new(lt_dist *d, int color, int key, lt_dist **out);
void lt_dist_group_free(lt_dist *g);

/* ----------------------------- the watchdog and the time spent waiting */

/* The watchdog's limit (seconds without progress; default 30) and the step
 * its messages name. */
void lt_dist_set_timeout(lt_dist *d, double seconds);
/* The job d runs a pipeline of `stages` stages of consecutive ranks: the
 * watchdog names a silent rank's stage too. */
void lt_dist_set_stages(lt_dist *d, int stages);
void lt_dist_set_step(lt_dist *d, long step);
/* Seconds spent waiting for collectives since the last call (the
 * communication that computation did not hide), and resets it. */
double lt_dist_take_wait_seconds(lt_dist *d);
/* Seconds spent at node barriers since the last call, and resets it: the
 * node's other ranks had yet to arrive (nothing moves at a barrier), so it
 * is waiting for slower ranks, not for communication. */
double lt_dist_take_barrier_seconds(lt_dist *d);
/* Bytes this rank sent to other nodes since the last call (an all-reduce
 * of b bytes over n nodes counts 2 b (n - 1) / n, as a ring sends; a
 * reduce-scatter or an all-gather half that), and resets it. */
double lt_dist_take_cross_bytes(lt_dist *d);
/* For benchmarks only: LLTRAIN_BENCH_LINK_GBITS=G (unset: off) makes the
 * link between nodes a G Gbit/s one: a collective between nodes completes
 * no sooner than its bytes take at that rate, one after the other, each
 * of a node's ranks having its share (G / ranks of the node). */
double lt_dist_link_gbits(const lt_dist *d);
/* Counts seconds spent exchanging outside the collectives (summing
 * through shared memory) as waiting for the exchange. */
void lt_dist_add_wait_seconds(lt_dist *d, double seconds);

/* ----------------------------------- collectives that return when done */

/* buf[n] = op over the ranks of buf[n], on every rank. LT_DIST_I128 counts
 * 16-byte signed integers (two's complement, native order); SUM only. */
enum lt_status lt_dist_allreduce(lt_dist *d, void *buf, size_t n, enum lt_dist_type t,
				 enum lt_dist_op op, const char *what);
/* bytes of buf from rank root to every rank. */
enum lt_status lt_dist_bcast(lt_dist *d, void *buf, size_t bytes, int root, const char *what);
/* all[size * bytes]: rank r's `bytes` of mine at all + r * bytes. */
enum lt_status lt_dist_allgather(lt_dist *d, const void *mine, void *all, size_t bytes,
				 const char *what);
/* In place over buf: rank r's elements [off[r], off[r+1]) go to every rank
 * (off has size + 1 entries). */
enum lt_status lt_dist_allgatherv_f32(lt_dist *d, float *buf, const size_t *off,
				      const char *what);
/* lt_dist_allgatherv_f32 among the ranks with this rank's local index:
 * each one's range goes to the others (off has size + 1 entries). */
enum lt_status lt_dist_cross_allgatherv_f32(lt_dist *d, float *buf, const size_t *off,
					    const char *what);
enum lt_status lt_dist_barrier(lt_dist *d, const char *what);
/* all[sum of counts] on rank root: rank r's counts[r] floats of mine at
 * all + counts[0] + ... + counts[r - 1] (counts the same on every rank,
 * each under 2^31; all is unused elsewhere). */
enum lt_status lt_dist_gatherv_f32(lt_dist *d, const float *mine, const size_t *counts,
				   float *all, int root, const char *what);

/* ---------------------------- collectives started now, completed later */

/* Starts the sum over the ranks of send[n] into recv[n] on rank root
 * (recv is unused elsewhere). It completes in lt_dist_progress /
 * lt_dist_wait_all; send and recv must stay untouched until then. Up to
 * 4096 collectives may be under way at once. */
enum lt_status lt_dist_reduce_start(lt_dist *d, const float *send, float *recv, size_t n,
				    int root, const char *what);
/* Starts the in-place all-reduce (sum) of buf[n]; it completes as a
 * reduce started above does, and buf must stay untouched until then. */
enum lt_status lt_dist_allreduce_start(lt_dist *d, float *buf, size_t n, const char *what);
/* Starts the sum of buf[n] in place over the ranks with this rank's local
 * index, one per node (lt_dist_nodes > 0); it completes as
 * lt_dist_allreduce_start's does. */
enum lt_status lt_dist_cross_sum_start(lt_dist *d, float *buf, size_t n, const char *what);
/* Starts the all-gather of `bytes` of mine among the same ranks: node
 * i's land at all + i * bytes once it completes (as above); mine and all
 * must stay untouched until then. */
enum lt_status lt_dist_cross_allgather_start(lt_dist *d, const void *mine, void *all,
					     size_t bytes, const char *what);
/* Starts a reduce-scatter among the same ranks, when the nodes' ranks are
 * consecutive: of buf[cut[nodes]], node i's rank gets the sum of [cut[i],
 * cut[i + 1]) in place there, once lt_dist_wait_all (or lt_dist_progress)
 * finds every started collective completed; the rest of buf is left
 * undefined, and buf must stay untouched until then. A second start
 * first waits for the first. */
enum lt_status lt_dist_cross_sum_scatter_start(lt_dist *d, float *buf, const size_t *cut,
					       const char *what);
/* Starts the in-place all-gather over buf: rank r's elements [off[r],
 * off[r + 1]) of buf go to every rank (off has size + 1 entries, each
 * part under 2^31 elements). It completes as a reduce started above does;
 * buf must stay untouched until then. At most LT_DIST_GATHERS_UNDER_WAY
 * such gathers are under way at once: a further start first waits for
 * the oldest. */
#define LT_DIST_GATHERS_UNDER_WAY 8
enum lt_status lt_dist_allgatherv_start(lt_dist *d, float *buf, const size_t *off,
					const char *what);
/* Lets started collectives advance without waiting. */
enum lt_status lt_dist_progress(lt_dist *d);
/* A mark of the collectives started so far, for lt_dist_wait_to. */
size_t lt_dist_mark(const lt_dist *d);
/* Waits (under the watchdog) until the collectives started before mark
 * completed (their buffers are free again). */
enum lt_status lt_dist_wait_to(lt_dist *d, size_t mark);
/* Waits (under the watchdog) until every started collective completed. */
enum lt_status lt_dist_wait_all(lt_dist *d);

/* ------------------------------------------- messages between two ranks */

/* Starts sending buf[n] floats to rank `peer` of d, or receiving n from
 * it into buf; *msg names the message for lt_dist_msg_wait, which must
 * come before buf is touched again. Messages from one rank to another
 * arrive in the order they were sent; at most LT_DIST_MSGS are under way
 * at once on a rank. */
#define LT_DIST_MSGS 64
enum lt_status lt_dist_send_start(lt_dist *d, const float *buf, size_t n, int peer,
				  const char *what, int *msg);
enum lt_status lt_dist_recv_start(lt_dist *d, float *buf, size_t n, int peer, const char *what,
				  int *msg);
/* Waits (under the watchdog, the seconds counted as waiting) until
 * message msg arrived or left. */
enum lt_status lt_dist_msg_wait(lt_dist *d, int msg);

/* -------------------------------- memory shared by the ranks of a node */

/* Memory every rank of a node reads and writes: each rank's own part, of
 * the size it asked for (collective over the job; MPI-3 shared windows). */
typedef struct lt_dist_shared lt_dist_shared;
/* Gives this rank `bytes` of node-shared memory (page-aligned) and the
 * other ranks of its node a view of it; every rank of the job calls it.
 * LT_ERR_NOMEM on every rank of the job when /dev/shm of a node has too
 * little room for its ranks (lt_errmsg says how much). */
enum lt_status lt_dist_shared_new(lt_dist *d, size_t bytes, lt_dist_shared **out);
/* The part of the node's rank `local` (lt_dist_local_rank numbers them). */
void *lt_dist_shared_at(const lt_dist_shared *s, int local);
void lt_dist_shared_free(lt_dist_shared *s);
/* Waits (under the watchdog) until every rank of the node reached this
 * call, with the writes each made to s before it visible to all. */
enum lt_status lt_dist_shared_sync(lt_dist *d, lt_dist_shared *s, const char *what);
/* Waits (under the watchdog, `what` naming the exchange) until done(ctx)
 * is true, as it becomes when other ranks of the node write their part of
 * shared memory; the seconds count as waiting for the exchange or, with
 * `barrier`, for the node's slower ranks. */
enum lt_status lt_dist_wait_until(lt_dist *d, int (*done)(void *ctx), void *ctx,
				  const char *what, int barrier);

#endif
