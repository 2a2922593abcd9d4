/* What every build's ranks share: the state of a job of one rank, the
 * accessors, the time accounting and the wait on node-shared memory. The
 * collectives are in dist_mpi.c (MPI) or dist_none.c (one rank). */
#include "config.h"
#include "dist/dist.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "dist/dist_impl.h"

int lt_dist_launched(void)
{
	const char *force = getenv("LLTRAIN_MPI");
	if (force && *force)
		return strcmp(force, "0") != 0;
	static const char *const vars[] = { "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
					    "PMIX_RANK", "MPI_LOCALNRANKS", NULL };
	for (int i = 0; vars[i]; i++)
		if (getenv(vars[i]))
			return 1;
	return 0;
}

enum lt_status lt_dist_alone_new(lt_dist **out)
{
	*out = NULL;
	struct lt_dist *d = calloc(1, sizeof *d);
	if (!d) {
		lt_errmsg_set("cannot allocate the rank state");
		return LT_ERR_NOMEM;
	}
	d->size = d->local_size = 1;
	d->nodes = 1;
	d->consecutive = 1;
	d->timeout = 30;
	if (gethostname(d->host, sizeof d->host - 1) != 0)
		snprintf(d->host, sizeof d->host, "unknown");
	d->node_ranks = calloc(1, sizeof *d->node_ranks);
	d->cross_ranks = calloc(1, sizeof *d->cross_ranks);
	if (!d->node_ranks || !d->cross_ranks) {
		lt_dist_alone_free(d);
		lt_errmsg_set("cannot allocate the rank state");
		return LT_ERR_NOMEM;
	}
	*out = d;
	return LT_OK;
}

void lt_dist_alone_free(lt_dist *d)
{
	if (!d)
		return;
	free(d->node_ranks);
	free(d->cross_ranks);
	free(d);
}

int lt_dist_rank(const lt_dist *d) { return d->rank; }
int lt_dist_size(const lt_dist *d) { return d->size; }
int lt_dist_local_rank(const lt_dist *d) { return d->local_rank; }
int lt_dist_local_size(const lt_dist *d) { return d->local_size; }
int lt_dist_nodes(const lt_dist *d) { return d->nodes; }
int lt_dist_nodes_consecutive(const lt_dist *d) { return d->consecutive; }
int lt_dist_rank_of_local(const lt_dist *d, int local) { return d->node_ranks[local]; }
const char *lt_dist_host(const lt_dist *d) { return d->host; }
void lt_dist_set_timeout(lt_dist *d, double seconds) { d->timeout = seconds; }
void lt_dist_set_step(lt_dist *d, long step) { d->step = step; }

void lt_dist_add_wait_seconds(lt_dist *d, double seconds) { d->wait_seconds += seconds; }

double lt_dist_take_wait_seconds(lt_dist *d)
{
	double w = d->wait_seconds;
	d->wait_seconds = 0;
	return w;
}

double lt_dist_take_barrier_seconds(lt_dist *d)
{
	double w = d->barrier_seconds;
	d->barrier_seconds = 0;
	return w;
}

enum lt_status lt_dist_wait_until(lt_dist *d, int (*done)(void *ctx), void *ctx,
				  const char *what, int barrier)
{
	double t0 = lt_seconds(), last = t0;
	while (!done(ctx)) {
		double now = lt_seconds();
		enum lt_status st = lt_dist_watch(d, t0, now, &last, what);
		if (st != LT_OK)
			return st;
		/* the others' writes come from cores of their own, or from
		 * ours once we yield: yield for a while, then sleep */
		if (now - t0 < 0.01)
			sched_yield();
		else
			usleep(50);
	}
	*(barrier ? &d->barrier_seconds : &d->wait_seconds) += lt_seconds() - t0;
	return LT_OK;
}
