/* lltrain's entry point: dispatches to the subcommands; and what they
 * share: the report of an error, the configuration they start from, the
 * device and the checkpoint they read. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "status.h"
#include "backend.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "model.h"
#include "text/tokenizer.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "prepare", lt_cmd_prepare, "train a tokenizer on text files and encode them into token shards" },
	{ "train", lt_cmd_train, "train a model on a corpus (default: tiny preset on Debian's fortunes)" },
	{ "tune-lr", lt_cmd_tune_lr, "find a learning rate: a range test of the configured run" },
	{ "sample", lt_cmd_sample, "generate text from a checkpoint" },
	{ "chat", lt_cmd_chat, "talk with a checkpoint's model in its chat template" },
	{ "eval", lt_cmd_eval, "loss and perplexity of a checkpoint on a token file" },
	{ "export", lt_cmd_export, "write a checkpoint in the Hugging Face format" },
	{ "prune", lt_cmd_prune, "remove the least important heads, MLP channels and blocks" },
	{ "info", lt_cmd_info, "show the build, backends, devices and preset sizes" },
	{ "plan", lt_cmd_plan, "choose the parallel layout for this launch or a described cluster" },
	{ "bench", lt_cmd_bench, "measure training speed, model FLOP/s and memory of a preset" },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

void lt_report(const char *what, enum lt_status st)
{
	const char *ctx = lt_errmsg();
	if (ctx[0])
		fprintf(stderr, "lltrain: %s: %s\n", what, ctx);
	else
		fprintf(stderr, "lltrain: %s: %s\n", what, lt_status_str(st));
}

enum lt_status lt_cmd_backend(const char *cmd, const char *spec, int threads, lt_backend **out)
{
	enum lt_status st = lt_backend_new(spec, threads, out);
	if (st == LT_OK && lt_backend_note()[0])
		fprintf(stderr, "lltrain %s: %s\n", cmd, lt_backend_note());
	return st;
}

const struct lt_cmd_operands lt_cmd_checkpoint_operand = { 1, 1, "a checkpoint or run directory" };

/* Says on stderr which checkpoints of a run directory were passed over
 * as damaged, one line each, and (where st is LT_OK) which one is used. */
static void say_checkpoint(const char *cmd, const struct lt_cmd_checkpoint *c,
			   const struct lt_ckpt_skips *skipped, enum lt_status st)
{
	for (size_t i = 0; i < skipped->n; i++)
		fprintf(stderr, "lltrain %s: skipped %s: %s\n", cmd, skipped->v[i].dir,
			skipped->v[i].why);
	if (st == LT_OK)
		fprintf(stderr, "lltrain %s: using checkpoint %s (step %ld)\n", cmd, c->dir,
			c->state.step);
}

enum lt_status lt_cmd_checkpoint_open(struct lt_cmd_checkpoint *c, const char *path,
				      int tokenizer, const char *cmd)
{
	char file[LT_CMD_PATH_CAP + 32];
	struct lt_ckpt_skips skipped = { 0 };
	enum lt_status st = lt_checkpoint_open(path, c->dir, sizeof c->dir, &c->state, &c->conf,
					       &skipped);
	say_checkpoint(cmd, c, &skipped, st);
	lt_ckpt_skips_free(&skipped);
	if (st != LT_OK || !tokenizer)
		return st;
	if ((st = lt_fs_join(file, sizeof file, c->dir, LT_RUNDIR_TOKENIZER)) != LT_OK)
		return st;
	return lt_tokenizer_load(file, &c->tok);
}

enum lt_status lt_cmd_checkpoint_model(struct lt_cmd_checkpoint *c, const char *cmd,
				       const char *device, int threads)
{
	struct lt_lora lora;
	enum lt_status st = lt_cmd_backend(cmd, device, threads, &c->be);
	if (st != LT_OK || (st = lt_conf_lora(&c->conf, &lora)) != LT_OK ||
	    (st = lt_model_new_adapted(c->be, &c->conf.model, &lora, LT_PRECISION_FP32,
				       &c->model)) != LT_OK)
		return st;
	return lt_checkpoint_load_model(c->dir, c->model);
}

enum lt_status lt_cmd_checkpoint_load(struct lt_cmd_checkpoint *c, const char *path,
				      int tokenizer, const char *cmd, const char *device,
				      int threads)
{
	enum lt_status st = lt_cmd_checkpoint_open(c, path, tokenizer, cmd);
	return st == LT_OK ? lt_cmd_checkpoint_model(c, cmd, device, threads) : st;
}

enum lt_status lt_cmd_checkpoint_data(const struct lt_cmd_checkpoint *c, const char *given,
				      char *out, size_t cap)
{
	char run[LT_CMD_PATH_CAP + 8];
	enum lt_status st;
	if (given || c->conf.data.dir[0]) {
		if ((size_t)snprintf(out, cap, "%s", given ? given : c->conf.data.dir) >= cap) {
			lt_errmsg_set("%s: path too long", given ? given : c->conf.data.dir);
			return LT_ERR_ARG;
		}
		return LT_OK;
	}
	if ((st = lt_rundir_of_checkpoint(c->dir, run, sizeof run)) != LT_OK)
		return st;
	return lt_fs_join(out, cap, run, LT_RUNDIR_DATA);
}

void lt_cmd_checkpoint_free(struct lt_cmd_checkpoint *c)
{
	lt_model_free(c->model);
	lt_backend_free(c->be);
	lt_tokenizer_free(c->tok);
	lt_ckpt_state_free(&c->state);
}

int lt_cmd_preset(const char *cmd, const char *preset, struct lt_conf *c, int *argc,
		  char **argv)
{
	enum lt_status st;
	lt_conf_defaults(c);
	st = preset ? lt_conf_apply_preset(c, preset) : LT_OK;
	if (st == LT_OK)
		st = lt_conf_apply_args(c, argc, argv);
	if (st == LT_OK)
		return 0;
	fprintf(stderr, "lltrain %s: %s\n", cmd, lt_errmsg()[0] ? lt_errmsg() : lt_status_str(st));
	return st == LT_ERR_ARG ? 2 : 1;
}

static void print_usage(FILE *f)
{
	fprintf(f, "usage: lltrain COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'lltrain COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
	/* past a file size limit a write fails (and is reported) instead */
	signal(SIGXFSZ, SIG_IGN);
	if (argc < 2) {
		print_usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		print_usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "help") && argc > 2) {
		char help[] = "--help";
		char *args[] = { argv[2], help, NULL };
		for (size_t i = 0; i < N_COMMANDS; i++)
			if (!strcmp(argv[2], commands[i].name))
				return commands[i].run(2, args);
	}
	if (!strcmp(argv[1], "help")) {
		print_usage(stdout);
		return argc > 2 ? 2 : 0;
	}
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "lltrain: unknown command '%s'\n", argv[1]);
	print_usage(stderr);
	return 2;
}
