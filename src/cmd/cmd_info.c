/* lltrain info: version, build, backends and devices; the parameter count,
 * FLOPs per token and memory estimate of each preset or of the model a
 * configuration resolves to; and with --keys every configuration key. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "cmd/cmd.h"
#ifdef LT_HAVE_OPENCL
#include "cl.h"
#endif
#include "conf.h"
#include "dist/dist.h"
#include "model.h"
#include "dist/zero.h"
#include "train/layout.h"
#include "train/micro.h"

/* What info was asked for. */
struct info_args {
	int threads;     /* -1: the configuration's */
	int keys;        /* --keys: the configuration keys only */
	int ranks;       /* 0: not given (1) */
	int zero;        /* -1: not given (dist.zero) */
	int tp;          /* 0: not given (dist.tp) */
	int pp;          /* 0: not given (dist.pp) */
	int configured;  /* some option set the configuration */
};

#define ARG(f) LT_CMD_FIELD(struct info_args, f)

static const struct lt_cmd_option info_options[] = {
	/* taken by lt_cmd_preset before getopt_long runs */
	{ .name = "preset", .kind = LT_CMD_NOTE, .arg = "NAME", .help = "tiny, 15M, 110M, 1B or 7B" },
	{ .name = "config", .kind = LT_CMD_NOTE, .arg = "FILE",
	  .help = "an INI file of settings (repeatable)" },
	{ .name = "SECTION.KEY=VALUE", .kind = LT_CMD_NOTE,
	  .help = "any setting of lltrain.conf(5), e.g. --train.batch=4" },
	/* the command's own */
	{ .name = "threads", .kind = LT_CMD_INT, ARG(threads), .min = 1, .max = 4096, .arg = "N",
	  .help = "CPU threads the memory estimate assumes (default:\n"
		  "run.threads, else the CPU backend's)" },
	{ .name = "ranks", .kind = LT_CMD_INT, ARG(ranks), .min = 1, .max = 1000000, .arg = "N",
	  .help = "estimate the memory of each of N data-parallel ranks\n"
		  "(each takes its share of train.batch)" },
	{ .name = "zero", .kind = LT_CMD_INT, ARG(zero), .min = 0, .max = 3, .arg = "S",
	  .help = "... at ZeRO stage S (default dist.zero)" },
	{ .name = "tp", .kind = LT_CMD_INT, ARG(tp), .min = 1, .max = 4096, .arg = "N",
	  .help = "... with tensor parallelism over each N of them\n"
		  "(default dist.tp; ZeRO runs over the rest)" },
	{ .name = "pp", .kind = LT_CMD_INT, ARG(pp), .min = 1, .max = 4096, .arg = "N",
	  .help = "... in N pipeline stages (default dist.pp): each\n"
		  "stage's rank, the largest first" },
	{ .name = "keys", .kind = LT_CMD_FLAG, ARG(keys),
	  .help = "list every configuration key: name, type, default,\n"
		  "allowed values and meaning" },
	{ .name = NULL },
};

static const struct lt_cmd_usage info_usage = {
	.cmd = "info",
	.head = "usage: lltrain info [--preset NAME] [--config FILE] [--SECTION.KEY=VALUE]\n"
		"                    [--threads N] [--ranks N] [--zero 0|1|2|3] [--tp N] [--pp N]\n"
		"       lltrain info --keys\n\n"
		"Prints lltrain's version, how it was built, the backends it has with\n"
		"their devices, and for each preset its size, model FLOPs per token and\n"
		"the memory a training step needs; given configuration options, the same\n"
		"for the model they resolve to, at its train.batch and train.seq.\n\n",
	.options = info_options,
	.column = 25,
	.tail = "\nLater settings win: defaults, --preset, --config files, --SECTION.KEY.\n",
};

/* One line per key: section.key, type, default, allowed values, meaning. */
static void print_keys(void)
{
	struct lt_conf defaults;
	char name[64], def[LT_CONF_PATH_MAX + 64], range[96];
	lt_conf_defaults(&defaults);
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++) {
		snprintf(name, sizeof name, "%s.%s", k->section, k->name);
		lt_conf_format(&defaults, k, def, sizeof def);
		lt_conf_range(k, range, sizeof range);
		printf("%-22s  %-6s  %-26s  %-25s  %s\n", name, lt_conf_type_name(k->type),
		       def[0] ? def : "\"\"", range, k->doc);
	}
}

