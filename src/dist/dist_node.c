/* Some of a job's ranks as a job of their own, over MPI: those of one node
 * (lt_dist_node_new: the inner exchange of local SGD runs over it), or a
 * group of the mesh (lt_dist_group_new: tensor- and data-parallel groups). */
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
	nd->parent = d;
	if (st == LT_OK && !(nd->job_ranks = malloc((size_t)nd->size * sizeof *nd->job_ranks))) {
		lt_errmsg_set("cannot allocate the node's rank list");
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK)
		memcpy(nd->job_ranks, d->node_ranks, (size_t)nd->size * sizeof *nd->job_ranks);
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
		if (m->cross != MPI_COMM_NULL)
			MPI_Comm_free(&m->cross);
		if (m->node != MPI_COMM_NULL)
			MPI_Comm_free(&m->node);
		MPI_Comm_free(&m->comm);
	}
	if (nd)
		lt_dist_mpi_free_state(nd);
}

/* *least and *most: the smallest and largest v over comm's ranks. */
static void span_of(MPI_Comm comm, int v, int *least, int *most)
{
	int span[2] = { -v, v };
	MPI_Allreduce(MPI_IN_PLACE, span, 2, MPI_INT, MPI_MAX, comm);
	*least = -span[0];
	*most = span[1];
}

/* The group's ranks of each node: those of the job's node in the group;
 * the same local index across the nodes; and the lists naming them. */
static enum lt_status split_group_nodes(const struct lt_dist *d, struct lt_dist *g, int color)
{
	struct lt_dist_mpi *m = g->mpi;
	int least, most, mine = 1;
	MPI_Comm_split(d->mpi->node, color, g->rank, &m->node);
	MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN);
	MPI_Comm_rank(m->node, &g->local_rank);
	MPI_Comm_size(m->node, &g->local_size);
	MPI_Comm_split(m->comm, g->local_rank, g->rank, &m->cross);
	MPI_Comm_set_errhandler(m->cross, MPI_ERRORS_RETURN);
	span_of(m->comm, g->local_size, &least, &most);
	g->nodes = least == most ? g->size / g->local_size : 0;
	enum lt_status st = lt_dist_mpi_rank_lists(g);
	if (st != LT_OK)
		return st;
	MPI_Allgather(&g->rank, 1, MPI_INT, g->node_ranks, 1, MPI_INT, m->node);
	if (g->nodes)
		MPI_Allgather(&g->rank, 1, MPI_INT, g->cross_ranks, 1, MPI_INT, m->cross);
	for (int i = 0; i < g->local_size; i++)
		mine &= g->node_ranks[i] == g->node_ranks[0] + i;
	span_of(m->comm, mine, &least, &most);
	g->consecutive = least == 1;
	return LT_OK;
}

static enum lt_status start_group(const struct lt_dist *d, struct lt_dist *g, int color, int key)
{
	struct lt_dist_mpi *m = g->mpi = calloc(1, sizeof *g->mpi);
	if (!m) {
		lt_errmsg_set("cannot allocate the group's rank state");
		return LT_ERR_NOMEM;
	}
	m->node = m->cross = MPI_COMM_NULL;
	g->timeout = d->timeout;
	g->link_bps = d->link_bps;
	g->parent = d;
	memcpy(g->host, d->host, sizeof g->host);
	MPI_Comm_split(d->mpi->comm, color, key, &m->comm);
	MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
	MPI_Comm_rank(m->comm, &g->rank);
	MPI_Comm_size(m->comm, &g->size);
	lt_dist_mpi_types(m);
	if (!(g->job_ranks = malloc((size_t)g->size * sizeof *g->job_ranks))) {
		lt_errmsg_set("cannot allocate the group's rank list");
		return LT_ERR_NOMEM;
	}
	MPI_Allgather(&d->rank, 1, MPI_INT, g->job_ranks, 1, MPI_INT, m->comm);
	return split_group_nodes(d, g, color);
}

enum lt_status lt_dist_group_new(lt_dist *d, int color, int key, lt_dist **out)
{
	struct lt_dist *g;
	enum lt_status st = lt_dist_alone_new(&g);
	*out = NULL;
	if (st == LT_OK && d->mpi && (st = start_group(d, g, color, key)) != LT_OK) {
		lt_dist_node_free(g);
		return st;
	}
	*out = g;
	return st;
}

void lt_dist_group_free(lt_dist *g) { lt_dist_node_free(g); }
