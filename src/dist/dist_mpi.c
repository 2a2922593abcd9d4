/* Ranks and collectives over MPI, each collective non-blocking under a
 * watchdog that names a rank that died or stalled. A process that no
 * launcher started runs alone, as in a build without MPI (dist_none.c):
 * its collectives return at once, before any MPI call. */
#include "config.h"
#include "dist/dist.h"

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "clock.h"
#include "dist/dist_impl.h"
#include "dist/dist_mpi_impl.h"

/* MPI counts are int: larger collectives go in pieces of this many. */
#define PIECE ((size_t)1 << 28)
/* Where MPI libraries keep the memory of shared windows. */
#define SHM_DIR "/dev/shm"
/* Seconds a rank that timed out waits for the others to answer. */
#define ASK_SECONDS 5.0

enum { TAG_ASK = 30711, TAG_ANSWER = 30712 };

int lt_dist_have_mpi(void) { return 1; }

/* inout[i] += in[i] for 16-byte integers, wrapping (the true sum fits). */
static void add_i128(void *in, void *inout, int *len, MPI_Datatype *type)
{
	(void)type;
	unsigned char *a = in, *b = inout;
	for (int i = 0; i < *len; i++) {
		unsigned __int128 x, y;
		memcpy(&x, a + 16 * (size_t)i, 16);
		memcpy(&y, b + 16 * (size_t)i, 16);
		y += x;
		memcpy(b + 16 * (size_t)i, &y, 16);
	}
}

void lt_dist_mpi_types(struct lt_dist_mpi *m)
{
	MPI_Type_contiguous(16, MPI_BYTE, &m->i128);
	MPI_Type_commit(&m->i128);
	MPI_Op_create(add_i128, 1, &m->sum128);
}

static enum lt_status mpi_failed(const char *what, int err)
{
	char text[MPI_MAX_ERROR_STRING];
	int len = 0;
	MPI_Error_string(err, text, &len);
	lt_errmsg_set("%s: MPI error: %s", what, text);
	return LT_ERR_COMM;
}

/* ----------------------------------------------- the job and its nodes */

/* LLTRAIN_NODE_RANKS=K: each K ranks in a row form a node (the multi-node
 * exchange, tried on one machine); K:dealt deals the ranks over the nodes
 * in turn instead, so that no node's ranks are consecutive. *k is 0 when
 * unset, and *dealt says which. */
static enum lt_status ranks_per_node(int *k, int *dealt)
{
	const char *v = getenv("LLTRAIN_NODE_RANKS");
	char *end;
	*k = *dealt = 0;
	if (!v)
		return LT_OK;
	long n = strtol(v, &end, 10);
	*dealt = strcmp(end, ":dealt") == 0;
	if (end == v || (*end && !*dealt) || n < 1 || n > INT_MAX) {
		lt_errmsg_set("LLTRAIN_NODE_RANKS=%s: expected a whole number of ranks, 1 or more, "
			      "optionally followed by :dealt", v);
		return LT_ERR_CONFIG;
	}
	*k = (int)n;
	return LT_OK;
}

/* *least and *most: the smallest and largest v over comm's ranks. */
static void least_and_most(MPI_Comm comm, int v, int *least, int *most)
{
	int span[2] = { -v, v };
	MPI_Allreduce(MPI_IN_PLACE, span, 2, MPI_INT, MPI_MAX, comm);
	*least = -span[0];
	*most = span[1];
}

enum lt_status lt_dist_mpi_rank_lists(struct lt_dist *d)
{
	size_t nodes = (size_t)(d->nodes ? d->nodes : 1);
	free(d->node_ranks);
	free(d->cross_ranks);
	d->node_ranks = calloc((size_t)d->local_size, sizeof *d->node_ranks);
	d->cross_ranks = calloc(nodes, sizeof *d->cross_ranks);
	d->mpi->scatter_counts = calloc(nodes, sizeof *d->mpi->scatter_counts);
	if (!d->node_ranks || !d->cross_ranks || !d->mpi->scatter_counts) {
		lt_errmsg_set("cannot allocate the nodes' rank lists");
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

/* The node's ranks (those sharing memory, or LLTRAIN_NODE_RANKS's), the
 * ranks of this local index across the nodes, and whether every node runs
 * as many ranks. */
static enum lt_status split_nodes(struct lt_dist *d)
{
	struct lt_dist_mpi *m = d->mpi;
	int k, dealt, least, most;
	enum lt_status st = ranks_per_node(&k, &dealt);
	/* every rank splits alike or none does: each says how (-1: a bad value) */
	int how = st != LT_OK ? -1 : dealt ? -2 - k : k;
	least_and_most(m->comm, how, &least, &most);
	if (st != LT_OK)
		return st;
	if (least != most) {
		lt_errmsg_set("LLTRAIN_NODE_RANKS differs between the ranks (here %s)",
			      k ? getenv("LLTRAIN_NODE_RANKS") : "unset");
		return LT_ERR_CONFIG;
	}
	if (k && dealt)
		MPI_Comm_split(m->comm, d->rank % ((d->size + k - 1) / k), d->rank, &m->node);
	else if (k)
		MPI_Comm_split(m->comm, d->rank / k, d->rank, &m->node);
	else
		MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL,
				    &m->node);
	MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN);
	MPI_Comm_rank(m->node, &d->local_rank);
	MPI_Comm_size(m->node, &d->local_size);
	MPI_Comm_split(m->comm, d->local_rank, d->rank, &m->cross);
	MPI_Comm_set_errhandler(m->cross, MPI_ERRORS_RETURN);
	least_and_most(m->comm, d->local_size, &least, &most);
	d->nodes = least == most ? d->size / d->local_size : 0;
	if ((st = lt_dist_mpi_rank_lists(d)) != LT_OK)
		return st;
	MPI_Allgather(&d->rank, 1, MPI_INT, d->node_ranks, 1, MPI_INT, m->node);
	if (d->nodes)
		MPI_Allgather(&d->rank, 1, MPI_INT, d->cross_ranks, 1, MPI_INT, m->cross);
	int mine = 1;
	for (int i = 0; i < d->local_size; i++)
		mine &= d->node_ranks[i] == d->node_ranks[0] + i;
	least_and_most(m->comm, mine, &least, &most);
	d->consecutive = least == 1;
	return LT_OK;
}

