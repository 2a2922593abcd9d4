/* The subcommands of the lltrain program; each returns its exit status
 * (0 success, 1 bad input or failure, 2 usage error). */
#ifndef LT_CMD_H
#define LT_CMD_H

#include <stddef.h>

#include "backend.h"
#include "conf.h"
#include "dist/dist.h"
#include "io/checkpoint.h"
#include "model.h"
#include "status.h"
#include "text/tokenizer.h"
#include "train/trainer.h"

int lt_cmd_bench(int argc, char **argv);
int lt_cmd_train(int argc, char **argv);
int lt_cmd_info(int argc, char **argv);
int lt_cmd_prepare(int argc, char **argv);
int lt_cmd_sample(int argc, char **argv);
int lt_cmd_chat(int argc, char **argv);
int lt_cmd_eval(int argc, char **argv);
int lt_cmd_export(int argc, char **argv);
int lt_cmd_prune(int argc, char **argv);
int lt_cmd_plan(int argc, char **argv);
int lt_cmd_tune_lr(int argc, char **argv);

struct lt_plan_limits;
struct lt_dist;
/* Which of the planner's keys (dist.tp, dist.pp, dist.zero,
 * train.precision, train.recompute, train.grad_accum) a --config file or
 * --SECTION.KEY of args[0 .. argc) sets, into lim's fixed_* (args is left
 * as it is; --preset's settings are the search's to change). */
void lt_cmd_plan_fixed(int argc, char **args, struct lt_plan_limits *lim);
/* train --plan auto (collective): the launch's ranks probe themselves,
 * rank 0 finds the fastest layout of them as they are that fits (the
 * keys fixed kept), every rank applies it to conf and rank 0 prints it;
 * LT_ERR_CONFIG with one line when none fits. */
enum lt_status lt_cmd_plan_auto(struct lt_dist *d, const struct lt_plan_limits *fixed,
				struct lt_conf *conf);
/* A run alone on a CPU node of LT_PLAN_HINT_CORES cores or more, over all
 * of them: when the planner's model says that several ranks of fewer
 * threads would train at least 1.25x faster, one line on stdout with the
 * launch. */
#define LT_PLAN_HINT_CORES 8
void lt_cmd_plan_hint(const struct lt_conf *conf, const struct lt_plan_limits *fixed);

/* What an option does with its value (kinds that take a field set the
 * field at offset in the command's arguments struct). */
enum lt_cmd_kind {
	LT_CMD_NOTE,  /* a line of the help only: taken elsewhere (by lt_cmd_preset) */
	LT_CMD_TEXT,  /* a const char * field points to the value */
	LT_CMD_FLAG,  /* an int field becomes 1; the option takes no value */
	LT_CMD_INT,   /* an int field becomes the value, an integer in [min, max] */
	LT_CMD_LONG,  /* a long field, likewise */
	LT_CMD_REAL,  /* a double field becomes the value, a number in [min, max] */
	LT_CMD_KEY,   /* the configuration key named key takes the value (lt_conf_set) */
};

/* One option of a command, one row of the table from which its
 * getopt_long table, the parsing of its value and its line in the --help
 * derive. name is the long option without "--"; offset and size (set by
 * LT_CMD_FIELD) place the field of TEXT, FLAG, INT, LONG and REAL; min and
 * max bound INT, LONG and REAL (for INT and LONG, a max of LONG_MAX or more
 * stands for LONG_MAX); key is KEY's "section.key"; arg names the option's
 * value in the help ("--name ARG"), NULL for none; help is the text after
 * it, a '\n' starting a continuation line under the text's column. A row
 * with a NULL name ends the table; --help is every command's, and not in
 * it. */
struct lt_cmd_option {
	const char *name;
	enum lt_cmd_kind kind;
	size_t offset, size;
	double min, max;
	const char *key;
	const char *arg;
	const char *help;
};

/* The designators that place field f of the arguments struct type. */
#define LT_CMD_FIELD(type, f) .offset = offsetof(type, f), .size = sizeof(((type *)0)->f)

/* The operands a command takes: from min to max of them; what says what
 * they are ("expected WHAT"). */
struct lt_cmd_operands {
	int min, max;
	const char *what;
};

