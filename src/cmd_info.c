/* lltrain info: version, build, backends and devices, and for a preset its
 * parameter count, FLOPs per token and memory estimate. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "cmd.h"
#include "model.h"
#include "presets.h"

static void print_help(void)
{
	printf("usage: lltrain info [--preset NAME] [--threads N]\n\n"
	       "Prints lltrain's version, how it was built, the backends it has with\n"
	       "their devices, and for a preset its size, model FLOPs per token and the\n"
	       "memory a training step needs.\n\n"
	       "  --preset NAME   tiny, 15M, 110M or 1B (default: all of them)\n"
	       "  --threads N     CPU threads the memory estimate assumes (default:\n"
	       "                  the CPU backend's)\n");
}

static void print_preset(const struct lt_preset *p, int threads)
{
	const struct lt_model_config *c = &p->model;
	struct lt_mem_estimate est;
	lt_model_estimate_memory(c, p->batch, p->seq, threads, &est);
	printf("preset %s: dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, max seq %d%s\n",
	       p->name, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim, c->vocab_size,
	       c->max_seq, c->tied ? ", tied embeddings" : "");
	printf("  parameters:       %zu (%.2fM)\n", lt_model_config_params(c),
	       (double)lt_model_config_params(c) / 1e6);
	printf("  FLOPs per token:  %.1f M (at seq %d)\n", lt_model_config_flops_per_token(c, p->seq) / 1e6,
	       p->seq);
	printf("  training memory:  %.1f MiB at batch %d x seq %d, %d threads (params %.1f, grads %.1f, "
	       "optimizer %.1f, activations %.1f, workspace %.1f, runtime %.1f)\n",
	       est.total / 1048576.0, p->batch, p->seq, threads, est.params / 1048576.0,
	       est.grads / 1048576.0, est.optimizer / 1048576.0, est.activations / 1048576.0,
	       est.workspace / 1048576.0, est.runtime / 1048576.0);
}

int lt_cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "preset", required_argument, NULL, 'p' }, { "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	const char *preset = NULL;
	int threads = 0, c;
	char *end;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': preset = optarg; break;
		case 't':
			threads = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || threads <= 0 || threads > 4096) {
				fprintf(stderr, "lltrain info: --threads '%s': expected an integer in [1, 4096]\n",
					optarg);
				return 2;
			}
			break;
		case 'h': print_help(); return 0;
		default: return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "lltrain info: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	const struct lt_preset *only = preset ? lt_cmd_preset("info", preset) : NULL;
	if (preset && !only)
		return 2;

	printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
	printf("build: C11, OpenMP, OpenBLAS, jansson, PCRE2%s\n",
#if defined(__SANITIZE_ADDRESS__)
	       ", AddressSanitizer"
#else
	       ""
#endif
	);
	const char *const *names = lt_backend_names();
	for (int i = 0; names[i]; i++) {
		lt_backend *be = NULL;
		struct lt_device_info dev;
		if (lt_backend_new(names[i], threads, &be) != LT_OK) {
			printf("backend %s: unavailable: %s\n", names[i], lt_errmsg());
			continue;
		}
		be->ops->info(be, &dev);
		if (!threads)
			threads = dev.compute_units;
		printf("backend %s: %s, %.1f GiB, %d compute units\n", names[i], dev.name,
		       (double)dev.mem_bytes / 1073741824.0, dev.compute_units);
		lt_backend_free(be);
	}
	if (threads <= 0)
		threads = 1;
	const struct lt_preset *const *all = lt_presets();
	for (int i = 0; all[i]; i++)
		if (!only || only == all[i])
			print_preset(all[i], threads);
	return 0;
}
