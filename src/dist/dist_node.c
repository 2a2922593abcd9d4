/* The ranks of one node as a job of their own (lt_dist_node_new), over
 * MPI: the inner exchange of local SGD runs over it. */
#include "config.h"
#include "dist/dist.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_impl.h"
#include "dist/dist_mpi_impl.h"

/* The node's ranks as a job of their own: comm, node (the same ranks) and
 * cross (this rank alone) are duplicates, so their traffic stays apart. */
static enum lt_status start_node(const struct lt_dist *d, struct lt_dist *nd)
{
	struct lt_dist_mpi *m = nd->mpi = calloc(1, sizeof *nd->mpi);
	if (!m) {
		lt_errmsg_set("cannot allocate the node's rank state");
		return LT_ERR_NOMEM;
	}
	nd->rank = nd->local_rank = d->local_rank;
	nd->size = nd->local_size = d->local_size;
	nd->timeout = d->timeout;
	nd->link_bps = 0;
	memcpy(nd->host, d->host, sizeof nd->host);
	MPI_Comm_dup(d->mpi->node, &m->comm);
	MPI_Comm_dup(d->mpi->node, &m->node);
	MPI_Comm_dup(MPI_COMM_SELF, &m->cross);
	MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
	MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN);
	MPI_Comm_set_errhandler(m->cross, MPI_ERRORS_RETURN);
	enum lt_status st = lt_dist_mpi_rank_lists(nd);
	for (int i = 0; st == LT_OK && i < nd->size; i++)
		nd->node_ranks[i] = i;
	if (st == LT_OK)
		nd->cross_ranks[0] = nd->rank;
	lt_dist_mpi_types(m);
	return st;
}

enum lt_status lt_dist_node_new(lt_dist *d, lt_dist **out)
{
	struct lt_dist *nd;
	enum lt_status st = lt_dist_alone_new(&nd);
	*out = NULL;
	if (st == LT_OK && d->mpi && (st = start_node(d, nd)) != LT_OK) {
		lt_dist_node_free(nd);
		return st;
	}
	*out = nd;
	return st;
}

void lt_dist_node_free(lt_dist *nd)
{
	struct lt_dist_mpi *m = nd ? nd->mpi : NULL;
	if (m && m->comm) {
		MPI_Op_free(&m->sum128);
		MPI_Type_free(&m->i128);
		MPI_Comm_free(&m->cross);
		MPI_Comm_free(&m->node);
		MPI_Comm_free(&m->comm);
	}
	if (nd)
		lt_dist_mpi_free_state(nd);
}
