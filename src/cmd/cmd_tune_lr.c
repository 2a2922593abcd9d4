/* lltrain tune-lr: a learning-rate range test. The configured run (model,
 * layout, data) trains from its first state while the rate rises
 * exponentially, until the loss diverges or the steps are done; the
 * command prints the smoothed loss against the rate as a text plot, writes
 * the curve as JSON Lines and suggests a rate. Nothing of the run
 * directory but the curve is written (the trainer's range-test hook,
 * struct lt_trainer_probe). train.lr = auto runs the same test before a
 * new run (lt_cmd_tune_lr_auto). */
#include "config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "conf.h"
#include "dist/dist.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "train/lr_find.h"
#include "train/run_files.h"
#include "train/trainer.h"

/* The plot's size in characters: columns of log10(lr), rows of loss. */
#define PLOT_COLS 60
#define PLOT_ROWS 15
/* Progress lines during the test. */
#define PROGRESS_LINES 10

struct tune_args {
	double min_lr, max_lr, smooth, diverge;
	int steps;
	const char *out;     /* the curve's file; NULL: RUN_DIR/lr_find.jsonl */
	const char *resume;  /* NULL, "auto" or a checkpoint or run directory */
};

#define ARG(f) LT_CMD_FIELD(struct tune_args, f)

static const struct lt_cmd_option tune_options[] = {
	/* taken with the configuration before getopt_long runs */
	{ .name = "preset", .kind = LT_CMD_NOTE, .arg = "NAME",
	  .help = "tiny, 15M, 110M, 1B or 7B (default tiny)" },
	{ .name = "config", .kind = LT_CMD_NOTE, .arg = "FILE",
	  .help = "an INI file of settings (repeatable)" },
	{ .name = "SECTION.KEY=VALUE", .kind = LT_CMD_NOTE,
	  .help = "any setting of lltrain.conf(5), and train's short forms\n"
		  "(--zero, --tp, --pp, --init, ...; see lltrain train --help)" },
	/* the command's own */
	{ .name = "min-lr", .kind = LT_CMD_REAL, ARG(min_lr), .min = 0, .max = 10, .arg = "LR",
	  .help = "the first step's rate (default 1e-6)" },
	{ .name = "max-lr", .kind = LT_CMD_REAL, ARG(max_lr), .min = 0, .max = 10, .arg = "LR",
	  .help = "the last step's rate (default 1)" },
	{ .name = "steps", .kind = LT_CMD_INT, ARG(steps), .min = 10, .max = 1000000, .arg = "N",
	  .help = "steps over which the rate rises, by the same factor\n"
		  "each step (default 200)" },
	{ .name = "smooth", .kind = LT_CMD_REAL, ARG(smooth), .min = 0, .max = 1, .arg = "W",
	  .help = "each loss's weight in the smoothed loss, in (0, 1)\n(default 0.05)" },
	{ .name = "diverge", .kind = LT_CMD_REAL, ARG(diverge), .min = 1, .max = 1e6, .arg = "K",
	  .help = "stop once the smoothed loss passes K times its least\n"
		  "(K > 1, default 4), or a loss is not finite" },
	{ .name = "out", .kind = LT_CMD_TEXT, ARG(out), .arg = "FILE",
	  .help = "the curve as JSON Lines (default RUN_DIR/lr_find.jsonl)" },
	{ .name = "resume", .kind = LT_CMD_TEXT, ARG(resume), .arg = "auto|PATH",
	  .help = "start from the newest valid checkpoint of the run\n"
		  "directory (auto), or from a checkpoint directory, and\n"
		  "its config (default: the config's fresh initialisation)" },
	{ .name = NULL },
};

/* What a single option's range cannot say; 0, or 2 after saying why. */
static int check_tune_args(const void *args)
{
	const struct tune_args *a = args;
	if (!(a->min_lr > 0)) {
		fprintf(stderr, "lltrain tune-lr: --min-lr %g: expected a rate above 0\n", a->min_lr);
		return 2;
	}
	if (!(a->max_lr > a->min_lr)) {
		fprintf(stderr, "lltrain tune-lr: --max-lr %g: expected a rate above --min-lr %g\n",
			a->max_lr, a->min_lr);
		return 2;
	}
	if (!(a->smooth > 0 && a->smooth < 1)) {
		fprintf(stderr, "lltrain tune-lr: --smooth %g: expected a weight in (0, 1)\n",
			a->smooth);
		return 2;
	}
	if (!(a->diverge > 1)) {
		fprintf(stderr, "lltrain tune-lr: --diverge %g: expected a factor above 1\n",
			a->diverge);
		return 2;
	}
	return 0;
}

