/* lltrain plan: the parallel layouts of the configured model and global
 * batch on the ranks of this launch (each probing its device and the
 * links) or on a described cluster, the best few with their predicted
 * step time, tokens/s and memory, why the others lost, and the launch
 * that runs the best. */
#include "config.h"

#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "conf.h"
#include "dist/dist.h"
#include "dist/probe.h"
#include "train/micro.h"
#include "train/plan.h"

#define GIB 1073741824.0
/* Seconds the ranks may wait for one another while the probe times a
 * rank (each CPU rank of a node in its turn). */
#define PROBE_TIMEOUT 600.0

struct plan_args {
	const char *devices;      /* a described cluster; NULL: probe the launch */
	const char *between;      /* its links */
	const char *within;
	const char *jsonl;        /* every layout, one JSON object a line */
	double efficiency;        /* the share of a described speed a step reaches */
	double margin;            /* memory left free on each rank */
	int top;                  /* layouts printed */
	int launch;               /* only the launch's ranks as they are */
	int probe_batch;          /* sequences the probe's step runs */
};

#define ARG(f) LT_CMD_FIELD(struct plan_args, f)

static const struct lt_cmd_option plan_options[] = {
	{ .name = "preset", .kind = LT_CMD_NOTE, .arg = "NAME", .help = "tiny, 15M, 110M, 1B or 7B" },
	{ .name = "config", .kind = LT_CMD_NOTE, .arg = "FILE",
	  .help = "an INI file of settings (repeatable)" },
	{ .name = "SECTION.KEY=VALUE", .kind = LT_CMD_NOTE,
	  .help = "any setting of lltrain.conf(5); dist.tp, dist.pp,\n"
		  "dist.zero, train.precision, train.recompute and\n"
		  "train.grad_accum given here stay fixed (the global\n"
		  "batch is train.batch x train.grad_accum sequences)" },
	{ .name = "devices", .kind = LT_CMD_TEXT, ARG(devices), .arg = "SPEC",
	  .help = "plan for a described cluster instead of this launch:\n"
		  "e.g. 8x24GiB@100TFLOPs,4xcpu@1.5TFLOPs (see lltrain-plan(1))" },
	{ .name = "link-between", .kind = LT_CMD_TEXT, ARG(between), .arg = "BW[@LAT]",
	  .help = "the described nodes' network (default 10Gbit@50us)" },
	{ .name = "link-within", .kind = LT_CMD_TEXT, ARG(within), .arg = "BW[@LAT]",
	  .help = "between the ranks of a described node (default 16GB/s@5us)" },
	{ .name = "efficiency", .kind = LT_CMD_REAL, ARG(efficiency), .min = 0.01, .max = 1, .arg = "F",
	  .help = "the share of a described GEMM speed a training step\n"
		  "reaches (default 0.5)" },
	{ .name = "margin", .kind = LT_CMD_REAL, ARG(margin), .min = 0, .max = 0.9, .arg = "F",
	  .help = "the share of each rank's memory left free (default 0.1)" },
	{ .name = "top", .kind = LT_CMD_INT, ARG(top), .min = 1, .max = 1000, .arg = "N",
	  .help = "layouts printed (default 5)" },
	{ .name = "launch", .kind = LT_CMD_FLAG, ARG(launch),
	  .help = "only layouts of this launch's ranks as they are (as\n"
		  "train --plan auto chooses), not other ranks per node" },
	{ .name = "probe-batch", .kind = LT_CMD_INT, ARG(probe_batch), .min = 1, .max = 4096, .arg = "N",
	  .help = "sequences of train.seq the probe's step runs (default 1)" },
	{ .name = "jsonl", .kind = LT_CMD_TEXT, ARG(jsonl), .arg = "FILE",
	  .help = "write every layout, with its parts, one JSON object a line" },
	{ .name = NULL },
};