/* The adapters' line: their size, and the types the frozen base is held in. */
static void print_lora(const struct lt_conf *conf, const struct lt_lora *lora)
{
	const struct lt_model_config *c = &conf->model;
	enum lt_dtype wtype = lt_lora_base_type(lora->base, conf->train.precision);
	const char *act = conf->train.precision == LT_PRECISION_BF16 ? "bf16" : "f32";
	char how[64] = "";
	if (lt_dtype_is_block(wtype))
		snprintf(how, sizeof how, " (%zu bytes per %d values)",
			 lt_dtype_bytes(wtype, LT_QBLOCK), LT_QBLOCK);
	printf("  LoRA:             rank %d, alpha %g: %zu trainable parameters (%.2f%% of the "
	       "model); the base frozen, its %zu matrix weights in %s%s, embeddings, norms and "
	       "head in %s\n", lora->rank, lora->alpha, lt_lora_params(c, lora),
	       100.0 * (double)lt_lora_params(c, lora) / (double)lt_model_config_params(c),
	       lt_lora_block_matrix_params(c), lt_dtype_name(wtype), how, act);
}

/* Which common sizes of device memory the training memory fits in. */
static void print_fits(size_t total)
{
	static const int gib[] = { 8, 16, 24, 40, 48, 80 };
	printf("  fits on a GPU of: ");
	for (size_t i = 0; i < sizeof gib / sizeof gib[0]; i++)
		printf("%s%d GiB %s", i ? ", " : "", gib[i],
		       (double)total <= (double)gib[i] * 1073741824.0 ? "yes" : "no");
	printf(" (training memory %.2f GiB)\n", (double)total / 1073741824.0);
}

/* With pipeline stages: a rank of each stage (the line above gave the
 * largest). */
static void print_stages(const struct lt_conf *conf, int threads, int ranks)
{
	int pp = conf->dist.pp, tp = conf->dist.tp, dp = ranks / tp / pp;
	printf("  (the largest of %d pipeline stages' ranks: tensor parallel over %d, data "
	       "parallel over %d at ZeRO stage %d, %d micro-batches of %d of the global %d)\n", pp,
	       tp, dp, conf->dist.zero, conf->train.grad_accum, (conf->train.batch + dp - 1) / dp,
	       conf->train.batch);
	for (int s = 0; s < pp; s++) {
		struct lt_mem_estimate e;
		struct lt_stage st;
		if (lt_layout_stage_estimate(conf, ranks, threads, s, &st, &e) != LT_OK)
			return;
		printf("  stage %d, blocks %d-%d%s: %.1f MiB (params %.1f, grads %.1f, optimizer %.1f, "
		       "activations %.1f, exchange %.1f, workspace %.1f, runtime %.1f)\n", s,
		       st.layer0, st.layer0 + st.layers - 1,
		       s == 0 ? " and the embedding" : s == pp - 1 ? " and the head" : "",
		       e.total / 1048576.0, e.params / 1048576.0, e.grads / 1048576.0,
		       e.optimizer / 1048576.0, e.activations / 1048576.0, e.exchange / 1048576.0,
		       e.workspace / 1048576.0, e.runtime / 1048576.0);
	}
}

/* The shape, size, FLOPs and training memory of c's model at its
 * train.batch x train.seq, under the title "preset NAME" (a preset's
 * model) or "model". */