static const struct lt_cmd_operands corpus_operands = { 0, INT_MAX, "corpus files" };

static const struct lt_cmd_usage tune_usage = {
	.cmd = "tune-lr",
	.head = "usage: lltrain tune-lr [--preset NAME] [--config FILE] [--SECTION.KEY=VALUE]\n"
		"                       [--min-lr LR] [--max-lr LR] [--steps N] [--smooth W]\n"
		"                       [--diverge K] [--out FILE] [--resume auto|PATH]\n"
		"                       [CORPUS_FILE_OR_DIR ...]\n\n"
		"A learning-rate range test: trains the configured run (model, layout, data,\n"
		"as lltrain train would, under mpiexec too) from its first state while the\n"
		"rate rises exponentially from --min-lr to --max-lr, stops when the loss\n"
		"diverges, plots the smoothed loss against the rate and suggests the rate\n"
		"where it fell fastest. Writes only the curve: no config.ini, metrics or\n"
		"checkpoints, in a run directory that may hold another run's.\n\n",
	.options = tune_options,
	.column = 25,
	.tail = "\nLater settings win: defaults, --preset, --config files, --SECTION.KEY.\n"
		"train.lr = auto (lltrain train) runs the same test with the defaults first.\n",
	.check = check_tune_args,
	.operands = &corpus_operands,
};

/* ------------------------------------------------------------- the plot */

/* The plot's vertical range: from the least smoothed loss to a quarter
 * above the highest before it (later points above are drawn at the top). */
static void loss_range(const struct lt_lr_find_point *v, int n, double *lo, double *hi)
{
	int least = -1;
	for (int i = 0; i < n && isfinite(v[i].smoothed); i++)
		if (least < 0 || v[i].smoothed < v[least].smoothed)
			least = i;
	*lo = least >= 0 ? v[least].smoothed : 0;
	*hi = *lo;
	for (int i = 0; i <= least; i++)
		*hi = fmax(*hi, v[i].smoothed);
	*hi = *hi > *lo ? *hi + 0.25 * (*hi - *lo) : *lo + 1;
}

/* The column of rate lr: log10 between those of lo and hi. */
static int column_of(double lr, double lo, double hi)
{
	double x = (log10(lr) - log10(lo)) / (log10(hi) - log10(lo));
	int c = (int)lround(x * (PLOT_COLS - 1));
	return c < 0 ? 0 : c >= PLOT_COLS ? PLOT_COLS - 1 : c;
}

/* A tick on the axis at rate lr, and its label where there is room. */
static void tick(char *axis, char *labels, size_t cap, int *free_from, double lr, double lo,
		 double hi)
{
	char text[16];
	int c = column_of(lr, lo, hi), len = snprintf(text, sizeof text, "%.0e", lr);
	axis[c] = '+';
	if (c >= *free_from && (size_t)(c + len) < cap) {
		memcpy(labels + c, text, (size_t)len);
		*free_from = c + len + 1;
	}
}

/* The axis under the plot, with a tick and a label at each power of ten
 * (at both ends where the range holds none). */
static void print_axis(double min_lr, double max_lr)
{
	char axis[PLOT_COLS + 1], labels[PLOT_COLS + 16];
	int e0 = (int)ceil(log10(min_lr) - 1e-9), e1 = (int)floor(log10(max_lr) + 1e-9);
	int free_from = 0;
	memset(axis, '-', PLOT_COLS);
	axis[PLOT_COLS] = '\0';
	memset(labels, ' ', sizeof labels - 1);
	labels[sizeof labels - 1] = '\0';
	for (int e = e0; e <= e1; e++)
		tick(axis, labels, sizeof labels, &free_from, pow(10, e), min_lr, max_lr);
	if (e0 > e1) {
		tick(axis, labels, sizeof labels, &free_from, min_lr, min_lr, max_lr);
		tick(axis, labels, sizeof labels, &free_from, max_lr, min_lr, max_lr);
	}
	for (size_t i = sizeof labels - 1; i > 0 && labels[i - 1] == ' '; i--)
		labels[i - 1] = '\0';
	printf("         +%s\n          %s\n", axis, labels);
}

/* The smoothed loss against log10(lr): the steepest point (index at, -1
 * for none) as 'o', the suggested rate lr as a '^' under the axis. */