/* A command's command line. Its --help: head (the usage lines and the
 * description, up to the option lines), one line per option with its text
 * starting at column (continuation lines likewise), the line of --help,
 * then tail (NULL for none). cmd is the command's name, as its messages
 * give it. After the options, check (NULL for none) looks at the arguments
 * struct as a whole: 0, or the exit status after saying why. Then the
 * operands follow (NULL: none). */
struct lt_cmd_usage {
	const char *cmd;
	const char *head;
	const struct lt_cmd_option *options;
	int column;
	const char *tail;
	int (*check)(const void *args);
	const struct lt_cmd_operands *operands;
};

/* One checkpoint or run directory, the operand of sample, eval and export. */
extern const struct lt_cmd_operands lt_cmd_checkpoint_operand;

/* Prints u's help to stdout. */
void lt_cmd_print_help(const struct lt_cmd_usage *u);
/* Runs getopt_long over argv (from argv[1]) with u's options, taking each
 * into the struct args or (KEY) the configuration conf, which may be NULL
 * where no row is a KEY; then u's check, then counts the operands. Returns
 * -1 to go on, with optind at the first operand; 0 after --help printed the
 * help; 2 after getopt_long's own message (an unknown, ambiguous or
 * incomplete option), after printing "lltrain CMD: <what is wrong>" for a
 * bad value (e.g. "--steps 'many': expected an integer in [1, 1000000]"),
 * "lltrain CMD: expected OPERANDS (see --help)" (too few operands) or
 * "lltrain CMD: unexpected argument 'ARG'" (the first one too many); or
 * check's status. */
int lt_cmd_parse(int argc, char **argv, const struct lt_cmd_usage *u, void *args,
		 struct lt_conf *conf);

/* Prints "lltrain: <what>: <status>[: <context>]" to stderr. */
void lt_report(const char *what, enum lt_status st);
/* A command's configuration: the defaults, then the preset the command
 * starts from (NULL: the defaults' own, tiny), then the --preset, --config
 * and --SECTION.KEY options of argv, which are taken out of it (see
 * lt_conf_apply_args). Returns 0, or the exit status after printing
 * "lltrain CMD: <what is wrong>" (e.g. "--preset 'huge': unknown (expected
 * tiny, 15M, 110M, 1B or 7B)"): 2 for a bad option, 1 for a --config file that
 * cannot be read or holds a bad setting. */
int lt_cmd_preset(const char *cmd, const char *preset, struct lt_conf *c, int *argc,
		  char **argv);
/* lt_backend_new, then (for --device auto) the line saying which device
 * it chose, printed to stderr as "lltrain CMD: device auto: ...". */
enum lt_status lt_cmd_backend(const char *cmd, const char *spec, int threads, lt_backend **out);

/* Room for a path the commands build: a configured path plus the names
 * lltrain adds to it. */
#define LT_CMD_PATH_CAP (LT_CONF_PATH_MAX + 128)

/* A checkpoint as sample, eval and export read it: zeroed, then filled by
 * lt_cmd_checkpoint_open and lt_cmd_checkpoint_model; freed (what of it
 * was filled) by lt_cmd_checkpoint_free. */
struct lt_cmd_checkpoint {
	char dir[LT_CMD_PATH_CAP];  /* the checkpoint directory */
	struct lt_ckpt_state state;
	struct lt_conf conf;        /* the defaults with the checkpoint's config over them */
	lt_tokenizer *tok;          /* its tokenizer.json, where asked for; else NULL */
	lt_backend *be;
	lt_model *model;            /* the config's model on be, with the checkpoint's weights */
};

/* lt_checkpoint_open of path (a checkpoint or a run directory), then, when
 * tokenizer is set, the checkpoint's tokenizer. Says on stderr, as
 * "lltrain CMD: skipped DIR: WHY", each damaged checkpoint of a run
 * directory passed over (on failure too), and then "lltrain CMD: using
 * checkpoint DIR (step N)"; stdout is left to the command's output. */
enum lt_status lt_cmd_checkpoint_open(struct lt_cmd_checkpoint *c, const char *path,
				      int tokenizer, const char *cmd);
/* export --format gguf: c's model (on the CPU, adapters merged) and
 * tokenizer as the GGUF file out, its weights of type type_name (f32,
 * f16, bf16, q8_0 or q4_0), written beside out and renamed into place; an
 * existing out is replaced only with force. */
