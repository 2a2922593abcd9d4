/* lltrain's entry point: dispatches to the subcommands. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "status.h"
#include "backend.h"
#include "cmd/cmd.h"
#include "conf.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "prepare", lt_cmd_prepare, "train a tokenizer on text files and encode them into token shards" },
	{ "train", lt_cmd_train, "train a model on a corpus (default: tiny preset on Debian's fortunes)" },
	{ "sample", lt_cmd_sample, "generate text from a checkpoint" },
	{ "eval", lt_cmd_eval, "loss and perplexity of a checkpoint on a token file" },
	{ "export", lt_cmd_export, "write a checkpoint in the Hugging Face format" },
	{ "info", lt_cmd_info, "show the build, backends, devices and preset sizes" },
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
