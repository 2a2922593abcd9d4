/* The subcommands of the lltrain program; each returns its exit status
 * (0 success, 1 bad input or failure, 2 usage error). */
#ifndef LT_CMD_H
#define LT_CMD_H

#include "backend.h"
#include "status.h"

int lt_cmd_bench(int argc, char **argv);
int lt_cmd_train(int argc, char **argv);
int lt_cmd_info(int argc, char **argv);
int lt_cmd_prepare(int argc, char **argv);
int lt_cmd_sample(int argc, char **argv);
int lt_cmd_eval(int argc, char **argv);
int lt_cmd_export(int argc, char **argv);

struct lt_conf;

/* One option of a command, one row of the table from which both its
 * getopt_long table and the option lines of its --help derive. name is the
 * long option without "--"; has_arg is getopt_long's no_argument or
 * required_argument; id is the value the option is taken under (a
 * positive char, never '?'; 'h' is --help, which lt_cmd_getopt answers
 * itself), or 0 for a line of the help only, an option taken elsewhere (by
 * lt_cmd_preset) and not given to getopt_long; arg names the option's value
 * in the help ("--name ARG"), NULL for none; help is the text after it, a
 * '\n' starting a continuation line under the text's column. A row with a
 * NULL name ends the table. */
struct lt_cmd_option {
	const char *name;
	int has_arg;
	int id;
	const char *arg;
	const char *help;
};

/* A command's --help: head (the usage lines and the description, up to the
 * option lines), one line per option with its text starting at column
 * (continuation lines likewise), then tail (NULL for none). */
struct lt_cmd_usage {
	const char *head;
	const struct lt_cmd_option *options;
	int column;
	const char *tail;
};

/* Prints u's help to stdout. */
void lt_cmd_print_help(const struct lt_cmd_usage *u);
/* Runs getopt_long over argv (from argv[1]) with u's options and hands each
 * option but --help to take(ctx, id, value), value being getopt's optarg.
 * take returns 0 to go on, else the exit status to stop with, after saying
 * why. Returns -1 to go on, with optind at the first operand; 0 after --help
 * printed the help; 2 after getopt_long's own message (an unknown,
 * ambiguous or incomplete option); or take's status. */
int lt_cmd_getopt(int argc, char **argv, const struct lt_cmd_usage *u,
		  int (*take)(void *ctx, int id, const char *value), void *ctx);
/* Checks that argv holds from min to max operands from optind on: -1 when
 * it does, else 2 after printing "lltrain CMD: expected WHAT (see --help)"
 * (too few) or "lltrain CMD: unexpected argument 'ARG'" (the first one too
 * many). */
int lt_cmd_operands(const char *cmd, int argc, char **argv, int min, int max, const char *what);

/* Prints "lltrain: <what>: <status>[: <context>]" to stderr. */
void lt_report(const char *what, enum lt_status st);
/* A command's configuration: the defaults, then the preset the command
 * starts from (NULL: the defaults' own, tiny), then the --preset, --config
 * and --SECTION.KEY options of argv, which are taken out of it (see
 * lt_conf_apply_args). Returns 0, or the exit status after printing
 * "lltrain CMD: <what is wrong>" (e.g. "--preset 'huge': unknown (expected
 * tiny, 15M, 110M or 1B)"): 2 for a bad option, 1 for a --config file that
 * cannot be read or holds a bad setting. */
int lt_cmd_preset(const char *cmd, const char *preset, struct lt_conf *c, int *argc,
		  char **argv);
/* An option's number through lt_parse_long / lt_parse_double: 0 when it
 * is one in [min, max], else 2 (a usage error) after printing
 * "lltrain CMD: OPT 'TEXT': expected ..." to stderr. */
int lt_cmd_long(const char *cmd, const char *opt, const char *text, long min, long max, long *out);
int lt_cmd_double(const char *cmd, const char *opt, const char *text, double min, double max,
		  double *out);
/* lt_backend_new, then (for --device auto) the line saying which device
 * it chose, printed to stderr as "lltrain CMD: device auto: ...". */
enum lt_status lt_cmd_backend(const char *cmd, const char *spec, int threads, lt_backend **out);

#endif
