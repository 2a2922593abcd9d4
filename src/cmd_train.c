/* lltrain train: trains a model from a config on prepared data (preparing
 * the corpus first when the data directory holds none), logging metrics,
 * evaluating, sampling and checkpointing as the config asks, resumable
 * after a crash. With no arguments it trains the tiny preset on the
 * fortune-cookie texts of Debian's fortunes package into runs/default. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "backend.h"
#include "checkpoint.h"
#include "cmd.h"
#include "conf.h"
#include "data.h"
#include "fs.h"
#include "metrics.h"
#include "model.h"
#include "optim.h"
#include "prepare.h"
#include "sample.h"
#include "tokenizer.h"

/* Room for a configured path plus the names lltrain adds to it. */
#define PATH_CAP (LT_CONF_PATH_MAX + 128)

/* Set by SIGINT/SIGTERM: the loop saves a checkpoint and stops. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/* snprintf into a path buffer; a path that does not fit is cut (and then
 * fails to open, naming the cut path). */
static void __attribute__((format(printf, 3, 4))) path_of(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, cap, fmt, ap);
	va_end(ap);
}

struct train_args {
	const char *resume;       /* NULL, "auto" or a checkpoint/run path */
	char **inputs;            /* corpus files given on the command line */
	int n_inputs;
};

/* Everything one run holds. */
struct run {
	struct lt_conf conf;
	char data_dir[PATH_CAP];
	char tok_path[PATH_CAP];
	lt_tokenizer *tok;
	lt_data *data;
	lt_backend *be;
	lt_model *model;
	lt_optim *opt;
	lt_metrics *metrics;
	int32_t *tokens, *targets;
	struct lt_ckpt_state state;
	long first_step;          /* the step this invocation started after */
	double flops_per_token;
};

static void print_help(void)
{
	printf("usage: lltrain train [OPTIONS] [CORPUS_FILE_OR_DIR ...]\n\n"
	       "Trains the configured model on the prepared data in data.dir (default\n"
	       "RUN_DIR/data). When that directory holds no prepared data, the corpus\n"
	       "(the arguments, else data.corpus) is prepared into it first, as\n"
	       "`lltrain prepare` would. The run directory gets config.ini (the resolved\n"
	       "config), metrics.jsonl and checkpoints/. Ctrl-C saves a checkpoint.\n\n"
	       "  --preset NAME          tiny, 15M, 110M or 1B (default tiny)\n"
	       "  --config FILE          an INI file of settings (repeatable)\n"
	       "  --SECTION.KEY=VALUE    any setting of lltrain.conf(5), e.g. --train.steps=2000\n"
	       "  --resume auto|PATH     continue from the newest valid checkpoint of the run\n"
	       "                         directory (auto), or from a checkpoint directory\n"
	       "  --help                 this text\n\n"
	       "Later settings win: defaults, --preset, --config files, --SECTION.KEY.\n"
	       "A resumed run starts from the checkpoint's config; options still apply.\n");
}

/* The train command's own options, after lt_conf_apply_args took the
 * config ones out of argv. */
static int parse_train_options(int argc, char **argv, struct train_args *a)
{
	static const struct option longopts[] = {
		{ "resume", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': a->resume = optarg; break;
		case 'h': print_help(); return 0;
		default: return 2;
		}
	}
	a->inputs = argv + optind;
	a->n_inputs = argc - optind;
	return -1;
}

/* defaults, then the checkpoint's config (when resuming), then argv. */
static enum lt_status resolve_config(struct lt_conf *c, const char *ckpt_config, int *argc,
				     char **argv, const char *ckpt_dir)
{
	char origin[PATH_CAP];
	lt_conf_defaults(c);
	if (ckpt_config) {
		path_of(origin, sizeof origin, "%s/state.json", ckpt_dir);
		enum lt_status st = lt_conf_apply_string(c, ckpt_config, origin);
		if (st != LT_OK)
			return st;
	}
	return lt_conf_apply_args(c, argc, argv);
}

