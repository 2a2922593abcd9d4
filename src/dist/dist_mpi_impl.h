/* The MPI state of a job of several ranks, which dist_mpi.c keeps and
 * dist_node.c makes for a node's ranks. Private to src/dist/dist_mpi.c
 * and src/dist/dist_node.c.
 *
 * Ownership: lt_dist_mpi_free_state frees an lt_dist with its MPI state
 * (not the MPI objects, which their maker frees). */
#ifndef LT_DIST_MPI_IMPL_H
#define LT_DIST_MPI_IMPL_H

#include <mpi.h>
#include <stddef.h>

#include "dist/dist_impl.h"

/* Collectives that may be under way at once (as dist.h promises). */
#define MAX_PENDING 4096

struct lt_dist_mpi {
	MPI_Comm comm, node, cross;  /* cross: this local index on every node */
	MPI_Datatype i128;
	MPI_Op sum128;
	/* the collectives under way: pending[i] is collective started - n_pending + i */
	MPI_Request pending[MAX_PENDING];
	const char *pending_what[MAX_PENDING];
	/* MPI_STATUSES_IGNORE trips GCC's access checks on MPICH's headers */
	MPI_Status statuses[MAX_PENDING];
	int completed[MAX_PENDING];  /* MPI_Testsome's indices, unused */
	int n_pending;
	size_t started;         /* collectives started so far */
	/* the reduce-scatter: its result lands in scatter_buf[scatter_cap] and
	 * goes to scatter_to[scatter_n] once every started collective completed */
	float *scatter_buf;
	size_t scatter_cap;
	float *scatter_to;
	size_t scatter_n;
	int *scatter_counts;    /* [nodes]: the count for each node */
	/* the all-gathers under way keep their counts and displacements
	 * ([2 * size] each) until they complete: gather i in entry i % ring,
	 * done once the collectives before gather_mark[entry] are */
	int *gather_counts;
	size_t gather_mark[LT_DIST_GATHERS_UNDER_WAY];
	size_t gathers;
	/* point-to-point messages under way, each in a slot while busy */
	MPI_Request msg[LT_DIST_MSGS];
	const char *msg_what[LT_DIST_MSGS];
	unsigned char msg_busy[LT_DIST_MSGS];
};

/* Each rank's rank lists (d->nodes of them across), replacing those of a
 * rank alone. */
enum lt_status lt_dist_mpi_rank_lists(struct lt_dist *d);
/* The 16-byte integer type and its sum. */
void lt_dist_mpi_types(struct lt_dist_mpi *m);
/* Frees d and its MPI state (not the MPI objects: MPI_Finalize ends them). */
void lt_dist_mpi_free_state(struct lt_dist *d);

#endif
