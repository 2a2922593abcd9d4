/* lltrain bench: times training steps of a preset (or of any configured
 * model, at its train.batch x train.seq) and an sgemm in the same run, and
 * prints tokens/s, model TFLOP/s, MFU and peak memory. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "clock.h"
#include "cmd/cmd.h"
#include "io/import.h"
#include "model.h"
#include "optim.h"
#include "text/sample.h"
#include "train/layout.h"
#include "conf.h"
#include "rng.h"

/* The command's own options, and the batch shape taken from the config. */
struct bench_opts {
	const char *device;
	int threads, steps;
	int sample_tokens;     /* generated for the sampling speed; 0 = none */
	int profile;           /* print each op's share of the device time */
	int gemm;              /* > 0: only time gemm^3 GEMMs of the model's layouts */
	int gemm_shapes;       /* only time the model's GEMMs in each CPU library */
	int batch, seq;
	enum lt_recompute recompute;  /* the config's train.recompute */
	enum lt_precision precision;  /* and train.precision */
	const char *init;             /* train.init: the model's weights, or "" */
	int ranks;                    /* the layout's ranks (dist.tp, dist.zero over them) */
	double device_gib;            /* a rank's device memory; 0: the device's */
};

static double peak_rss_bytes(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss * 1024.0;
}

#define ARG(f) LT_CMD_FIELD(struct bench_opts, f)

static const struct lt_cmd_option bench_options[] = {
	/* taken by lt_cmd_preset before getopt_long runs */
	{ .name = "preset", .kind = LT_CMD_NOTE, .arg = "NAME",
	  .help = "tiny, 15M, 110M, 1B or 7B (default 15M)" },
	{ .name = "config", .kind = LT_CMD_NOTE, .arg = "FILE",
	  .help = "an INI file of settings (repeatable)" },
	{ .name = "SECTION.KEY=VALUE", .kind = LT_CMD_NOTE,
	  .help = "any setting of lltrain.conf(5), e.g. --model.n_layers=2" },
	/* the command's own */
	{ .name = "device", .kind = LT_CMD_TEXT, ARG(device), .arg = "DEV",
	  .help = "cpu, opencl[:P.D|:NAME] or auto (default: run.device, cpu)" },
	{ .name = "threads", .kind = LT_CMD_INT, ARG(threads), .min = 0, .max = 4096, .arg = "N",
	  .help = "CPU threads (default: run.threads, 0 = OpenMP's choice)" },
	{ .name = "steps", .kind = LT_CMD_INT, ARG(steps), .min = 1, .max = 1000000, .arg = "N",
	  .help = "timed steps after one warm-up step (default 3);\n"
		  "with --gemm-shapes, timed calls of each GEMM" },
	{ .name = "batch", .kind = LT_CMD_KEY, .key = "train.batch", .arg = "N",
	  .help = "the same as --train.batch=N" },
	{ .name = "seq", .kind = LT_CMD_KEY, .key = "train.seq", .arg = "N",
	  .help = "the same as --train.seq=N (a seq beyond model.max_seq\n"
		  "raises max_seq for the benchmark)" },
	{ .name = "sample-tokens", .kind = LT_CMD_INT, ARG(sample_tokens), .min = 0,
	  .max = 1 << 20, .arg = "N",
	  .help = "tokens generated with the KV cache for the sampling\n"
		  "speed (default 255, at most model.max_seq - 1; 0 = skip)" },
	{ .name = "profile", .kind = LT_CMD_FLAG, ARG(profile),
	  .help = "print each op's share of the device time of the timed\n"
		  "steps (OpenCL profiling events; on the CPU, each op's\n"
		  "wall time)" },
	{ .name = "ranks", .kind = LT_CMD_INT, ARG(ranks), .min = 1, .max = 1000000, .arg = "N",
	  .help = "a layout of N ranks (dist.tp and dist.zero over them):\n"
		  "check that one rank's training memory fits the device\n"
		  "and print it; a layout that does not fit is refused\n"
		  "before anything is allocated, naming the shortfall\n"
		  "(one rank of one process, the default, is also timed)" },
	{ .name = "device-mem", .kind = LT_CMD_REAL, ARG(device_gib), .min = 0.001, .max = 1e6,
	  .arg = "GIB", .help = "a rank's device memory for that check (default:\n"
				"the device's)" },
	{ .name = "gemm", .kind = LT_CMD_INT, ARG(gemm), .min = 1, .max = 65536, .arg = "N",
	  .help = "only time N x N x N GEMMs in the three layouts of a\n"
		  "linear layer (forward, input and weight gradients) in\n"
		  "train.matmul's precision (bf16 operands with\n"
		  "train.precision = bf16), and print their TFLOP/s" },
	{ .name = "gemm-shapes", .kind = LT_CMD_FLAG, ARG(gemm_shapes),
	  .help = "only time the GEMMs of the model's linear layers at\n"
		  "train.batch x train.seq rows (and at one, sampling)\n"
		  "on the CPU, with OpenBLAS and with oneDNN, and print\n"
		  "their GFLOP/s side by side" },
	{ .name = NULL },
};

