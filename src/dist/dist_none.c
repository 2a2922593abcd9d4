/* The ranks of a build without MPI: a job of one rank, in which every
 * collective is a no-op or a copy and node-shared memory is this rank's
 * own. */
#include "config.h"
#include "dist/dist.h"

#include <stdlib.h>
#include <string.h>

#include "dist/dist_impl.h"

/* ------------------------------------------------------------- the job */

int lt_dist_have_mpi(void) { return 0; }

enum lt_status lt_dist_init(int *argc, char ***argv, lt_dist **out)
{
	(void)argc, (void)argv;
	*out = NULL;
	if (lt_dist_launched() && getenv("LLTRAIN_MPI") == NULL) {
		lt_errmsg_set("started by an MPI launcher, but this lltrain was built without MPI "
			      "(install libmpich-dev and configure again, or set LLTRAIN_MPI=0 to "
			      "run each process alone)");
		return LT_ERR_CONFIG;
	}
	return lt_dist_alone_new(out);
}

void lt_dist_finalize(lt_dist *d) { lt_dist_alone_free(d); }

_Noreturn void lt_dist_abort(lt_dist *d, int code)
{
	(void)d;
	exit(code);
}

enum lt_status lt_dist_watch(lt_dist *d, double t0, double now, double *last, const char *what)
{
	(void)d, (void)t0, (void)now, (void)last, (void)what;
	return LT_OK;
}

/* --------------------------------------------------------- collectives */

/* Over one rank, what it holds is already everyone's. */

enum lt_status lt_dist_allreduce(lt_dist *d, void *buf, size_t n, enum lt_dist_type t,
				 enum lt_dist_op op, const char *what)
{
	LT_ASSERT(t != LT_DIST_I128 || op == LT_DIST_SUM);
	(void)d, (void)buf, (void)n, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_bcast(lt_dist *d, void *buf, size_t bytes, int root, const char *what)
{
	(void)d, (void)buf, (void)bytes, (void)root, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_allgather(lt_dist *d, const void *mine, void *all, size_t bytes,
				 const char *what)
{
	(void)d, (void)what;
	memmove(all, mine, bytes);
	return LT_OK;
}

enum lt_status lt_dist_allgatherv_f32(lt_dist *d, float *buf, const size_t *off, const char *what)
{
	(void)d, (void)buf, (void)off, (void)what;
	return LT_OK;
}

/* The one rank is the one node: across the nodes is across the job. */

enum lt_status lt_dist_cross_allgatherv_f32(lt_dist *d, float *buf, const size_t *off,
					    const char *what)
{
	return lt_dist_allgatherv_f32(d, buf, off, what);
}

enum lt_status lt_dist_barrier(lt_dist *d, const char *what)
{
	(void)d, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_reduce_start(lt_dist *d, const float *send, float *recv, size_t n,
				    int root, const char *what)
{
	(void)d, (void)root, (void)what;
	memcpy(recv, send, n * sizeof *recv);
	return LT_OK;
}

enum lt_status lt_dist_allreduce_start(lt_dist *d, float *buf, size_t n, const char *what)
{
	(void)d, (void)buf, (void)n, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_allgatherv_start(lt_dist *d, float *buf, const size_t *off,
					const char *what)
{
	(void)d, (void)buf, (void)off, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_cross_sum_start(lt_dist *d, float *buf, size_t n, const char *what)
{
	return lt_dist_allreduce_start(d, buf, n, what);
}

enum lt_status lt_dist_cross_sum_scatter_start(lt_dist *d, float *buf, const size_t *cut,
					       const char *what)
{
	(void)d, (void)buf, (void)cut, (void)what;
	return LT_OK;
}

/* ---------------------------- collectives started now, completed later */

/* Each is done when started: none is ever under way. */

enum lt_status lt_dist_progress(lt_dist *d)
{
	(void)d;
	return LT_OK;
}

size_t lt_dist_mark(const lt_dist *d)
{
	(void)d;
	return 0;
}

enum lt_status lt_dist_wait_to(lt_dist *d, size_t mark)
{
	(void)d, (void)mark;
	return LT_OK;
}

enum lt_status lt_dist_wait_all(lt_dist *d)
{
	(void)d;
	return LT_OK;
}

/* A rank alone has no other rank to message. */
static enum lt_status no_peer(const char *what)
{
	lt_errmsg_set("%s: a rank alone has no other rank to message", what);
	return LT_ERR_COMM;
}

enum lt_status lt_dist_send_start(lt_dist *d, const float *buf, size_t n, int peer,
				  const char *what, int *msg)
{
	(void)d, (void)buf, (void)n, (void)peer, (void)msg;
	return no_peer(what);
}

enum lt_status lt_dist_recv_start(lt_dist *d, float *buf, size_t n, int peer, const char *what,
				  int *msg)
{
	(void)d, (void)buf, (void)n, (void)peer, (void)msg;
	return no_peer(what);
}

enum lt_status lt_dist_msg_wait(lt_dist *d, int msg)
{
	(void)d, (void)msg;
	return no_peer("a message");
}

/* -------------------------------- memory shared by the ranks of a node */

struct lt_dist_shared {
	void *mine;
};

enum lt_status lt_dist_shared_new(lt_dist *d, size_t bytes, lt_dist_shared **out)
{
	(void)d;
	*out = NULL;
	struct lt_dist_shared *s = malloc(sizeof *s);
	if (!s) {
		lt_errmsg_set("cannot allocate the shared memory's state");
		return LT_ERR_NOMEM;
	}
	/* whole pages, for the backend to pin */
	size_t page = 4096, want = bytes ? (bytes + page - 1) / page * page : page;
	if (!(s->mine = aligned_alloc(page, want))) {
		free(s);
		lt_errmsg_set("cannot allocate %.1f MiB of exchange memory", (double)bytes / 1048576.0);
		return LT_ERR_NOMEM;
	}
	*out = s;
	return LT_OK;
}

void *lt_dist_shared_at(const lt_dist_shared *s, int local)
{
	LT_ASSERT(local == 0);
	return s->mine;
}

void lt_dist_shared_free(lt_dist_shared *s)
{
	if (!s)
		return;
	free(s->mine);
	free(s);
}

enum lt_status lt_dist_shared_sync(lt_dist *d, lt_dist_shared *s, const char *what)
{
	(void)d, (void)s, (void)what;
	return LT_OK;
}

enum lt_status lt_dist_node_new(lt_dist *d, lt_dist **out)
{
	(void)d;
	return lt_dist_alone_new(out);
}

void lt_dist_node_free(lt_dist *nd) { lt_dist_alone_free(nd); }

enum lt_status lt_dist_group_new(lt_dist *d, int color, int key, lt_dist **out)
{
	(void)d, (void)color, (void)key;
	return lt_dist_alone_new(out);
}

void lt_dist_group_free(lt_dist *g) { lt_dist_alone_free(g); }

enum lt_status lt_dist_gatherv_f32(lt_dist *d, const float *mine, const size_t *counts,
				   float *all, int root, const char *what)
{
	(void)d, (void)root, (void)what;
	memmove(all, mine, counts[0] * sizeof *mine);
	return LT_OK;
}

enum lt_status lt_dist_cross_allgather_start(lt_dist *d, const void *mine, void *all,
					     size_t bytes, const char *what)
{
	(void)d, (void)what;
	memmove(all, mine, bytes);
	return LT_OK;
}
