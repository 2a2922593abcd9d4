/* lltrain eval: the loss and perplexity of a checkpoint over consecutive
 * windows of a token shard or of a prepared data directory's validation
 * shards. */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "backend.h"
#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/rundir.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "text/data.h"
#include "text/tokenizer.h"
#include "model.h"
#include "io/shard.h"

struct eval_args {
	const char *data;      /* --data, or NULL for the config's */
	const char *device;
	const char *quantize;  /* --quantize, or NULL */
	long batch, seq, max_batches, threads;  /* 0 = the default */
	int json;
};

/* What one evaluation holds; freed by free_session. */
struct session {
	struct lt_cmd_checkpoint ck;
	char data_path[LT_CMD_PATH_CAP + 32];
	lt_data *dir;          /* a prepared data directory, or */
	lt_shard *file;        /* one token shard */
	int32_t *tokens, *targets;
	int32_t *window;       /* T + 1 tokens read from a shard */
};

#define ARG(f) LT_CMD_FIELD(struct eval_args, f)

static const struct lt_cmd_option eval_options[] = {
	{ .name = "data", .kind = LT_CMD_TEXT, ARG(data), .arg = "PATH",
	  .help = "a token shard (.bin), or a prepared data directory\n"
		  "whose val_*.bin shards are used (default: the\n"
		  "checkpoint config's data.dir, else RUN_DIR/data)" },
	{ .name = "batch", .kind = LT_CMD_LONG, ARG(batch), .min = 1, .max = 1 << 20, .arg = "N",
	  .help = "windows per forward pass (default: train.batch)" },
	{ .name = "seq", .kind = LT_CMD_LONG, ARG(seq), .min = 1, .max = 1 << 24, .arg = "N",
	  .help = "tokens per window (default: train.seq)" },
	{ .name = "max-batches", .kind = LT_CMD_LONG, ARG(max_batches), .min = 0, .max = 1L << 40,
	  .arg = "N", .help = "stop after N batches; 0 = all the data (default 0)" },
	{ .name = "json", .kind = LT_CMD_FLAG, ARG(json),
	  .help = "print one JSON object instead of the text line" },
	{ .name = "device", .kind = LT_CMD_TEXT, ARG(device), .arg = "DEV",
	  .help = "cpu (default), opencl[:P.D|:NAME] or auto" },
	{ .name = "quantize", .kind = LT_CMD_TEXT, ARG(quantize), .arg = "T",
	  .help = "evaluate with the weights rounded as export --format gguf\n"
		  "--type T rounds them: q8_0 or q4_0" },
	{ .name = "threads", .kind = LT_CMD_LONG, ARG(threads), .min = 1, .max = 4096, .arg = "N",
	  .help = "CPU threads (default: OpenMP's choice)" },
	{ .name = NULL },
};

/* --quantize names q8_0 or q4_0; 0, or 2 after saying what is wrong. */
static int check_eval_args(const void *args)
{
	const struct eval_args *a = args;
	if (a->quantize && strcmp(a->quantize, "q8_0") != 0 && strcmp(a->quantize, "q4_0") != 0) {
		fprintf(stderr, "lltrain eval: --quantize '%s': unknown (expected q8_0 or q4_0)\n",
			a->quantize);
		return 2;
	}
	return 0;
}

static const struct lt_cmd_usage eval_usage = {
	.cmd = "eval",
	.head = "usage: lltrain eval [OPTIONS] CHECKPOINT_OR_RUN_DIR\n\n"
		"Evaluates a checkpoint (or the newest valid one of a run directory) on\n"
		"consecutive windows of tokens and prints the mean loss per predicted\n"
		"token and the perplexity.\n\n",
	.options = eval_options,
	.column = 21,
	.check = check_eval_args,
	.operands = &lt_cmd_checkpoint_operand,
};

/* The weights as an export of type name rounds them (adapters folded in
 * first, as export does). */