enum lt_status lt_cmd_export_gguf(struct lt_cmd_checkpoint *c, const char *out,
				  const char *type_name, int force);
/* The backend of device (lt_cmd_backend, so cmd names the command in the
 * line of --device auto) and on it the model with the checkpoint's weights. */
enum lt_status lt_cmd_checkpoint_model(struct lt_cmd_checkpoint *c, const char *cmd,
				       const char *device, int threads);
/* Both: lt_cmd_checkpoint_open, then lt_cmd_checkpoint_model. */
enum lt_status lt_cmd_checkpoint_load(struct lt_cmd_checkpoint *c, const char *path,
				      int tokenizer, const char *cmd, const char *device,
				      int threads);
/* The data a command reads for checkpoint c: given (an option's value)
 * where not NULL, else the config's data.dir, else the run directory's
 * data/ (the run directory holds checkpoints/step_N); into out[cap]. */
enum lt_status lt_cmd_checkpoint_data(const struct lt_cmd_checkpoint *c, const char *given,
				      char *out, size_t cap);
/* export --format hf: c's model (plain, or with adapters merged) under
 * c's config, with the tokenizer files of c's checkpoint, as the Hugging
 * Face directory out (written beside it and moved into place; an out
 * with files is written into only with force). */
enum lt_status lt_cmd_export_hf(const struct lt_cmd_checkpoint *c, const char *out, int force);
void lt_cmd_checkpoint_free(struct lt_cmd_checkpoint *c);

/* A command that runs the trainer from train's configuration options
 * (--preset, --config, --SECTION.KEY=VALUE and train's short forms of
 * keys, such as --zero N) and corpus operands: train and tune-lr. */
struct lt_cmd_trainer {
	const char *cmd;
	/* The command's own options in argv[argc] (the configuration's taken
	 * out) into args, and the --resume value (NULL, "auto" or a path)
	 * into *resume: -1 to go on, with optind at the first corpus
	 * operand; else the exit status (0 after --help). */
	int (*parse)(int argc, char **argv, void *args, const char **resume);
	/* 1: a new run may start in a run directory that holds checkpoints
	 * (the command saves none); 0: such a run is refused. */
	int beside_checkpoints;
	/* Runs it from the resolved config c and start s (its skipped list is
	 * printed after it, where still full); *t gets the trainer made last,
	 * which the caller frees. Collective over d. */
	enum lt_status (*run)(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s, void *args,
			      lt_trainer **t);
};

/* The whole command m under MPI or alone: the job's ranks, the options,
 * where the run starts (a checkpoint for --resume, train.init's model),
 * the layout's checks, then m->run; returns the exit status, having
 * reported any failure ("lltrain: CMD: ..."). */
int lt_cmd_trainer_main(int argc, char **argv, const struct lt_cmd_trainer *m, void *args);
/* lt_trainer_new and lt_trainer_open of c and s, then lt_trainer_run with
 * SIGINT and SIGTERM caught (they stop the loop after the step under
 * way); *t gets the trainer. */
enum lt_status lt_cmd_trainer_run(lt_dist *d, const struct lt_conf *c,
				  const struct lt_trainer_start *s, lt_trainer **t);
/* train.micro_batch = auto (collective): the largest micro-batch of the
 * step (below the planner's choice, with planned, where --plan auto chose
 * one) whose estimated memory fits every rank with 10% left free, checked
 * by one step of a throwaway trainer from start s, which writes nothing
 * to the run directory but prepares its data where there are none (s's
 * corpus is then dropped); a smaller one while the trial runs out of
 * memory. Sets c's batch and grad_accum and says so in a line.
 * LT_ERR_CONFIG with one line when none fits; *t holds a failed trial's
 * trainer, for the caller to end. */
enum lt_status lt_cmd_micro_batch(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s,
				  int planned, lt_trainer **t);
/* train.lr = auto in a new run: the range test of lltrain tune-lr with its
 * default settings from start s (the trainer in *t, for the caller to
 * free), its plot and curve (RUN/lr_find.jsonl) as tune-lr gives them,
 * then train.lr in c set to the suggested rate (job rank 0's), and
 * train.min_lr to a tenth of it where it was higher, each said in a line.
 * LT_ERR_INTERRUPTED when a signal stopped the test. */
enum lt_status lt_cmd_tune_lr_auto(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s,
				   lt_trainer **t);

#endif