static void print_plot(const lt_lr_find *f, const struct lt_lr_find_config *cfg, int at,
		       double lr)
{
	int n;
	const struct lt_lr_find_point *v = lt_lr_find_points(f, &n);
	char grid[PLOT_ROWS][PLOT_COLS + 1];
	double lo, hi;
	loss_range(v, n, &lo, &hi);
	memset(grid, ' ', sizeof grid);
	for (int i = 0; i < n; i++) {
		if (!isfinite(v[i].smoothed))
			continue;
		int c = column_of(v[i].lr, cfg->min_lr, cfg->max_lr);
		double y = (hi - v[i].smoothed) / (hi - lo) * (PLOT_ROWS - 1);
		int r = y < 0 ? 0 : (int)lround(y);
		r = r >= PLOT_ROWS ? PLOT_ROWS - 1 : r;
		if (grid[r][c] != 'o')
			grid[r][c] = y < -0.5 ? '^' : '*';
		if (i == at)
			grid[r][c] = 'o';
	}
	printf("smoothed training loss against the learning rate (%d steps, stopped: %s)\n", n,
	       lt_lr_find_end_name(lt_lr_find_end(f)));
	for (int r = 0; r < PLOT_ROWS; r++) {
		grid[r][PLOT_COLS] = '\0';
		double y = hi - (hi - lo) * r / (PLOT_ROWS - 1);
		if (r == 0 || r == PLOT_ROWS - 1 || r == PLOT_ROWS / 2)
			printf("%8.3f |%s\n", y, grid[r]);
		else
			printf("         |%s\n", grid[r]);
	}
	print_axis(cfg->min_lr, cfg->max_lr);
	if (at >= 0)
		printf("%*s^ suggested %.3g (o: the steepest descent, at %.3g)\n",
		       10 + column_of(lr, cfg->min_lr, cfg->max_lr), "", lr, v[at].lr);
}

/* ------------------------------------------------------------- the test */

/* The range test's hold on the trainer: its curve, and where it says how
 * far it got. */
struct probe_ctx {
	lt_lr_find *f;
	int every;   /* a progress line every this many steps */
};

static double probe_lr(void *ctx, int i)
{
	const struct probe_ctx *p = ctx;
	return lt_lr_find_rate(p->f, i);
}

static int probe_seen(void *ctx, int i, const struct lt_step_metrics *sm)
{
	struct probe_ctx *p = ctx;
	double lr = sm->lr, loss = sm->loss;
	int stop = lt_lr_find_add(p->f, lr, loss), n;
	const struct lt_lr_find_point *v = lt_lr_find_points(p->f, &n);
	if (i % p->every == 0 || stop) {
		printf("tune-lr: step %d, lr %.3g, loss %.4f, smoothed %.4f%s\n", i, lr, loss,
		       v[n - 1].smoothed, lt_lr_find_end(p->f) == LT_LR_FIND_DIVERGED ? ": diverged" : "");
		fflush(stdout);
	}
	return stop;
}

/* The curve into path (rank 0 only), with the suggestion (NAN: none). */
static enum lt_status write_curve(const lt_lr_find *f, double suggested, const char *path)
{
	char *text = NULL;
	enum lt_status st = lt_lr_find_jsonl(f, suggested, &text);
	if (st == LT_OK)
		st = lt_fs_publish_file(path, text, strlen(text));
	free(text);
	return st;
}

/* Job rank 0 plots and writes the curve after the test ended with st
 * (LT_OK or LT_ERR_INTERRUPTED); every rank gets rank 0's suggestion in
 * *lr (NAN: none). A failure to write fails every rank, then the
 * interruption, then no suggestion. */
static enum lt_status report(lt_dist *d, const lt_lr_find *f, const struct lt_lr_find_config *cfg,
			     const char *path, enum lt_status st, double *lr)
{
	char why[1024];
	int at = -1, written = 1;
	enum lt_status found = lt_lr_find_suggest(f, lr, &at);
	snprintf(why, sizeof why, "%s", found != LT_OK ? lt_errmsg() : "");
	if (lt_dist_rank(d) == 0) {
		print_plot(f, cfg, at, *lr);
		written = write_curve(f, *lr, path) == LT_OK;
		if (written)
			printf("tune-lr: the curve is in %s\n", path);
		if (found == LT_OK)
			printf("suggested lr: %.3g\n", *lr);
		fflush(stdout);
	}
	enum lt_status b = lt_dist_bcast(d, &written, sizeof written, 0, "the curve's writing");
	if (b == LT_OK)
		b = lt_dist_bcast(d, lr, sizeof *lr, 0, "the suggested rate");
	if (b != LT_OK)
		return b;
	if (!written) {  /* rank 0's message; the others say where to look */
		if (lt_dist_rank(d) != 0)
			lt_errmsg_set("rank 0 could not write %s", path);
		return LT_ERR_IO;
	}
	if (found != LT_OK && st == LT_OK) {
		lt_errmsg_set("%s", why);
		return found;
	}
	return st;
}

/* The range test cfg from start s under config c, its curve into out
 * (NULL: RUN/lr_find.jsonl), the suggestion into *lr; *t gets the trainer. */
