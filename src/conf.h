/* The run configuration: every key of the sections [model] [train] [data]
 * [run] [dist], with its type, default and allowed range, read from INI files
 * (through inih), from the built-in presets and from --section.key=value
 * options, later sources winning, and written back out as INI.
 *
 * Ownership: an lt_conf is a plain struct the caller owns; its strings are
 * fixed-size arrays, so it copies by assignment. */
#ifndef LT_CONF_H
#define LT_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "status.h"

#define LT_CONF_PATH_MAX 1024
/* The longest line an INI file may hold, newline excluded (inih's buffer);
 * so a string value is at most this less "key = ". */
#define LT_CONF_LINE_MAX 198
/* An integer key's "auto" (takes_auto). */
#define LT_CONF_AUTO (-1)

struct lt_conf_train {
	int batch;            /* sequences per micro-batch */
	int seq;              /* tokens per sequence (<= model.max_seq) */
	int grad_accum;       /* micro-batches per optimizer step */
	int micro_batch;      /* 0: batch as given; N: the step's batch x grad_accum
			       * sequences in micro-batches of N; LT_CONF_AUTO: of the
			       * largest that fits (lt_micro_batch) */
	int steps;            /* optimizer steps of the run */
	double max_minutes;   /* wall-clock budget; 0 = none */
	struct lt_optim_config optim; /* lr, min_lr, warmup_steps, schedule, betas, eps,
				       * weight_decay, grad_clip; total_steps = steps; lr is
				       * NAN for "auto": a range test chooses it (cmd tune-lr) */
	uint64_t seed;        /* initialisation, batch order, samples */
	int max_bad_steps;    /* NaN/Inf losses in a row before the run aborts */
	enum lt_matmul matmul; /* fp32 | tf32: how GEMMs may round their operands */
	enum lt_recompute recompute; /* none | block: what forward keeps for backward */
	enum lt_precision precision; /* fp32 | bf16: the storage of weights and activations */
	char init[LT_CONF_PATH_MAX]; /* a fresh run's weights and shape: a Hugging Face model
				      * directory, a GGUF file or a checkpoint; "" = random */
	int lora_rank;        /* LoRA adapters' rank; 0 = full training */
	float lora_alpha;     /* the adapters' output is scaled by alpha / rank */
	float lora_dropout;   /* probability of dropping an adapter's input in training */
	char lora_targets[64]; /* comma list of q, k, v, o, gate, up, down */
	enum lt_lora_base lora_base; /* auto | f32 | bf16 | q8_0 | q4_0: the frozen matrices' type */
};

struct lt_conf_data {
	char dir[LT_CONF_PATH_MAX];     /* prepared data: tokenizer.json, train_*.bin, val_*.bin;
					 * empty = RUN_DIR/data */
	char corpus[LT_CONF_PATH_MAX];  /* text that `train` prepares when dir holds no data */
	char doc_separator[64];         /* a line equal to this ends a document ("" = whole file) */
	int vocab_size;                 /* tokenizer size prepared; 0 = model.vocab_size */
	double val_fraction;            /* share of documents held out */
	long shard_tokens;              /* tokens per shard file */
};

struct lt_conf_run {
	char dir[LT_CONF_PATH_MAX];     /* the run directory */
	char device[64];                /* cpu, opencl[:P.D], auto */
	int threads;                    /* 0 = OpenMP's choice */
	double mem_limit;               /* GiB a rank may train in; 0 = its device's free memory */
	int log_every;                  /* plain log line every N steps (not a terminal) */
	int eval_every;                 /* validation loss every N steps; 0 = at the end only */
	int eval_batches;               /* validation batches per evaluation */
	int sample_every;               /* print a sample every N steps; 0 = never */
	int sample_tokens;              /* length of those samples and of the final one */
	int checkpoint_every;           /* 0 = only at the end */
	int keep_checkpoints;           /* the newest J are kept */
	int tensorboard;                /* TensorBoard event files in RUN/tb */
};

