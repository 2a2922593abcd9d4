/* What a run says of each of its ranks: where it runs and its share of a
 * step, the memory its training state holds, and at the end the peak of
 * its backend's buffers. Each is collective over the job's ranks; the
 * lead (job rank 0) prints.
 *
 * Ownership: every function borrows its arguments. */
#ifndef LT_RANK_REPORT_H
#define LT_RANK_REPORT_H

#include <stddef.h>

#include "backend.h"
#include "dist/dist.h"
#include "io/metrics.h"

/* The job's layout: tp ranks a tensor-parallel group (1: none), pp
 * pipeline stages of consecutive ranks (1: none), the data-parallel rank
 * of job rank r being (r % (ranks / pp)) / tp. */
struct lt_rank_layout {
	lt_dist *job;
	int lead, tp, pp;
};

/* One line a rank: host, process, device, its place in the mesh, and its
 * data-parallel rank's rows of per_step sequences a step. */
enum lt_status lt_rank_report_list(const struct lt_rank_layout *l, lt_backend *be,
				   const size_t *rows, int per_step);
/* One line: each rank's `state` bytes of parameters, gradients and
 * moments (the backend's) and `exchange` bytes of exchange buffers
 * (host), under ZeRO `stage` with a gradient buffer of grads of params
 * elements; then `how` the ranks exchange, when they are several; then
 * each rank's `setup` bytes, the peak of the backend's buffers by the end
 * of the setup (0: the backend cannot say, and no line). */
enum lt_status lt_rank_report_memory(const struct lt_rank_layout *l, int stage, size_t state,
				     size_t setup,
				     size_t exchange, size_t grads, size_t params,
				     const char *how);
/* One line (through mt) of each rank's peak of the backend's buffers. */
enum lt_status lt_rank_report_peaks(const struct lt_rank_layout *l, lt_backend *be,
				    lt_metrics *mt);

#endif
