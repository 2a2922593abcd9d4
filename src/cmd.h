/* The subcommands of the lltrain program; each returns its exit status
 * (0 success, 1 bad input or failure, 2 usage error). */
#ifndef LT_CMD_H
#define LT_CMD_H

int lt_cmd_bench(int argc, char **argv);
int lt_cmd_train(int argc, char **argv);
int lt_cmd_info(int argc, char **argv);

/* Prints "lltrain: <what>: <status>[: <context>]" to stderr. */
void lt_report(const char *what, enum lt_status st);

#endif