static const struct lt_cmd_usage plan_usage = {
	.cmd = "plan",
	.head = "usage: [mpiexec -n N] lltrain plan [--preset NAME] [--config FILE]\n"
		"                    [--SECTION.KEY=VALUE] [--devices SPEC] [OPTIONS]\n\n"
		"Finds the parallel layouts (data x tensor x pipeline ranks, ZeRO stage,\n"
		"precision, recompute, micro-batch and accumulation, ranks x threads on\n"
		"CPU nodes) that train the configured model at its global batch\n"
		"(train.batch x train.grad_accum sequences) within each rank's memory,\n"
		"and ranks them by a model of the step's time. Without --devices every\n"
		"rank of the launch first measures its device and the links.\n\n",
	.options = plan_options,
	.column = 27,
	.tail = "\nLater settings win: defaults, --preset, --config files, --SECTION.KEY.\n",
};

/* The planner's keys, each set to a value no key takes: after the
 * configuration's options apply over it, the ones still holding it were
 * not given. */
#define UNSET (-12345)

static void mark_unset(struct lt_conf *c)
{
	c->dist.tp = c->dist.pp = c->dist.zero = UNSET;
	c->train.precision = (enum lt_precision)UNSET;
	c->train.recompute = (enum lt_recompute)UNSET;
	c->train.batch = c->train.grad_accum = UNSET;
	snprintf(c->dist.pp_layers, sizeof c->dist.pp_layers, "unset");
}

void lt_cmd_plan_fixed(int argc, char **args, struct lt_plan_limits *lim)
{
	struct lt_conf c;
	char **own = malloc((size_t)(argc + 1) * sizeof *own);
	int n = 0;
	if (!own)
		return;
	for (int i = 0; i < argc; i++) {
		if (i > 0 && !strcmp(args[i], "--preset") && i + 1 < argc) {
			i++;
			continue;
		}
		if (i == 0 || strncmp(args[i], "--preset=", 9))
			own[n++] = args[i];
	}
	own[n] = NULL;
	lt_conf_defaults(&c);
	mark_unset(&c);
	if (lt_conf_apply_args(&c, &n, own) == LT_OK) {
		lim->fixed_tp = c.dist.tp != UNSET;
		lim->fixed_pp = c.dist.pp != UNSET;
		lim->fixed_zero = c.dist.zero != UNSET;
		lim->fixed_precision = (int)c.train.precision != UNSET;
		lim->fixed_recompute = (int)c.train.recompute != UNSET;
		lim->fixed_batch = c.train.grad_accum != UNSET || c.train.micro_batch > 0;
		lim->fixed_pp_layers = strcmp(c.dist.pp_layers, "unset") != 0;
		lim->given_batch = lim->fixed_batch || c.train.batch != UNSET;
	}
	free(own);
}

/* "dp 2 x tp 1 x pp 2, ZeRO 1, bf16, recompute, 4 x 8" and the rest. */
static void describe(const struct lt_plan_layout *l, char *buf, size_t cap)
{
	char cpu[48] = "";
	if (l->cpu_ranks_per_node)
		snprintf(cpu, sizeof cpu, ", cpu %dx%d", l->cpu_ranks_per_node, l->cpu_threads);
	snprintf(buf, cap, "dp %d x tp %d x pp %d, ZeRO %d, %s%s, micro %d x %d%s%s%s",
		 l->dp, l->tp, l->pp, l->zero, l->precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
		 l->recompute ? ", recompute" : "", l->micro, l->accum, cpu,
		 l->gpus_only ? ", GPUs only" : "", l->balance_auto ? ", balance auto" : "");
}

/* The train options that run layout l. */
static void train_options(const struct lt_plan_layout *l, char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "--dist.tp=%d --dist.pp=%d --dist.zero=%d --train.precision=%s "
			 "--train.recompute=%s --train.batch=%d --train.grad_accum=%d",
			 l->tp, l->pp, l->zero, l->precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
			 l->recompute ? "block" : "none", l->micro * l->dp, l->accum);
	if (l->balance_auto && n > 0 && (size_t)n < cap)
		n += snprintf(buf + n, cap - (size_t)n, " --dist.balance=auto");
	if (l->pp_layers[0] && n > 0 && (size_t)n < cap)
		n += snprintf(buf + n, cap - (size_t)n, " --dist.pp_layers=%s", l->pp_layers);
	if (l->cpu_threads && n > 0 && (size_t)n < cap)
		snprintf(buf + n, cap - (size_t)n, " --run.threads=%d", l->cpu_threads);
}