static enum lt_status start_mpi(int *argc, char ***argv, struct lt_dist *d)
{
	int provided, err, inited = 0;
	MPI_Initialized(&inited);
	if (!inited && (err = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)))
		return mpi_failed("MPI_Init_thread", err);
	struct lt_dist_mpi *m = d->mpi = calloc(1, sizeof *d->mpi);
	if (!m) {
		lt_errmsg_set("cannot allocate the rank state");
		return LT_ERR_NOMEM;
	}
	MPI_Comm_dup(MPI_COMM_WORLD, &m->comm);
	MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
	MPI_Comm_rank(m->comm, &d->rank);
	MPI_Comm_size(m->comm, &d->size);
	enum lt_status st = split_nodes(d);
	if (st != LT_OK)
		return st;
	lt_dist_mpi_types(m);
	return LT_OK;
}

void lt_dist_mpi_free_state(struct lt_dist *d)
{
	if (d->mpi) {
		free(d->mpi->scatter_counts);
		free(d->mpi->gather_counts);
		free(d->mpi->scatter_buf);
		free(d->mpi);
	}
	lt_dist_alone_free(d);
}

enum lt_status lt_dist_init(int *argc, char ***argv, lt_dist **out)
{
	*out = NULL;
	struct lt_dist *d;
	enum lt_status st = lt_dist_alone_new(&d);
	if (st != LT_OK)
		return st;
	if (lt_dist_launched() && (st = start_mpi(argc, argv, d)) != LT_OK) {
		lt_dist_mpi_free_state(d);
		return st;
	}
	*out = d;
	return LT_OK;
}

void lt_dist_finalize(lt_dist *d)
{
	if (!d)
		return;
	struct lt_dist_mpi *m = d->mpi;
	if (m) {
		MPI_Op_free(&m->sum128);
		MPI_Type_free(&m->i128);
		MPI_Comm_free(&m->cross);
		MPI_Comm_free(&m->node);
		MPI_Comm_free(&m->comm);
		MPI_Finalize();
	}
	lt_dist_mpi_free_state(d);
}

/* Waits (a second at most) until whoever reads this process's stdout and
 * stderr, where they are pipes (an MPI launcher), has read what it wrote:
 * MPI_Abort's teardown of the job can otherwise overtake the launcher's
 * forwarding of the last lines, the error among them. */
static void let_output_drain(void)
{
	fflush(stdout);
	fflush(stderr);
	for (int i = 0; i < 100; i++) {
		int out = 0, err = 0;
		if ((ioctl(STDOUT_FILENO, FIONREAD, &out) != 0 || out == 0) &&
		    (ioctl(STDERR_FILENO, FIONREAD, &err) != 0 || err == 0))
			return;
		usleep(10000);
	}
}

_Noreturn void lt_dist_abort(lt_dist *d, int code)
{
	if (d && d->mpi) {
		let_output_drain();
		MPI_Abort(MPI_COMM_WORLD, code);
	}
	exit(code);
}

/* -------------------------------------------------------- the watchdog */

/* Replies to every question of another rank that timed out: where this
 * rank is (its step). */
static void answer_questions(struct lt_dist *d)
{
	for (;;) {
		int flag = 0;
		MPI_Status s;
		long where[2];
		MPI_Iprobe(MPI_ANY_SOURCE, TAG_ASK, d->mpi->comm, &flag, &s);
		if (!flag)
			return;
		MPI_Recv(where, 2, MPI_LONG, s.MPI_SOURCE, TAG_ASK, d->mpi->comm,
			 MPI_STATUS_IGNORE);
		where[0] = lt_dist_step_now(d);
		where[1] = d->rank;
		MPI_Send(where, 2, MPI_LONG, s.MPI_SOURCE, TAG_ANSWER, d->mpi->comm);
	}
}