static const struct lt_cmd_usage bench_usage = {
	.cmd = "bench",
	.head = "usage: lltrain bench [--preset NAME] [--config FILE] [--SECTION.KEY=VALUE]\n"
		"                     [--device DEV] [--threads N] [--steps N]\n"
		"                     [--batch N] [--seq N] [--profile] [--gemm N]\n"
		"                     [--gemm-shapes] [--ranks N] [--device-mem GIB]\n\n"
		"Trains a model on random tokens and prints tokens/s, model TFLOP/s\n"
		"(6 x matmul weights + 12 x layers x dim x seq per token), the TFLOP/s of a\n"
		"2048^3 sgemm on the same device, their ratio (MFU) and the peak memory.\n"
		"The model and the batch shape are the config's: train.batch x train.seq.\n\n",
	.options = bench_options,
	.column = 25,
	.tail = "\nLater settings win: defaults, --preset, --config files, --SECTION.KEY.\n",
};

/* Best TFLOP/s of an n^3 GEMM (transposes ta, tb; operands of type ab, C f32) over reps
 * repetitions after a warm-up call on the backend. */
static enum lt_status time_gemm(lt_backend *be, int n, int ta, int tb, enum lt_dtype ab,
				int reps, double *tflops)
{
	size_t nn = (size_t)n * n;
	lt_buf *buf = NULL, *out = NULL;
	enum lt_status st = lt_buf_new(be, ab, 2 * nn, &buf);
	if (st == LT_OK)
		st = lt_buf_new(be, LT_F32, nn, &out);
	if (st != LT_OK) {
		lt_buf_free(be, buf);
		return st;
	}
	lt_ref a = { buf, 0 }, b = { buf, nn }, c = { out, 0 };
	be->ops->fill(be, a, 2 * nn, 0.5f);
	struct lt_gemm g = { .trans_a = ta, .trans_b = tb, .m = n, .n = n, .k = n, .alpha = 1.0f,
			     .beta = 0.0f, .lda = n, .ldb = n, .ldc = n, .batch = 1 };
	double best = 1e30;
	for (int r = 0; r <= reps && st == LT_OK; r++) {
		double t0 = lt_seconds();
		be->ops->gemm(be, &g, a, b, c);
		st = be->ops->sync(be);
		double dt = lt_seconds() - t0;
		if (r > 0 && dt < best) /* the first call warms up */
			best = dt;
	}
	lt_buf_free(be, buf);
	lt_buf_free(be, out);
	*tflops = 2.0 * n * (double)n * n / best / 1e12;
	return st;
}

/* Best TFLOP/s of a 2048^3 sgemm over a few repetitions on the backend. */
static enum lt_status time_sgemm(lt_backend *be, double *tflops)
{
	return time_gemm(be, 2048, 0, 0, LT_F32, 3, tflops);
}

/* --gemm N: the three layouts of a linear layer, each its best of 10, on
 * operands of type ab. */
static enum lt_status bench_gemms(lt_backend *be, int n, enum lt_dtype ab)
{
	static const struct { int ta, tb; const char *what; } forms[] = {
		{ 0, 1, "NT (forward, x . W^T)" },
		{ 0, 0, "NN (input gradient, dout . W)" },
		{ 1, 0, "TN (weight gradient, dout^T . x)" },
	};
	struct lt_device_info dev;
	enum lt_status st = LT_OK;
	double tf[3];
	for (int i = 0; i < 3 && st == LT_OK; i++)
		st = time_gemm(be, n, forms[i].ta, forms[i].tb, ab, 10, &tf[i]);
	if (st != LT_OK)
		return st;
	be->ops->info(be, &dev);
	printf("device:          %s\n", dev.name);
	printf("gemm:            %s\n", ab == LT_BF16 ? dev.bf16 : dev.gemm);
	for (int i = 0; i < 3; i++)
		printf("gemm %d^3 %s %-33s %.2f TFLOP/s\n", n, ab == LT_BF16 ? "bf16" : "f32 ",
		       forms[i].what, tf[i]);
	return LT_OK;
}

/* ------------------------------------------------------------------ */
/* --gemm-shapes */

