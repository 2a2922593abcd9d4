/* probe_driver: runs lt_probe_ranks on every rank of a launch (or alone)
 * and writes the table each rank got, for tests/check_probe.sh: one line
 * per rank of the job, then the links, after a line with the seconds the
 * probe took. Not a test itself.
 *
 * usage: probe_driver [--device DEV] [--threads N] [--preset NAME]
 *                     [--batch B] [--seq T] [--seconds S] [--bf16]
 *                     [--out DIR]   (DIR/rank_R.txt; default stdout) */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "clock.h"
#include "conf.h"
#include "dist/dist.h"
#include "dist/probe.h"

struct args {
	const char *device, *preset, *out;
	long threads, batch, seq;
	double seconds;
	int bf16;
};

static enum lt_status parse(int argc, char **argv, struct args *a)
{
	enum lt_status st = LT_OK;
	for (int i = 1; i < argc && st == LT_OK; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(o, "--bf16")) {
			a->bf16 = 1;
			continue;
		}
		if (!v) {
			lt_errmsg_set("%s: expected a value after it", o);
			return LT_ERR_ARG;
		}
		i++;
		if (!strcmp(o, "--device"))
			a->device = v;
		else if (!strcmp(o, "--preset"))
			a->preset = v;
		else if (!strcmp(o, "--out"))
			a->out = v;
		else if (!strcmp(o, "--threads"))
			st = lt_parse_long(o, v, 0, 4096, &a->threads);
		else if (!strcmp(o, "--batch"))
			st = lt_parse_long(o, v, 1, 4096, &a->batch);
		else if (!strcmp(o, "--seq"))
			st = lt_parse_long(o, v, 1, 1 << 20, &a->seq);
		else if (!strcmp(o, "--seconds"))
			st = lt_parse_double(o, v, 0, 60, &a->seconds);
		else {
			lt_errmsg_set("%s: unknown option", o);
			return LT_ERR_ARG;
		}
	}
	return st;
}

/* The table as the rank got it. */
static void print_table(FILE *f, const struct lt_probe_rank *all, int n,
			const struct lt_probe_links *l)
{
	for (int r = 0; r < n; r++) {
		const struct lt_probe_rank *p = &all[r];
		fprintf(f, "rank %d: node %d gpu %d threads %d cores %d mem %.6e gemm_f32 %.6e "
			"gemm_bf16 %.6e step_f32 %.6e step_bf16 %.6e points", r, p->node, p->gpu,
			p->threads, p->node_cores, p->mem, p->gemm_f32, p->gemm_bf16, p->step_f32,
			p->step_bf16);
		for (int i = 0; i < p->n_thread_points; i++)
			fprintf(f, "%s%d:%.6e", i ? "," : " ", p->thread_n[i], p->thread_flops[i]);
		fprintf(f, "%s host %s device %s\n", p->n_thread_points ? "" : " -", p->host,
			p->device);
	}
	fprintf(f, "links: within_bw %.6e within_lat %.6e between_bw %.6e between_lat %.6e "
		"allreduce_bw %.6e\n", l->within_bw, l->within_lat, l->between_bw, l->between_lat,
		l->allreduce_bw);
}

static enum lt_status run(lt_dist *d, const struct args *a)
{
	struct lt_conf conf;
	lt_conf_defaults(&conf);
	enum lt_status st = a->preset ? lt_conf_apply_preset(&conf, a->preset) : LT_OK;
	lt_backend *be = NULL;
	if (st != LT_OK)
		return st;
	lt_backend_set_local_rank(lt_dist_local_rank(d));
	if ((st = lt_backend_new(a->device, (int)a->threads, &be)) != LT_OK)
		return st;
	int n = lt_dist_size(d);
	struct lt_probe_rank *all = calloc((size_t)n, sizeof *all);
	struct lt_probe_links links;
	struct lt_probe_config pc = { .model = &conf.model, .batch = (int)a->batch,
				      .seq = (int)a->seq, .bf16 = a->bf16, .seconds = a->seconds };
	double t0 = lt_seconds();
	st = all ? lt_probe_ranks(d, be, &pc, all, &links) : LT_ERR_NOMEM;
	double took = lt_seconds() - t0;
	FILE *f = stdout;
	char path[4096];
	if (st == LT_OK && a->out) {
		snprintf(path, sizeof path, "%s/rank_%d.txt", a->out, lt_dist_rank(d));
		if (!(f = fopen(path, "w"))) {
			lt_errmsg_set("cannot write %s", path);
			st = LT_ERR_IO;
		}
	}
	if (st == LT_OK) {
		fprintf(f, "rank %d of %d: the probe took %.3f s\n", lt_dist_rank(d), n, took);
		print_table(f, all, n, &links);
		if (f != stdout && fclose(f) != 0)
			st = LT_ERR_IO;
	}
	free(all);
	lt_backend_free(be);
	return st;
}

int main(int argc, char **argv)
{
	struct args a = { .device = "cpu", .batch = 2, .seq = 64 };
	lt_dist *d = NULL;
	enum lt_status st = lt_dist_init(&argc, &argv, &d);
	if (st == LT_OK && (st = parse(argc, argv, &a)) == LT_OK)
		st = run(d, &a);
	if (st != LT_OK) {
		fprintf(stderr, "probe_driver: %s: %s\n", lt_status_str(st), lt_errmsg());
		if (d && lt_dist_size(d) > 1)
			lt_dist_abort(d, 1);
		lt_dist_finalize(d);
		return 1;
	}
	lt_dist_finalize(d);
	return 0;
}
