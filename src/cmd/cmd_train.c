/* lltrain train: trains a model from a config on prepared data (preparing
 * the corpus first when the data directory holds none), logging metrics,
 * evaluating, sampling and checkpointing as the config asks, resumable
 * after a crash. With no arguments it trains the tiny preset on the
 * fortune-cookie texts of Debian's fortunes package into runs/default.
 * This file reads the options and finds where the run starts, for train
 * and for tune-lr, which runs the same trainer (lt_cmd_trainer_main); the
 * trainer (src/train/) runs it. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "train/plan.h"
#include "conf.h"
#include "dist/agree.h"
#include "dist/dist.h"
#include "dist/local_sgd.h"
#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/import.h"
#include "io/rundir.h"
#include "text/prepare.h"
#include "train/micro.h"
#include "train/run_files.h"
#include "train/trainer.h"

/* Set by SIGINT/SIGTERM: the trainer saves a checkpoint and stops. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/* The command running (train or tune-lr), for its messages. */
static const char *cmd_name = "train";
/* train --plan auto: the planner's layout for this launch's ranks. */
static int plan_auto;

static void print_help(void)
{
	printf("usage: lltrain train [OPTIONS] [CORPUS_FILE_OR_DIR ...]\n\n"
	       "Trains the configured model on the prepared data in data.dir (default\n"
	       "RUN_DIR/data). When that directory holds no prepared data, the corpus\n"
	       "(the arguments, else data.corpus) is prepared into it first, as\n"
	       "`lltrain prepare` would. The run directory gets config.ini (the resolved\n"
	       "config), metrics.jsonl, tb/ (TensorBoard: tensorboard --logdir RUN_DIR/tb)\n"
	       "and checkpoints/. Ctrl-C saves a checkpoint.\n\n"
	       "  --preset NAME          tiny, 15M, 110M, 1B or 7B (default tiny)\n"
	       "  --config FILE          an INI file of settings (repeatable)\n"
	       "  --SECTION.KEY=VALUE    any setting of lltrain.conf(5), e.g. --train.steps=2000\n"
	       "  --plan auto            the planner's fastest layout for this launch's ranks\n"
	       "                         (the keys given stay fixed; see lltrain-plan(1))\n"
	       "  --resume auto|PATH     continue from the newest valid checkpoint of the run\n"
	       "                         directory (auto), or from a checkpoint directory\n"
	       "  --init PATH            a new run starts from this model: a Hugging Face model\n"
	       "                         directory, a GGUF file or a checkpoint (--train.init)\n"
	       "  --zero 0|1|2|3         ZeRO stage over MPI ranks (--dist.zero)\n"
	       "  --tp N                 tensor parallelism over each N ranks (--dist.tp)\n"
	       "  --pp N                 pipeline parallelism over N stages (--dist.pp)\n"
	       "  --balance even|auto    the ranks' shares of a batch (--dist.balance)\n"
	       "  --exchange auto|mpi    gradients through a node's shared memory or MPI\n"
	       "                         (--dist.exchange)\n"
	       "  --sync step|local      nodes exchange every step, or every dist.local_steps\n"
	       "                         steps through an outer optimizer (--dist.sync)\n"
	       "  --deterministic        bitwise the same for any rank count (--dist.deterministic)\n"
	       "  --comm-timeout SEC     end the job when a collective stalls (--dist.comm_timeout)\n"
	       "  --recompute none|block keep only each block's input; backward recomputes the\n"
	       "                         rest (--train.recompute)\n"
	       "  --precision fp32|bf16  bf16 weights and activations, fp32 master weights\n"
	       "                         (--train.precision)\n"
	       "  --help                 this text\n\n"
	       "Later settings win: defaults, --preset, --config files, --SECTION.KEY.\n"
	       "A resumed run starts from the checkpoint's config; options still apply.\n"
	       "With --train.lr=auto, a new run first runs the range test of lltrain tune-lr\n"
	       "and trains at the rate it suggests.\n"
	       "Under mpiexec, each rank takes its share of every batch (train.batch is the\n"
	       "global batch); the run directory must be on a filesystem every rank sees.\n");
}