/* One GEMM the model runs: its layer and product, and its shape. */
struct model_gemm {
	const char *layer, *product;
	struct lt_gemm g;
	enum lt_dtype tc;  /* C's type at train.precision = bf16 */
};

/* Rows of the LM head's logits at a time for N rows of a vocabulary of V,
 * as the model chunks them (16 Mi logits at most). */
static int head_rows(int N, int V)
{
	int r = (1 << 24) / V;
	return r < 1 ? 1 : r > N ? N : r;
}

/* The GEMMs of mc's linear layers at N rows (the head at head_rows) and at
 * one row into out (room for 20); their count. */
static int model_gemms(const struct lt_model_config *mc, int N, struct model_gemm *out)
{
	int C = mc->dim, D = lt_model_config_head_dim(mc), F = mc->ffn_dim, V = mc->vocab_size;
	const struct { const char *name; int out, in; float beta; int rows; } layers[] = {
		{ "qkv", (mc->n_heads + 2 * mc->n_kv_heads) * D, C, 0.0f, N },
		{ "o", C, mc->n_heads * D, 1.0f, N },
		{ "gate_up", 2 * F, C, 0.0f, N },
		{ "down", C, F, 1.0f, N },
		{ "head", V, C, 0.0f, head_rows(N, V) },
	};
	int n = 0;
	for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
		int M = layers[i].rows, O = layers[i].out, I = layers[i].in;
		out[n++] = (struct model_gemm){ layers[i].name, "forward x.W^T",
			{ .trans_b = 1, .m = M, .n = O, .k = I, .alpha = 1.0f, .beta = layers[i].beta,
			  .lda = I, .ldb = I, .ldc = O, .batch = 1 }, LT_BF16 };
		out[n++] = (struct model_gemm){ layers[i].name, "input grad dout.W",
			{ .m = M, .n = I, .k = O, .alpha = 1.0f, .lda = O, .ldb = I, .ldc = I,
			  .batch = 1 }, LT_BF16 };
		out[n++] = (struct model_gemm){ layers[i].name, "weight grad dout^T.x",
			{ .trans_a = 1, .m = O, .n = I, .k = M, .alpha = 1.0f, .beta = 1.0f,
			  .lda = O, .ldb = I, .ldc = I, .batch = 1 }, LT_F32 };
	}
	for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
		int O = layers[i].out, I = layers[i].in;
		out[n++] = (struct model_gemm){ layers[i].name, "sampling x.W^T",
			{ .trans_b = 1, .m = 1, .n = O, .k = I, .alpha = 1.0f, .beta = layers[i].beta,
			  .lda = I, .ldb = I, .ldc = O, .batch = 1 }, LT_BF16 };
	}
	return n;
}

/* Elements of A, B and C of g. */
static size_t gemm_elems(const struct lt_gemm *g, int which)
{
	return which == 0 ? (size_t)g->m * g->k : which == 1 ? (size_t)g->k * g->n
							     : (size_t)g->m * g->n;
}

/* One column of the table: a CPU backend whose f32 GEMMs use `lib`
 * (LLTRAIN_CPU_GEMM; NULL: as the environment says) and, sized for the
 * largest of the model's GEMMs, its buffers: ab (A, then B from nb_at) of
 * type t, c (f32) and, where t is bf16, c16 (bf16) for C. */
struct gemm_column {
	const char *lib;
	enum lt_dtype t;
	lt_backend *be;
	lt_buf *ab, *c, *c16;
	size_t nb_at;  /* where B starts in ab */
};

/* Operands of 0.01 and C of 0 in col's buffers (bf16 ones converted from
 * an f32 buffer). */
static enum lt_status fill_column(struct gemm_column *col, size_t nab, size_t nc)
{
	lt_backend *be = col->be;
	lt_buf *wide = NULL;
	enum lt_status st = LT_OK;
	be->ops->fill(be, (lt_ref){ col->c, 0 }, nc, 0.0f);
	if (col->t == LT_F32) {
		be->ops->fill(be, (lt_ref){ col->ab, 0 }, nab, 0.01f);
	} else if ((st = lt_buf_new(be, LT_F32, nab > nc ? nab : nc, &wide)) == LT_OK) {
		be->ops->fill(be, (lt_ref){ wide, 0 }, nab, 0.01f);
		be->ops->convert(be, (lt_ref){ col->ab, 0 }, (lt_ref){ wide, 0 }, nab);
		be->ops->convert(be, (lt_ref){ col->c16, 0 }, (lt_ref){ col->c, 0 }, nc);
	}
	if (st == LT_OK)
		st = be->ops->sync(be);
	lt_buf_free(be, wide);
	return st;
}