static void print_model(const struct lt_conf *conf, int threads, int ranks)
{
	const struct lt_model_config *c = &conf->model;
	const char *preset = lt_conf_preset_of(conf);
	int seq = conf->train.seq, zero = conf->dist.zero, tp = conf->dist.tp;
	int dp = ranks / tp / conf->dist.pp;
	/* the largest share of a batch split over the data-parallel ranks */
	int batch = (conf->train.batch + dp - 1) / dp;
	struct lt_mem_estimate est;
	struct lt_lora lora = { 0 };
	if (lt_conf_lora(conf, &lora) != LT_OK)  /* lt_conf_check said so before */
		lora.rank = 0;
	lt_layout_estimate(conf, &lora, ranks, threads, &est);
	char head[32] = "";
	if (c->head_dim)
		snprintf(head, sizeof head, " of %d", c->head_dim);
	printf("%s%s: dim %d, %d layers, %d heads%s (%d kv), ffn %d, vocab %d, max seq %d%s\n",
	       preset ? "preset " : "model", preset ? preset : "", c->dim, c->n_layers, c->n_heads,
	       head, c->n_kv_heads, c->ffn_dim, c->vocab_size, c->max_seq,
	       c->tied ? ", tied embeddings" : "");
	printf("  parameters:       %zu (%.2fM)\n", lt_model_config_params(c),
	       (double)lt_model_config_params(c) / 1e6);
	if (lora.rank > 0)
		print_lora(conf, &lora);
	printf("  FLOPs per token:  %.1f M (at seq %d)\n",
	       lt_model_config_flops_per_token(c, seq) / 1e6, seq);
	char gathered[64] = "";
	if (est.gathered)
		snprintf(gathered, sizeof gathered, ", gathered slots %.1f",
			 est.gathered / 1048576.0);
	char exchange[64] = "";
	if (est.exchange)
		snprintf(exchange, sizeof exchange, ", exchange %.1f", est.exchange / 1048576.0);
	printf("  training memory:  %.1f MiB at batch %d x seq %d, %d threads%s%s (params %.1f, "
	       "grads %.1f, optimizer %.1f%s, activations %.1f%s, workspace %.1f, runtime %.1f)\n",
	       est.total / 1048576.0, batch, seq, threads,
	       conf->train.precision == LT_PRECISION_BF16 ? ", bf16" : "",
	       conf->train.recompute == LT_RECOMPUTE_BLOCK ? ", recompute block" : "",
	       est.params / 1048576.0,
	       est.grads / 1048576.0, est.optimizer / 1048576.0, gathered,
	       est.activations / 1048576.0, exchange, est.workspace / 1048576.0,
	       est.runtime / 1048576.0);
	if (conf->dist.pp > 1)
		print_stages(conf, threads, ranks);
	else if (tp > 1)
		printf("  (per rank of %d: tensor parallel over %d, data parallel over %d at ZeRO "
		       "stage %d, batch %d of the global %d)\n", ranks, tp, dp, zero, batch,
		       conf->train.batch);
	else if (ranks > 1)
		printf("  (per rank of %d at ZeRO stage %d, batch %d of the global %d)\n", ranks, zero,
		       batch, conf->train.batch);
	print_fits(est.total);
}

/* Each backend with its device; *threads becomes the CPU's compute units
 * when it was 0. */
static void print_backends(int *threads)
{
	const char *const *names = lt_backend_names();
	for (int i = 0; names[i]; i++) {
		lt_backend *be = NULL;
		struct lt_device_info dev;
		if (lt_backend_new(names[i], *threads, &be) != LT_OK) {
			printf("backend %s: unavailable: %s\n", names[i], lt_errmsg());
			continue;
		}
		be->ops->info(be, &dev);
		if (!*threads)
			*threads = dev.compute_units;
		printf("backend %s: %s, %.1f GiB, %d compute units\n", names[i], dev.name,
		       (double)dev.mem_bytes / 1073741824.0, dev.compute_units);
		printf("  gemm: %s", dev.gemm);
		lt_backend_set_matmul(be, LT_MATMUL_TF32);
		be->ops->info(be, &dev);
		printf("; with train.matmul = tf32: %s\n  attention: %s\n  bf16: %s\n", dev.gemm,
		       dev.attention, dev.bf16);
		lt_backend_free(be);
	}
}

/* Every OpenCL platform and device, with the P.D that --device takes. */
static void print_opencl_devices(void)
{
#ifdef LT_HAVE_OPENCL
	struct lt_cl_device_desc d[64];
	int n = 0;
	lt_cl_devices(d, 64, &n);
	printf("OpenCL devices: %d%s\n", n, n ? "" : " (no platform with a device was found)");
	for (int i = 0; i < n && i < 64; i++)
		printf("  opencl:%d.%d  %s (%s; %s), %.1f GiB (at most %.1f GiB per buffer), "
		       "%d compute units, %s\n", d[i].platform, d[i].device, d[i].name, d[i].type,
		       d[i].platform_name, (double)d[i].mem_bytes / 1073741824.0,
		       (double)d[i].max_alloc_bytes / 1073741824.0, d[i].compute_units, d[i].version);
#else
	printf("OpenCL devices: none (built without the OpenCL backend)\n");
#endif
}

/* A model too large for one GPU of `gib` GiB: the first layout of `ranks`
 * such GPUs under which a rank fits, in bf16 with recompute, trying
 * tensor parallelism over 1, 2, 4 then 8 ranks and, at each, ZeRO stages 0
 * to 3 (the batch at least one sequence per data-parallel rank). */