enum lt_balance { LT_BALANCE_EVEN, LT_BALANCE_AUTO };
enum lt_exchange { LT_EXCHANGE_AUTO, LT_EXCHANGE_MPI };
enum lt_sync { LT_SYNC_STEP, LT_SYNC_LOCAL };
enum lt_outer_dtype { LT_OUTER_FP32, LT_OUTER_BF16 };

struct lt_conf_dist {
	int zero;                       /* ZeRO stage: 0 to 3 */
	int tp;                         /* ranks per tensor-parallel group */
	int pp;                         /* pipeline stages */
	char pp_layers[256];            /* each stage's blocks, "3,5"; "" = by their cost */
	int pp_ahead;                   /* forwards a stage runs beyond 1F1B's warm-up */
	int balance;                    /* enum lt_balance: the ranks' shares of a batch */
	int balance_every;              /* steps between auto's comparisons (0 = one only) */
	int exchange;                   /* enum lt_exchange: how gradients travel */
	int deterministic;              /* bitwise the same result for any rank count */
	double comm_timeout;            /* seconds a collective may stall before the job ends */
	int sync;                       /* enum lt_sync: how often the nodes exchange */
	int local_steps;                /* sync local: inner steps between the nodes' exchanges */
	double round_seconds;           /* sync local: > 0, a round's wall time instead */
	double outer_lr;                /* sync local: the outer Nesterov step's rate */
	double outer_momentum;          /* sync local: its momentum */
	int outer_overlap;              /* sync local: the exchange runs during the next round */
	int outer_dtype;                /* enum lt_outer_dtype: the moves' type between nodes */
};

struct lt_conf_distill {
	char teacher[LT_CONF_PATH_MAX]; /* a run or checkpoint to distill from; "" = none */
	float alpha;                    /* weight of the cross-entropy; 1 - alpha of T^2 KL */
	float temperature;              /* the softmaxes' temperature T */
};

struct lt_conf {
	struct lt_model_config model;
	struct lt_conf_train train;
	struct lt_conf_data data;
	struct lt_conf_run run;
	struct lt_conf_dist dist;
	struct lt_conf_distill distill;
};

/* One key of the table. */
enum lt_conf_type { LT_CONF_INT, LT_CONF_INT64, LT_CONF_FLOAT, LT_CONF_DOUBLE, LT_CONF_BOOL,
		    LT_CONF_STRING, LT_CONF_ENUM };
/* LT_CONF_INT is a signed int or long (by size), LT_CONF_INT64 an unsigned
 * 64-bit integer, LT_CONF_BOOL an int 0/1, LT_CONF_ENUM an int index into
 * choices, LT_CONF_STRING a NUL-terminated char array of `size` bytes. */
struct lt_conf_key {
	const char *section, *name;
	enum lt_conf_type type;
	size_t offset, size;          /* where in struct lt_conf, bytes (strings: capacity) */
	double min, max;              /* numbers: the range; strings: min is the least length */
	int open_min, open_max;       /* 1 where that bound itself is excluded: (min, max] */
	const char *const *choices;   /* enums: NULL-terminated names, stored as int index */
	int takes_auto;               /* "auto", a value chosen when used: NAN in floats,
				       * LT_CONF_AUTO in integers */
	const char *def;              /* the default, as text lt_conf_set reads */
	const char *doc;              /* one line for lltrain.conf(5) and `info --keys` */
};

/* The keys, NULL-name-terminated, in section order. */
const struct lt_conf_key *lt_conf_keys(void);
/* The key "section.name", or NULL. */
const struct lt_conf_key *lt_conf_find(const char *section, const char *name);

/* For `info --keys` and lltrain.conf(5): a type's name ("int", "float",
 * "bool", "string", "enum", ...), and what a key's values may be:
 * "[1, 65536]", "(0, 10]", "(0, 10]|auto", "true|false", "cosine|linear|constant",
 * "text" or "non-empty text". */
const char *lt_conf_type_name(enum lt_conf_type t);
void lt_conf_range(const struct lt_conf_key *k, char *buf, size_t cap);

/* The built-in defaults (the tiny preset's model). */
void lt_conf_defaults(struct lt_conf *c);
/* Applies the built-in preset NAME (case-insensitive) over c; LT_ERR_NOTFOUND
 * with the known names in lt_errmsg when there is none. */