static enum lt_status quantize_weights(struct session *s, const char *name)
{
	uint32_t type;
	enum lt_status st = lt_gguf_model_file_type(name, &type);
	if (st != LT_OK || (st = lt_model_merge_lora(s->ck.model)) != LT_OK)
		return st;
	return lt_gguf_model_round(s->ck.model, type);
}

/* The vocabulary the data was prepared with: the checkpoint's tokenizer's,
 * which may be smaller than the model's (rows past it are padding); the
 * model's where the checkpoint holds no tokenizer. */
static enum lt_status data_vocab(const struct session *s, int *V)
{
	char file[LT_CMD_PATH_CAP + 32];
	lt_tokenizer *tok;
	enum lt_status st = lt_fs_join(file, sizeof file, s->ck.dir, LT_RUNDIR_TOKENIZER);
	*V = s->ck.conf.model.vocab_size;
	if (st != LT_OK || access(file, F_OK) != 0)
		return st;
	if ((st = lt_tokenizer_load(file, &tok)) != LT_OK)
		return st;
	if (lt_tokenizer_vocab_size(tok) < *V)
		*V = (int)lt_tokenizer_vocab_size(tok);
	lt_tokenizer_free(tok);
	return LT_OK;
}

/* Opens the data as a directory of shards or as one shard file, each
 * checked against the vocabulary it was prepared with. */
static enum lt_status open_data(struct session *s)
{
	struct stat sb;
	int V;
	enum lt_status st = data_vocab(s, &V);
	if (st != LT_OK)
		return st;
	if (stat(s->data_path, &sb) == 0 && S_ISDIR(sb.st_mode))
		return lt_data_open(s->data_path, V, &s->dir);
	st = lt_shard_open(s->data_path, V, 1, &s->file);
	if (st == LT_OK && lt_shard_info(s->file)->examples) {
		/* its windows are those of its directory's index of examples */
		lt_errmsg_set("%s: a shard of chat examples: evaluate the data directory that "
			      "holds it", s->data_path);
		return LT_ERR_ARG;
	}
	return st;
}

/* Batch `index` of one shard: B consecutive windows of T tokens, targets
 * shifted by one; positions past the end get token 0 and target -1. *n
 * counts the real targets (0 past the end of the data). window holds T+1. */
static enum lt_status shard_batch(const lt_shard *sh, uint64_t index, int B, int T,
				  int32_t *tokens, int32_t *targets, int32_t *window, long *n)
{
	uint64_t count = lt_shard_info(sh)->n_tokens;
	*n = 0;
	for (int b = 0; b < B; b++) {
		uint64_t at = (index * (uint64_t)B + (uint64_t)b) * (uint64_t)T;
		uint64_t have = at < count ? count - at : 0;
		size_t take = have < (uint64_t)T + 1 ? (size_t)have : (size_t)T + 1;
		int32_t *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
		enum lt_status st = take ? lt_shard_read(sh, at, window, take) : LT_OK;
		if (st != LT_OK)
			return st;
		for (int t = 0; t < T; t++) {
			tok[t] = (size_t)t < take ? window[t] : 0;
			tgt[t] = (size_t)t + 1 < take ? window[t + 1] : -1;
			*n += tgt[t] >= 0;
		}
	}
	return LT_OK;
}