/* Prepares the corpus into the data directory unless it holds data. */
static enum lt_status ensure_data(struct run *r, const struct train_args *a)
{
	const struct lt_conf *c = &r->conf;
	if (c->data.dir[0])
		path_of(r->data_dir, sizeof r->data_dir, "%s", c->data.dir);
	else
		path_of(r->data_dir, sizeof r->data_dir, "%s/data", c->run.dir);
	if (lt_prepare_is_done(r->data_dir) && a->n_inputs == 0)
		return LT_OK;
	if (lt_prepare_is_done(r->data_dir)) {
		lt_errmsg_set("%s: holds prepared data already; corpus arguments would replace it "
			      "(remove it, or leave the arguments out to train on it)", r->data_dir);
		return LT_ERR_ARG;
	}
	const char *fallback[] = { c->data.corpus };
	struct lt_prepare_opts po = {
		.inputs = a->n_inputs ? (const char *const *)a->inputs : fallback,
		.n_inputs = a->n_inputs ? a->n_inputs : 1,
		.out_dir = r->data_dir,
		.vocab_size = c->data.vocab_size ? c->data.vocab_size : c->model.vocab_size,
		.doc_separator = c->data.doc_separator,
		.val_fraction = c->data.val_fraction,
		.shard_tokens = c->data.shard_tokens,
		.model_max_length = c->model.max_seq,
		.verbose = 1,
	};
	struct lt_prepare_report rep;
	printf("data: preparing %s into %s\n", po.n_inputs == 1 ? po.inputs[0] : "the corpus",
	       r->data_dir);
	fflush(stdout);
	enum lt_status st = lt_prepare_run(&po, &rep);
	if (st != LT_OK && !a->n_inputs && !strcmp(c->data.corpus, "/usr/share/games/fortunes") &&
	    !lt_fs_is_dir(c->data.corpus))
		lt_errmsg_prefix("the default corpus needs Debian's fortunes package; ");
	return st;
}

/* The model's vocabulary follows the tokenizer's (training may stop with
 * fewer tokens than asked when no pair is frequent enough). */
static enum lt_status open_data(struct run *r)
{
	path_of(r->tok_path, sizeof r->tok_path, "%s/tokenizer.json", r->data_dir);
	enum lt_status st = lt_tokenizer_load(r->tok_path, &r->tok);
	if (st != LT_OK)
		return st;
	int vocab = lt_tokenizer_vocab_size(r->tok);
	if (r->conf.model.vocab_size != vocab) {
		if (r->state.step > 0) {
			lt_errmsg_set("%s: vocabulary %d, the checkpoint's model has %d", r->tok_path,
				      vocab, r->conf.model.vocab_size);
			return LT_ERR_CONFIG;
		}
		printf("model: vocabulary set to the tokenizer's %d (config said %d)\n", vocab,
		       r->conf.model.vocab_size);
		r->conf.model.vocab_size = vocab;
	}
	return lt_data_open(r->data_dir, vocab, &r->data);
}

/* Writes RUN/config.ini atomically. */
static enum lt_status save_resolved_config(const struct run *r)
{
	char path[PATH_CAP], tmp[PATH_CAP], *text = NULL;
	path_of(path, sizeof path, "%s/config.ini", r->conf.run.dir);
	path_of(tmp, sizeof tmp, "%s.tmp", path);
	enum lt_status st = lt_conf_to_string(&r->conf, &text);
	if (st == LT_OK)
		st = lt_fs_write_new(tmp, text, strlen(text));
	if (st == LT_OK && rename(tmp, path) != 0) {
		lt_errmsg_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
		unlink(tmp);
		st = LT_ERR_IO;
	}
	free(text);
	return st;
}

/* Keeps the metrics lines of steps up to `step` (a resumed run logs the
 * later ones again). */