/* Names in silent[size] the ranks whose answer req[2 * r + 1] did not come;
 * gives their number. */
static int name_silent(const struct lt_dist *d, MPI_Request *req, char *silent, size_t size)
{
	const struct lt_dist *job = d->parent ? d->parent : d;
	size_t len = 0;
	int n_silent = 0;
	silent[0] = '\0';
	for (int r = 0; r < d->size; r++) {
		int done = 1, q = lt_dist_job_rank(d, r);
		if (r != d->rank && req[2 * r + 1] != MPI_REQUEST_NULL)
			MPI_Test(&req[2 * r + 1], &done, MPI_STATUS_IGNORE);
		if (!done && len < size - 48) {
			len += (size_t)snprintf(silent + len, size - len, "%s%d", n_silent ? ", " : "", q);
			if (job->stages > 1)
				len += (size_t)snprintf(silent + len, size - len, " (pipeline stage %d)",
							q / (job->size / job->stages));
			n_silent++;
		}
	}
	return n_silent;
}

/* After a timeout: asks every other rank where it is and names those that
 * do not answer within ASK_SECONDS. */
static enum lt_status report_stall(struct lt_dist *d, const char *what)
{
	long *out = calloc((size_t)d->size * 4, sizeof *out);  /* then the answers */
	MPI_Request *req = calloc((size_t)d->size * 2, sizeof *req);
	MPI_Status *stat = calloc((size_t)d->size * 2, sizeof *stat);
	char silent[512] = "";
	int n_silent = -1;  /* not asked: no room to */
	if (out && req && stat) {
		long *in = out + 2 * d->size;
		for (int r = 0; r < d->size; r++) {
			req[2 * r] = req[2 * r + 1] = MPI_REQUEST_NULL;
			if (r == d->rank)
				continue;
			out[2 * r] = lt_dist_step_now(d);
			MPI_Isend(&out[2 * r], 2, MPI_LONG, r, TAG_ASK, d->mpi->comm, &req[2 * r]);
			MPI_Irecv(&in[2 * r], 2, MPI_LONG, r, TAG_ANSWER, d->mpi->comm,
				  &req[2 * r + 1]);
		}
		double t0 = lt_seconds();
		int all = 0;
		while (!all && lt_seconds() - t0 < ASK_SECONDS) {
			answer_questions(d);
			MPI_Testall(d->size * 2, req, &all, stat);
			usleep(1000);
		}
		n_silent = name_silent(d, req, silent, sizeof silent);
	}
	free(out);
	free(req);
	free(stat);
	long step = lt_dist_step_now(d);
	int me = lt_dist_job_rank(d, d->rank);
	if (n_silent < 0)
		lt_errmsg_set("step %ld: %s made no progress for %g s (rank %d)", step, what,
			      d->timeout, me);
	else if (n_silent)
		lt_errmsg_set("step %ld: %s made no progress for %g s: rank%s %s did not answer "
			      "(died or stalled; reported by rank %d)", step, what, d->timeout,
			      n_silent > 1 ? "s" : "", silent, me);
	else
		lt_errmsg_set("step %ld: %s made no progress for %g s, though every rank answered "
			      "(reported by rank %d; raise --comm-timeout)", step, what, d->timeout, me);
	return LT_ERR_COMM;
}

/* The watchdog's turn in a wait that last advanced at t0 (began, or saw
 * one of its collectives complete): answers the others' questions every
 * 50 ms (*last: when it last did) and says whether the wait has made no
 * progress for the timeout. */
static int watchdog_expired(struct lt_dist *d, double t0, double now, double *last)
{
	if (now - *last > 0.05) {
		answer_questions(d);
		*last = now;
	}
	return now - t0 > d->timeout;
}

enum lt_status lt_dist_watch(lt_dist *d, double t0, double now, double *last, const char *what)
{
	if (d->mpi && watchdog_expired(d, t0, now, last))
		return report_stall(d, what);
	return LT_OK;
}

/* Waits for n requests under the watchdog, adding the seconds to *spent;
 * what[i] names request i's collective. The watchdog measures the time
 * since the last of them completed (or the wait began), not the whole
 * wait: many collectives that complete one after the other on a slow
 * link are progress. */
static enum lt_status wait_requests(struct lt_dist *d, MPI_Request *req, int n,
				    const char *const *what, double *spent)
{
	double t0 = lt_seconds(), moved = t0, last = t0;
	for (;;) {
		/* completed requests become MPI_REQUEST_NULL; none left active
		 * gives MPI_UNDEFINED */
		int out = 0, err = MPI_Testsome(n, req, &out, d->mpi->completed, d->mpi->statuses);
		if (err)
			return mpi_failed(what[0], err);
		double now = lt_seconds();
		if (out == MPI_UNDEFINED) {
			*spent += now - t0;
			return LT_OK;
		}
		if (out > 0) {
			moved = now;
			continue;
		}
		if (watchdog_expired(d, moved, now, &last)) {
			/* named after the first collective not yet done */
			int i = 0;
			while (i < n - 1 && req[i] == MPI_REQUEST_NULL)
				i++;
			return report_stall(d, what[i]);
		}
		/* a large exchange advances only while MPI is called: keep calling
		 * (yielding the core to busy neighbours) for the first second,
		 * then sleep between calls (rank 0 may be working alone) */
		if (now - t0 < 1.0)
			sched_yield();
		else
			usleep(200);
	}
}