enum lt_status lt_conf_apply_preset(struct lt_conf *c, const char *name);
/* The preset names, NULL-terminated, in size order. */
const char *const *lt_conf_preset_names(void);
/* The preset whose model c has (every [model] key the same), or NULL. */
const char *lt_conf_preset_of(const struct lt_conf *c);
/* Applies an INI file over c: all of it, or on an error nothing (c is left
 * as it was). LT_ERR_CONFIG errors read "PATH:LINE: [section] key = 'value':
 * expected an integer in [1, 65536]" (the type, the range, the choices);
 * LT_ERR_IO when the file cannot be read. A line holds at most
 * LT_CONF_LINE_MAX characters. */
enum lt_status lt_conf_apply_file(struct lt_conf *c, const char *path);
/* Applies INI text (origin names it in errors, as a path would). */
enum lt_status lt_conf_apply_string(struct lt_conf *c, const char *text, const char *origin);
/* Sets one key from text: "section.key", "value"; origin ("--train.lr")
 * names it in errors: "--train.lr '0': expected a number in (0, 10] or auto"
 * (LT_ERR_CONFIG, also for an unknown key). c is changed only on success,
 * and train.optim.total_steps follows train.steps. */
enum lt_status lt_conf_set(struct lt_conf *c, const char *dotted, const char *value,
			   const char *origin);
/* Checks what single keys cannot: model shape (lt_model_config_check),
 * train.seq <= model.max_seq, batch x seq within an int, min_lr <= lr,
 * optim.total_steps == steps. (A warmup as long as the run is allowed: the
 * rate then only warms up, which short test runs want.) */
enum lt_status lt_conf_check(const struct lt_conf *c);
/* dist.pp_layers as layers[dist.pp] (all 0 when unset: the stages follow
 * the blocks' cost); one line naming the value when it does not split
 * model.n_layers into dist.pp stages. */
enum lt_status lt_conf_pp_layers(const struct lt_conf *c, int *layers);
/* The adapters the train.lora_* keys ask for (rank 0: none); LT_ERR_CONFIG
 * naming the key for a target list with an unknown or repeated name. */
enum lt_status lt_conf_lora(const struct lt_conf *c, struct lt_lora *out);

/* Writes every key as INI that lt_conf_apply_file reads back to the same
 * struct (each float and double in the shortest text that reads back to
 * the same bits). */
enum lt_status lt_conf_write(const struct lt_conf *c, FILE *f);
/* The same into a new malloc'd NUL-terminated string. */
enum lt_status lt_conf_to_string(const struct lt_conf *c, char **out);
/* A key's current value as text, into buf (as lt_conf_write writes it). */
void lt_conf_format(const struct lt_conf *c, const struct lt_conf_key *k, char *buf, size_t cap);

/* Command-line handling shared by the commands: scans argv[1..] (up to a
 * "--", which stays with all that follows it) for --preset NAME,
 * --config FILE (repeatable) and --section.key=value (or --section.key
 * value; the = forms of all three work), and removes them from argv (argc
 * updated, argv[argc] = NULL) so getopt sees only the command's own
 * options, in their order. They apply over c by kind, so that precedence
 * does not depend on their places: every --preset, then every --config in
 * order, then every --section.key in order. On an error c is left as it was:
 * LT_ERR_ARG with "OPTION: problem" in lt_errmsg for a bad option (a usage
 * error), or a --config file's own status and message (LT_ERR_IO,
 * LT_ERR_CONFIG: bad input). */
enum lt_status lt_conf_apply_args(struct lt_conf *c, int *argc, char **argv);

/* The number parsers every command's options use: the whole text must be
 * a number in [min, max]; otherwise LT_ERR_ARG with "ORIGIN 'TEXT':
 * expected an integer (a number) in [min, max]" in lt_errmsg. */
enum lt_status lt_parse_long(const char *origin, const char *text, long min, long max, long *out);
enum lt_status lt_parse_double(const char *origin, const char *text, double min, double max,
			       double *out);

#endif
