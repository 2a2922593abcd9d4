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
#include "io/checkpoint.h"
#include "clock.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "text/data.h"
#include "dist/agree.h"
#include "dist/balance.h"
#include "dist/dist.h"
#include "io/fs.h"
#include "io/metrics.h"
#include "model.h"
#include "optim.h"
#include "text/prepare.h"
#include "text/sample.h"
#include "text/tokenizer.h"
#include "dist/zero.h"

/* Room for a configured path plus the names lltrain adds to it. */
#define PATH_CAP (LT_CONF_PATH_MAX + 128)

/* How long rank 0's own work (data preparation, a checkpoint's files) may
 * keep the other ranks waiting. */
#define LONG_WAIT_SECONDS 3600.0

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
	lt_dist *dist;
	int rank, ranks;
	struct lt_agreement agreement;
	lt_zero *zero;
	size_t *rows;             /* [ranks]: each rank's sequences of a step, dealt over
				     its micro-batches by lt_zero_rows_in */
	int plan_rows;            /* the most sequences per forward (1 when deterministic) */
	double compute_s;         /* this step's forward + backward seconds, less the
				     exchanges they waited for (stage 2 waits inside) */
	double sync_s;            /* this step's wait for slower ranks: their forward +
				     backward, and their arrival at node barriers */
	double comm_s;            /* this step's wait for the gradient exchange */
	double loss_wait_s;       /* this step's wait for the loss all-reduce */
	double update_s;          /* this step's AdamW, parameter all-gather and copies */
	lt_balancer *balance;     /* --balance auto; NULL when the shares stay even */
	int stop;                 /* after this step, stop: 1 for a signal, 2 for the time budget */
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
	       "  --zero 0|1|2           ZeRO stage over MPI ranks (--dist.zero)\n"
	       "  --balance even|auto    the ranks' shares of a batch (--dist.balance)\n"
	       "  --exchange auto|mpi    gradients through a node's shared memory or MPI\n"
	       "                         (--dist.exchange)\n"
	       "  --deterministic        bitwise the same for any rank count (--dist.deterministic)\n"
	       "  --comm-timeout SEC     end the job when a collective stalls (--dist.comm_timeout)\n"
	       "  --help                 this text\n\n"
	       "Later settings win: defaults, --preset, --config files, --SECTION.KEY.\n"
	       "A resumed run starts from the checkpoint's config; options still apply.\n"
	       "Under mpiexec, each rank takes its share of every batch (train.batch is the\n"
	       "global batch); the run directory must be on a filesystem every rank sees.\n");
}

/* The short spellings of [dist] keys, rewritten as --dist.KEY=VALUE before
 * the config options are read (so a resumed run applies them too). */