static enum lt_status wait_one(struct lt_dist *d, MPI_Request *req, const char *what)
{
	return wait_requests(d, req, 1, &what, &d->wait_seconds);
}

/* ----------------------------------- collectives that return when done */

static MPI_Datatype mpi_type(const struct lt_dist *d, enum lt_dist_type t, size_t *elem)
{
	switch (t) {
	case LT_DIST_F32: *elem = 4; return MPI_FLOAT;
	case LT_DIST_F64: *elem = 8; return MPI_DOUBLE;
	case LT_DIST_I128: *elem = 16; return d->mpi->i128;
	}
	*elem = 1;
	return MPI_BYTE;
}

/* A blocking collective over comm that goes in pieces: a broadcast from
 * root, or (root < 0) an allreduce in place with op; of elements of type,
 * elem bytes each. */
struct in_pieces {
	MPI_Comm comm;
	MPI_Datatype type;
	size_t elem;
	int root;
	MPI_Op op;
};

/* Runs c over buf[n], a piece at a time, each waited for under the
 * watchdog. */
static enum lt_status run_in_pieces(lt_dist *d, const struct in_pieces *c, void *buf, size_t n,
				    const char *what)
{
	for (size_t at = 0; at < n; at += PIECE) {
		int count = (int)(n - at < PIECE ? n - at : PIECE), err;
		void *piece = (char *)buf + at * c->elem;
		MPI_Request req;
		if (c->root >= 0)
			err = MPI_Ibcast(piece, count, c->type, c->root, c->comm, &req);
		else
			err = MPI_Iallreduce(MPI_IN_PLACE, piece, count, c->type, c->op, c->comm,
					     &req);
		if (err)
			return mpi_failed(what, err);
		enum lt_status st = wait_one(d, &req, what);
		if (st != LT_OK)
			return st;
	}
	return LT_OK;
}

/* buf[n] = op over comm's ranks of buf[n], in pieces, under the watchdog. */
static enum lt_status allreduce_over(lt_dist *d, MPI_Comm comm, void *buf, size_t n,
				     enum lt_dist_type t, enum lt_dist_op op, const char *what)
{
	struct in_pieces c = { .comm = comm, .root = -1 };
	c.type = mpi_type(d, t, &c.elem);
	c.op = t == LT_DIST_I128 ? d->mpi->sum128 : op == LT_DIST_SUM ? MPI_SUM : MPI_MAX;
	return run_in_pieces(d, &c, buf, n, what);
}

enum lt_status lt_dist_allreduce(lt_dist *d, void *buf, size_t n, enum lt_dist_type t,
				 enum lt_dist_op op, const char *what)
{
	LT_ASSERT(t != LT_DIST_I128 || op == LT_DIST_SUM);
	if (d->size == 1)
		return LT_OK;
	return allreduce_over(d, d->mpi->comm, buf, n, t, op, what);
}

enum lt_status lt_dist_bcast(lt_dist *d, void *buf, size_t bytes, int root, const char *what)
{
	if (d->size == 1)
		return LT_OK;
	LT_ASSERT(root >= 0);
	struct in_pieces c = { .comm = d->mpi->comm, .type = MPI_BYTE, .elem = 1, .root = root };
	return run_in_pieces(d, &c, buf, bytes, what);
}

enum lt_status lt_dist_allgather(lt_dist *d, const void *mine, void *all, size_t bytes,
				 const char *what)
{
	memmove((char *)all + (size_t)d->rank * bytes, mine, bytes);
	if (d->size == 1)
		return LT_OK;
	LT_ASSERT(bytes < INT_MAX);
	MPI_Request req;
	int err = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_BYTE, all, (int)bytes, MPI_BYTE,
				 d->mpi->comm, &req);
	if (err)
		return mpi_failed(what, err);
	return wait_one(d, &req, what);
}

enum lt_status lt_dist_gatherv_f32(lt_dist *d, const float *mine, const size_t *counts,
				   float *all, int root, const char *what)
{
	if (d->size == 1) {
		memmove(all, mine, counts[0] * sizeof *mine);
		return LT_OK;
	}
	int *cnt = malloc(2 * (size_t)d->size * sizeof *cnt), *displ = cnt + d->size;
	if (!cnt) {
		lt_errmsg_set("%s: cannot allocate the gather's counts", what);
		return LT_ERR_NOMEM;
	}
	size_t at = 0;
	for (int r = 0; r < d->size; r++) {
		LT_ASSERT(counts[r] < INT_MAX && at < INT_MAX);
		cnt[r] = (int)counts[r];
		displ[r] = (int)at;
		at += counts[r];
	}
	MPI_Request req;
	int err = MPI_Igatherv(mine, cnt[d->rank], MPI_FLOAT, all, cnt, displ, MPI_FLOAT, root,
			       d->mpi->comm, &req);
	enum lt_status st = err ? mpi_failed(what, err) : wait_one(d, &req, what);
	free(cnt);
	return st;
}