static enum lt_status trim_metrics(const char *path, long step)
{
	struct stat sb;
	/* only a file can be rewritten (a pipe, say, is left as it is) */
	if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
		return LT_OK;
	FILE *in = fopen(path, "r");
	if (!in)
		return LT_OK;
	char tmp[PATH_CAP], line[4096];
	path_of(tmp, sizeof tmp, "%s.tmp", path);
	FILE *out = fopen(tmp, "w");
	if (!out) {
		fclose(in);
		lt_errmsg_set("%s: cannot create: %s", tmp, strerror(errno));
		return LT_ERR_IO;
	}
	while (fgets(line, sizeof line, in)) {
		json_t *o = json_loads(line, 0, NULL);
		json_t *s = o ? json_object_get(o, "step") : NULL;
		if (s && json_integer_value(s) <= step)
			fputs(line, out);
		json_decref(o);
	}
	fclose(in);
	int bad = fclose(out) != 0;
	if (bad || rename(tmp, path) != 0) {
		unlink(tmp);
		lt_errmsg_set("%s: cannot rewrite: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

static enum lt_status build_model(struct run *r, const char *ckpt)
{
	const struct lt_conf *c = &r->conf;
	enum lt_status st;
	if ((st = lt_cmd_backend("train", c->run.device, c->run.threads, &r->be)) != LT_OK ||
	    (st = lt_model_new(r->be, &c->model, &r->model)) != LT_OK ||
	    (st = lt_optim_new(r->model, 0, lt_model_num_params(r->model), &r->opt)) != LT_OK)
		return st;
	/* r->state was read and verified when the checkpoint was found */
	if (ckpt)
		st = lt_checkpoint_load_tensors(ckpt, r->model, r->opt);
	else
		st = lt_model_init(r->model, c->train.seed);
	if (st == LT_OK)
		st = lt_model_plan(r->model, c->train.batch, c->train.seq);
	r->tokens = malloc(2 * (size_t)c->train.batch * c->train.seq * sizeof *r->tokens);
	if (st == LT_OK && !r->tokens) {
		lt_errmsg_set("cannot allocate the batch buffers");
		st = LT_ERR_NOMEM;
	}
	r->targets = r->tokens + (size_t)c->train.batch * c->train.seq;
	r->flops_per_token = lt_model_config_flops_per_token(&c->model, c->train.seq);
	return st;
}

/* Mean loss over the first run.eval_batches validation batches. */
static enum lt_status validation_loss(struct run *r, double *out)
{
	const struct lt_conf *c = &r->conf;
	double sum = 0;
	long count = 0;
	for (int i = 0; i < c->run.eval_batches; i++) {
		long n;
		double loss;
		long cnt;
		enum lt_status st = lt_data_val_batch(r->data, (uint64_t)i, c->train.batch, c->train.seq,
						      r->tokens, r->targets, &n);
		if (st != LT_OK)
			return st;
		if (n == 0)
			break;
		if ((st = lt_model_forward(r->model, r->tokens, r->targets, 0.0f, &loss, &cnt)) != LT_OK)
			return st;
		sum += loss;
		count += cnt;
	}
	if (count == 0) {
		lt_errmsg_set("%s: no validation tokens", r->data_dir);
		return LT_ERR_ARG;
	}
	*out = sum / (double)count;
	return LT_OK;
}

/* Generates run.sample_tokens tokens after the end-of-text token. */
static enum lt_status print_sample(struct run *r, long step)
{
	const struct lt_conf *c = &r->conf;
	int n = c->run.sample_tokens < c->model.max_seq - 1 ? c->run.sample_tokens : c->model.max_seq - 1;
	if (n <= 0)
		return LT_OK;
	int32_t prompt = lt_tokenizer_eot_id(r->tok), *out = malloc((size_t)n * sizeof *out);
	if (!out) {
		lt_errmsg_set("cannot allocate %d sample tokens", n);
		return LT_ERR_NOMEM;
	}
	struct lt_sample_opts so = { .temperature = 0.8f, .top_k = 40, .top_p = 0.95f,
				     .seed = c->train.seed + (uint64_t)step };
	int got = 0;
	char *text = NULL;
	size_t len;
	enum lt_status st = lt_sample_generate(r->model, &prompt, 1, n, -1, &so, out, &got);
	if (st == LT_OK)
		st = lt_tokenizer_decode(r->tok, out, (size_t)got, &text, &len);
	if (st == LT_OK)
		lt_metrics_say(r->metrics, "--- sample at step %ld (%d tokens, temperature 0.8, "
			       "top-k 40, top-p 0.95) ---\n%s\n---", step, got, text);
	free(text);
	free(out);
	return st;
}

static enum lt_status save_checkpoint(struct run *r)
{
	char path[PATH_CAP];
	free(r->state.config);
	r->state.config = NULL;
	enum lt_status st = lt_conf_to_string(&r->conf, &r->state.config);
	r->state.tokenizer = r->tok_path;
	if (st == LT_OK)
		st = lt_checkpoint_save(r->conf.run.dir, r->model, r->opt, &r->state, path, sizeof path);
	if (st == LT_OK)
		st = lt_checkpoint_prune(r->conf.run.dir, r->conf.run.keep_checkpoints);
	if (st == LT_OK)
		lt_metrics_say(r->metrics, "checkpoint: %s", path);
	return st;
}

/* One optimizer step: grad_accum micro-batches, then AdamW unless the
 * loss or the gradient norm is not finite. */
static enum lt_status train_step(struct run *r, long step, struct lt_step_metrics *sm)
{
	const struct lt_conf *c = &r->conf;
	int B = c->train.batch, T = c->train.seq, accum = c->train.grad_accum;
	float scale = 1.0f / ((float)B * (float)T * (float)accum);
	double loss_sum = 0, norm = NAN;
	long count = 0;
	enum lt_status st = LT_OK;
	lt_model_zero_grads(r->model);
	for (int a = 0; a < accum && st == LT_OK; a++) {
		double loss;
		long n;
		st = lt_data_train_batch(r->data, c->train.seed, r->state.samples, B, T, r->tokens,
					 r->targets);
		r->state.samples += (uint64_t)B;
		if (st == LT_OK)
			st = lt_model_forward(r->model, r->tokens, r->targets, scale, &loss, &n);
		if (st == LT_OK)
			st = lt_model_backward(r->model);
		loss_sum += loss;
		count += n;
	}
	if (st != LT_OK)
		return st;
	sm->loss = loss_sum / (double)count;
	if (isfinite(sm->loss) && (st = lt_optim_grad_norm(r->opt, &norm)) != LT_OK)
		return st;
	sm->skipped = !isfinite(sm->loss) || !isfinite(norm);
	sm->grad_norm = norm;
	sm->lr = lt_lr_at(&c->train.optim, (int)step);
	if (sm->skipped) {
		r->state.bad_steps++;
		return LT_OK;
	}
	r->state.bad_steps = 0;
	return lt_optim_update(r->opt, &c->train.optim, (int)step, norm);
}

static int due(long step, int every)
{
	return every > 0 && step % every == 0;
}

/* The step loop: returns when the steps are done, the time budget is
 * spent, a signal arrived or something failed. */
static enum lt_status train_loop(struct run *r)
{
	const struct lt_conf *c = &r->conf;
	double t0 = lt_cmd_seconds(), last = t0, elapsed0 = r->state.elapsed;
	long tokens_per_step = (long)c->train.batch * c->train.seq * c->train.grad_accum;
	enum lt_status st = LT_OK;
	for (long step = r->state.step + 1; step <= c->train.steps && st == LT_OK; step++) {
		struct lt_step_metrics sm = { .step = step, .total_steps = c->train.steps };
		if ((st = train_step(r, step, &sm)) != LT_OK)
			break;
		double now = lt_cmd_seconds();
		r->state.step = step;
		r->state.tokens += tokens_per_step;
		r->state.elapsed = elapsed0 + (now - t0);
		sm.tokens = r->state.tokens;
		sm.elapsed = r->state.elapsed;
		sm.tokens_per_s = (double)tokens_per_step / (now - last);
		sm.tflops = sm.tokens_per_s * r->flops_per_token / 1e12;
		last = now;
		if ((st = lt_metrics_step(r->metrics, &sm)) != LT_OK)
			break;
		if (sm.skipped && r->state.bad_steps >= c->train.max_bad_steps) {
			lt_errmsg_set("step %ld: %d steps in a row had a non-finite loss or gradient "
				      "(train.max_bad_steps = %d); lower train.lr or check the data",
				      step, r->state.bad_steps, c->train.max_bad_steps);
			return LT_ERR_NUMERIC;
		}
		if (due(step, c->run.eval_every) && step < c->train.steps) {
			double val;
			if ((st = validation_loss(r, &val)) != LT_OK ||
			    (st = lt_metrics_eval(r->metrics, step, val, r->state.elapsed)) != LT_OK)
				break;
		}
		if (due(step, c->run.sample_every) && step < c->train.steps &&
		    (st = print_sample(r, step)) != LT_OK)
			break;
		if (due(step, c->run.checkpoint_every) && step < c->train.steps &&
		    (st = save_checkpoint(r)) != LT_OK)
			break;
		if (stop_signal) {
			lt_metrics_say(r->metrics, "%s at step %ld: saving a checkpoint",
				       stop_signal == SIGINT ? "interrupted" : "terminated", step);
			return LT_ERR_INTERRUPTED;
		}
		if (c->train.max_minutes > 0 && now - t0 > c->train.max_minutes * 60) {
			lt_metrics_say(r->metrics, "time budget of %g minutes reached at step %ld",
				       c->train.max_minutes, step);
			break;
		}
	}
	return st;
}

/* After the loop: a checkpoint, the validation loss and a sample. */
static enum lt_status finish_run(struct run *r, enum lt_status loop_st)
{
	double val;
	enum lt_status st = save_checkpoint(r);
	if (st != LT_OK || loop_st == LT_ERR_INTERRUPTED)
		return st;
	if ((st = validation_loss(r, &val)) != LT_OK ||
	    (st = lt_metrics_eval(r->metrics, r->state.step, val, r->state.elapsed)) != LT_OK)
		return st;
	lt_metrics_say(r->metrics, "validation loss %.4f nats/token (ln vocab = %.4f), perplexity %.2f",
		       val, log((double)r->conf.model.vocab_size), exp(val));
	return print_sample(r, r->state.step);
}

static void free_run(struct run *r)
{
	lt_metrics_close(r->metrics);
	free(r->tokens);
	lt_optim_free(r->opt);
	lt_model_free(r->model);
	lt_backend_free(r->be);
	lt_data_close(r->data);
	lt_tokenizer_free(r->tok);
	lt_ckpt_state_free(&r->state);
}

/* Refuses to start over a run that has checkpoints, unless resuming. */
static enum lt_status check_fresh_run_dir(const struct lt_conf *c)
{
	char path[PATH_CAP];
	if (lt_checkpoint_latest(c->run.dir, path, sizeof path, NULL) != LT_OK) {
		lt_errmsg_clear();
		return LT_OK;
	}
	lt_errmsg_set("%s: holds checkpoints of an earlier run (newest %s): --resume auto "
		      "continues it; choose another --run.dir to start a new one", c->run.dir, path);
	return LT_ERR_ARG;
}

static enum lt_status run_training(struct run *r, const struct train_args *a, const char *ckpt)
{
	struct lt_conf *c = &r->conf;
	enum lt_status st;
	if ((st = lt_conf_check(c)) != LT_OK || (st = lt_fs_make_dirs(c->run.dir)) != LT_OK ||
	    (st = ensure_data(r, a)) != LT_OK || (st = open_data(r)) != LT_OK ||
	    (st = lt_conf_check(c)) != LT_OK || (st = save_resolved_config(r)) != LT_OK ||
	    (st = build_model(r, ckpt)) != LT_OK)
		return st;
	char mpath[PATH_CAP];
	path_of(mpath, sizeof mpath, "%s/metrics.jsonl", c->run.dir);
	if ((st = trim_metrics(mpath, r->state.step)) != LT_OK ||
	    (st = lt_metrics_open(mpath, c->run.log_every, &r->metrics)) != LT_OK)
		return st;
	struct lt_device_info dev;
	r->be->ops->info(r->be, &dev);
	lt_metrics_say(r->metrics, "model: %.2fM parameters, vocab %d, batch %d x seq %d x accum %d, "
		       "%d steps, device %s", (double)lt_model_num_params(r->model) / 1e6,
		       c->model.vocab_size, c->train.batch, c->train.seq, c->train.grad_accum,
		       c->train.steps, dev.name);
	if (ckpt)
		lt_metrics_say(r->metrics, "resumed from %s at step %ld", ckpt, r->state.step);
	signal(SIGINT, on_stop_signal);
	signal(SIGTERM, on_stop_signal);
	st = train_loop(r);
	if (st == LT_OK || st == LT_ERR_INTERRUPTED) {
		enum lt_status fin = finish_run(r, st);
		st = fin != LT_OK ? fin : st;
	}
	return st;
}

/* Finds the checkpoint --resume names, with its verified state in *s;
 * *found stays 0 when "auto" finds none. */
static enum lt_status find_resume_point(const char *resume, const struct lt_conf *c, char *ckpt,
					size_t cap, struct lt_ckpt_state *s, int *found)
{
	*found = 0;
	if (!resume)
		return check_fresh_run_dir(c);
	if (!strcmp(resume, "auto")) {
		if (lt_checkpoint_latest(c->run.dir, ckpt, cap, s) != LT_OK) {
			lt_errmsg_clear();
			printf("resume: no checkpoint in %s, starting a new run\n", c->run.dir);
			return LT_OK;
		}
	} else {
		enum lt_status st = lt_checkpoint_resolve(resume, ckpt, cap, s);
		if (st != LT_OK)
			return st;
	}
	*found = 1;
	return LT_OK;
}

int lt_cmd_train(int argc, char **argv)
{
	struct train_args a = { 0 };
	struct run r = { 0 };
	char ckpt[PATH_CAP];
	/* the config options are applied twice when resuming: keep a copy */
	int argc2 = argc;
	char **argv2 = malloc((size_t)(argc + 1) * sizeof *argv2);
	if (!argv2)
		return 1;
	memcpy(argv2, argv, (size_t)(argc + 1) * sizeof *argv);
	int rc = 1, found = 0;
	/* pass 1: the config without a checkpoint tells where the run lives */
	enum lt_status st = resolve_config(&r.conf, NULL, &argc, argv, NULL);
	if (st != LT_OK) {
		/* a bad option is a usage error, a bad config file bad input */
		lt_report("train", st);
		rc = st == LT_ERR_ARG ? 2 : 1;
		goto out;
	}
	if ((rc = parse_train_options(argc, argv, &a)) >= 0)
		goto out;
	rc = 1;
	if ((st = find_resume_point(a.resume, &r.conf, ckpt, sizeof ckpt, &r.state, &found)) == LT_OK &&
	    found)
		/* pass 2: the checkpoint's config, then the options again */
		st = resolve_config(&r.conf, r.state.config, &argc2, argv2, ckpt);
	if (st != LT_OK) {
		lt_report("train", st);
		goto out;
	}
	st = run_training(&r, &a, found ? ckpt : NULL);
	rc = st == LT_OK || st == LT_ERR_INTERRUPTED ? 0 : 1;
	if (rc)
		lt_report("train", st);
out:
	free_run(&r);
	free(argv2);
	return rc;
}
