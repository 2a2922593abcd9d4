/* The subcommands' option tables: each command's --help option lines, its
 * getopt_long table and the parsing of each option's value come from one
 * table, and one loop takes them. */
#include "config.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cmd/cmd.h"
#include "conf.h"

/* The most options one command takes through getopt_long. */
#define MAX_OPTIONS 32
/* getopt_long's value for --help, and for row i of a table BASE_ID + i:
 * none of them a char, so none is '?'. */
#define HELP_ID 256
#define BASE_ID 257

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

/* One option line of the help: "  --name ARG", padded to column, then help. */
static void print_option(const char *name, const char *arg, const char *help, int column)
{
	int n = printf("  --%s%s%s", name, arg ? " " : "", arg ? arg : "");
	printf("%*s", n < column ? column - n : 1, "");
	print_indented(help, column);
}

void lt_cmd_print_help(const struct lt_cmd_usage *u)
{
	fputs(u->head, stdout);
	for (const struct lt_cmd_option *o = u->options; o->name; o++)
		print_option(o->name, o->arg, o->help, u->column);
	print_option("help", NULL, "this text", u->column);
	if (u->tail)
		fputs(u->tail, stdout);
}

/* The size of the field each kind sets (0: none). */
static size_t field_size(enum lt_cmd_kind kind)
{
	switch (kind) {
	case LT_CMD_TEXT: return sizeof(const char *);
	case LT_CMD_FLAG:
	case LT_CMD_INT: return sizeof(int);
	case LT_CMD_LONG: return sizeof(long);
	case LT_CMD_REAL: return sizeof(double);
	default: return 0;
	}
}

/* An integer bound of the table as a long (see struct lt_cmd_option). */
static long long_bound(double bound)
{
	return bound >= (double)LONG_MAX ? LONG_MAX : (long)bound;
}

/* Takes value into o's field of args (or into conf); LT_ERR_ARG after
 * setting the message that says why not. */
static enum lt_status take(const struct lt_cmd_option *o, const char *value, void *args,
			   struct lt_conf *conf)
{
	char opt[64];
	void *field = (char *)args + o->offset;
	enum lt_status st = LT_OK;
	long v;
	snprintf(opt, sizeof opt, "--%s", o->name);
	switch (o->kind) {
	case LT_CMD_TEXT: *(const char **)field = value; break;
	case LT_CMD_FLAG: *(int *)field = 1; break;
	case LT_CMD_INT:
		st = lt_parse_long(opt, value, long_bound(o->min), long_bound(o->max), &v);
		if (st == LT_OK)
			*(int *)field = (int)v;
		break;
	case LT_CMD_LONG:
		st = lt_parse_long(opt, value, long_bound(o->min), long_bound(o->max), field);
		break;
	case LT_CMD_REAL: st = lt_parse_double(opt, value, o->min, o->max, field); break;
	case LT_CMD_KEY:
		LT_ASSERT(conf);
		st = lt_conf_set(conf, o->key, value, opt);
		break;
	case LT_CMD_NOTE: LT_ASSERT(0);
	}
	return st;
}

/* The options of argv into args and conf; -1 to go on, else the exit
 * status (see lt_cmd_parse). */
static int take_options(int argc, char **argv, const struct lt_cmd_usage *u, void *args,
			struct lt_conf *conf)
{
	struct option longopts[MAX_OPTIONS + 2];
	int n = 0, c;
	for (int i = 0; u->options[i].name; i++) {
		const struct lt_cmd_option *o = &u->options[i];
		if (o->kind == LT_CMD_NOTE)
			continue;
		LT_ASSERT(n < MAX_OPTIONS && o->size == field_size(o->kind));
		longopts[n++] = (struct option){ o->name,
						 o->kind == LT_CMD_FLAG ? no_argument : required_argument,
						 NULL, BASE_ID + i };
	}
	longopts[n++] = (struct option){ "help", no_argument, NULL, HELP_ID };
	longopts[n] = (struct option){ NULL, 0, NULL, 0 };
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == HELP_ID) {
			lt_cmd_print_help(u);
			return 0;
		}
		if (c < BASE_ID)
			return 2;
		if (take(&u->options[c - BASE_ID], optarg, args, conf) != LT_OK) {
			fprintf(stderr, "lltrain %s: %s\n", u->cmd, lt_errmsg());
			return 2;
		}
	}
	return -1;
}

int lt_cmd_parse(int argc, char **argv, const struct lt_cmd_usage *u, void *args,
		 struct lt_conf *conf)
{
	int rc = take_options(argc, argv, u, args, conf);
	if (rc >= 0)
		return rc;
	if (u->check && (rc = u->check(args)) != 0)
		return rc;
	static const struct lt_cmd_operands none = { 0, 0, NULL };
	const struct lt_cmd_operands *ops = u->operands ? u->operands : &none;
	if (argc - optind < ops->min) {
		fprintf(stderr, "lltrain %s: expected %s (see --help)\n", u->cmd, ops->what);
		return 2;
	}
	if (argc - optind > ops->max) {
		fprintf(stderr, "lltrain %s: unexpected argument '%s'\n", u->cmd,
			argv[optind + ops->max]);
		return 2;
	}
	return -1;
}