/* The short spellings of [dist] and [train] keys, rewritten as --dist.KEY=VALUE before
 * the config options are read (so a resumed run applies them too). */
static const struct { const char *opt, *key; int has_arg; } aliases[] = {
	{ "--zero", "dist.zero", 1 },
	{ "--tp", "dist.tp", 1 },
	{ "--pp", "dist.pp", 1 },
	{ "--balance", "dist.balance", 1 },
	{ "--exchange", "dist.exchange", 1 },
	{ "--sync", "dist.sync", 1 },
	{ "--comm-timeout", "dist.comm_timeout", 1 },
	{ "--deterministic", "dist.deterministic", 0 },
	{ "--recompute", "train.recompute", 1 },
	{ "--precision", "train.precision", 1 },
	{ "--init", "train.init", 1 },
};

/* A copy of argv with the aliases rewritten (malloc'd strings in *owned,
 * freed by the caller); NULL when out of memory. */
static char **expand_aliases(int *argc, char **argv, char ***owned)
{
	char **out = calloc((size_t)*argc + 1, sizeof *out);
	*owned = calloc((size_t)*argc + 1, sizeof **owned);
	int n = 0, k = 0;
	if (!out || !*owned) {
		free(out);
		return NULL;
	}
	for (int i = 0; i < *argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		int hit = -1;
		for (size_t j = 0; j < sizeof aliases / sizeof aliases[0] && i > 0; j++)
			if (strlen(aliases[j].opt) == len && !strncmp(a, aliases[j].opt, len))
				hit = (int)j;
		if (hit < 0 || (!aliases[hit].has_arg && eq) ||
		    (aliases[hit].has_arg && !eq && i + 1 >= *argc)) {
			out[n++] = argv[i];
			continue;
		}
		const char *value = !aliases[hit].has_arg ? "true" : eq ? eq + 1 : argv[++i];
		size_t cap = strlen(aliases[hit].key) + strlen(value) + 4;
		char *opt = malloc(cap);
		if (!opt) {
			free(out);
			return NULL;
		}
		snprintf(opt, cap, "--%s=%s", aliases[hit].key, value);
		out[n++] = (*owned)[k++] = opt;
	}
	*argc = n;
	return out;
}

/* The train command's own options, after lt_conf_apply_args took the
 * config ones out of argv. */
static int parse_train_options(int argc, char **argv, void *args, const char **resume)
{
	static const struct option longopts[] = {
		{ "resume", required_argument, NULL, 'r' },
		{ "plan", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': *resume = optarg; break;
		case 'p':
			if (strcmp(optarg, "auto")) {
				fprintf(stderr, "lltrain train: --plan '%s': expected auto\n", optarg);
				return 2;
			}
			plan_auto = 1;
			break;
		case 'h': print_help(); return 0;
		default: return 2;
		}
	}
	(void)args;
	return -1;
}

/* defaults, then the checkpoint's config (when resuming), then argv. */
static enum lt_status resolve_config(struct lt_conf *c, const char *ckpt_config, int *argc,
				     char **argv, const char *ckpt_dir)
{
	char origin[LT_RUN_PATH_CAP];
	lt_conf_defaults(c);
	if (ckpt_config) {
		enum lt_status st = lt_fs_join(origin, sizeof origin, ckpt_dir, LT_RUNDIR_STATE);
		if (st == LT_OK)
			st = lt_conf_apply_string(c, ckpt_config, origin);
		if (st != LT_OK)
			return st;
	}
	return lt_conf_apply_args(c, argc, argv);
}

/* A copy of c's defaults with every [model] value changed: the options
 * applied over it and over the defaults agree on a key only where they
 * set it. */