static enum lt_status open_column(struct gemm_column *col, const struct bench_opts *o,
				  const struct model_gemm *gs, int n)
{
	size_t na = 0, nb = 0, nc = 0;
	const char *was = getenv("LLTRAIN_CPU_GEMM");
	char keep[64];
	snprintf(keep, sizeof keep, "%s", was ? was : "");
	for (int i = 0; i < n; i++) {
		size_t a = gemm_elems(&gs[i].g, 0), b = gemm_elems(&gs[i].g, 1), c = gemm_elems(&gs[i].g, 2);
		na = a > na ? a : na;
		nb = b > nb ? b : nb;
		nc = c > nc ? c : nc;
	}
	if (col->lib)
		setenv("LLTRAIN_CPU_GEMM", col->lib, 1);
	enum lt_status st = lt_backend_new("cpu", o->threads, &col->be);
	if (col->lib && was)
		setenv("LLTRAIN_CPU_GEMM", keep, 1);
	else if (col->lib)
		unsetenv("LLTRAIN_CPU_GEMM");
	if (st != LT_OK)
		return st;
	col->nb_at = na;
	if ((st = lt_buf_new(col->be, col->t, na + nb, &col->ab)) != LT_OK ||
	    (st = lt_buf_new(col->be, LT_F32, nc, &col->c)) != LT_OK ||
	    (col->t == LT_BF16 && (st = lt_buf_new(col->be, LT_BF16, nc, &col->c16)) != LT_OK))
		return st;
	return fill_column(col, na + nb, nc);
}

static void close_column(struct gemm_column *col)
{
	if (!col->be)
		return;
	lt_buf_free(col->be, col->ab);
	lt_buf_free(col->be, col->c);
	lt_buf_free(col->be, col->c16);
	lt_backend_free(col->be);
	col->be = NULL;
}

/* The operands of mg in col's buffers. */
static void model_gemm_refs(const struct gemm_column *col, const struct model_gemm *mg,
			    lt_ref *a, lt_ref *b, lt_ref *c)
{
	*a = (lt_ref){ col->ab, 0 };
	*b = (lt_ref){ col->ab, col->nb_at };
	*c = (lt_ref){ col->t == LT_BF16 && mg->tc == LT_BF16 ? col->c16 : col->c, 0 };
}

/* mg once on col (the warm-up, which makes oneDNN's primitive), and the
 * name the backend's profile gives the call into *op: what computed it. */
static enum lt_status warm_model_gemm(struct gemm_column *col, const struct model_gemm *mg,
				      const char **op)
{
	lt_backend *be = col->be;
	struct lt_op_time ran[4];
	lt_ref a, b, c;
	model_gemm_refs(col, mg, &a, &b, &c);
	be->ops->profile(be, 1);
	be->ops->gemm(be, &mg->g, a, b, c);
	enum lt_status st = be->ops->sync(be);
	*op = be->ops->profile_read(be, ran, 4) > 0 ? ran[0].op : "?";
	be->ops->profile(be, 0);
	return st;
}

/* Seconds of one call of mg on col. */
static enum lt_status time_model_gemm(struct gemm_column *col, const struct model_gemm *mg,
				      double *seconds)
{
	lt_backend *be = col->be;
	lt_ref a, b, c;
	model_gemm_refs(col, mg, &a, &b, &c);
	double t0 = lt_seconds();
	be->ops->gemm(be, &mg->g, a, b, c);
	enum lt_status st = be->ops->sync(be);
	*seconds = lt_seconds() - t0;
	return st;
}

/* One row of the table: the shape, then the GFLOP/s of each of the ncols
 * columns ("-" where one is absent), each the best of reps calls after a
 * warm-up call, the columns taking turns call by call so that a load on
 * the machine weighs on all alike; then what computes it on `run`, the
 * backend as the environment sets it. */
static enum lt_status shape_row(struct gemm_column *cols, int ncols, struct gemm_column *run,
				const struct model_gemm *mg, int reps)
{
	enum lt_status st = LT_OK;
	const char *op = "?";
	double best[4] = { 1e30, 1e30, 1e30, 1e30 }, dt;
	for (int i = 0; i < ncols && i < 4 && st == LT_OK; i++)
		if (cols[i].be)
			st = warm_model_gemm(&cols[i], mg, &op);
	for (int r = 0; r < reps && st == LT_OK; r++)
		for (int i = 0; i < ncols && i < 4 && st == LT_OK; i++)
			if (cols[i].be && (st = time_model_gemm(&cols[i], mg, &dt)) == LT_OK)
				best[i] = dt < best[i] ? dt : best[i];
	if (st == LT_OK)
		st = warm_model_gemm(run, mg, &op);
	if (st != LT_OK)
		return st;
	printf("%-8s %-21s %s%s %6d %6d %6d", mg->layer, mg->product, mg->g.trans_a ? "T" : "N",
	       mg->g.trans_b ? "T" : "N", mg->g.m, mg->g.n, mg->g.k);
	for (int i = 0; i < ncols && i < 4; i++)
		if (cols[i].be)
			printf(" %11.1f", 2.0 * mg->g.m * (double)mg->g.n * mg->g.k / best[i] / 1e9);
		else
			printf(" %11s", "-");
	printf("  %s\n", op);
	fflush(stdout);
	return st;
}

