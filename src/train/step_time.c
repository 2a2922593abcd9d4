/* A step's time accounting: the clock and lt_dist's wait counters, taken
 * at the step's marks; and the memory at its end. */
#include "config.h"
#include "train/step_time.h"

#include <math.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"

void lt_step_time_start(struct lt_step_time *t, lt_dist *d)
{
	t->dist = d;
	lt_dist_take_wait_seconds(d);
	lt_dist_take_barrier_seconds(d);
}

void lt_step_time_begin(struct lt_step_time *t)
{
	t->mark = lt_seconds();
	t->loss_wait_s = t->update_s = 0;
}

void lt_step_time_passes_done(struct lt_step_time *t)
{
	t->compute_s = lt_seconds() - t->mark;
	t->comm_s = lt_dist_take_wait_seconds(t->dist);
	t->sync_s = lt_dist_take_barrier_seconds(t->dist);
	t->compute_s -= t->comm_s + t->sync_s;
}

void lt_step_time_agreed(struct lt_step_time *t)
{
	t->sync_s += lt_dist_take_wait_seconds(t->dist);
}

void lt_step_time_reduced(struct lt_step_time *t)
{
	t->comm_s += lt_dist_take_wait_seconds(t->dist);
}

void lt_step_time_update_begin(struct lt_step_time *t)
{
	t->loss_wait_s = lt_dist_take_wait_seconds(t->dist);
	t->sync_s += lt_dist_take_barrier_seconds(t->dist);
	t->mark = lt_seconds();
}

void lt_step_time_update_done(struct lt_step_time *t)
{
	t->update_s = lt_seconds() - t->mark;
}

void lt_step_time_end(struct lt_step_time *t, struct lt_step_metrics *sm)
{
	double waited = lt_dist_take_wait_seconds(t->dist);
	double barriers = lt_dist_take_barrier_seconds(t->dist);
	sm->comm_s = t->comm_s + t->loss_wait_s + waited;
	sm->sync_s = t->sync_s + barriers;
	sm->reduce_s = t->comm_s;
	sm->compute_s = t->compute_s;
	sm->update_s = fmax(t->update_s - waited - barriers, 0);
}

void lt_step_time_between(struct lt_step_time *t)
{
	lt_dist_take_wait_seconds(t->dist);
}

/* The resident set's bytes now, from /proc/self/statm; 0 where it
 * cannot be read. */
static size_t resident_bytes(void)
{
	unsigned long pages = 0, resident = 0;
	long page = sysconf(_SC_PAGESIZE);
	FILE *f = fopen("/proc/self/statm", "r");
	int got = f ? fscanf(f, "%lu %lu", &pages, &resident) : 0;
	if (f)
		fclose(f);
	return got == 2 && page > 0 ? (size_t)resident * (size_t)page : 0;
}

void lt_step_time_memory(lt_backend *be, struct lt_step_metrics *sm)
{
	struct rusage ru;
	sm->mem_bytes = sm->mem_peak_bytes = 0;
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &sm->mem_bytes, &sm->mem_peak_bytes);
	sm->rss_bytes = resident_bytes();
	/* Linux counts ru_maxrss in KiB, and updates it later than statm */
	sm->rss_peak_bytes = getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
	if (sm->rss_peak_bytes < sm->rss_bytes)
		sm->rss_peak_bytes = sm->rss_bytes;
}