static const struct { const char *opt, *key; int has_arg; } aliases[] = {
	{ "--zero", "dist.zero", 1 },
	{ "--balance", "dist.balance", 1 },
	{ "--exchange", "dist.exchange", 1 },
	{ "--comm-timeout", "dist.comm_timeout", 1 },
	{ "--deterministic", "dist.deterministic", 0 },
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

static enum lt_status agree(struct run *r, enum lt_status st, const char *what, double wait)
{
	return lt_agree(&r->agreement, st, what, wait);
}

/* Where the prepared data lives. */
static void name_data_dir(struct run *r)
{
	const struct lt_conf *c = &r->conf;
	if (c->data.dir[0])
		path_of(r->data_dir, sizeof r->data_dir, "%s", c->data.dir);
	else
		path_of(r->data_dir, sizeof r->data_dir, "%s/data", c->run.dir);
}

/* Prepares the corpus into the data directory unless it holds data. */
static enum lt_status ensure_data(struct run *r, const struct train_args *a)
{
	const struct lt_conf *c = &r->conf;
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

/* The vocabulary of the resumed checkpoint's model (-1 when unknown). */
static int checkpoint_vocab(const struct run *r)
{
	struct lt_conf saved;
	lt_conf_defaults(&saved);
	if (!r->state.config || lt_conf_apply_string(&saved, r->state.config, "state.json") != LT_OK) {
		lt_errmsg_clear();
		return -1;
	}
	return saved.model.vocab_size;
}

/* The model's vocabulary follows the tokenizer's (training may stop with
 * fewer tokens than asked when no pair is frequent enough); a resumed run's
 * options (a --preset, say) may say otherwise only when the checkpoint's
 * model agrees with them. */
static enum lt_status open_data(struct run *r)
{
	path_of(r->tok_path, sizeof r->tok_path, "%s/tokenizer.json", r->data_dir);
	enum lt_status st = lt_tokenizer_load(r->tok_path, &r->tok);
	if (st != LT_OK)
		return st;
	int vocab = lt_tokenizer_vocab_size(r->tok);
	if (r->conf.model.vocab_size != vocab) {
		if (r->state.step > 0 && checkpoint_vocab(r) != vocab) {
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

/* Rank i's sequences in micro-batch a of a step. */
static int rows_in(const struct run *r, int i, int a)
{
	return (int)lt_zero_rows_in(r->rows, i, a, r->conf.train.grad_accum);
}

/* This rank's first sequence of micro-batch a: those of the ranks before
 * it come first. */
static int first_row_in(const struct run *r, int a)
{
	int row0 = 0;
	for (int i = 0; i < r->rank; i++)
		row0 += rows_in(r, i, a);
	return row0;
}

/* The largest forward this rank's share of a step needs. */
static void set_plan_rows(struct run *r)
{
	int accum = r->conf.train.grad_accum;
	r->plan_rows = r->conf.dist.deterministic ? 1
						   : (int)((r->rows[r->rank] + accum - 1) / accum);
}

/* Plans a forward of `rows` sequences; the activations planned for
 * plan_rows hold it. */
static enum lt_status plan_forward(struct run *r, int rows)
{
	return lt_model_plan(r->model, rows, r->conf.train.seq);
}

/* Each rank's sequences of a step in proportion to weights (one of every
 * micro-batch at least). Shares of a step rather than of a micro-batch
 * let --balance auto move one sequence in batch x grad_accum. */
static void set_shares(struct run *r, const double *weights)
{
	size_t accum = (size_t)r->conf.train.grad_accum;
	lt_zero_split((size_t)r->conf.train.batch * accum, weights, r->ranks, accum, r->rows);
	set_plan_rows(r);
}

/* Bytes the backend's buffers hold now (0 when it cannot say). */
static size_t backend_bytes(lt_backend *be)
{
	size_t now = 0, peak = 0;
	if (be->ops->mem_usage)
		be->ops->mem_usage(be, &now, &peak);
	return now;
}

/* One line of what each rank holds for training besides activations:
 * `state` bytes of parameters, gradients and moments as the backend
 * allocated them, and the exchange's host buffers. */
static enum lt_status report_memory(struct run *r, size_t state)
{
	double mine[2] = { (double)state, (double)lt_zero_bytes(r->zero) };
	double *all = malloc(2 * (size_t)r->ranks * sizeof *all);
	if (!all) {
		lt_errmsg_set("cannot allocate the memory report");
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_dist_allgather(r->dist, mine, all, sizeof mine, "the memory report");
	if (st == LT_OK && r->rank == 0) {
		printf("memory: ZeRO stage %d over %d rank%s, gradient buffer %zu of %zu elements; "
		       "per rank, parameters + gradients + AdamW moments (backend allocator) + "
		       "exchange buffers (host):", r->conf.dist.zero, r->ranks, r->ranks > 1 ? "s" : "",
		       lt_model_grads_numel(r->model), lt_model_num_params(r->model));
		for (int i = 0; i < r->ranks; i++)
			printf("%s rank %d %.0f + %.0f bytes", i ? ";" : "", i, all[2 * i],
			       all[2 * i + 1]);
		printf("\n");
		if (r->ranks > 1)
			printf("exchange: %s\n", lt_zero_exchange(r->zero));
	}
	free(all);
	return st;
}

static enum lt_status build_model(struct run *r, const char *ckpt)
{
	const struct lt_conf *c = &r->conf;
	enum lt_status st;
	lt_backend_set_local_rank(lt_dist_local_rank(r->dist));
	if ((st = lt_cmd_backend("train", c->run.device, c->run.threads, &r->be)) != LT_OK)
		return st;
	size_t before = backend_bytes(r->be);
	if ((st = lt_model_new(r->be, &c->model, &r->model)) != LT_OK ||
	    (st = lt_zero_new(r->dist, r->model, c->dist.zero, c->dist.deterministic,
			      c->dist.exchange == LT_EXCHANGE_AUTO,
			      (size_t)c->train.batch * (size_t)c->train.seq, &r->zero)) != LT_OK)
		return st;
	size_t state = backend_bytes(r->be) - before;
	r->opt = lt_zero_optim(r->zero);
	/* r->state was read and verified when the checkpoint was found */
	if (ckpt)
		st = lt_checkpoint_load_tensors(ckpt, r->model, r->opt);
	else
		st = lt_model_init(r->model, c->train.seed);
	if (st == LT_OK)
		st = lt_model_plan(r->model, r->plan_rows, c->train.seq);
	r->tokens = malloc(2 * (size_t)c->train.batch * c->train.seq * sizeof *r->tokens);
	if (st == LT_OK && !r->tokens) {
		lt_errmsg_set("cannot allocate the batch buffers");
		st = LT_ERR_NOMEM;
	}
	r->targets = r->tokens + (size_t)c->train.batch * c->train.seq;
	r->flops_per_token = lt_model_config_flops_per_token(&c->model, c->train.seq);
	if ((st = agree(r, st, "building the model", 0)) != LT_OK)
		return st;
	return report_memory(r, state);
}

/* Mean loss over the first run.eval_batches validation batches; each rank
 * takes its share of every batch's windows. */
static enum lt_status validation_loss(struct run *r, double *out)
{
	const struct lt_conf *c = &r->conf;
	int B = c->train.batch, T = c->train.seq, rows = rows_in(r, r->rank, 0);
	int P = c->dist.deterministic ? 1 : rows, row0 = first_row_in(r, 0);
	uint64_t val_tokens = lt_data_tokens(r->data, LT_DATA_VAL);
	double sums[2] = { 0, 0 };
	enum lt_status st = plan_forward(r, P);
	for (int i = 0; i < c->run.eval_batches && st == LT_OK; i++) {
		if ((uint64_t)i * (uint64_t)B * (uint64_t)T >= val_tokens)
			break;
		for (int j = 0; j < rows && st == LT_OK; j += P) {
			long n;
			for (int k = 0; k < P && st == LT_OK; k++) {
				uint64_t w = (uint64_t)i * (uint64_t)B + (uint64_t)(row0 + j + k);
				st = lt_data_val_batch(r->data, w, 1, T, r->tokens + (size_t)k * T,
						       r->targets + (size_t)k * T, &n);
			}
			double loss = 0;
			if (st == LT_OK)
				st = lt_model_forward(r->model, r->tokens, r->targets, 0.0f, &loss, &n);
			sums[0] += loss;
			sums[1] += (double)n;
		}
	}
	if ((st = agree(r, st, "the validation pass", 0)) != LT_OK ||
	    (st = lt_dist_allreduce(r->dist, sums, 2, LT_DIST_F64, LT_DIST_SUM,
				    "the validation-loss all-reduce")) != LT_OK)
		return st;
	if (sums[1] == 0) {
		lt_errmsg_set("%s: no validation tokens", r->data_dir);
		return LT_ERR_ARG;
	}
	*out = sums[0] / sums[1];
	return LT_OK;
}

/* Generates run.sample_tokens tokens after the end-of-text token (rank 0;
 * the others wait for it). */
static enum lt_status print_sample(struct run *r, long step);
static enum lt_status sample_on_rank0(struct run *r, long step)
{
	enum lt_status st = r->rank == 0 ? print_sample(r, step) : LT_OK;
	return agree(r, st, "the sample", LONG_WAIT_SECONDS);
}

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

/* Every rank writes its optimizer shard into rank 0's temporary
 * directory; rank 0 then writes the rest and publishes it. Stage 0 ranks
 * all hold the same moments: rank 0 writes them alone. */
static enum lt_status save_checkpoint(struct run *r)
{
	char path[PATH_CAP], tmp[PATH_CAP] = "";
	long tag = (long)getpid();
	int sharded = r->conf.dist.zero > 0 && r->ranks > 1;
	enum lt_status st = LT_OK;
	free(r->state.config);
	r->state.config = NULL;
	if (r->rank == 0 && (st = lt_conf_to_string(&r->conf, &r->state.config)) == LT_OK)
		st = lt_checkpoint_begin(r->conf.run.dir, r->state.step, tag, tmp, sizeof tmp);
	if ((st = agree(r, st, "starting a checkpoint", LONG_WAIT_SECONDS)) != LT_OK ||
	    (st = lt_dist_bcast(r->dist, tmp, sizeof tmp, 0, "the checkpoint's name")) != LT_OK)
		return st;
	if (sharded || r->rank == 0)
		st = lt_checkpoint_write_shard(tmp, r->model, r->opt, sharded ? r->rank : 0,
					       sharded ? r->ranks : 1);
	if ((st = agree(r, st, "writing the optimizer shards", LONG_WAIT_SECONDS)) != LT_OK) {
		if (r->rank == 0)
			lt_checkpoint_abandon(tmp);
		return st;
	}
	if (r->rank == 0) {
		r->state.tokenizer = r->tok_path;
		st = lt_checkpoint_commit(r->conf.run.dir, tmp, r->model, sharded ? r->ranks : 1,
					  &r->state, path, sizeof path);
		if (st != LT_OK)
			lt_checkpoint_abandon(tmp);
		if (st == LT_OK)
			st = lt_checkpoint_prune(r->conf.run.dir, r->conf.run.keep_checkpoints);
		if (st == LT_OK)
			lt_metrics_say(r->metrics, "checkpoint: %s", path);
	}
	return agree(r, st, "publishing the checkpoint", LONG_WAIT_SECONDS);
}

/* Forward and backward over this rank's `rows` sequences from sample
 * `first`, all at once (one at a time when deterministic), each backward
 * armed for the exchange (`last`: this holds the step's final one). Adds
 * the loss and target count to sums. */
static enum lt_status run_rows(struct run *r, uint64_t first, int rows, float scale, int last,
			       double *sums)
{
	const struct lt_conf *c = &r->conf;
	int P = c->dist.deterministic ? 1 : rows;
	enum lt_status st = plan_forward(r, P);
	for (int j = 0; j < rows && st == LT_OK; j += P) {
		double loss = 0;
		long n = 0;
		st = lt_data_train_batch(r->data, c->train.seed, first + (uint64_t)j, P, c->train.seq,
					 r->tokens, r->targets);
		if (st == LT_OK)
			st = lt_model_forward(r->model, r->tokens, r->targets, scale, &loss, &n);
		if (st == LT_OK)
			st = lt_zero_arm(r->zero, last && j + P >= rows);
		if (st == LT_OK)
			st = lt_model_backward(r->model);
		if (st == LT_OK && c->dist.deterministic)
			st = lt_zero_add_grain(r->zero);
		sums[0] += loss;
		sums[1] += (double)n;
	}
	return st;
}

/* This rank's votes to stop: votes[0] for a signal, votes[1] for a spent
 * time budget. */
static void vote_stop(const struct run *r, double loop_start, double *votes)
{
	double budget = r->conf.train.max_minutes * 60;
	votes[0] = stop_signal != 0;
	votes[1] = budget > 0 && lt_seconds() - loop_start > budget;
}

/* One optimizer step: grad_accum micro-batches of which this rank takes
 * its share, the reduction over the ranks, then AdamW unless the loss or
 * the gradient norm is not finite. */
static enum lt_status train_step(struct run *r, long step, double loop_start,
				 struct lt_step_metrics *sm)
{
	const struct lt_conf *c = &r->conf;
	int B = c->train.batch, T = c->train.seq, accum = c->train.grad_accum;
	float scale = 1.0f / ((float)B * (float)T * (float)accum);
	double sums[4] = { 0, 0, 0, 0 }, norm = NAN, t0 = lt_seconds();
	enum lt_status st = LT_OK;
	lt_dist_set_step(r->dist, step);
	r->loss_wait_s = r->update_s = 0;
	lt_model_zero_grads(r->model);
	for (int a = 0; a < accum && st == LT_OK; a++)
		st = run_rows(r, r->state.samples + (uint64_t)a * (uint64_t)B +
					 (uint64_t)first_row_in(r, a),
			      rows_in(r, r->rank, a), scale, a == accum - 1, sums);
	r->state.samples += (uint64_t)B * (uint64_t)accum;
	r->compute_s = lt_seconds() - t0;
	vote_stop(r, loop_start, sums + 2);
	/* the first exchange after backward waits for the slowest rank */
	r->comm_s = lt_dist_take_wait_seconds(r->dist);
	r->sync_s = lt_dist_take_barrier_seconds(r->dist);
	r->compute_s -= r->comm_s + r->sync_s;
	st = agree(r, st, "the forward and backward passes", 0);
	r->sync_s += lt_dist_take_wait_seconds(r->dist);
	/* stages 0 and 2 may have left layers' exchanges unmatched: abort */
	r->agreement.failed_together = r->agreement.failed_together && r->conf.dist.zero == 1;
	if (st != LT_OK || (st = lt_zero_reduce(r->zero, &norm)) != LT_OK)
		return st;
	r->comm_s += lt_dist_take_wait_seconds(r->dist);
	if ((st = lt_dist_allreduce(r->dist, sums, 4, LT_DIST_F64, LT_DIST_SUM,
				    "the loss all-reduce")) != LT_OK)
		return st;
	r->stop = sums[2] > 0 ? 1 : sums[3] > 0 ? 2 : 0;
	sm->loss = sums[0] / sums[1];
	sm->skipped = !isfinite(sm->loss) || !isfinite(norm);
	sm->grad_norm = norm;
	sm->lr = lt_lr_at(&c->train.optim, (int)step);
	if (sm->skipped) {
		r->state.bad_steps++;
		return LT_OK;
	}
	r->state.bad_steps = 0;
	/* the update's own time leaves out its waits for the others: those
	 * before it are counted here */
	r->loss_wait_s = lt_dist_take_wait_seconds(r->dist);
	r->sync_s += lt_dist_take_barrier_seconds(r->dist);
	double u0 = lt_seconds();
	st = lt_zero_update(r->zero, &c->train.optim, (int)step, norm);
	r->update_s = lt_seconds() - u0;
	return st;
}

/* --balance auto after `step`: new shares are planned for on every rank,
 * and rank 0 says what the ranks compared. */
static enum lt_status rebalance(struct run *r, long step)
{
	char line[4096];
	int moved;
	enum lt_status st = lt_balancer_after(r->balance, step, r->compute_s, r->rows, &moved,
					      line, sizeof line);
	if (st == LT_OK && moved) {
		set_plan_rows(r);
		st = agree(r, plan_forward(r, r->plan_rows), "planning the new shares", 0);
	}
	if (st == LT_OK && r->rank == 0 && line[0])
		lt_metrics_say(r->metrics, "%s", line);
	return st;
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
	double t0 = lt_seconds(), last = t0, elapsed0 = r->state.elapsed;
	long tokens_per_step = (long)c->train.batch * c->train.seq * c->train.grad_accum;
	enum lt_status st = LT_OK;
	lt_dist_take_wait_seconds(r->dist);
	lt_dist_take_barrier_seconds(r->dist);
	for (long step = r->state.step + 1; step <= c->train.steps && st == LT_OK; step++) {
		struct lt_step_metrics sm = { .step = step, .total_steps = c->train.steps,
					      .ranks = r->ranks };
		if ((st = train_step(r, step, t0, &sm)) != LT_OK)
			break;
		double now = lt_seconds();
		r->state.step = step;
		r->state.tokens += tokens_per_step;
		r->state.elapsed = elapsed0 + (now - t0);
		sm.tokens = r->state.tokens;
		sm.elapsed = r->state.elapsed;
		sm.tokens_per_s = (double)tokens_per_step / (now - last);
		sm.tflops = sm.tokens_per_s * r->flops_per_token / 1e12;
		double waited = lt_dist_take_wait_seconds(r->dist);
		double barriers = lt_dist_take_barrier_seconds(r->dist);
		sm.comm_s = r->comm_s + r->loss_wait_s + waited;
		sm.sync_s = r->sync_s + barriers;
		sm.reduce_s = r->comm_s;
		sm.compute_s = r->compute_s;
		sm.update_s = fmax(r->update_s - waited - barriers, 0);
		last = now;
		if (r->metrics && (st = lt_metrics_step(r->metrics, &sm)) != LT_OK)
			break;
		if (sm.skipped && r->state.bad_steps >= c->train.max_bad_steps) {
			lt_errmsg_set("step %ld: %d steps in a row had a non-finite loss or gradient "
				      "(train.max_bad_steps = %d); lower train.lr or check the data",
				      step, r->state.bad_steps, c->train.max_bad_steps);
			return LT_ERR_NUMERIC;
		}
		if (r->balance && (st = rebalance(r, step)) != LT_OK)
			break;
		if (due(step, c->run.eval_every) && step < c->train.steps) {
			double val;
			if ((st = validation_loss(r, &val)) != LT_OK ||
			    (r->metrics &&
			     (st = lt_metrics_eval(r->metrics, step, val, r->state.elapsed)) != LT_OK))
				break;
		}
		if (due(step, c->run.sample_every) && step < c->train.steps &&
		    (st = sample_on_rank0(r, step)) != LT_OK)
			break;
		if (due(step, c->run.checkpoint_every) && step < c->train.steps &&
		    (st = save_checkpoint(r)) != LT_OK)
			break;
		if (r->stop == 1) {
			lt_metrics_say(r->metrics, "%s at step %ld: saving a checkpoint",
				       stop_signal == SIGINT ? "interrupted" : "terminated", step);
			return LT_ERR_INTERRUPTED;
		}
		if (r->stop == 2) {
			lt_metrics_say(r->metrics, "time budget of %g minutes reached at step %ld",
				       c->train.max_minutes, step);
			break;
		}
		lt_dist_take_wait_seconds(r->dist);
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
	    (r->metrics &&
	     (st = lt_metrics_eval(r->metrics, r->state.step, val, r->state.elapsed)) != LT_OK))
		return st;
	lt_metrics_say(r->metrics, "validation loss %.4f nats/token (ln vocab = %.4f), perplexity %.2f",
		       val, log((double)r->conf.model.vocab_size), exp(val));
	return sample_on_rank0(r, r->state.step);
}

static void free_run(struct run *r)
{
	lt_metrics_close(r->metrics);
	free(r->tokens);
	free(r->rows);
	lt_balancer_free(r->balance);
	lt_zero_free(r->zero);
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

/* Refuses ranks that disagree on config, model, data or step before any
 * training, naming the rank and the difference. */
static enum lt_status check_ranks_agree(struct run *r)
{
	struct lt_agree_facts f = {
		.train_tokens = lt_data_tokens(r->data, LT_DATA_TRAIN),
		.val_tokens = lt_data_tokens(r->data, LT_DATA_VAL),
		.vocab = lt_tokenizer_vocab_size(r->tok),
		.step = r->state.step,
		.samples = r->state.samples,
	};
	return lt_agree_on_run(&r->agreement, &r->conf, &f);
}

/* Rank 0 wrote RUN/config.ini: every rank must see it. */
static enum lt_status check_shared_run_dir(const struct run *r)
{
	char path[PATH_CAP];
	path_of(path, sizeof path, "%s/config.ini", r->conf.run.dir);
	if (access(path, R_OK) == 0)
		return LT_OK;
	lt_errmsg_set("%s: rank %d (host %s) cannot see the file rank 0 wrote: the run directory "
		      "must be on a filesystem every rank sees", path, r->rank, lt_dist_host(r->dist));
	return LT_ERR_IO;
}

/* Splits the batch evenly; every rank needs a sequence. */
static enum lt_status plan_shares(struct run *r)
{
	if (r->conf.train.batch < r->ranks) {
		lt_errmsg_set("train.batch %d: each of the %d ranks needs at least one sequence of "
			      "every batch", r->conf.train.batch, r->ranks);
		return LT_ERR_CONFIG;
	}
	double *ones = malloc((size_t)r->ranks * sizeof *ones);
	r->rows = calloc((size_t)r->ranks, sizeof *r->rows);
	if (!ones || !r->rows) {
		free(ones);
		lt_errmsg_set("cannot allocate the ranks' shares");
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < r->ranks; i++)
		ones[i] = 1;
	set_shares(r, ones);
	free(ones);
	if (r->conf.dist.balance != LT_BALANCE_AUTO || r->ranks == 1)
		return LT_OK;
	size_t accum = (size_t)r->conf.train.grad_accum;
	return lt_balancer_new(r->dist, (size_t)r->conf.train.batch * accum, accum,
			       r->conf.dist.balance_every, r->state.step, &r->balance);
}

/* Rank 0 lists every rank: host, process, device and share. */
static enum lt_status list_ranks(struct run *r)
{
	enum { LINE = 200 };
	struct lt_device_info dev;
	char mine[LINE], *all = malloc((size_t)r->ranks * LINE);
	if (!all) {
		lt_errmsg_set("cannot allocate the rank list");
		return LT_ERR_NOMEM;
	}
	r->be->ops->info(r->be, &dev);
	snprintf(mine, sizeof mine, "host %.64s, pid %ld, device %.100s", lt_dist_host(r->dist),
		 (long)getpid(), dev.name);
	enum lt_status st = lt_dist_allgather(r->dist, mine, all, LINE, "the rank list");
	for (int i = 0; st == LT_OK && r->rank == 0 && i < r->ranks; i++)
		printf("rank %d: %.*s, %zu of %d sequences per step\n", i, LINE, all + (size_t)i * LINE,
		       r->rows[i], r->conf.train.batch * r->conf.train.grad_accum);
	free(all);
	return st;
}

/* Rank 0 alone: prepares the data if needed, then writes the config. */
static enum lt_status prepare_run_dir(struct run *r, const struct train_args *a)
{
	enum lt_status st = LT_OK;
	if (r->rank == 0 && (st = lt_fs_make_dirs(r->conf.run.dir)) == LT_OK)
		st = ensure_data(r, a);
	return agree(r, st, "preparing the data", LONG_WAIT_SECONDS);
}

static enum lt_status open_metrics(struct run *r)
{
	char mpath[PATH_CAP];
	enum lt_status st = LT_OK;
	path_of(mpath, sizeof mpath, "%s/metrics.jsonl", r->conf.run.dir);
	if (r->rank == 0 && (st = trim_metrics(mpath, r->state.step)) == LT_OK)
		st = lt_metrics_open(mpath, r->conf.run.log_every, &r->metrics);
	return agree(r, st, "opening the metrics", 0);
}

static enum lt_status run_training(struct run *r, const struct train_args *a, const char *ckpt)
{
	struct lt_conf *c = &r->conf;
	enum lt_status st;
	name_data_dir(r);
	if ((st = lt_conf_check(c)) != LT_OK || (st = prepare_run_dir(r, a)) != LT_OK ||
	    (st = agree(r, open_data(r), "opening the data", 0)) != LT_OK ||
	    (st = lt_conf_check(c)) != LT_OK ||
	    (st = agree(r, r->rank == 0 ? save_resolved_config(r) : LT_OK, "writing the config",
			LONG_WAIT_SECONDS)) != LT_OK ||
	    (st = agree(r, check_shared_run_dir(r), "finding the run directory", 0)) != LT_OK ||
	    (st = check_ranks_agree(r)) != LT_OK || (st = plan_shares(r)) != LT_OK ||
	    (st = build_model(r, ckpt)) != LT_OK || (st = open_metrics(r)) != LT_OK)
		return st;
	struct lt_device_info dev;
	r->be->ops->info(r->be, &dev);
	lt_metrics_say(r->metrics, "model: %.2fM parameters, vocab %d, batch %d x seq %d x accum %d, "
		       "%d steps, device %s", (double)lt_model_num_params(r->model) / 1e6,
		       c->model.vocab_size, c->train.batch, c->train.seq, c->train.grad_accum,
		       c->train.steps, dev.name);
	if (r->ranks > 1 && (st = list_ranks(r)) != LT_OK)
		return st;
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

/* Under MPI, only rank 0 prints progress; every rank prints its errors. */
static void quiet_other_ranks(const lt_dist *d)
{
	if (lt_dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout))
		fclose(stdout);
}

static int train_main(struct run *r, int argc, char **argv)
{
	struct train_args a = { 0 };
	char ckpt[PATH_CAP];
	/* the config options are applied twice when resuming: keep a copy */
	int argc2 = argc, rc, found = 0;
	char **argv2 = malloc((size_t)(argc + 1) * sizeof *argv2);
	if (!argv2)
		return 1;
	memcpy(argv2, argv, (size_t)(argc + 1) * sizeof *argv);
	/* pass 1: the config without a checkpoint tells where the run lives */
	enum lt_status st = resolve_config(&r->conf, NULL, &argc, argv, NULL);
	if (st != LT_OK) {
		/* a bad option is a usage error, a bad config file bad input */
		lt_report("train", st);
		rc = st == LT_ERR_ARG ? 2 : 1;
		goto out;
	}
	if ((rc = parse_train_options(argc, argv, &a)) >= 0)
		goto out;
	rc = 1;
	lt_dist_set_timeout(r->dist, r->conf.dist.comm_timeout);
	if ((st = find_resume_point(a.resume, &r->conf, ckpt, sizeof ckpt, &r->state, &found)) ==
	    LT_OK && found)
		/* pass 2: the checkpoint's config, then the options again */
		st = resolve_config(&r->conf, r->state.config, &argc2, argv2, ckpt);
	if (st == LT_OK) {
		lt_dist_set_timeout(r->dist, r->conf.dist.comm_timeout);
		r->agreement.timeout = r->conf.dist.comm_timeout;
		st = run_training(r, &a, found ? ckpt : NULL);
	}
	rc = st == LT_OK || st == LT_ERR_INTERRUPTED ? 0 : 1;
	if (rc) {
		char what[48];
		snprintf(what, sizeof what, r->ranks > 1 ? "train: rank %d" : "train", r->rank);
		lt_report(what, st);
	}
out:
	free(argv2);
	return rc;
}

int lt_cmd_train(int argc, char **argv)
{
	struct run r = { 0 };
	char **owned = NULL;
	enum lt_status st = lt_dist_init(&argc, &argv, &r.dist);
	if (st != LT_OK) {
		lt_report("train", st);
		return 1;
	}
	quiet_other_ranks(r.dist);
	r.rank = lt_dist_rank(r.dist);
	r.ranks = lt_dist_size(r.dist);
	r.agreement.dist = r.dist;
	char **args = expand_aliases(&argc, argv, &owned);
	int rc = args ? train_main(&r, argc, args) : 1;
	if (!args)
		fprintf(stderr, "lltrain: train: out of memory\n");
	/* a failure only some ranks know of leaves the others waiting in a
	 * collective: end them all (an abort may cut the launcher's output),
	 * before freeing what takes a collective to free (shared memory) */
	if (rc != 0 && r.ranks > 1 && !r.agreement.failed_together) {
		lt_metrics_close(r.metrics);
		lt_dist_abort(r.dist, rc);
	}
	free_run(&r);
	for (int i = 0; owned && owned[i]; i++)
		free(owned[i]);
	free(owned);
	free(args);
	lt_dist_finalize(r.dist);
	return rc;
}