/* --gemm-shapes: the model's GEMMs on the CPU through OpenBLAS, oneDNN in
 * f32 and (where the CPU's bf16 GEMMs go through it) oneDNN in bf16, each
 * on a backend of its own, shape by shape so that all see the same load. */
static enum lt_status bench_gemm_shapes(const struct bench_opts *o,
					const struct lt_model_config *mc, const char *preset)
{
	struct model_gemm gs[20];
	int n = model_gemms(mc, o->batch * o->seq, gs), reps = o->steps;
	struct gemm_column cols[4] = { { .lib = "openblas", .t = LT_F32 },
				       { .lib = "dnnl", .t = LT_F32 },
				       { .lib = NULL, .t = LT_BF16 },
				       { .lib = NULL, .t = LT_F32 } };
	struct lt_device_info dev;
	char why[256] = "";
	enum lt_status st = open_column(&cols[0], o, gs, n);
	if (st == LT_OK && open_column(&cols[1], o, gs, n) != LT_OK) {
		snprintf(why, sizeof why, "oneDNN f32: not timed: %s", lt_errmsg());
		close_column(&cols[1]);
	}
	if (st == LT_OK)
		st = open_column(&cols[3], o, gs, n);
	if (st == LT_OK)
		st = open_column(&cols[2], o, gs, n);
	if (st != LT_OK)
		goto out;
	/* bf16 only where oneDNN computes it: the widened fallback is OpenBLAS */
	const char *bf16_op;
	if ((st = warm_model_gemm(&cols[2], &gs[0], &bf16_op)) != LT_OK)
		goto out;
	if (strcmp(bf16_op, "gemm_bf16") != 0)
		close_column(&cols[2]);
	cols[3].be->ops->info(cols[3].be, &dev);
	printf("device:          %s\n", dev.name);
	printf("gemm:            %s\n", dev.gemm);
	printf("bf16:            %s%s\n", dev.bf16, cols[2].be ? "" : " (bf16 not timed)");
	if (why[0])
		printf("note:            %s\n", why);
	printf("%s%s: batch %d x seq %d = %d rows (the head %d rows at a time), and 1 row\n",
	       preset ? "preset " : "model", preset ? preset : "", o->batch, o->seq,
	       o->batch * o->seq, head_rows(o->batch * o->seq, mc->vocab_size));
	printf("GFLOP/s, each the best of %d calls after a warm-up call, the libraries taking\n"
	       "turns; \"run uses\": what computes it in a run with these settings (its name\n"
	       "in --profile)\n", reps);
	printf("%-8s %-21s %-2s %6s %6s %6s %11s %11s %11s  %s\n", "layer", "product", "", "m", "n",
	       "k", "OpenBLAS", "oneDNN-f32", "oneDNN-bf16", "run uses");
	for (int i = 0; i < n && st == LT_OK; i++)
		st = shape_row(cols, 3, &cols[3], &gs[i], reps);
out:
	for (int i = 0; i < 4; i++)
		close_column(&cols[i]);
	return st;
}

#define MAX_PROFILED 64

struct bench_result {
	double step_s, tokens_per_s, model_tflops, loss;
	struct lt_op_time ops[MAX_PROFILED];  /* with --profile, largest first */
	int n_ops;
};

/* Each op's device time per step and its share of all the ops' time. */
static void print_profile(const struct bench_result *r, int steps)
{
	double total = 0;
	int n = r->n_ops < MAX_PROFILED ? r->n_ops : MAX_PROFILED;
	for (int i = 0; i < n; i++)
		total += r->ops[i].seconds;
	printf("profile:         %.4f s of device time per step (%.1f%% of the step time)\n",
	       total / steps, 100.0 * total / steps / r->step_s);
	for (int i = 0; i < n; i++)
		printf("  %-20s %6.2f%%  %9.3f ms/step  %6ld calls/step\n", r->ops[i].op,
		       100.0 * r->ops[i].seconds / total, 1e3 * r->ops[i].seconds / steps,
		       r->ops[i].calls / steps);
}