static void shifted_defaults(struct lt_conf *c)
{
	lt_conf_defaults(c);
	struct lt_model_config *m = &c->model;
	m->vocab_size++, m->dim++, m->n_layers++, m->n_heads++, m->n_kv_heads++, m->ffn_dim++;
	m->head_dim++;
	m->max_seq++, m->rope_original_max_seq++;
	m->rope_theta *= 2, m->norm_eps *= 0.5f, m->rope_factor *= 2;
	m->rope_low_freq_factor *= 0.5f, m->rope_high_freq_factor *= 2;
	m->tied = !m->tied;
	m->rope_scaling = !m->rope_scaling;
}

/* Refuses a [model] key that the options (argv[argc], a copy) set to
 * something else than the model of path, `from`. */
static enum lt_status check_model_keys(const struct lt_conf *c, int argc, char **argv,
				       const char *path, const struct lt_model_config *from)
{
	struct lt_conf alt, file = *c;
	shifted_defaults(&alt);
	enum lt_status st = lt_conf_apply_args(&alt, &argc, argv);
	file.model = *from;
	for (const struct lt_conf_key *k = lt_conf_keys(); st == LT_OK && k->name; k++) {
		const char *mine = (const char *)c + k->offset, *other = (const char *)&alt + k->offset;
		if (strcmp(k->section, "model") || memcmp(mine, other, k->size))
			continue;  /* not a [model] key, or not set by the options */
		char set[64], got[64];
		lt_conf_format(c, k, set, sizeof set);
		lt_conf_format(&file, k, got, sizeof got);
		if (strcmp(set, got)) {
			lt_errmsg_set("model.%s = %s contradicts %s, whose model has %s", k->name, set,
				      path, got);
			st = LT_ERR_CONFIG;
		}
	}
	return st;
}

/* The model of path, and the check that its weights would load, on the
 * CPU: the buffers of a model that is only checked are never touched. The
 * CPU backend takes the run's thread count, as it sets OpenMP's. */
static enum lt_status read_init_model(const char *path, int threads, struct lt_model_config *m)
{
	lt_backend *be = NULL;
	lt_model *model = NULL;
	enum lt_status st = lt_import_config(path, m);
	if (st == LT_OK && (st = lt_backend_new("cpu", threads, &be)) == LT_OK &&
	    (st = lt_model_new(be, m, &model)) == LT_OK)
		st = lt_import_check(path, model);
	lt_model_free(model);
	lt_backend_free(be);
	return st;
}

/* Data still to prepare needs the imported model's tokenizer. */
static enum lt_status check_init_tokenizer(const struct lt_conf *c)
{
	char data[LT_RUN_PATH_CAP], tok[LT_RUN_PATH_CAP];
	enum lt_status st = lt_run_files_data_dir(c, data, sizeof data);
	if (st != LT_OK || lt_prepare_is_done(data))
		return st;
	if ((st = lt_import_tokenizer(c->train.init, tok, sizeof tok)) == LT_OK && !tok[0]) {
		lt_errmsg_set("%s has no tokenizer.json to prepare %s with (expected one beside "
			      "config.json, or data.dir naming data prepared with the model's "
			      "tokenizer)", c->train.init, data);
		st = LT_ERR_FORMAT;
	}
	return st;
}

/* A fresh run with train.init: the model's shape becomes the file's. */
static enum lt_status adopt_init_model(struct lt_conf *c, int argc, char **argv)
{
	struct lt_model_config m = c->model;
	char **copy = malloc((size_t)(argc + 1) * sizeof *copy);
	if (!copy) {
		lt_errmsg_set("cannot copy the options");
		return LT_ERR_NOMEM;
	}
	memcpy(copy, argv, (size_t)(argc + 1) * sizeof *argv);
	enum lt_status st = read_init_model(c->train.init, c->run.threads, &m);
	if (st == LT_OK)
		st = check_model_keys(c, argc, copy, c->train.init, &m);
	if (st == LT_OK)
		st = check_init_tokenizer(c);
	free(copy);
	if (st != LT_OK) {
		lt_errmsg_prefix("train.init");
		return st;
	}
	c->model = m;
	return LT_OK;
}

/* Prints (rank 0) one line for each checkpoint the search for the resume
 * point passed over, where the trainer did not (it does when the run
 * starts). */
