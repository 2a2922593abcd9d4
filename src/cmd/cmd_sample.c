/* lltrain sample: generates text from a checkpoint with the KV-cached
 * decoder (temperature, top-k, top-p) after an optional prompt, and says
 * how fast it went. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/checkpoint.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "clock.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "model.h"
#include "text/sample.h"
#include "text/tokenizer.h"

struct sample_args {
	const char *prompt;        /* --prompt, or NULL */
	const char *prompt_file;   /* --prompt-file, or NULL */
	const char *device;
	long max_tokens, top_k, seed, num_samples, threads;
	double temperature, top_p;
};

/* What one sampling run holds; freed by free_session. */
struct session {
	struct lt_cmd_checkpoint ck;
	char *prompt_text;         /* the prompt's bytes (malloc'd) */
	size_t prompt_len;
	lt_ids ids;                /* end-of-text (when the tokenizer has one), then the prompt */
	int skip;                  /* leading ids not printed: the end-of-text */
	int32_t *seq;              /* ids, then one sample's new tokens */
};

#define ARG(f) LT_CMD_FIELD(struct sample_args, f)

static const struct lt_cmd_option sample_options[] = {
	{ .name = "prompt", .kind = LT_CMD_TEXT, ARG(prompt), .arg = "TEXT",
	  .help = "the text to continue (default: none)" },
	{ .name = "prompt-file", .kind = LT_CMD_TEXT, ARG(prompt_file), .arg = "FILE",
	  .help = "read the prompt from FILE instead" },
	{ .name = "max-tokens", .kind = LT_CMD_LONG, ARG(max_tokens), .min = 0, .max = 1L << 30,
	  .arg = "N",
	  .help = "new tokens per sample (default 200; reduced to fit\n"
		  "the model's context)" },
	{ .name = "temperature", .kind = LT_CMD_REAL, ARG(temperature), .min = 0, .max = 100,
	  .arg = "X", .help = "0 picks the most likely token (default 0.8)" },
	{ .name = "top-k", .kind = LT_CMD_LONG, ARG(top_k), .min = 0, .max = 1L << 30, .arg = "N",
	  .help = "draw from the N most likely tokens; 0 = all (default 40)" },
	{ .name = "top-p", .kind = LT_CMD_REAL, ARG(top_p), .min = 0, .max = 1, .arg = "X",
	  .help = "then from the smallest set holding X of the\n"
		  "probability; 1 = all (default 0.95)" },
	{ .name = "seed", .kind = LT_CMD_LONG, ARG(seed), .min = 0, .max = LONG_MAX, .arg = "N",
	  .help = "random seed (default 1); sample i uses N + i" },
	{ .name = "num-samples", .kind = LT_CMD_LONG, ARG(num_samples), .min = 1, .max = 1000000,
	  .arg = "N", .help = "samples to generate (default 1)" },
	{ .name = "device", .kind = LT_CMD_TEXT, ARG(device), .arg = "DEV",
	  .help = "cpu (default), opencl[:P.D|:NAME] or auto" },
	{ .name = "threads", .kind = LT_CMD_LONG, ARG(threads), .min = 1, .max = 4096, .arg = "N",
	  .help = "CPU threads (default: OpenMP's choice)" },
	{ .name = NULL },
};

/* --prompt and --prompt-file exclude each other; 0, or 2 after saying so. */
static int check_sample_args(const void *args)
{
	const struct sample_args *a = args;
	if (a->prompt && a->prompt_file) {
		fprintf(stderr, "lltrain sample: --prompt and --prompt-file exclude each other\n");
		return 2;
	}
	return 0;
}

static const struct lt_cmd_usage sample_usage = {
	.cmd = "sample",
	.head = "usage: lltrain sample [OPTIONS] CHECKPOINT_OR_RUN_DIR\n\n"
		"Generates text from a checkpoint (or the newest valid one of a run\n"
		"directory), with the tokenizer.json saved in it: the end-of-text token,\n"
		"then the prompt, then up to --max-tokens new tokens, stopping early at\n"
		"end-of-text. Prints the prompt and what follows it; the speed goes to\n"
		"stderr.\n\n",
	.options = sample_options,
	.column = 23,
	.check = check_sample_args,
	.operands = &lt_cmd_checkpoint_operand,
};

/* The whole of a file, in a new buffer. */
static enum lt_status read_whole_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	*out = NULL;
	if (!f || !buf) {
		int err = errno;
		free(buf);
		if (f)
			fclose(f);
		lt_errmsg_set("%s: cannot read the prompt: %s", path, f ? "out of memory" : strerror(err));
		return f ? LT_ERR_NOMEM : LT_ERR_IO;
	}
	for (;;) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		char *grown = realloc(buf, cap * 2);
		if (!grown) {
			free(buf);
			fclose(f);
			lt_errmsg_set("%s: cannot hold a prompt of more than %zu bytes", path, cap);
			return LT_ERR_NOMEM;
		}
		buf = grown;
		cap *= 2;
	}
	int failed = ferror(f);
	fclose(f);
	if (failed) {
		free(buf);
		lt_errmsg_set("%s: cannot read the prompt: read error", path);
		return LT_ERR_IO;
	}
	*out = buf;
	*len = n;
	return LT_OK;
}