static enum lt_status time_training(lt_model *model, lt_optim *opt, const struct bench_opts *o,
				    struct bench_result *r)
{
	const struct lt_model_config *c = lt_model_config_of(model);
	int N = o->batch * o->seq;
	int32_t *tok = malloc(2 * (size_t)N * sizeof *tok);
	if (!tok) {
		lt_errmsg_set("cannot allocate %zu bytes of tokens", 2 * (size_t)N * sizeof *tok);
		return LT_ERR_NOMEM;
	}
	int32_t *tgt = tok + N;
	struct lt_rng rng;
	lt_rng_seed(&rng, 1234, 0);
	struct lt_optim_config oc = { .lr = 1e-4f, .min_lr = 1e-5f, .warmup_steps = 0,
				      .total_steps = 1000, .schedule = LT_SCHED_COSINE, .beta1 = 0.9f,
				      .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	enum lt_status st = LT_OK;
	double total = 0;
	lt_backend *be = lt_model_backend(model);
	for (int step = 0; step <= o->steps && st == LT_OK; step++) {
		if (step == 1 && o->profile) /* step 0 warms caches and kernels */
			be->ops->profile(be, 1);
		for (int i = 0; i < N; i++) {
			tok[i] = (int32_t)lt_rng_below(&rng, (uint64_t)c->vocab_size);
			tgt[i] = (int32_t)lt_rng_below(&rng, (uint64_t)c->vocab_size);
		}
		double t0 = lt_seconds(), loss, norm;
		long count;
		lt_model_zero_grads(model);
		st = lt_model_forward(model, tok, tgt, 1.0f / (float)N, &loss, &count);
		if (st == LT_OK)
			st = lt_model_backward(model);
		if (st == LT_OK)
			st = lt_optim_step(opt, &oc, step + 1, &norm);
		double dt = lt_seconds() - t0;
		if (step > 0) /* step 0 warms caches and kernels */
			total += dt;
		r->loss = loss / (double)count;
	}
	free(tok);
	if (o->profile && st == LT_OK) {
		r->n_ops = be->ops->profile_read(be, r->ops, MAX_PROFILED);
		be->ops->profile(be, 0);
	}
	r->step_s = total / o->steps;
	r->tokens_per_s = N / r->step_s;
	r->model_tflops = r->tokens_per_s * lt_model_config_flops_per_token(c, o->seq) / 1e12;
	return st;
}

/* The report of a benchmark: the run's shape, the step time and its
 * throughput, MFU against the measured sgemm peak, and memory beside the
 * estimate. */
static void print_results(const struct bench_opts *o, const char *preset, lt_model *model,
			  lt_backend *be, const struct bench_result *res, double peak, double rss)
{
	const struct lt_model_config mc = *lt_model_config_of(model);
	struct lt_device_info dev;
	be->ops->info(be, &dev);
	struct lt_mem_estimate est;
	const struct lt_lora *lora = lt_model_lora(model);
	lt_model_estimate_memory_lora(&mc, o->batch, o->seq, dev.compute_units, o->recompute,
				      o->precision, lora, &est);
	printf("%s%s: %.2fM parameters, batch %d x seq %d, device %s\n",
	       preset ? "preset " : "model ", preset ? preset : o->init,
	       (double)lt_model_config_params(&mc) / 1e6, o->batch, o->seq, dev.name);
	if (lora->rank > 0)
		printf("LoRA:            rank %d, %.2fM trainable parameters (%.2f%%), the base frozen\n",
		       lora->rank, (double)lt_model_num_params(model) / 1e6,
		       100.0 * (double)lt_model_num_params(model) / (double)lt_model_config_params(&mc));
	printf("precision:       %s, recompute %s\n",
	       o->precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
	       o->recompute == LT_RECOMPUTE_BLOCK ? "block" : "none");
	printf("step time:       %.4f s (mean of %d steps after a warm-up step)\n", res->step_s,
	       o->steps);
	printf("loss:            %.4f\n", res->loss);
	printf("tokens/s:        %.1f\n", res->tokens_per_s);
	printf("model TFLOP/s:   %.4f (%.1f MFLOP per token)\n", res->model_tflops,
	       lt_model_config_flops_per_token(&mc, o->seq) / 1e6);
	printf("sgemm TFLOP/s:   %.4f (2048^3, best of 3 before and 3 after the steps)\n", peak);
	if (o->precision == LT_PRECISION_BF16) {
		printf("bf16:            %s\n", dev.bf16);
	} else {
		printf("gemm:            %s\n", dev.gemm);
		printf("attention:       %s\n", dev.attention);
	}
	printf("MFU:             %.3f\n", res->model_tflops / peak);
	printf("peak RSS:        %.1f MiB (estimate %.1f MiB: params %.1f, grads %.1f, "
	       "optimizer %.1f, activations %.1f, workspace %.1f, runtime %.1f)\n",
	       rss / 1048576.0, est.total / 1048576.0, est.params / 1048576.0, est.grads / 1048576.0,
	       est.optimizer / 1048576.0, est.activations / 1048576.0, est.workspace / 1048576.0,
	       est.runtime / 1048576.0);
	if (be->ops->mem_usage) {
		size_t now, top;
		be->ops->mem_usage(be, &now, &top);
		printf("peak device mem: %.1f MiB (%.2f GiB; lltrain's buffers on %s, of %.1f GiB)\n",
		       top / 1048576.0, top / 1073741824.0, dev.name, dev.mem_bytes / 1073741824.0);
	}
}

/* The weights of train.init (and the adapters' first values), or drawn. */
static enum lt_status first_weights(lt_model *m, const char *init)
{
	if (!init[0])
		return lt_model_init(m, 1);
	enum lt_status st = lt_import_weights(init, m);
	if (st == LT_OK && lt_model_num_frozen(m) > 0)
		st = lt_model_init_adapters(m, 1);
	return st;
}

/* The device of o, computing in conf's matmul precision; 0, or the exit
 * status after saying why. */
static int open_backend(const struct bench_opts *o, const struct lt_conf *conf, lt_backend **be)
{
	enum lt_status st = lt_cmd_backend("bench", o->device, o->threads, be);
	if (st != LT_OK) {
		lt_report("bench", st);
		return 1;
	}
	lt_backend_set_matmul(*be, conf->train.matmul);
	if (o->profile && !(*be)->ops->profile) {
		fprintf(stderr, "lltrain bench: --profile: the %s backend has no op profiling\n",
			(*be)->ops->name);
		lt_backend_free(*be);
		return 2;
	}
	return 0;
}

/* Before anything is allocated: one rank of the layout (o->ranks, dist.tp,
 * dist.zero) against its device's memory. Gives the exit status where the
 * benchmark ends here -- 1 when a rank does not fit, 0 when a layout of
 * several ranks does (one process times one whole model only) -- else -1. */
static int check_fit(const struct bench_opts *o, const struct lt_conf *conf,
		     const struct lt_lora *lora, const char *preset, lt_backend *be)
{
	struct lt_device_info dev;
	struct lt_mem_estimate est;
	int tp = conf->dist.tp, dp = o->ranks / tp;
	be->ops->info(be, &dev);
	if (o->ranks % tp) {
		fprintf(stderr, "lltrain bench: dist.tp = %d does not divide --ranks %d: a job runs "
			"whole tensor-parallel groups\n", tp, o->ranks);
		return 2;
	}
	lt_layout_estimate(conf, lora, o->ranks, dev.compute_units, &est);
	double have = o->device_gib > 0 ? o->device_gib * 1073741824.0 : (double)dev.mem_bytes;
	double need = (double)est.total, gib = 1073741824.0;
	char layout[160];
	snprintf(layout, sizeof layout, "%s%s at tensor parallel %d x data parallel %d, ZeRO stage "
		 "%d, %s, recompute %s, batch %d x seq %d", preset ? "preset " : "the model",
		 preset ? preset : "", tp, dp, conf->dist.zero,
		 conf->train.precision == LT_PRECISION_BF16 ? "bf16" : "fp32",
		 conf->train.recompute == LT_RECOMPUTE_BLOCK ? "block" : "none", conf->train.batch,
		 conf->train.seq);
	if (need > have) {
		fprintf(stderr, "lltrain bench: a rank of %s needs %.2f GiB, the device (%s) has "
			"%.2f GiB: %.2f GiB short\n", layout, need / gib, dev.name, have / gib,
			(need - have) / gib);
		return 1;
	}
	if (o->ranks == 1)
		return -1;
	printf("layout:          %s\n", layout);
	printf("fits:            %.2f GiB a rank of the %.2f GiB of %s (params %.2f, grads %.2f, "
	       "optimizer %.2f, gathered %.2f, activations %.2f, exchange %.2f GiB); one process "
	       "times whole models only: time the layout with lltrain train under mpiexec\n",
	       need / gib, have / gib, dev.name, est.params / gib, est.grads / gib,
	       est.optimizer / gib, est.gathered / gib, est.activations / gib, est.exchange / gib);
	return 0;
}

int lt_cmd_bench(int argc, char **argv)
{
	struct lt_conf conf;
	int rc = lt_cmd_preset("bench", "15M", &conf, &argc, argv);
	if (rc)
		return rc;
	struct bench_opts o = { .device = conf.run.device, .threads = conf.run.threads,
				.steps = 3, .sample_tokens = 255, .recompute = conf.train.recompute,
				.precision = conf.train.precision };
	/* the command's own options (lt_cmd_preset took the config ones) */
	rc = lt_cmd_parse(argc, argv, &bench_usage, &o, &conf);
	if (rc >= 0)
		return rc;
	const char *preset = lt_conf_preset_of(&conf);
	/* max_seq holds no weights, only a bound: a benchmark at a longer
	 * sequence just raises it. */
	if (conf.train.seq > conf.model.max_seq)
		conf.model.max_seq = conf.train.seq;
	if (lt_conf_check(&conf) != LT_OK) {
		fprintf(stderr, "lltrain bench: %s\n", lt_errmsg());
		return 1;
	}
	struct lt_model_config mc = conf.model;
	enum lt_status st;
	o.init = conf.train.init;
	if (o.init[0]) {  /* the shape is the file's */
		if ((st = lt_import_config(o.init, &mc)) != LT_OK) {
			lt_errmsg_prefix("train.init");
			lt_report("bench", st);
			return 1;
		}
		preset = NULL;
	}
	if (conf.train.seq > mc.max_seq)
		mc.max_seq = conf.train.seq;
	o.batch = conf.train.batch;
	o.seq = conf.train.seq;

	if (!o.ranks)
		o.ranks = 1;
	lt_backend *be = NULL;
	lt_model *model = NULL;
	lt_optim *opt = NULL;
	struct bench_result r = { 0 };
	double peak = 0;
	if ((rc = open_backend(&o, &conf, &be)) != 0)
		return rc;
	if (o.gemm_shapes && strcmp(be->ops->name, "cpu") != 0) {
		fprintf(stderr, "lltrain bench: --gemm-shapes compares the CPU's GEMM libraries; "
			"the device is %s (expected --device cpu)\n", be->ops->name);
		lt_backend_free(be);
		return 2;
	}
	if (o.gemm_shapes) {
		lt_backend_free(be);
		st = bench_gemm_shapes(&o, &mc, preset);
		if (st != LT_OK)
			lt_report("bench", st);
		return st == LT_OK ? 0 : 1;
	}
	if (o.gemm > 0) {
		st = bench_gemms(be, o.gemm, o.precision == LT_PRECISION_BF16 ? LT_BF16 : LT_F32);
		if (st != LT_OK)
			lt_report("bench", st);
		lt_backend_free(be);
		return st == LT_OK ? 0 : 1;
	}
	/* The sgemm is timed before and after the steps and the better figure
	 * kept, so a busy moment on a shared machine cannot flatter the MFU. */
	double peak_after;
	struct lt_lora lora;
	if ((st = lt_conf_lora(&conf, &lora)) != LT_OK)
		goto out;
	conf.model = mc;
	if ((rc = check_fit(&o, &conf, &lora, preset, be)) >= 0) {
		lt_backend_free(be);
		return rc;
	}
	if (
	    (st = lt_model_new_adapted(be, &mc, &lora, o.precision, &model)) != LT_OK)
		goto out;
	lt_model_set_recompute(model, o.recompute);
	if ((st = first_weights(model, o.init)) != LT_OK ||
	    (st = lt_model_plan(model, o.batch, o.seq)) != LT_OK ||
	    (st = lt_optim_new(model, 0, lt_model_num_params(model), &opt)) != LT_OK ||
	    (st = time_sgemm(be, &peak)) != LT_OK ||
	    (st = time_training(model, opt, &o, &r)) != LT_OK)
		goto out;
	double rss = peak_rss_bytes();
	if ((st = time_sgemm(be, &peak_after)) != LT_OK)
		goto out;
	if (peak_after > peak)
		peak = peak_after;

	print_results(&o, preset, model, be, &r, peak, rss);
	if (o.profile)
		print_profile(&r, o.steps);
	int n_sample = o.sample_tokens < mc.max_seq - 1 ? o.sample_tokens : mc.max_seq - 1;
	double sample_tps;
	if (n_sample > 0 && (st = lt_sample_bench(model, n_sample, &sample_tps)) == LT_OK)
		printf("sampling:        %.1f tokens/s (KV cache, %d tokens after one, greedy, batch 1)\n",
		       sample_tps, n_sample);
out:
	if (st != LT_OK)
		lt_report("bench", st);
	lt_optim_free(opt);
	lt_model_free(model);
	lt_backend_free(be);
	return st == LT_OK ? 0 : 1;
}