static void say_skipped(const lt_dist *d, const struct lt_ckpt_skips *k)
{
	for (size_t i = 0; lt_dist_rank(d) == 0 && i < k->n; i++)
		printf("skipped %s: %s\n", k->v[i].dir, k->v[i].why);
	fflush(stdout);
}

/* Finds the checkpoint --resume names, with its verified state in *s and
 * the damaged ones passed over in *skipped; *found stays 0 when "auto"
 * finds no checkpoint at all. A new run of a command that saves
 * checkpoints (fresh) may not start where another run left some. */
static enum lt_status find_resume_point(const lt_dist *d, const char *resume, int fresh,
					const struct lt_conf *c, char *ckpt, size_t cap,
					struct lt_ckpt_state *s, struct lt_ckpt_skips *skipped,
					int *found)
{
	enum lt_status st;
	*found = 0;
	if (!resume)
		return fresh ? lt_run_files_check_fresh(c) : LT_OK;
	if (!strcmp(resume, "auto")) {
		st = lt_checkpoint_latest(c->run.dir, ckpt, cap, s, skipped);
		if (st == LT_ERR_NOTFOUND) {
			lt_errmsg_clear();
			if (lt_dist_rank(d) == 0)
				printf("resume: no checkpoint in %s, starting a new run\n", c->run.dir);
			return LT_OK;
		}
	} else {
		st = lt_checkpoint_resolve(resume, ckpt, cap, s, skipped);
	}
	if (st != LT_OK)
		return st;
	*found = 1;
	return LT_OK;
}

/* The device the config names, saying which one "auto" chose. */
static enum lt_status open_backend(const char *spec, int threads, lt_backend **out)
{
	return lt_cmd_backend(cmd_name, spec, threads, out);
}

enum lt_status lt_cmd_trainer_run(lt_dist *d, const struct lt_conf *c,
				  const struct lt_trainer_start *s, lt_trainer **t)
{
	enum lt_status st = lt_trainer_new(d, c, t);
	if (st != LT_OK || (st = lt_trainer_open(*t, s)) != LT_OK)
		return st;
	signal(SIGINT, on_stop_signal);
	signal(SIGTERM, on_stop_signal);
	return lt_trainer_run(*t);
}

/* A resumed run with train.lr = auto keeps the rate its checkpoint
 * trained at: the range test ran when the run began. */
static enum lt_status take_checkpoint_lr(const lt_dist *d, struct lt_conf *c,
					 const struct lt_trainer_start *s)
{
	struct lt_conf saved;
	lt_conf_defaults(&saved);
	enum lt_status st = s->state->config ? lt_conf_apply_string(&saved, s->state->config,
								     s->checkpoint) : LT_OK;
	if (st == LT_OK && (!s->state->config || isnan(saved.train.optim.lr))) {
		lt_errmsg_set("train.lr = auto on a resumed run takes the checkpoint's rate, and %s "
			      "names none: give --train.lr", s->checkpoint);
		st = LT_ERR_CONFIG;
	}
	if (st != LT_OK)
		return st;
	c->train.optim.lr = saved.train.optim.lr;
	if (lt_dist_rank(d) == 0)
		printf("lr: auto on a resumed run: the checkpoint's %g\n", (double)c->train.optim.lr);
	return LT_OK;
}

/* Trains from the resolved config c and start s, a range test choosing
 * train.lr first where it is auto in a new run; *t gets the trainer made
 * last, for the ending. */
static enum lt_status train(lt_dist *d, struct lt_conf *c, struct lt_trainer_start *s,
			    void *args, lt_trainer **t)
{
	enum lt_status st = LT_OK;
	(void)args;
	if (isnan(c->train.optim.lr))
		st = s->checkpoint ? take_checkpoint_lr(d, c, s) : lt_cmd_tune_lr_auto(d, c, s, t);
	if (st != LT_OK)
		return st;
	if (*t) {  /* the range test prepared the data: no corpus to give again */
		lt_trainer_free(*t);
		*t = NULL;
		s->corpus = NULL;
		s->n_corpus = 0;
	}
	return lt_cmd_trainer_run(d, c, s, t);
}