static void print_layout(int i, const struct lt_plan_layout *l)
{
	char what[160];
	describe(l, what, sizeof what);
	printf("%2d. %s\n    step %.3f s, %.0f tokens/s; fullest rank %d: %.2f of %.2f GiB\n"
	       "    compute %.3f s, tensor-parallel sums %.3f s, bubble %.3f s, stage messages "
	       "%.3f s, ZeRO exchange %.3f s, AdamW %.3f s\n", i + 1, what, l->step_s,
	       l->tokens_per_s, l->mem_rank, l->mem_need / GIB, l->mem_have / GIB, l->compute_s,
	       l->tp_s, l->bubble_s, l->p2p_s, l->exchange_s, l->optim_s);
}

/* Why the layouts after the best lost: a few of each kind, then counts. */
static void print_losers(const struct lt_plan_result *r, int top, double margin)
{
	char what[160];
	size_t shown = 0;
	if (r->n_fit > (size_t)top) {
		printf("\nslower (of %zu that fit):\n", r->n_fit);
		for (size_t i = (size_t)top; i < r->n_fit && shown < 3; i++, shown++) {
			describe(&r->v[i], what, sizeof what);
			printf("  %s: slower by %.0f%%\n", what,
			       100 * (r->v[i].step_s / r->v[0].step_s - 1));
		}
	}
	if (r->n > r->n_fit) {
		printf("\ndo not fit (%zu layouts), the closest:\n", r->n - r->n_fit);
		for (size_t i = r->n_fit, k = 0; i < r->n && k < 3; i++, k++) {
			const struct lt_plan_layout *l = &r->v[i];
			describe(l, what, sizeof what);
			printf("  %s: rank %d needs %.2f GiB of its %.2f GiB less %.0f%% (short by "
			       "%.2f GiB)\n", what, l->mem_rank, l->mem_need / GIB, l->mem_have / GIB,
			       100 * margin, (l->mem_need - l->mem_have * (1 - margin)) / GIB);
		}
	}
}

/* The launch that runs layout l: "mpiexec -n N [-ppn R] lltrain train ...". */
static void print_launch(const struct lt_plan_layout *l, const struct lt_plan_cluster *c)
{
	char opts[512];
	train_options(l, opts, sizeof opts);
	printf("\nrun it with:\n  mpiexec -n %d", l->ranks);
	if (l->cpu_ranks_per_node && c->n_nodes > 1)
		printf(" -ppn %d", l->cpu_ranks_per_node);
	printf(" lltrain train %s\n", opts);
	if (l->cpu_ranks_per_node)
		printf("  (CPU nodes: %d ranks of %d threads each%s)\n", l->cpu_ranks_per_node,
		       l->cpu_threads, c->n_nodes > 1 ? "; -ppn is MPICH's, Open MPI's is "
		       "--npernode" : "");
}

static enum lt_status write_jsonl(const char *path, const struct lt_plan_result *r)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		lt_errmsg_set("%s: cannot create the file", path);
		return LT_ERR_IO;
	}
	for (size_t i = 0; i < r->n; i++) {
		const struct lt_plan_layout *l = &r->v[i];
		fprintf(f, "{\"rank\":%zu,\"fits\":%s,\"ranks\":%d,\"dp\":%d,\"tp\":%d,\"pp\":%d,"
			"\"zero\":%d,\"precision\":\"%s\",\"recompute\":%s,\"micro\":%d,\"accum\":%d,"
			"\"cpu_ranks_per_node\":%d,\"cpu_threads\":%d,\"gpus_only\":%s,"
			"\"balance_auto\":%s,\"pp_layers\":\"%s\",\"mem_need\":%.0f,\"mem_have\":%.0f,"
			"\"mem_rank\":%d,\"step_s\":%.6g,\"tokens_per_s\":%.6g,\"compute_s\":%.6g,"
			"\"tp_s\":%.6g,\"bubble_s\":%.6g,\"p2p_s\":%.6g,\"exchange_s\":%.6g,"
			"\"optim_s\":%.6g}\n", i, l->fits ? "true" : "false", l->ranks, l->dp, l->tp,
			l->pp, l->zero, l->precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
			l->recompute ? "true" : "false", l->micro, l->accum, l->cpu_ranks_per_node,
			l->cpu_threads, l->gpus_only ? "true" : "false",
			l->balance_auto ? "true" : "false", l->pp_layers, l->mem_need, l->mem_have,
			l->mem_rank, l->step_s, l->tokens_per_s, l->compute_s, l->tp_s, l->bubble_s,
			l->p2p_s, l->exchange_s, l->optim_s);
	}
	if (fclose(f) != 0) {
		lt_errmsg_set("%s: cannot write the file", path);
		return LT_ERR_IO;
	}
	return LT_OK;
}

