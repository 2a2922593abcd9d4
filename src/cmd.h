/* The subcommands of the lltrain program; each returns its exit status
 * (0 success, 1 bad input or failure, 2 usage error). */
#ifndef LT_CMD_H
#define LT_CMD_H

int lt_cmd_bench(int argc, char **argv);
int lt_cmd_train(int argc, char **argv);
int lt_cmd_info(int argc, char **argv);

struct lt_preset;

/* Prints "lltrain: <what>: <status>[: <context>]" to stderr. */
void lt_report(const char *what, enum lt_status st);
/* The preset a command's --preset names, or NULL after printing
 * "lltrain CMD: --preset 'NAME': unknown (expected ...)" with the choices. */
const struct lt_preset *lt_cmd_preset(const char *cmd, const char *name);
/* Monotonic wall-clock seconds, for timing steps. */
double lt_cmd_seconds(void);

#endif
