/* lltrain's entry point: dispatches to the subcommands. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "status.h"
#include "cmd.h"
#include "presets.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "train", lt_cmd_train, "train a model on a corpus (default: tiny preset on Debian's fortunes)" },
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

const struct lt_preset *lt_cmd_preset(const char *cmd, const char *name)
{
	const struct lt_preset *p = lt_preset_find(name);
	if (p)
		return p;
	const struct lt_preset *const *all = lt_presets();
	fprintf(stderr, "lltrain %s: --preset '%s': unknown (expected ", cmd, name);
	for (int i = 0; all[i]; i++)
		fprintf(stderr, "%s%s", i == 0 ? "" : all[i + 1] ? ", " : " or ", all[i]->name);
	fprintf(stderr, ")\n");
	return NULL;
}

double lt_cmd_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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