/* The cluster of --devices and its links. */
static enum lt_status describe_cluster(const struct plan_args *a, struct lt_plan_cluster *c)
{
	enum lt_status st = lt_plan_cluster_parse(a->devices, a->efficiency, c);
	if (st == LT_OK && a->between)
		st = lt_plan_link_parse(a->between, &c->between_bw, &c->between_lat);
	if (st == LT_OK && a->within)
		st = lt_plan_link_parse(a->within, &c->within_bw, &c->within_lat);
	return st;
}

/* What each rank of the launch measured, and the links (rank 0 prints). */
static void print_probe(const struct lt_probe_rank *r, int n, const struct lt_probe_links *k)
{
	printf("ranks of this launch (forward and backward):\n");
	for (int i = 0; i < n; i++)
		printf("  rank %d on %s (node %d): %s, %d threads, %.2f GiB free; gemm %.3f TFLOP/s; "
		       "a block %.3f, the head %.3f TFLOP/s, %.1f ms a micro-batch%s\n", i, r[i].host,
		       r[i].node, r[i].device, r[i].threads, r[i].mem / GIB, r[i].gemm_f32 / 1e12,
		       r[i].step_f32 / 1e12, r[i].head_f32 / 1e12, r[i].micro_s * 1e3,
		       r[i].gpu ? " (GPU)" : "");
	for (int i = 0; i < n; i++) {
		if (r[i].n_thread_points < 2)
			continue;
		printf("  rank %d's block at", i);
		for (int j = 0; j < r[i].n_thread_points; j++)
			printf("%s %d thread%s %.3f", j ? "," : "", r[i].thread_n[j],
			       r[i].thread_n[j] > 1 ? "s" : "", r[i].thread_flops[j] / 1e12);
		printf(" TFLOP/s\n");
	}
	if (n > 1)
		printf("links: within a node %.2f GB/s, %.1f us; between nodes %.2f GB/s, %.1f us; "
		       "all-reduce %.2f GB/s\n", k->within_bw / 1e9, k->within_lat * 1e6,
		       k->between_bw / 1e9, k->between_lat * 1e6, k->allreduce_bw / 1e9);
}

/* The launch's ranks probe themselves; rank 0 gets the cluster. */
static enum lt_status probe_cluster(lt_dist *d, const struct lt_conf *conf,
				    const struct plan_args *a, struct lt_plan_cluster *c)
{
	lt_backend *be;
	int n = lt_dist_size(d);
	struct lt_probe_rank *r = calloc((size_t)n, sizeof *r);
	struct lt_probe_links links;
	struct lt_probe_config pc = { &conf->model, a->probe_batch, conf->train.seq, 1, 0 };
	enum lt_status st = r ? lt_cmd_backend("plan", conf->run.device, conf->run.threads, &be)
			      : LT_ERR_NOMEM;
	if (st == LT_OK) {
		/* a turn of the probe may take longer than a collective may stall */
		lt_dist_set_timeout(d, fmax(conf->dist.comm_timeout, PROBE_TIMEOUT));
		st = lt_probe_ranks(d, be, &pc, r, &links);
		lt_dist_set_timeout(d, conf->dist.comm_timeout);
		lt_backend_free(be);
	}
	if (st == LT_OK)
		st = lt_plan_cluster_from_probe(r, n, &links, c);
	if (st == LT_OK && lt_dist_rank(d) == 0)
		print_probe(r, n, &links);
	free(r);
	return st;
}