/* Tensor and pipeline parallelism: the job runs whole groups, and the
 * config splits. */
static enum lt_status check_layout(const lt_dist *d, const struct lt_conf *c)
{
	int ranks = lt_dist_size(d);
	if (ranks % c->dist.tp) {
		lt_errmsg_set("dist.tp = %d does not divide the job's %d rank%s: the job runs "
			      "whole tensor-parallel groups", c->dist.tp, ranks, ranks > 1 ? "s" : "");
		return LT_ERR_CONFIG;
	}
	if (ranks % (c->dist.tp * c->dist.pp)) {
		lt_errmsg_set("dist.pp = %d does not divide the job's %d rank%s: the job runs "
			      "whole pipelines", c->dist.pp, ranks, ranks > 1 ? "s" : "");
		return LT_ERR_CONFIG;
	}
	return lt_conf_check(c);
}

/* Under MPI, only rank 0 prints progress; every rank prints its errors. */
static void quiet_other_ranks(const lt_dist *d)
{
	if (lt_dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout))
		fclose(stdout);
}

/* The command m after alias expansion: argv[argc] for the first pass
 * over the options, again[argc] (a copy) for the second when resuming.
 * Returns the exit status; *state gets the checkpoint's state (the
 * trainer takes it over), *t the trainer; *together is set when every
 * rank failed to find where the run starts (the job may end without an
 * abort, which could cut rank 0's lines short). */
static int trainer_main(lt_dist *d, int argc, char **argv, char **again,
			const struct lt_cmd_trainer *m, void *args, struct lt_ckpt_state *state,
			lt_trainer **t, int *together)
{
	struct lt_ckpt_skips skipped = { 0 };
	struct lt_conf conf;
	char ckpt[LT_RUN_PATH_CAP];
	const char *resume = NULL;
	int argc2 = argc, rc, found = 0;
	struct lt_plan_limits fixed = { 0 };
	lt_cmd_plan_fixed(argc, again, &fixed);
	/* pass 1: the config without a checkpoint tells where the run lives */
	enum lt_status st = resolve_config(&conf, NULL, &argc, argv, NULL);
	if (st != LT_OK) {
		/* a bad option is a usage error, a bad config file bad input */
		lt_report(m->cmd, st);
		return st == LT_ERR_ARG ? 2 : 1;
	}
	if ((rc = m->parse(argc, argv, args, &resume)) >= 0)
		return rc;
	/* the global batch the options ask for, before a checkpoint's split */
	int batch = conf.train.batch, accum = conf.train.grad_accum;
	/* every rank sees the same nodes: each refuses, rank 0 says why */
	if ((conf.dist.sync == LT_SYNC_LOCAL || conf.dist.round_seconds > 0) &&
	    ((st = lt_conf_check(&conf)) != LT_OK || (st = lt_local_sgd_check(d)) != LT_OK ||
	     (st = lt_local_sgd_check_rounds(d, &conf)) != LT_OK)) {
		if (lt_dist_rank(d) == 0)
			lt_report(m->cmd, st);
		*together = 1;
		return 2;
	}
	if ((st = find_resume_point(d, resume, !m->beside_checkpoints, &conf, ckpt, sizeof ckpt,
				    state, &skipped, &found)) == LT_OK && found)
		/* pass 2: the checkpoint's config, then the options again */
		st = resolve_config(&conf, state->config, &argc2, again, ckpt);
	else if (st == LT_OK && conf.train.init[0])
		st = adopt_init_model(&conf, argc2, again);
	struct lt_agreement g = { .dist = d, .timeout = conf.dist.comm_timeout };
	st = lt_agree(&g, st, "finding where the run starts", 0);
	*together = g.failed_together;
	/* a checkpoint of --plan auto holds its plan's split of the batch
	 * (train.batch = micro x dp, train.grad_accum): under one of the two
	 * given again, it would make another global batch */
	if (found && plan_auto && fixed.given_batch)
		conf.train.batch = batch, conf.train.grad_accum = accum;
	lt_micro_batch_apply(&conf);
	if (st == LT_OK && plan_auto && (st = lt_cmd_plan_auto(d, &fixed, &conf)) != LT_OK) {
		if (lt_dist_rank(d) == 0)
			lt_report(m->cmd, st);
		*together = 1;
		return 1;
	}
	if (st == LT_OK && !plan_auto && !strcmp(m->cmd, "train") && lt_dist_size(d) == 1)
		lt_cmd_plan_hint(&conf, &fixed);
	/* a layout the job or the model does not allow: rank 0 says why */
	if (st == LT_OK && (conf.dist.tp > 1 || conf.dist.pp > 1) &&
	    (st = check_layout(d, &conf)) != LT_OK) {
		if (lt_dist_rank(d) == 0)
			lt_report(m->cmd, st);
		*together = 1;
		return 2;
	}
	struct lt_trainer_start s = {
		.checkpoint = found ? ckpt : NULL,
		.state = state,
		.skipped = &skipped,
		.corpus = (const char *const *)argv + optind,
		.n_corpus = argc - optind,
		.open_backend = open_backend,
		.stop_signal = &stop_signal,
	};
	if (st == LT_OK && conf.train.micro_batch == LT_CONF_AUTO)
		st = lt_cmd_micro_batch(d, &conf, &s, plan_auto, t);
	if (st == LT_OK)
		st = m->run(d, &conf, &s, args, t);
	say_skipped(d, &skipped);
	lt_ckpt_skips_free(&skipped);
	if (st == LT_OK || st == LT_ERR_INTERRUPTED)
		return 0;
	char what[48];
	int ranks = lt_dist_size(d);
	snprintf(what, sizeof what, ranks > 1 ? "%s: rank %d" : "%s", m->cmd, lt_dist_rank(d));
	lt_report(what, st);
	return 1;
}

