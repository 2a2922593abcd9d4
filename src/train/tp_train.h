/* Split models in the trainer: checkpoints of a model split over a mesh's
 * tensor-parallel groups and pipeline stages, saved as one process would
 * save the whole model (so any layout resumes them) and loaded into any
 * split; and the whole model's gradient norm from the parts'.
 *
 * Ownership: every function borrows its arguments. */
#ifndef LT_TP_TRAIN_H
#define LT_TP_TRAIN_H

#include "dist/mesh.h"
#include "model.h"
#include "optim.h"

/* What a save or a norm needs to know of the run. */
struct lt_tp_run {
	lt_dist *job;          /* the ranks that hold the model: the job's, or a stage's */
	lt_dist *pp;           /* with pipeline stages: this rank's pipeline, else NULL */
	const int *stage_start;  /* with them: each stage's first block, then the layers */
	lt_mesh *mesh;
	lt_model *model;
	lt_optim *opt;
	const size_t *ranges;  /* the ZeRO ranges over the data-parallel group */
	int stage, deterministic;
};

/* Collective over the job: the model file and the optimizer file of the
 * whole model, written into tmp by job rank 0 (tmp is unused elsewhere)
 * from the parts the ranks gather to it a tensor at a time (at ZeRO 3
 * from the ranks' ranges of the parameters: the model need not be made
 * whole first); with pipeline stages, each stage's first rank gathers its
 * stage's tensors and passes them on to job rank 0. */
enum lt_status lt_tp_save(const struct lt_tp_run *r, const char *tmp);
/* Every rank: its part of the parameters and its range of the moments
 * (o may be NULL) from checkpoint dir, whatever layout saved it (a
 * stage reads its tensors by name and leaves the others). */
enum lt_status lt_tp_load(const char *dir, lt_model *m, lt_optim *o);
/* Its range of the moments alone, for an optimizer made after the
 * parameters were loaded with o NULL (ZeRO stage 3 slices them first). */
enum lt_status lt_tp_load_moments(const char *dir, lt_model *m, lt_optim *o);
/* The whole model's gradient norm from this rank's part's, `norm` (as
 * ZeRO reduced it over the data-parallel group): the squares summed over
 * the tensor-parallel group, the tensors every rank holds counted once. */
enum lt_status lt_tp_norm(const struct lt_tp_run *r, double *norm);

#endif