/* In place over buf, among comm's `size` ranks: the i-th's elements
 * [off[r], off[r + 1]) of job rank r = ranks[i] (i itself when ranks is
 * NULL) go to every one of them. */
/* The bytes a rank sends to other nodes in a reduce-scatter or an
 * all-gather of n floats over the nodes (an all-reduce sends twice this). */
static double cross_share(const lt_dist *d, size_t n)
{
	return (double)n * sizeof(float) * (d->nodes - 1) / d->nodes;
}

/* A collective over the whole job, whose ranks lie on several nodes,
 * sends part of its bytes between them: counted as a ring over the nodes
 * sends them, `twice` for an all-reduce. */
static void count_job_wide(lt_dist *d, MPI_Comm comm, size_t n, int twice)
{
	if (comm != d->mpi->comm || d->nodes == 1)
		return;
	/* nodes of different sizes (nodes 0): counted as two nodes */
	double b = d->nodes ? cross_share(d, n) : (double)n * sizeof(float) / 2;
	lt_dist_count_cross(d, (twice ? 2 : 1) * b);
}

static enum lt_status allgatherv_over(lt_dist *d, MPI_Comm comm, int size, const int *ranks,
				      float *buf, const size_t *off, const char *what)
{
	int *counts = malloc(2 * (size_t)size * sizeof *counts), *displs = counts + size;
	if (!counts) {
		lt_errmsg_set("%s: cannot allocate the counts", what);
		return LT_ERR_NOMEM;
	}
	/* displacements count in elements of a type as long as the largest
	 * common alignment of the offsets allows, so they fit an int */
	size_t unit = 1;
	while (unit < ((size_t)1 << 20) && off[d->size] / unit > (size_t)INT_MAX / 2) {
		int ok = 1;
		for (int r = 0; r <= d->size; r++)
			ok &= off[r] % (unit * 2) == 0;
		if (!ok)
			break;
		unit *= 2;
	}
	MPI_Datatype type;
	MPI_Type_contiguous((int)unit, MPI_FLOAT, &type);
	MPI_Type_commit(&type);
	for (int i = 0; i < size; i++) {
		int r = ranks ? ranks[i] : i;
		counts[i] = (int)((off[r + 1] - off[r]) / unit);
		displs[i] = (int)(off[r] / unit);
	}
	LT_ASSERT(off[d->size] / unit <= (size_t)INT_MAX);
	MPI_Request req;
	count_job_wide(d, comm, off[d->size], 0);
	int err = MPI_Iallgatherv(MPI_IN_PLACE, 0, type, buf, counts, displs, type, comm, &req);
	enum lt_status st = err ? mpi_failed(what, err) : wait_one(d, &req, what);
	lt_dist_hold_for_link(d);
	MPI_Type_free(&type);
	free(counts);
	return st;
}

enum lt_status lt_dist_allgatherv_f32(lt_dist *d, float *buf, const size_t *off, const char *what)
{
	if (d->size == 1)
		return LT_OK;
	return allgatherv_over(d, d->mpi->comm, d->size, NULL, buf, off, what);
}

enum lt_status lt_dist_cross_allgatherv_f32(lt_dist *d, float *buf, const size_t *off,
					    const char *what)
{
	LT_ASSERT(d->nodes > 0);
	if (d->nodes == 1)
		return LT_OK;
	lt_dist_count_cross(d, cross_share(d, off[d->nodes]));
	enum lt_status st = allgatherv_over(d, d->mpi->cross, d->nodes, d->cross_ranks, buf, off,
					    what);
	lt_dist_hold_for_link(d);
	return st;
}

enum lt_status lt_dist_barrier(lt_dist *d, const char *what)
{
	if (d->size == 1)
		return LT_OK;
	MPI_Request req;
	int err = MPI_Ibarrier(d->mpi->comm, &req);
	if (err)
		return mpi_failed(what, err);
	return wait_one(d, &req, what);
}

/* ---------------------------- collectives started now, completed later */

/* Starts the sums of send[n] over comm's ranks, in pieces: into recv on
 * rank root of the job, or (root < 0) in place in recv on every rank. */
static enum lt_status start_sums(lt_dist *d, MPI_Comm comm, const float *send, float *recv,
				 size_t n, int root, const char *what)
{
	struct lt_dist_mpi *m = d->mpi;
	count_job_wide(d, comm, n, root < 0);
	for (size_t at = 0; at < n; at += PIECE) {
		if (m->n_pending == MAX_PENDING) {
			enum lt_status st = lt_dist_wait_all(d);
			if (st != LT_OK)
				return st;
		}
		int count = (int)(n - at < PIECE ? n - at : PIECE), err;
		MPI_Request *req = &m->pending[m->n_pending];
		if (root < 0)
			err = MPI_Iallreduce(MPI_IN_PLACE, recv + at, count, MPI_FLOAT, MPI_SUM,
					     comm, req);
		else
			err = MPI_Ireduce(send + at, d->rank == root ? recv + at : NULL, count,
					  MPI_FLOAT, MPI_SUM, root, comm, req);
		if (err)
			return mpi_failed(what, err);
		m->pending_what[m->n_pending++] = what;
		m->started++;
	}
	return LT_OK;
}