/* The head of the report: the model, the batch, what was searched. */
static void print_head(const struct lt_conf *conf, const struct lt_plan_result *r,
		       const struct lt_plan_limits *lim)
{
	const char *preset = lt_conf_preset_of(conf);
	printf("\nmodel %s: %.1fM parameters; global batch %ld sequences of %d tokens\n",
	       preset ? preset : "(configured)", lt_model_config_params(&conf->model) / 1e6,
	       r->global_seqs, conf->train.seq);
	printf("%zu layouts, %zu fit with %.0f%% of each rank's memory left free%s%s%s%s%s%s\n",
	       r->n, r->n_fit, 100 * lim->margin, lim->fixed_tp ? "; tp fixed" : "",
	       lim->fixed_pp ? "; pp fixed" : "", lim->fixed_zero ? "; ZeRO fixed" : "",
	       lim->fixed_precision ? "; precision fixed" : "",
	       lim->fixed_recompute ? "; recompute fixed" : "",
	       lim->fixed_batch ? "; micro-batch fixed" : "");
}

/* The search and its report (rank 0); 1 when nothing fits. */
static int plan_report(const struct lt_conf *conf, const struct plan_args *a,
		       const struct lt_plan_cluster *c, const struct lt_plan_limits *lim)
{
	struct lt_plan_result r;
	enum lt_status st = lt_plan_search(conf, c, lim, &r);
	if (st == LT_OK && a->jsonl)
		st = write_jsonl(a->jsonl, &r);
	if (st != LT_OK) {
		lt_report("plan", st);
		return 1;
	}
	int rc = 0;
	print_head(conf, &r, lim);
	if (!r.n) {
		fprintf(stderr, "lltrain plan: no layout of these ranks can train this model "
			"(every one is refused by the configuration: see lltrain-plan(1))\n");
		rc = 1;
	} else if (!r.n_fit) {
		const struct lt_plan_layout *l = &r.v[0];
		fprintf(stderr, "lltrain plan: no layout fits: the closest needs %.2f GiB on rank %d, "
			"which has %.2f GiB (%.0f%% kept free): short by %.2f GiB\n",
			l->mem_need / GIB, l->mem_rank, l->mem_have / GIB, 100 * a->margin,
			(l->mem_need - l->mem_have * (1 - a->margin)) / GIB);
		rc = 1;
	} else {
		printf("\nbest:\n");
		for (size_t i = 0; i < r.n_fit && i < (size_t)a->top; i++)
			print_layout((int)i, &r.v[i]);
		print_losers(&r, a->top, a->margin);
		print_launch(&r.v[0], c);
	}
	lt_plan_result_free(&r);
	return rc;
}

static int plan_main(lt_dist *d, int argc, char **argv)
{
	struct lt_conf conf;
	struct plan_args a = { .efficiency = 0.5, .margin = 0.1, .top = 5, .probe_batch = 1 };
	struct lt_plan_limits lim = { 0 };
	struct lt_plan_cluster *c = calloc(1, sizeof *c);
	char **copy = malloc((size_t)(argc + 1) * sizeof *copy);
	int rc = c && copy ? 0 : 1;
	if (rc) {
		fprintf(stderr, "lltrain plan: out of memory\n");
		free(c);
		free(copy);
		return 1;
	} else {
		memcpy(copy, argv, (size_t)(argc + 1) * sizeof *argv);
		lt_cmd_plan_fixed(argc, copy, &lim);
	}
	if (!rc && (rc = lt_cmd_preset("plan", NULL, &conf, &argc, argv)) == 0)
		rc = lt_cmd_parse(argc, argv, &plan_usage, &a, &conf);  /* -1: go on */
	free(copy);
	if (rc >= 0) {
		free(c);
		return rc;
	}
	rc = 0;
	lt_micro_batch_apply(&conf);
	lim.margin = a.margin;
	lim.fixed_launch = a.launch;
	lt_plan_limits_of(&conf, &lim);
	enum lt_status st = lt_model_config_check(&conf.model);
	if (st == LT_OK)
		st = a.devices ? describe_cluster(&a, c) : probe_cluster(d, &conf, &a, c);
	if (st != LT_OK) {
		lt_report("plan", st);
		rc = a.devices && st == LT_ERR_CONFIG ? 2 : 1;
	} else if (lt_dist_rank(d) == 0) {
		rc = plan_report(&conf, &a, c, &lim);
	}
	free(c);
	return rc;
}

