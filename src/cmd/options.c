/* The subcommands' option tables: each command's --help option lines and
 * its getopt_long table come from one table, and one loop takes them. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"

/* The most options one command takes through getopt_long. */
#define MAX_OPTIONS 32

/* text, each '\n' in it followed by column spaces, then a newline. */
static void print_indented(const char *text, int column)
{
	const char *nl;
	while ((nl = strchr(text, '\n')) != NULL) {
		printf("%.*s\n%*s", (int)(nl - text), text, column, "");
		text = nl + 1;
	}
	printf("%s\n", text);
}

void lt_cmd_print_help(const struct lt_cmd_usage *u)
{
	fputs(u->head, stdout);
	for (const struct lt_cmd_option *o = u->options; o->name; o++) {
		int n = printf("  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		printf("%*s", n < u->column ? u->column - n : 1, "");
		print_indented(o->help, u->column);
	}
	if (u->tail)
		fputs(u->tail, stdout);
}

int lt_cmd_getopt(int argc, char **argv, const struct lt_cmd_usage *u,
		  int (*take)(void *ctx, int id, const char *value), void *ctx)
{
	struct option longopts[MAX_OPTIONS + 1];
	int n = 0, c;
	for (const struct lt_cmd_option *o = u->options; o->name; o++) {
		if (!o->id)
			continue;
		LT_ASSERT(n < MAX_OPTIONS && o->id != '?');
		longopts[n++] = (struct option){ o->name, o->has_arg, NULL, o->id };
	}
	longopts[n] = (struct option){ NULL, 0, NULL, 0 };
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int rc;
		if (c == 'h') {
			lt_cmd_print_help(u);
			return 0;
		}
		if (c == '?')
			return 2;
		if ((rc = take(ctx, c, optarg)) != 0)
			return rc;
	}
	return -1;
}

int lt_cmd_operands(const char *cmd, int argc, char **argv, int min, int max, const char *what)
{
	if (argc - optind < min) {
		fprintf(stderr, "lltrain %s: expected %s (see --help)\n", cmd, what);
		return 2;
	}
	if (argc - optind > max) {
		fprintf(stderr, "lltrain %s: unexpected argument '%s'\n", cmd, argv[optind + max]);
		return 2;
	}
	return -1;
}
