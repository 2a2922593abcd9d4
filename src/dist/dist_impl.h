/* What dist.c shares with the build's implementation of the ranks
 * (dist_mpi.c with MPI, dist_none.c without): the state every build keeps
 * and the watchdog each implementation provides to it. Private to
 * src/dist/dist*.c.
 *
 * Ownership: lt_dist_alone_new gives a state that lt_dist_alone_free
 * releases (with its rank lists; not d->mpi, which dist_mpi.c owns). */
#ifndef LT_DIST_IMPL_H
#define LT_DIST_IMPL_H

#include "dist/dist.h"

/* The MPI state of a job of several ranks: defined by dist_mpi.c only. */
struct lt_dist_mpi;

struct lt_dist {
	int rank, size, local_rank, local_size;
	int nodes;         /* nodes, when each runs local_size ranks; else 0 */
	int consecutive;   /* every node's ranks are consecutive job ranks */
	int *node_ranks;   /* [local_size]: the job rank of each rank of the node */
	int *cross_ranks;  /* [nodes, or 1]: the job rank of this local index on each node */
	char host[256];
	double timeout;    /* the watchdog's limit, seconds without progress */
	long step;         /* the step the watchdog's messages name */
	double wait_seconds;     /* waiting for collectives, since last taken */
	double barrier_seconds;  /* at node barriers, since last taken */
	double cross_bytes;      /* sent between nodes, since last taken */
	double link_bps;         /* the emulated link between nodes, bits/s; 0: none */
	int stages;              /* a job's pipeline stages of consecutive ranks (0: none) */
	double link_free_at;     /* when the emulated link has sent what it was given */
	struct lt_dist_mpi *mpi; /* NULL when this process runs alone */
	int *job_ranks;          /* a group's: [size] each rank's rank in the whole
				    job, for messages; NULL: the job itself */
	const struct lt_dist *parent;  /* a group's job, whose step it names */
};

/* The step the watchdog's messages name: a group's job's. */
static inline long lt_dist_step_now(const struct lt_dist *d)
{
	return d->parent ? lt_dist_step_now(d->parent) : d->step;
}

/* Rank r of d as the whole job numbers it. */
static inline int lt_dist_job_rank(const struct lt_dist *d, int r)
{
	return d->job_ranks ? d->job_ranks[r] : r;
}

/* dist.c: */

/* Whether a launcher started this process (its environment says so;
 * LLTRAIN_MPI=0 or 1 overrides). */
int lt_dist_launched(void);
/* A job of one rank on this host, the state every job starts from: one
 * node of one rank, the watchdog at 30 s. */
enum lt_status lt_dist_alone_new(lt_dist **out);
void lt_dist_alone_free(lt_dist *d);

/* Counts `bytes` sent from this rank to other nodes, and with an
 * emulated link, when they will have gone (after what it holds). */
void lt_dist_count_cross(lt_dist *d, double bytes);
/* With an emulated link: sleeps until it has sent what it was given,
 * counting the seconds as waiting. */
void lt_dist_hold_for_link(lt_dist *d);

/* dist_mpi.c or dist_none.c: */

/* The watchdog's turn in a wait that began at t0, `what` naming it: LT_OK
 * while the wait may go on, else LT_ERR_COMM with the ranks that did not
 * answer in lt_errmsg. Alone, a wait has no one to watch: always LT_OK. */
enum lt_status lt_dist_watch(lt_dist *d, double t0, double now, double *last,
			     const char *what);

#endif