enum lt_status lt_dist_reduce_start(lt_dist *d, const float *send, float *recv, size_t n,
				    int root, const char *what)
{
	if (d->size == 1) {
		memcpy(recv, send, n * sizeof *recv);
		return LT_OK;
	}
	return start_sums(d, d->mpi->comm, send, recv, n, root, what);
}

enum lt_status lt_dist_allreduce_start(lt_dist *d, float *buf, size_t n, const char *what)
{
	if (d->size == 1)
		return LT_OK;
	return start_sums(d, d->mpi->comm, NULL, buf, n, -1, what);
}

enum lt_status lt_dist_cross_sum_start(lt_dist *d, float *buf, size_t n, const char *what)
{
	LT_ASSERT(d->nodes > 0);
	if (d->nodes == 1)
		return LT_OK;
	lt_dist_count_cross(d, 2 * cross_share(d, n));
	return start_sums(d, d->mpi->cross, NULL, buf, n, -1, what);
}

enum lt_status lt_dist_allgatherv_start(lt_dist *d, float *buf, const size_t *off,
					const char *what)
{
	if (d->size == 1)
		return LT_OK;
	struct lt_dist_mpi *m = d->mpi;
	size_t e = m->gathers % LT_DIST_GATHERS_UNDER_WAY;
	enum lt_status st = LT_OK;
	if (!m->gather_counts &&
	    !(m->gather_counts = malloc(LT_DIST_GATHERS_UNDER_WAY * 2 * (size_t)d->size *
					sizeof *m->gather_counts))) {
		lt_errmsg_set("%s: cannot allocate the counts", what);
		return LT_ERR_NOMEM;
	}
	/* the entry's last gather must be done with its counts */
	if (m->gathers >= LT_DIST_GATHERS_UNDER_WAY && (st = lt_dist_wait_to(d, m->gather_mark[e])) != LT_OK)
		return st;
	if (m->n_pending == MAX_PENDING && (st = lt_dist_wait_all(d)) != LT_OK)
		return st;
	int *counts = m->gather_counts + e * 2 * (size_t)d->size, *displs = counts + d->size;
	for (int r = 0; r < d->size; r++) {
		LT_ASSERT(off[r + 1] >= off[r] && off[d->size] <= (size_t)INT_MAX);
		counts[r] = (int)(off[r + 1] - off[r]);
		displs[r] = (int)off[r];
	}
	int err = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, buf, counts, displs, MPI_FLOAT,
				  m->comm, &m->pending[m->n_pending]);
	if (err)
		return mpi_failed(what, err);
	m->pending_what[m->n_pending++] = what;
	m->started++;
	m->gather_mark[e] = m->started;
	m->gathers++;
	return LT_OK;
}

enum lt_status lt_dist_cross_allgather_start(lt_dist *d, const void *mine, void *all,
					     size_t bytes, const char *what)
{
	LT_ASSERT(d->nodes > 0 && bytes <= (size_t)INT_MAX);
	if (d->nodes == 1) {
		memmove(all, mine, bytes);
		return LT_OK;
	}
	struct lt_dist_mpi *m = d->mpi;
	enum lt_status st;
	if (m->n_pending == MAX_PENDING && (st = lt_dist_wait_all(d)) != LT_OK)
		return st;
	lt_dist_count_cross(d, (double)bytes * (d->nodes - 1));
	int err = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, m->cross,
				 &m->pending[m->n_pending]);
	if (err)
		return mpi_failed(what, err);
	m->pending_what[m->n_pending++] = what;
	m->started++;
	return LT_OK;
}

/* Room for n elements of a reduce-scatter's result in scatter_buf. */
static enum lt_status grow_scatter_buf(struct lt_dist_mpi *m, size_t n, const char *what)
{
	if (n <= m->scatter_cap)
		return LT_OK;
	float *grown = realloc(m->scatter_buf, n * sizeof *grown);
	if (!grown) {
		lt_errmsg_set("%s: cannot allocate %zu bytes", what, n * sizeof *grown);
		return LT_ERR_NOMEM;
	}
	m->scatter_buf = grown;
	m->scatter_cap = n;
	return LT_OK;
}

