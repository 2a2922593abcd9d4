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