int lt_cmd_plan(int argc, char **argv)
{
	lt_dist *d;
	enum lt_status st = lt_dist_init(&argc, &argv, &d);
	if (st != LT_OK) {
		lt_report("plan", st);
		return 1;
	}
	int rc = plan_main(d, argc, argv);
	lt_dist_finalize(d);
	return rc;
}

/* run.mem_limit over the probed ranks: each may fill at most `limit`
 * bytes (0: what it has). */
static void limit_memory(struct lt_plan_cluster *c, double limit)
{
	for (int i = 0; limit > 0 && i < c->n_nodes; i++) {
		struct lt_plan_node *n = &c->node[i];
		n->gpu_mem = fmin(n->gpu_mem, limit);
		n->cpu_mem = fmin(n->cpu_mem, limit * (n->cpu_ranks > 0 ? n->cpu_ranks : 1));
	}
}

/* Into hint[cap] ("" for none): a line saying which other launch of the
 * same nodes (the GPUs alone, or CPU nodes as more ranks of fewer
 * threads) lim's search of cluster c finds at least 1.25x faster than
 * `best`, the fastest layout of the launch as it is. */
static void better_launch(const struct lt_conf *conf, const struct lt_plan_cluster *c,
			  const struct lt_plan_limits *lim, const struct lt_plan_layout *best,
			  char *hint, size_t cap)
{
	struct lt_plan_limits any = *lim;
	struct lt_plan_result r;
	hint[0] = '\0';
	any.fixed_launch = 0;
	if (lt_plan_search(conf, c, &any, &r) == LT_OK && r.n_fit &&
	    r.v[0].step_s * 1.25 < best->step_s) {
		char what[160], opts[512];
		describe(&r.v[0], what, sizeof what);
		train_options(&r.v[0], opts, sizeof opts);
		snprintf(hint, cap, "plan auto: another launch of these nodes would step about %.1fx "
			 "faster (%s; predicted %.3f s): mpiexec -n %d lltrain train %s (see "
			 "lltrain-plan(1))", best->step_s / r.v[0].step_s, what, r.v[0].step_s,
			 r.v[0].ranks, opts);
	}
	lt_plan_result_free(&r);
}