enum lt_status lt_dist_cross_sum_scatter_start(lt_dist *d, float *buf, const size_t *cut,
					       const char *what)
{
	LT_ASSERT(d->nodes > 0 && d->consecutive);
	if (d->nodes == 1)
		return LT_OK;
	LT_ASSERT(cut[d->nodes] <= (size_t)INT_MAX);
	struct lt_dist_mpi *m = d->mpi;
	int me = d->rank / d->local_size;
	size_t mine = cut[me + 1] - cut[me];
	enum lt_status st = LT_OK;
	/* scatter_buf holds one result at a time: the last one's must be out */
	if (m->scatter_to && (st = lt_dist_wait_all(d)) != LT_OK)
		return st;
	/* not in place: MPICH 4.0 copies a block onto itself then */
	if ((st = grow_scatter_buf(m, mine, what)) != LT_OK)
		return st;
	if (m->n_pending == MAX_PENDING && (st = lt_dist_wait_all(d)) != LT_OK)
		return st;
	for (int i = 0; i < d->nodes; i++)
		m->scatter_counts[i] = (int)(cut[i + 1] - cut[i]);
	lt_dist_count_cross(d, cross_share(d, cut[d->nodes]));
	int err = MPI_Ireduce_scatter(buf, m->scatter_buf, m->scatter_counts, MPI_FLOAT, MPI_SUM,
				      m->cross, &m->pending[m->n_pending]);
	if (err)
		return mpi_failed(what, err);
	m->pending_what[m->n_pending++] = what;
	m->started++;
	if (mine) {
		m->scatter_to = buf + cut[me];
		m->scatter_n = mine;
	}
	return LT_OK;
}

/* Every started collective completed: a reduce-scatter's result goes
 * where it was asked for. */
static void all_completed(struct lt_dist_mpi *m)
{
	m->n_pending = 0;
	if (m->scatter_to)
		memcpy(m->scatter_to, m->scatter_buf, m->scatter_n * sizeof *m->scatter_to);
	m->scatter_to = NULL;
	m->scatter_n = 0;
}

enum lt_status lt_dist_progress(lt_dist *d)
{
	struct lt_dist_mpi *m = d->mpi;
	if (!m || !m->n_pending)
		return LT_OK;
	int done = 0;
	int err = MPI_Testall(m->n_pending, m->pending, &done, m->statuses);
	if (err)
		return mpi_failed(m->pending_what[0], err);
	if (done)
		all_completed(m);
	return LT_OK;
}

size_t lt_dist_mark(const lt_dist *d)
{
	return d->mpi ? d->mpi->started : 0;
}

enum lt_status lt_dist_wait_to(lt_dist *d, size_t mark)
{
	struct lt_dist_mpi *m = d->mpi;
	if (!m)
		return LT_OK;
	size_t first = m->started - (size_t)m->n_pending;
	if (mark <= first)
		return LT_OK;
	enum lt_status st = wait_requests(d, m->pending, (int)(mark - first), m->pending_what,
					  &d->wait_seconds);
	lt_dist_hold_for_link(d);
	return st;
}

enum lt_status lt_dist_wait_all(lt_dist *d)
{
	struct lt_dist_mpi *m = d->mpi;
	if (!m || !m->n_pending)
		return LT_OK;
	enum lt_status st = wait_requests(d, m->pending, m->n_pending, m->pending_what,
					  &d->wait_seconds);
	if (st == LT_OK)
		all_completed(m);
	lt_dist_hold_for_link(d);
	return st;
}

/* ------------------------------------------- messages between two ranks */

enum { TAG_MSG = 30713 };

/* A free slot for a message, or -1 with the error set. */
static int free_msg_slot(struct lt_dist_mpi *m, const char *what)
{
	for (int i = 0; i < LT_DIST_MSGS; i++)
		if (!m->msg_busy[i])
			return i;
	lt_errmsg_set("%s: more than %d messages under way", what, LT_DIST_MSGS);
	return -1;
}

static enum lt_status start_msg(lt_dist *d, float *buf, size_t n, int peer, int send,
				const char *what, int *msg)
{
	struct lt_dist_mpi *m = d->mpi;
	LT_ASSERT(m && peer >= 0 && peer < d->size && peer != d->rank && n <= (size_t)INT_MAX);
	int i = free_msg_slot(m, what);
	if (i < 0)
		return LT_ERR_COMM;
	int err = send ? MPI_Isend(buf, (int)n, MPI_FLOAT, peer, TAG_MSG, m->comm, &m->msg[i])
		       : MPI_Irecv(buf, (int)n, MPI_FLOAT, peer, TAG_MSG, m->comm, &m->msg[i]);
	if (err)
		return mpi_failed(what, err);
	m->msg_busy[i] = 1;
	m->msg_what[i] = what;
	*msg = i;
	return LT_OK;
}

enum lt_status lt_dist_send_start(lt_dist *d, const float *buf, size_t n, int peer,
				  const char *what, int *msg)
{
	return start_msg(d, (float *)buf, n, peer, 1, what, msg);
}

enum lt_status lt_dist_recv_start(lt_dist *d, float *buf, size_t n, int peer, const char *what,
				  int *msg)
{
	return start_msg(d, buf, n, peer, 0, what, msg);
}

enum lt_status lt_dist_msg_wait(lt_dist *d, int msg)
{
	struct lt_dist_mpi *m = d->mpi;
	LT_ASSERT(m && msg >= 0 && msg < LT_DIST_MSGS && m->msg_busy[msg]);
	enum lt_status st = wait_one(d, &m->msg[msg], m->msg_what[msg]);
	m->msg_busy[msg] = 0;
	return st;
}

/* -------------------------------- memory shared by the ranks of a node */

/* An MPI-3 shared window over the node's ranks, or this rank's own pages
 * when it runs alone. */
