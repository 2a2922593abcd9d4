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
#include "model.h"
#include "optim.h"
#include "text/sample.h"
#include "conf.h"
#include "rng.h"

/* The command's own options, and the batch shape taken from the config. */
struct bench_opts {
	const char *device;
	int threads, steps;
	int sample_tokens;     /* generated for the sampling speed; 0 = none */
	int profile;           /* print each op's share of the device time */
	int gemm;              /* > 0: only time gemm^3 GEMMs of the model's layouts */
	int batch, seq;
	enum lt_recompute recompute;  /* the config's train.recompute */
	enum lt_precision precision;  /* and train.precision */
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
	  .help = "tiny, 15M, 110M or 1B (default 15M)" },
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
	  .help = "timed steps after one warm-up step (default 3)" },
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
	{ .name = "gemm", .kind = LT_CMD_INT, ARG(gemm), .min = 1, .max = 65536, .arg = "N",
	  .help = "only time N x N x N GEMMs in the three layouts of a\n"
		  "linear layer (forward, input and weight gradients) in\n"
		  "train.matmul's precision, and print their TFLOP/s" },
	{ .name = NULL },
};

static const struct lt_cmd_usage bench_usage = {
	.cmd = "bench",
	.head = "usage: lltrain bench [--preset NAME] [--config FILE] [--SECTION.KEY=VALUE]\n"
		"                     [--device DEV] [--threads N] [--steps N]\n"
		"                     [--batch N] [--seq N] [--profile] [--gemm N]\n\n"
		"Trains a model on random tokens and prints tokens/s, model TFLOP/s\n"
		"(6 x matmul weights + 12 x layers x dim x seq per token), the TFLOP/s of a\n"
		"2048^3 sgemm on the same device, their ratio (MFU) and the peak memory.\n"
		"The model and the batch shape are the config's: train.batch x train.seq.\n\n",
	.options = bench_options,
	.column = 25,
	.tail = "\nLater settings win: defaults, --preset, --config files, --SECTION.KEY.\n",
};

/* Best TFLOP/s of an n^3 GEMM (transposes ta, tb) over reps repetitions
 * after a warm-up call on the backend. */
static enum lt_status time_gemm(lt_backend *be, int n, int ta, int tb, int reps, double *tflops)
{
	size_t nn = (size_t)n * n;
	lt_buf *buf = NULL;
	enum lt_status st = lt_buf_new(be, LT_F32, 3 * nn, &buf);
	if (st != LT_OK)
		return st;
	lt_ref a = { buf, 0 }, b = { buf, nn }, c = { buf, 2 * nn };
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
	*tflops = 2.0 * n * (double)n * n / best / 1e12;
	return st;
}

/* Best TFLOP/s of a 2048^3 sgemm over a few repetitions on the backend. */
static enum lt_status time_sgemm(lt_backend *be, double *tflops)
{
	return time_gemm(be, 2048, 0, 0, 3, tflops);
}

/* --gemm N: the three layouts of a linear layer, each its best of 10. */
static enum lt_status bench_gemms(lt_backend *be, int n)
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
		st = time_gemm(be, n, forms[i].ta, forms[i].tb, 10, &tf[i]);
	if (st != LT_OK)
		return st;
	be->ops->info(be, &dev);
	printf("device:          %s\n", dev.name);
	printf("gemm:            %s\n", dev.gemm);
	for (int i = 0; i < 3; i++)
		printf("gemm %d^3 %-33s %.2f TFLOP/s\n", n, forms[i].what, tf[i]);
	return LT_OK;
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
	lt_model_estimate_memory(&mc, o->batch, o->seq, dev.compute_units, o->recompute,
				 o->precision, &est);
	printf("%s%s: %.2fM parameters, batch %d x seq %d, device %s\n",
	       preset ? "preset " : "model", preset ? preset : "",
	       (double)lt_model_num_params(model) / 1e6, o->batch, o->seq, dev.name);
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
	printf("gemm:            %s\n", dev.gemm);
	printf("attention:       %s\n", dev.attention);
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
	const struct lt_model_config mc = conf.model;
	o.batch = conf.train.batch;
	o.seq = conf.train.seq;

	lt_backend *be = NULL;
	lt_model *model = NULL;
	lt_optim *opt = NULL;
	struct bench_result r = { 0 };
	double peak = 0;
	enum lt_status st;
	if ((rc = open_backend(&o, &conf, &be)) != 0)
		return rc;
	if (o.gemm > 0) {
		st = bench_gemms(be, o.gemm);
		if (st != LT_OK)
			lt_report("bench", st);
		lt_backend_free(be);
		return st == LT_OK ? 0 : 1;
	}
	/* The sgemm is timed before and after the steps and the better figure
	 * kept, so a busy moment on a shared machine cannot flatter the MFU. */
	double peak_after;
	if ((st = lt_model_new(be, &mc, &model)) != LT_OK)
		goto out;
	lt_model_set_recompute(model, o.recompute);
	if ((st = lt_model_set_precision(model, o.precision)) != LT_OK ||
	    (st = lt_model_init(model, 1)) != LT_OK || (st = lt_model_plan(model, o.batch, o.seq)) != LT_OK ||
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