static enum lt_status run_test(lt_dist *d, const struct lt_conf *c, struct lt_trainer_start *s,
			       const struct lt_lr_find_config *cfg, const char *out, lt_trainer **t,
			       double *lr)
{
	char path[LT_RUN_PATH_CAP];
	struct lt_conf probe_conf = *c;
	lt_lr_find *f = NULL;
	enum lt_status st = out ? LT_OK : lt_fs_join(path, sizeof path, c->run.dir,
						     LT_RUNDIR_LR_FIND);
	if (st == LT_OK && out && (size_t)snprintf(path, sizeof path, "%s", out) >= sizeof path) {
		lt_errmsg_set("--out %s: path too long", out);
		st = LT_ERR_ARG;
	}
	if (st == LT_OK)
		st = lt_lr_find_new(cfg, &f);
	if (st != LT_OK)
		return st;
	struct probe_ctx ctx = { .f = f, .every = cfg->steps / PROGRESS_LINES };
	struct lt_trainer_probe probe = { .steps = cfg->steps, .lr_at = probe_lr,
					  .seen = probe_seen, .ctx = &ctx };
	/* the training budget is the run's, not the test's */
	probe_conf.train.max_minutes = 0;
	s->probe = &probe;
	if (lt_dist_rank(d) == 0)
		printf("tune-lr: the rate rises from %g to %g over %d steps (x %.4g a step)\n",
		       cfg->min_lr, cfg->max_lr, cfg->steps, lt_lr_find_rate(f, 2) / cfg->min_lr);
	st = lt_cmd_trainer_run(d, &probe_conf, s, t);
	s->probe = NULL;
	if (st == LT_ERR_INTERRUPTED)
		lt_lr_find_interrupt(f);
	if (st == LT_OK || st == LT_ERR_INTERRUPTED)
		st = report(d, f, cfg, path, st, lr);
	lt_lr_find_free(f);
	return st;
}

enum lt_status lt_cmd_tune_lr_auto(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s,
				   lt_trainer **t)
{
	struct lt_lr_find_config cfg = lt_lr_find_defaults();
	double lr;
	int lead = lt_dist_rank(d) == 0;
	if (lead)
		printf("train.lr = auto: a range test chooses the rate (lltrain tune-lr)\n");
	enum lt_status st = run_test(d, c, s, &cfg, NULL, t, &lr);
	if (st == LT_ERR_INTERRUPTED && lead)
		printf("train.lr = auto: the range test was interrupted; nothing was trained\n");
	if (st != LT_OK) {
		lt_errmsg_prefix("train.lr = auto");
		return st;
	}
	c->train.optim.lr = (float)lr;
	if (lead)
		printf("train.lr = auto: training at the suggested %g\n", (double)c->train.optim.lr);
	if (c->train.optim.min_lr > c->train.optim.lr) {
		c->train.optim.min_lr = c->train.optim.lr / 10;
		if (lead)
			printf("train.min_lr: above the chosen rate, set to a tenth of it, %g\n",
			       (double)c->train.optim.min_lr);
	}
	return LT_OK;
}

/* The command's run: the damaged checkpoints passed over are said first,
 * then the test. */
static enum lt_status tune(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s, void *args,
			   lt_trainer **t)
{
	const struct tune_args *a = args;
	struct lt_lr_find_config cfg = { .min_lr = a->min_lr, .max_lr = a->max_lr,
					  .steps = a->steps, .smooth = a->smooth,
					  .diverge = a->diverge };
	double lr;
	for (size_t i = 0; lt_dist_rank(d) == 0 && i < s->skipped->n; i++)
		printf("skipped %s: %s\n", s->skipped->v[i].dir, s->skipped->v[i].why);
	lt_ckpt_skips_free(s->skipped);
	return run_test(d, c, s, &cfg, a->out, t, &lr);
}

static int parse_tune_options(int argc, char **argv, void *args, const char **resume)
{
	struct tune_args *a = args;
	int rc = lt_cmd_parse(argc, argv, &tune_usage, a, NULL);
	*resume = a->resume;
	return rc;
}

int lt_cmd_tune_lr(int argc, char **argv)
{
	static const struct lt_cmd_trainer tune_cmd = {
		.cmd = "tune-lr",
		.parse = parse_tune_options,
		.beside_checkpoints = 1,
		.run = tune,
	};
	struct lt_lr_find_config def = lt_lr_find_defaults();
	struct tune_args a = { .min_lr = def.min_lr, .max_lr = def.max_lr, .steps = def.steps,
			       .smooth = def.smooth, .diverge = def.diverge };
	return lt_cmd_trainer_main(argc, argv, &tune_cmd, &a);
}