/* A copy of argv[argc] and its NULL; NULL when out of memory. */
static char **copy_args(int argc, char **argv)
{
	char **copy = malloc((size_t)(argc + 1) * sizeof *copy);
	if (copy)
		memcpy(copy, argv, (size_t)(argc + 1) * sizeof *argv);
	return copy;
}

int lt_cmd_trainer_main(int argc, char **argv, const struct lt_cmd_trainer *m, void *args)
{
	lt_dist *d;
	cmd_name = m->cmd;
	enum lt_status st = lt_dist_init(&argc, &argv, &d);
	if (st != LT_OK) {
		lt_report(m->cmd, st);
		return 1;
	}
	quiet_other_ranks(d);
	lt_trainer *t = NULL;
	struct lt_ckpt_state state = { 0 };
	char **owned = NULL, **expanded = expand_aliases(&argc, argv, &owned);
	/* the config options are applied twice when resuming: keep a copy */
	char **again = expanded ? copy_args(argc, expanded) : NULL;
	int together = 0;
	int rc = again ? trainer_main(d, argc, expanded, again, m, args, &state, &t, &together) : 1;
	if (!again)
		fprintf(stderr, "lltrain: %s: out of memory\n", m->cmd);
	/* a failure only some ranks know of leaves the others waiting in a
	 * collective: end them all (an abort may cut the launcher's output),
	 * before freeing what takes a collective to free (shared memory) */
	if (rc != 0 && lt_dist_size(d) > 1 && !together && !lt_trainer_failed_together(t)) {
		lt_trainer_close_metrics(t);
		lt_dist_abort(d, rc);
	}
	lt_trainer_free(t);
	lt_ckpt_state_free(&state);
	for (int i = 0; owned && owned[i]; i++)
		free(owned[i]);
	free(owned);
	free(again);
	free(expanded);
	lt_dist_finalize(d);
	return rc;
}

int lt_cmd_train(int argc, char **argv)
{
	static const struct lt_cmd_trainer train_cmd = {
		.cmd = "train",
		.parse = parse_train_options,
		.run = train,
	};
	return lt_cmd_trainer_main(argc, argv, &train_cmd, NULL);
}