struct lt_dist_shared {
	void **at;   /* [local_size] */
	int window;  /* win holds the node's ranks' parts, else at[0] is malloc'd */
	MPI_Win win;
};

/* Whether SHM_DIR, where MPI libraries keep shared windows, has room for
 * every rank's `want` bytes on every node (the ranks agree; yes when it
 * cannot tell): a window larger than it fails only when its pages are first
 * touched. */
static enum lt_status check_shm_room(struct lt_dist *d, size_t want)
{
	const char *what = "the shared memory's size";
	MPI_Comm node = d->mpi->node, comm = d->mpi->comm;
	double total = (double)want, short_of = 0, free_bytes = -1;
	struct statvfs fs;
	enum lt_status st = allreduce_over(d, node, &total, 1, LT_DIST_F64, LT_DIST_SUM, what);
	if (st != LT_OK)
		return st;
	if (statvfs(SHM_DIR, &fs) == 0) {
		free_bytes = (double)fs.f_bavail * (double)fs.f_frsize;
		short_of = free_bytes < total;
	}
	if ((st = allreduce_over(d, node, &short_of, 1, LT_DIST_F64, LT_DIST_MAX, what)) != LT_OK)
		return st;
	double any_short = short_of;
	if ((st = allreduce_over(d, comm, &any_short, 1, LT_DIST_F64, LT_DIST_MAX, what)) != LT_OK)
		return st;
	if (!any_short)
		return LT_OK;
	if (!short_of)
		lt_errmsg_set("%s of another node has too little room for its ranks", SHM_DIR);
	else if (free_bytes >= 0)
		lt_errmsg_set("%s has %.1f MiB free, the node's ranks need %.1f MiB", SHM_DIR,
			      free_bytes / 1048576.0, total / 1048576.0);
	else
		lt_errmsg_set("%s of another rank has less than the %.1f MiB the node's ranks need",
			      SHM_DIR, total / 1048576.0);
	return LT_ERR_NOMEM;
}

/* The node's shared window, each rank's part `want` bytes, into s. */
static enum lt_status open_window(struct lt_dist *d, size_t want, struct lt_dist_shared *s)
{
	enum lt_status st = check_shm_room(d, want);
	if (st != LT_OK)
		return st;
	MPI_Info info;
	void *mine;
	MPI_Info_create(&info);
	MPI_Info_set(info, "alloc_shared_noncontig", "true");
	int err = MPI_Win_allocate_shared((MPI_Aint)want, 1, info, d->mpi->node, &mine, &s->win);
	MPI_Info_free(&info);
	if (err) {
		st = mpi_failed("the node's shared memory", err);
		lt_errmsg_prefix("%.1f MiB of shared memory", (double)want / 1048576.0);
		return st;
	}
	for (int r = 0; r < d->local_size; r++) {
		MPI_Aint size;
		int unit;
		MPI_Win_shared_query(s->win, r, &size, &unit, &s->at[r]);
	}
	MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
	s->window = 1;
	return LT_OK;
}

enum lt_status lt_dist_shared_new(lt_dist *d, size_t bytes, lt_dist_shared **out)
{
	*out = NULL;
	struct lt_dist_shared *s = calloc(1, sizeof *s);
	if (s)
		s->at = calloc((size_t)d->local_size, sizeof *s->at);
	if (!s || !s->at) {
		free(s);
		lt_errmsg_set("cannot allocate the shared memory's state");
		return LT_ERR_NOMEM;
	}
	/* whole pages, each rank's part apart, for the backend to pin */
	size_t page = 4096, want = bytes ? (bytes + page - 1) / page * page : page;
	enum lt_status st = LT_OK;
	if (d->mpi)
		st = open_window(d, want, s);
	else if (!(s->at[0] = aligned_alloc(page, want))) {
		lt_errmsg_set("cannot allocate %.1f MiB of exchange memory", (double)bytes / 1048576.0);
		st = LT_ERR_NOMEM;
	}
	if (st != LT_OK) {
		free(s->at);
		free(s);
		return st;
	}
	*out = s;
	return LT_OK;
}

void *lt_dist_shared_at(const lt_dist_shared *s, int local)
{
	return s->at[local];
}

void lt_dist_shared_free(lt_dist_shared *s)
{
	if (!s)
		return;
	if (s->window) {
		MPI_Win_unlock_all(s->win);
		MPI_Win_free(&s->win);
	} else {
		free(s->at[0]);
	}
	free(s->at);
	free(s);
}

enum lt_status lt_dist_shared_sync(lt_dist *d, lt_dist_shared *s, const char *what)
{
	if (!s->window || d->local_size == 1)
		return LT_OK;
	MPI_Request req;
	MPI_Win_sync(s->win);
	int err = MPI_Ibarrier(d->mpi->node, &req);
	if (err)
		return mpi_failed(what, err);
	/* nothing moves at a barrier: its wait is for the node's slower ranks */
	enum lt_status st = wait_requests(d, &req, 1, &what, &d->barrier_seconds);
	MPI_Win_sync(s->win);
	return st;
}
