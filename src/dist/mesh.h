/* The job's ranks as a mesh of data-parallel x tensor-parallel x pipeline
 * groups: the job's ranks split into pp stages of consecutive ranks; in a
 * stage, each tp consecutive ranks form a tensor-parallel group (one node,
 * where nodes hold a multiple of tp ranks), and the ranks with the same
 * place in their groups form a data-parallel group, over which ZeRO and
 * the data's shares run; the ranks with the same place in their stages
 * form a pipeline.
 *
 * Ownership: lt_mesh_new gives an lt_mesh that lt_mesh_free releases
 * (before the job's lt_dist is finalized); it borrows the job. */
#ifndef LT_MESH_H
#define LT_MESH_H

#include "dist/dist.h"
#include "model.h"

typedef struct lt_mesh lt_mesh;

/* The mesh of tp ranks per group and pp stages over the job d
 * (collective): one line and LT_ERR_CONFIG when tp x pp does not divide
 * the job's ranks. */
enum lt_status lt_mesh_new(lt_dist *d, int tp, int pp, lt_mesh **out);
void lt_mesh_free(lt_mesh *m);

/* This rank's groups: its tensor-parallel group and its data-parallel one. */
lt_dist *lt_mesh_tp_group(const lt_mesh *m);
lt_dist *lt_mesh_dp_group(const lt_mesh *m);
/* With pp > 1: this rank's pipeline (its rank there is its stage), and
 * the ranks of its stage (the job's when pp is 1); this rank's stage. */
lt_dist *lt_mesh_pp_group(const lt_mesh *m);
lt_dist *lt_mesh_stage_group(const lt_mesh *m);
int lt_mesh_stage(const lt_mesh *m);
/* What the model of this rank's part sums over its group with (model.h). */
struct lt_tp lt_mesh_model_tp(lt_mesh *m);
/* The gradient norm of the whole model from this rank's `sq`, the squared
 * norm of its part's gradient without the tensors every rank of the
 * group holds (rank 0 of the group: with them): sqrt of the sum over the
 * tensor-parallel group. */
enum lt_status lt_mesh_norm(lt_mesh *m, double sq, double *norm);

#endif
