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

/* LLTRAIN_BENCH_LINK_GBITS: the emulated link between nodes (benchmarks). */
static enum lt_status link_from_env(lt_dist *d)
{
	const char *v = getenv("LLTRAIN_BENCH_LINK_GBITS");
	char *end;
	if (!v || !*v)
		return LT_OK;
	double g = strtod(v, &end);
	if (*end || !(g > 0) || g > 1e6) {
		lt_errmsg_set("LLTRAIN_BENCH_LINK_GBITS=%s: expected a link speed in Gbit/s, "
			      "more than 0", v);
		return LT_ERR_CONFIG;
	}
	d->link_bps = g * 1e9;
	return LT_OK;
}

enum lt_status lt_dist_alone_new(lt_dist **out)
{
	*out = NULL;
	enum lt_status st;
	struct lt_dist *d = calloc(1, sizeof *d);
	if (!d) {
		lt_errmsg_set("cannot allocate the rank state");
		return LT_ERR_NOMEM;
	}
	d->size = d->local_size = 1;
	d->nodes = 1;
	d->consecutive = 1;
	d->timeout = 30;
	if ((st = link_from_env(d)) != LT_OK) {
		lt_dist_alone_free(d);
		return st;
	}
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
	free(d->job_ranks);
	free(d);
}

int lt_dist_rank(const lt_dist *d) { return d->rank; }
int lt_dist_size(const lt_dist *d) { return d->size; }
int lt_dist_local_rank(const lt_dist *d) { return d->local_rank; }
int lt_dist_local_size(const lt_dist *d) { return d->local_size; }
int lt_dist_nodes(const lt_dist *d) { return d->nodes; }
int lt_dist_nodes_consecutive(const lt_dist *d) { return d->consecutive; }
int lt_dist_rank_of_local(const lt_dist *d, int local) { return d->node_ranks[local]; }

int lt_dist_node_index(const lt_dist *d)
{
	for (int i = 0; i < d->nodes; i++)
		if (d->cross_ranks[i] == d->rank)
			return i;
	return 0;
}
const char *lt_dist_host(const lt_dist *d) { return d->host; }
void lt_dist_set_timeout(lt_dist *d, double seconds) { d->timeout = seconds; }
void lt_dist_set_stages(lt_dist *d, int stages) { d->stages = stages; }
void lt_dist_set_step(lt_dist *d, long step) { d->step = step; }

void lt_dist_add_wait_seconds(lt_dist *d, double seconds) { d->wait_seconds += seconds; }

double lt_dist_take_wait_seconds(lt_dist *d)
{
	double w = d->wait_seconds;
	d->wait_seconds = 0;
	return w;
}

double lt_dist_take_cross_bytes(lt_dist *d)
{
	double b = d->cross_bytes;
	d->cross_bytes = 0;
	return b;
}

double lt_dist_link_gbits(const lt_dist *d) { return d->link_bps / 1e9; }

void lt_dist_count_cross(lt_dist *d, double bytes)
{
	d->cross_bytes += bytes;
	if (d->link_bps > 0) {
		double now = lt_seconds();
		/* the node's ranks share the node's link evenly */
		d->link_free_at = (d->link_free_at > now ? d->link_free_at : now) +
				  bytes * 8 * d->local_size / d->link_bps;
	}
}

void lt_dist_hold_for_link(lt_dist *d)
{
	double now = lt_seconds(), left = d->link_free_at - now;
	if (d->link_bps <= 0 || left <= 0)
		return;
	usleep((useconds_t)(left * 1e6));
	d->wait_seconds += lt_seconds() - now;
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