static void print_layout_for(const struct lt_conf *conf, int threads, int ranks, int gib)
{
	double cap = (double)gib * 1073741824.0;
	struct lt_lora none = { 0 };
	struct lt_mem_estimate est;
	for (int tp = 1; tp <= ranks && tp <= 8; tp *= 2)
		for (int zero = 0; zero <= 3; zero++) {
			struct lt_conf l = *conf;
			l.dist.tp = tp;
			l.dist.zero = zero;
			l.train.precision = LT_PRECISION_BF16;
			l.train.recompute = LT_RECOMPUTE_BLOCK;
			if (l.train.batch < ranks / tp)
				l.train.batch = ranks / tp;
			if (lt_model_tp_check(&l.model, tp) != LT_OK)
				continue;
			lt_layout_estimate(&l, &none, ranks, threads, &est);
			if ((double)est.total > cap)
				continue;
			printf("  on %d GPUs of %d GiB: tensor parallel over %d x data parallel over "
			       "%d, ZeRO stage %d, bf16, recompute block, batch %d x seq %d: %.2f GiB "
			       "a rank\n", ranks, gib, tp, ranks / tp, zero, l.train.batch,
			       l.train.seq, (double)est.total / 1073741824.0);
			return;
		}
	lt_errmsg_clear();
	printf("  on %d GPUs of %d GiB: no layout of tensor parallelism and ZeRO fits\n", ranks,
	       gib);
}

static void print_presets(int threads)
{
	const char *const *names = lt_conf_preset_names();
	for (int i = 0; names[i]; i++) {
		struct lt_conf p;
		struct lt_mem_estimate est;
		struct lt_lora none = { 0 };
		lt_conf_defaults(&p);
		enum lt_status st = lt_conf_apply_preset(&p, names[i]);
		LT_ASSERT(st == LT_OK);
		print_model(&p, threads, 1);
		lt_layout_estimate(&p, &none, 1, threads, &est);
		if ((double)est.total > 24.0 * 1073741824.0)
			print_layout_for(&p, threads, 8, 24);
	}
}

/* The program, its version and what it was built with. */
static void print_build(void)
{
	printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
	printf("build: C11, OpenMP, OpenBLAS, %sjansson, PCRE2, inih, zlib%s%s%s\n",
#ifdef LT_HAVE_DNNL
	       "oneDNN, ",
#else
	       "",
#endif
#ifdef LT_HAVE_OPENCL
	       ", OpenCL + CLBlast",
#else
	       "",
#endif
	       lt_dist_have_mpi() ? ", MPI" : "",
#if defined(__SANITIZE_ADDRESS__)
	       ", AddressSanitizer"
#else
	       ""
#endif
	);
}

int lt_cmd_info(int argc, char **argv)
{
	struct lt_conf conf;
	int args_before = argc;
	int rc = lt_cmd_preset("info", NULL, &conf, &argc, argv);
	if (rc)
		return rc;
	struct info_args a = { .threads = -1, .zero = -1, .configured = argc != args_before };
	rc = lt_cmd_parse(argc, argv, &info_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	/* --ranks, --zero, --tp and --pp describe a configuration too */
	if (a.ranks || a.zero >= 0 || a.tp || a.pp)
		a.configured = 1;
	if (a.pp)
		conf.dist.pp = a.pp;
	if (a.zero >= 0)
		conf.dist.zero = a.zero;
	if (a.tp)
		conf.dist.tp = a.tp;
	if ((a.ranks ? a.ranks : 1) % (conf.dist.tp * conf.dist.pp) && !((a.ranks ? a.ranks : 1) %
									  conf.dist.tp)) {
		fprintf(stderr, "lltrain info: dist.pp = %d does not divide the %d rank%s of "
			"--ranks: a job runs whole pipelines\n", conf.dist.pp, a.ranks ? a.ranks : 1,
			a.ranks > 1 ? "s" : "");
		return 2;
	}
	if ((a.ranks ? a.ranks : 1) % conf.dist.tp) {
		fprintf(stderr, "lltrain info: dist.tp = %d does not divide the %d rank%s of "
			"--ranks: a job runs whole tensor-parallel groups\n", conf.dist.tp,
			a.ranks ? a.ranks : 1, a.ranks > 1 ? "s" : "");
		return 2;
	}
	if (a.keys) {
		print_keys();
		return 0;
	}
	if (a.configured && lt_conf_check(&conf) != LT_OK) {
		fprintf(stderr, "lltrain info: %s\n", lt_errmsg());
		return 1;
	}
	lt_micro_batch_apply(&conf);
	int threads = a.threads < 0 ? conf.run.threads : a.threads;
	print_build();
	print_backends(&threads);
	print_opencl_devices();
	if (threads <= 0)
		threads = 1;
	if (a.configured)
		print_model(&conf, threads, a.ranks ? a.ranks : 1);
	else
		print_presets(threads);
	return 0;
}