/* The summed loss and the number of predicted tokens over the batches. */
static enum lt_status evaluate(struct session *s, int B, int T, long max_batches, double *sum,
			       long *count)
{
	enum lt_status st = lt_model_plan(s->ck.model, B, T);
	*sum = 0;
	*count = 0;
	if (st != LT_OK)
		return st;
	s->tokens = malloc((size_t)B * T * sizeof *s->tokens);
	s->targets = malloc((size_t)B * T * sizeof *s->targets);
	s->window = malloc(((size_t)T + 1) * sizeof *s->window);
	if (!s->tokens || !s->targets || !s->window) {
		lt_errmsg_set("cannot allocate batches of %d x %d tokens", B, T);
		return LT_ERR_NOMEM;
	}
	for (long i = 0; max_batches == 0 || i < max_batches; i++) {
		long n = 0, cnt = 0;
		double loss = 0;
		if (s->dir && (uint64_t)i * (uint64_t)B >= lt_data_val_windows(s->dir, T))
			break;
		if (s->dir)
			st = lt_data_val_batch(s->dir, (uint64_t)i, B, T, s->tokens, s->targets, &n);
		else
			st = shard_batch(s->file, (uint64_t)i, B, T, s->tokens, s->targets,
					 s->window, &n);
		if (st != LT_OK)
			return st;
		if (n == 0 && !s->dir)
			break;
		if (n == 0)
			continue; /* chat examples whose answers the window cut off */
		st = lt_model_forward(s->ck.model, s->tokens, s->targets, 0.0f, &loss, &cnt);
		if (st != LT_OK) {
			lt_errmsg_prefix("%s: batch %ld", s->data_path, i);
			return st;
		}
		*sum += loss;
		*count += cnt;
	}
	if (*count == 0) {
		lt_errmsg_set("%s: no tokens to evaluate (a window needs at least 2)", s->data_path);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* A JSON number, or null where the value is not finite. */
static json_t *json_number(double x)
{
	return isfinite(x) ? json_real(x) : json_null();
}

static int print_result(const struct session *s, double loss, long tokens, int as_json)
{
	double ppl = exp(loss);
	if (!as_json) {
		printf("loss %.6f nats/token, perplexity %.4f, %ld tokens\n", loss, ppl, tokens);
		return 0;
	}
	json_t *o = json_object();
	int bad = !o || json_object_set_new(o, "loss", json_number(loss)) ||
		  json_object_set_new(o, "perplexity", json_number(ppl)) ||
		  json_object_set_new(o, "tokens", json_integer(tokens)) ||
		  json_object_set_new(o, "checkpoint", json_string(s->ck.dir)) ||
		  json_object_set_new(o, "data", json_string(s->data_path));
	char *text = bad ? NULL : json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text) {
		fprintf(stderr, "lltrain eval: cannot write the result as JSON (are the paths UTF-8?)\n");
		return 1;
	}
	printf("%s\n", text);
	free(text);
	return 0;
}

static void free_session(struct session *s)
{
	lt_data_close(s->dir);
	lt_shard_close(s->file);
	lt_cmd_checkpoint_free(&s->ck);
	free(s->tokens);
	free(s->targets);
	free(s->window);
}

int lt_cmd_eval(int argc, char **argv)
{
	struct eval_args a = { .device = "cpu" };
	struct session s;
	int rc = lt_cmd_parse(argc, argv, &eval_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	memset(&s, 0, sizeof s);
	enum lt_status st = lt_cmd_checkpoint_load(&s.ck, argv[optind], 0, "eval", a.device,
						    (int)a.threads);
	rc = 1;
	if (st != LT_OK)
		goto out;
	int B = a.batch ? (int)a.batch : s.ck.conf.train.batch;
	int T = a.seq ? (int)a.seq : s.ck.conf.train.seq;
	if (T > s.ck.conf.model.max_seq) {
		fprintf(stderr, "lltrain eval: --seq %d exceeds the context of %d tokens\n", T,
			s.ck.conf.model.max_seq);
		rc = 2;
		goto out;
	}
	double sum;
	long count;
	if (a.quantize && (st = quantize_weights(&s, a.quantize)) != LT_OK)
		goto out;
	if ((st = lt_cmd_checkpoint_data(&s.ck, a.data, s.data_path, sizeof s.data_path)) == LT_OK &&
	    (st = open_data(&s)) == LT_OK &&
	    (st = evaluate(&s, B, T, a.max_batches, &sum, &count)) == LT_OK)
		rc = print_result(&s, sum / (double)count, count, a.json);
out:
	if (st != LT_OK)
		lt_report("eval", st);
	free_session(&s);
	return rc;
}