enum lt_status lt_cmd_plan_auto(lt_dist *d, const struct lt_plan_limits *fixed,
				struct lt_conf *conf)
{
	char hint[1024] = "";
	struct plan_args a = { .probe_batch = 1 };
	struct lt_plan_limits lim = *fixed;
	struct lt_plan_layout best = { 0 };
	struct lt_plan_cluster *c = calloc(1, sizeof *c);
	struct { int found; char why[400]; } said = { 0, "" };
	const char *kept = conf->dist.deterministic ? " (--deterministic keeps dist.tp and "
				"train.precision as configured)" : "";
	/* a resumed run's checkpoint names its own layout's stages: split anew */
	if (!fixed->fixed_pp_layers)
		conf->dist.pp_layers[0] = 0;
	enum lt_status st = c ? probe_cluster(d, conf, &a, c) : LT_ERR_NOMEM;
	if (st == LT_OK)
		limit_memory(c, conf->run.mem_limit * GIB);
	lim.fixed_launch = 1;
	lim.margin = 0.1;
	if (st == LT_OK && conf->dist.deterministic && c->other_device) {
		/* which rank sums a sequence, or holds a block, changes its last
		 * bits, and timings choose that */
		snprintf(said.why, sizeof said.why, "--plan auto with --deterministic: ranks 0 and "
			 "%d compute on different devices, whose sums differ in their last bits, so a "
			 "layout chosen from their timings would not repeat; give the layout "
			 "(--dist.pp, --dist.balance) without --plan auto", c->other_device);
	} else if (st == LT_OK && lt_dist_rank(d) == 0) {
		struct lt_plan_result r;
		if ((st = lt_plan_search(conf, c, &lim, &r)) == LT_OK && r.n_fit) {
			best = r.v[0];
			said.found = 1;
			better_launch(conf, c, &lim, &best, hint, sizeof hint);
		} else if (st == LT_OK && r.n) {
			snprintf(said.why, sizeof said.why, "--plan auto: no layout of these %d ranks "
				 "fits: the closest needs %.2f GiB on rank %d, which has %.2f GiB%s",
				 r.v[0].ranks, r.v[0].mem_need / GIB, r.v[0].mem_rank,
				 r.v[0].mem_have / GIB, kept);
		} else if (st == LT_OK) {
			snprintf(said.why, sizeof said.why, "--plan auto: the configuration allows no "
				 "layout of these ranks%s (see lltrain plan)", kept);
		}
		lt_plan_result_free(&r);
	}
	free(c);
	if (st != LT_OK)
		return st;
	if ((st = lt_dist_bcast(d, &said, sizeof said, 0, "the plan")) != LT_OK ||
	    (st = lt_dist_bcast(d, &best, sizeof best, 0, "the plan")) != LT_OK)
		return st;
	if (!said.found) {
		lt_errmsg_set("%s", said.why);
		return LT_ERR_CONFIG;
	}
	char what[160];
	describe(&best, what, sizeof what);
	if (lt_dist_rank(d) == 0)
		printf("plan auto: %s; predicted step %.3f s, %.0f tokens/s\n%s%s", what, best.step_s,
		       best.tokens_per_s, hint, hint[0] ? "\n" : "");
	lt_plan_apply(&best, conf);
	return LT_OK;
}

void lt_cmd_plan_hint(const struct lt_conf *conf, const struct lt_plan_limits *fixed)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	struct lt_plan_limits lim = *fixed;
	struct lt_plan_cluster *c = calloc(1, sizeof *c);
	struct lt_plan_result r = { 0 };
	char node[96];
	double mem = lt_probe_host_memory();
	/* one CPU node, described; its speed cancels out of the comparison */
	snprintf(node, sizeof node, "cpu%ld:%.0fMB@1TFLOPs", cores, mem / 1e6);
	if (!c || cores < LT_PLAN_HINT_CORES || strcmp(conf->run.device, "cpu") ||
	    (conf->run.threads && conf->run.threads < cores) || !(mem >= 1e6) ||
	    lt_plan_cluster_parse(node, 1, c) != LT_OK) {
		free(c);
		return;
	}
	lim.margin = 0.1;
	lim.fixed_tp = lim.fixed_pp = lim.fixed_zero = lim.fixed_precision = 1;
	lim.fixed_recompute = lim.fixed_batch = 1;
	if (lt_plan_search(conf, c, &lim, &r) == LT_OK && r.n_fit) {
		const struct lt_plan_layout *now = NULL, *best = &r.v[0];
		for (size_t i = 0; i < r.n_fit && !now; i++)
			if (r.v[i].cpu_ranks_per_node == 1 && r.v[i].tp == 1 && r.v[i].pp == 1)
				now = &r.v[i];
		if (now && best->cpu_ranks_per_node > 1 && best->step_s < 0.8 * now->step_s) {
			char opts[512];
			train_options(best, opts, sizeof opts);
			printf("lltrain train: this node's %ld cores would train about %.1fx faster as %d "
			       "ranks of %d threads: mpiexec -n %d lltrain train %s (and the run's other "
			       "options; see lltrain-plan(1))\n", cores, now->step_s / best->step_s,
			       best->cpu_ranks_per_node, best->cpu_threads, best->ranks, opts);
		}
	}
	lt_plan_result_free(&r);
	free(c);
}