/* ids = end-of-text (where the tokenizer has one), then the prompt's ids. */
static enum lt_status encode_prompt(struct session *s, const struct sample_args *a)
{
	enum lt_status st;
	if (a->prompt_file) {
		if ((st = read_whole_file(a->prompt_file, &s->prompt_text, &s->prompt_len)) != LT_OK)
			return st;
	} else {
		const char *p = a->prompt ? a->prompt : "";
		s->prompt_len = strlen(p);
		if (!(s->prompt_text = malloc(s->prompt_len + 1))) {
			lt_errmsg_set("cannot allocate %zu bytes for the prompt", s->prompt_len + 1);
			return LT_ERR_NOMEM;
		}
		memcpy(s->prompt_text, p, s->prompt_len + 1);
	}
	if (lt_tokenizer_eot_id(s->ck.tok) >= 0) {
		if ((st = lt_tokenizer_append_eot(s->ck.tok, &s->ids)) != LT_OK)
			return st;
		s->skip = 1;
	}
	if ((st = lt_tokenizer_encode(s->ck.tok, s->prompt_text, s->prompt_len, &s->ids)) != LT_OK)
		return st;
	if (s->ids.n == 0) {
		lt_errmsg_set("%s/%s has no end-of-text token to start an empty prompt with; give a "
			      "--prompt", s->ck.dir, LT_RUNDIR_TOKENIZER);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* Generates and prints one sample of up to max_new tokens; adds the new
 * tokens to *total. */
static enum lt_status print_one_sample(struct session *s, const struct sample_args *a, int i,
				       int max_new, long *total)
{
	int n_prompt = (int)s->ids.n, got = 0;
	struct lt_sample_opts o = { .temperature = (float)a->temperature, .top_k = (int)a->top_k,
				    .top_p = (float)a->top_p, .seed = (uint64_t)a->seed + (uint64_t)i,
				    .n_ids = (int)lt_tokenizer_vocab_size(s->ck.tok) };
	char *text = NULL;
	size_t len = 0;
	enum lt_status st = lt_sample_generate(s->ck.model, s->ids.v, n_prompt, max_new,
					       lt_tokenizer_eot_id(s->ck.tok), &o, s->seq + n_prompt,
					       &got);
	if (st == LT_OK)
		st = lt_tokenizer_decode(s->ck.tok, s->seq + s->skip, (size_t)(n_prompt - s->skip + got),
					 &text, &len);
	if (st != LT_OK)
		return st;
	*total += got;
	if (a->num_samples > 1)
		printf("--- sample %d of %ld (seed %llu) ---\n", i + 1, a->num_samples,
		       (unsigned long long)o.seed);
	fwrite(text, 1, len, stdout);
	if (!len || text[len - 1] != '\n')
		putchar('\n');
	fflush(stdout);
	free(text);
	return LT_OK;
}

/* Fits the request to the context, then generates every sample. Returns
 * the exit status, having said what went wrong. */
static int generate_samples(struct session *s, const struct sample_args *a)
{
	int ctx = s->ck.conf.model.max_seq, n_prompt = (int)s->ids.n;
	if (s->ids.n > (size_t)ctx) {
		fprintf(stderr, "lltrain sample: prompt of %zu tokens exceeds the context of %d tokens\n",
			s->ids.n, ctx);
		return 1;
	}
	int max_new = (int)a->max_tokens;
	if (max_new > ctx - n_prompt) {
		max_new = ctx - n_prompt;
		fprintf(stderr, "lltrain sample: --max-tokens %ld reduced to %d: the prompt's %d tokens "
			"and the new ones must fit the context of %d tokens\n", a->max_tokens, max_new,
			n_prompt, ctx);
	}
	if (!(s->seq = malloc((size_t)ctx * sizeof *s->seq))) {
		lt_errmsg_set("cannot allocate %d tokens", ctx);
		lt_report("sample", LT_ERR_NOMEM);
		return 1;
	}
	memcpy(s->seq, s->ids.v, (size_t)n_prompt * sizeof *s->seq);
	long total = 0;
	double t0 = lt_seconds();
	for (int i = 0; i < a->num_samples; i++) {
		enum lt_status st = print_one_sample(s, a, i, max_new, &total);
		if (st != LT_OK) {
			lt_report("sample", st);
			return 1;
		}
	}
	double dt = lt_seconds() - t0;
	fprintf(stderr, "%ld tokens in %.2f s (%.1f tokens/s)\n", total, dt,
		dt > 0 ? (double)total / dt : 0.0);
	return 0;
}

static void free_session(struct session *s)
{
	lt_cmd_checkpoint_free(&s->ck);
	lt_ids_free(&s->ids);
	free(s->prompt_text);
	free(s->seq);
}

int lt_cmd_sample(int argc, char **argv)
{
	struct sample_args a = { .device = "cpu", .max_tokens = 200, .top_k = 40, .seed = 1,
				 .num_samples = 1, .temperature = 0.8, .top_p = 0.95 };
	struct session s;
	int rc = lt_cmd_parse(argc, argv, &sample_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	memset(&s, 0, sizeof s);
	enum lt_status st = lt_cmd_checkpoint_load(&s.ck, argv[optind], 1, "sample", a.device,
						    (int)a.threads);
	if (st == LT_OK)
		st = encode_prompt(&s, &a);
	if (st != LT_OK) {
		lt_report("sample", st);
		rc = 1;
	} else {
		rc = generate_samples(&s, &a);
	}
	free_session(&s);
	return rc;
}
