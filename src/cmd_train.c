/* lltrain train: prepares a corpus (tokenizer + token ids, held-out split),
 * trains a preset on it within a step and time budget, reports validation
 * loss and prints a sample. With no arguments it trains the tiny preset on
 * the fortune-cookie texts of Debian's fortunes package into runs/default. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "cmd.h"
#include "model.h"
#include "optim.h"
#include "presets.h"
#include "rng.h"
#include "tokenizer.h"

#define DEFAULT_CORPUS "/usr/share/games/fortunes"

struct train_opts {
	const char *preset, *device, *run_dir;
	int threads, steps, sample_tokens, vocab;
	double max_minutes, lr;
	uint64_t seed;
	char **corpus;
	int n_corpus;
};

/* Token ids of the corpus: documents joined with the end-of-text token. */
struct corpus {
	lt_ids train, val;
	lt_tokenizer *tok;
};

static void print_help(void)
{
	printf("usage: lltrain train [OPTIONS] [CORPUS_FILE_OR_DIR ...]\n\n"
	       "Trains a byte-level BPE tokenizer on the corpus (or loads RUN_DIR/tokenizer.json),\n"
	       "trains the preset model on it, prints the validation loss and a sample.\n"
	       "Documents are separated by lines holding a single '%%' (the fortune format);\n"
	       "every 20th document is held out for validation. The default corpus is\n"
	       DEFAULT_CORPUS ".\n\n"
	       "  --preset NAME       tiny, 15M, 110M or 1B (default tiny)\n"
	       "  --run-dir DIR       where the tokenizer goes (default runs/default)\n"
	       "  --device DEV        cpu, opencl[:P.D] or auto (default cpu)\n"
	       "  --threads N         CPU threads (default: OpenMP's choice)\n"
	       "  --steps N           optimizer steps (default 600)\n"
	       "  --max-minutes X     stop training after X minutes (default 5)\n"
	       "  --lr X              peak learning rate (default 2e-3)\n"
	       "  --vocab N           tokenizer vocabulary when one is trained (default: the preset's)\n"
	       "  --seed N            seed of initialisation, batches and sampling (default 1)\n"
	       "  --sample-tokens N   length of the sample printed at the end (default 200)\n");
}

static int parse_number(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
		fprintf(stderr, "lltrain train: %s '%s': expected a number in [%g, %g]\n", opt, s, lo, hi);
		return 0;
	}
	*out = v;
	return 1;
}

static int parse_options(int argc, char **argv, struct train_opts *o)
{
	static const struct option longopts[] = {
		{ "preset", required_argument, NULL, 'p' }, { "device", required_argument, NULL, 'd' },
		{ "run-dir", required_argument, NULL, 'r' }, { "threads", required_argument, NULL, 't' },
		{ "steps", required_argument, NULL, 's' }, { "max-minutes", required_argument, NULL, 'm' },
		{ "lr", required_argument, NULL, 'l' }, { "vocab", required_argument, NULL, 'v' },
		{ "seed", required_argument, NULL, 'S' }, { "sample-tokens", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 },
	};
	int c;
	double v;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': o->preset = optarg; break;
		case 'd': o->device = optarg; break;
		case 'r': o->run_dir = optarg; break;
		case 't': if (!parse_number("--threads", optarg, 1, 4096, &v)) return 2; o->threads = (int)v; break;
		case 's': if (!parse_number("--steps", optarg, 1, 1e9, &v)) return 2; o->steps = (int)v; break;
		case 'm': if (!parse_number("--max-minutes", optarg, 0.01, 1e7, &v)) return 2; o->max_minutes = v; break;
		case 'l': if (!parse_number("--lr", optarg, 1e-9, 10, &v)) return 2; o->lr = v; break;
		case 'v': if (!parse_number("--vocab", optarg, 258, 1 << 20, &v)) return 2; o->vocab = (int)v; break;
		case 'S': if (!parse_number("--seed", optarg, 0, 1e15, &v)) return 2; o->seed = (uint64_t)v; break;
		case 'n': if (!parse_number("--sample-tokens", optarg, 0, 1e6, &v)) return 2; o->sample_tokens = (int)v; break;
		case 'h': print_help(); return 0;
		default: return 2;
		}
	}
	o->corpus = argv + optind;
	o->n_corpus = argc - optind;
	return -1;
}

/* Reads a whole file into a NUL-terminated buffer. */
static enum lt_status read_file(const char *path, char **text, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		lt_errmsg_set("%s: cannot open: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	while (buf) {
		n += fread(buf + n, 1, cap - n - 1, f);
		if (n < cap - 1)
			break;
		char *grown = realloc(buf, cap * 2);
		if (!grown) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = grown;
		cap *= 2;
	}
	int err = ferror(f);
	fclose(f);
	if (!buf) {
		lt_errmsg_set("%s: cannot allocate %zu bytes to read it", path, cap * 2);
		return LT_ERR_NOMEM;
	}
	if (err) {
		free(buf);
		lt_errmsg_set("%s: read error", path);
		return LT_ERR_IO;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return LT_OK;
}

/* Calls fn on each document of a file: text between lines holding only '%'. */
typedef enum lt_status (*doc_fn)(void *ctx, const char *doc, size_t len);

static enum lt_status for_each_document(const char *text, size_t len, doc_fn fn, void *ctx)
{
	size_t start = 0, at = 0;
	while (at <= len) {
		size_t eol = at;
		while (eol < len && text[eol] != '\n')
			eol++;
		int separator = eol - at == 1 && text[at] == '%';
		if (separator || eol >= len) {
			size_t end = separator ? at : len;
			if (end > start) {
				enum lt_status st = fn(ctx, text + start, end - start);
				if (st != LT_OK)
					return st;
			}
			start = eol + 1;
		}
		at = eol + 1;
	}
	return LT_OK;
}

/* The corpus files: each argument, or the regular files of a directory
 * (not the fortune index files *.dat and the *.u8 links). */
static enum lt_status list_corpus(const struct train_opts *o, char ***paths, int *n)
{
	static char *default_dir[] = { DEFAULT_CORPUS };
	char **args = o->n_corpus ? o->corpus : default_dir;
	int nargs = o->n_corpus ? o->n_corpus : 1;
	int cap = 16;
	*n = 0;
	*paths = malloc((size_t)cap * sizeof **paths);
	for (int i = 0; i < nargs && *paths; i++) {
		struct stat sb;
		if (stat(args[i], &sb) != 0) {
			lt_errmsg_set("%s: %s%s", args[i], strerror(errno),
				      o->n_corpus ? "" : " (install Debian's fortunes package, or name a corpus)");
			return LT_ERR_IO;
		}
		DIR *d = S_ISDIR(sb.st_mode) ? opendir(args[i]) : NULL;
		struct dirent *e;
		do {
			char path[4096];
			e = d ? readdir(d) : NULL;
			if (d && !e)
				break;
			if (e) {
				size_t l = strlen(e->d_name);
				if (e->d_name[0] == '.' || (l > 4 && !strcmp(e->d_name + l - 4, ".dat")) ||
				    (l > 3 && !strcmp(e->d_name + l - 3, ".u8")))
					continue;
				snprintf(path, sizeof path, "%s/%s", args[i], e->d_name);
				struct stat fs;
				if (lstat(path, &fs) != 0 || !S_ISREG(fs.st_mode))
					continue;
			} else {
				snprintf(path, sizeof path, "%s", args[i]);
			}
			if (*n == cap) {
				char **grown = realloc(*paths, (size_t)(cap *= 2) * sizeof **paths);
				if (!grown)
					break;
				*paths = grown;
			}
			(*paths)[(*n)++] = strdup(path);
		} while (d);
		if (d)
			closedir(d);
	}
	if (!*paths) {
		lt_errmsg_set("cannot allocate the corpus file list");
		return LT_ERR_NOMEM;
	}
	/* readdir order is the file system's: sort for a reproducible corpus */
	for (int i = 1; i < *n; i++)
		for (int j = i; j > 0 && strcmp((*paths)[j - 1], (*paths)[j]) > 0; j--) {
			char *t = (*paths)[j];
			(*paths)[j] = (*paths)[j - 1];
			(*paths)[j - 1] = t;
		}
	return LT_OK;
}

static enum lt_status feed_trainer(void *ctx, const char *doc, size_t len)
{
	return lt_tokenizer_trainer_add(ctx, doc, len);
}

struct encode_ctx {
	struct corpus *c;
	long doc;
};

static enum lt_status encode_document(void *ctx, const char *doc, size_t len)
{
	struct encode_ctx *e = ctx;
	lt_ids *ids = e->doc++ % 20 == 19 ? &e->c->val : &e->c->train;
	enum lt_status st = lt_tokenizer_encode(e->c->tok, doc, len, ids);
	return st == LT_OK ? lt_tokenizer_append_eot(e->c->tok, ids) : st;
}

/* mkdir -p: creates dir and its missing parents. */
static enum lt_status make_dirs(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s", dir);
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			lt_errmsg_set("%s: cannot create the directory: %s", path, strerror(errno));
			return LT_ERR_IO;
		}
		*p = c;
		if (!c)
			return LT_OK;
	}
}

/* Gets the tokenizer (loaded from the run directory, or trained and saved
 * there) and encodes every document. */
static enum lt_status prepare_corpus(const struct train_opts *o, int vocab, int max_seq, struct corpus *c)
{
	char **paths = NULL, tok_path[4096];
	int n = 0;
	enum lt_status st = list_corpus(o, &paths, &n);
	snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", o->run_dir);
	struct stat sb;
	if (st == LT_OK && n == 0) {
		lt_errmsg_set("%s: no corpus files found", o->n_corpus ? o->corpus[0] : DEFAULT_CORPUS);
		st = LT_ERR_ARG;
	}
	if (st == LT_OK && stat(tok_path, &sb) == 0) {
		printf("tokenizer: loading %s\n", tok_path);
		st = lt_tokenizer_load(tok_path, &c->tok);
	} else if (st == LT_OK) {
		struct lt_tokenizer_train_opts to = { .vocab_size = vocab, .min_frequency = 2 };
		lt_tokenizer_trainer *tr = NULL;
		double t0 = lt_cmd_seconds();
		st = lt_tokenizer_trainer_new(&to, &tr);
		for (int i = 0; i < n && st == LT_OK; i++) {
			char *text;
			size_t len;
			if ((st = read_file(paths[i], &text, &len)) == LT_OK) {
				st = for_each_document(text, len, feed_trainer, tr);
				free(text);
			}
		}
		if (st == LT_OK)
			st = lt_tokenizer_trainer_finish(tr, &c->tok);
		lt_tokenizer_trainer_free(tr);
		if (st != LT_OK && n > 0)
			lt_errmsg_prefix("%s%s", paths[0], n > 1 ? " and the other corpus files" : "");
		if (st == LT_OK)
			st = make_dirs(o->run_dir);
		if (st == LT_OK)
			st = lt_tokenizer_save(c->tok, o->run_dir, max_seq);
		if (st == LT_OK)
			printf("tokenizer: trained %d tokens on %d files in %.1f s, saved to %s\n",
			       lt_tokenizer_vocab_size(c->tok), n, lt_cmd_seconds() - t0, tok_path);
	}
	struct encode_ctx e = { .c = c };
	for (int i = 0; i < n && st == LT_OK; i++) {
		char *text;
		size_t len;
		if ((st = read_file(paths[i], &text, &len)) == LT_OK) {
			st = for_each_document(text, len, encode_document, &e);
			free(text);
		}
	}
	if (st == LT_OK && (c->train.n < (size_t)max_seq + 2 || c->val.n < (size_t)max_seq + 2)) {
		lt_errmsg_set("corpus too small: %zu training and %zu validation tokens, need more than %d "
			      "of each", c->train.n, c->val.n, max_seq + 1);
		st = LT_ERR_ARG;
	}
	if (st == LT_OK)
		printf("data: %ld documents, %zu training tokens, %zu validation tokens\n", e.doc,
		       c->train.n, c->val.n);
	for (int i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return st;
}

/* Fills B windows of T+1 tokens at random offsets: inputs and targets. */
static void draw_batch(struct lt_rng *r, const lt_ids *ids, int B, int T, int32_t *tok, int32_t *tgt)
{
	for (int b = 0; b < B; b++) {
		size_t at = (size_t)lt_rng_below(r, (uint64_t)(ids->n - (size_t)T - 1));
		memcpy(tok + (size_t)b * T, ids->v + at, (size_t)T * sizeof *tok);
		memcpy(tgt + (size_t)b * T, ids->v + at + 1, (size_t)T * sizeof *tgt);
	}
}

/* Mean loss over up to 16 consecutive batches of the validation tokens. */
static enum lt_status validation_loss(lt_model *m, const lt_ids *val, int B, int T, int32_t *tok,
				      int32_t *tgt, double *out)
{
	double sum = 0;
	long count = 0;
	size_t at = 0;
	for (int batch = 0; batch < 16 && at + (size_t)T + 1 <= val->n; batch++) {
		for (int b = 0; b < B; b++) {
			for (int t = 0; t < T; t++) {
				size_t i = at + (size_t)t;
				int ok = i + 1 < val->n;
				tok[b * T + t] = ok ? val->v[i] : 0;
				tgt[b * T + t] = ok ? val->v[i + 1] : -1;
			}
			at += (size_t)T;
		}
		double loss;
		long n;
		enum lt_status st = lt_model_forward(m, tok, tgt, 0.0f, &loss, &n);
		if (st != LT_OK)
			return st;
		sum += loss;
		count += n;
	}
	*out = sum / (double)count;
	return LT_OK;
}

/* Draws the next token from the logits row with temperature and top-k. */
static int32_t sample_token(const float *logits, int V, float temperature, int top_k, struct lt_rng *r,
			    float *scratch)
{
	float maxv = -INFINITY;
	for (int i = 0; i < V; i++)
		maxv = logits[i] > maxv ? logits[i] : maxv;
	/* the k-th largest logit is the cut: found by a partial count */
	float cut = -INFINITY;
	if (top_k > 0 && top_k < V) {
		memcpy(scratch, logits, (size_t)V * sizeof *scratch);
		for (int k = 0; k < top_k; k++) {
			int best = 0;
			for (int i = 1; i < V; i++)
				if (scratch[i] > scratch[best])
					best = i;
			cut = scratch[best];
			scratch[best] = -INFINITY;
		}
	}
	double total = 0;
	for (int i = 0; i < V; i++)
		total += logits[i] >= cut ? exp((logits[i] - maxv) / temperature) : 0.0;
	double u = lt_rng_uniform(r) * total;
	for (int i = 0; i < V; i++) {
		if (logits[i] < cut)
			continue;
		u -= exp((logits[i] - maxv) / temperature);
		if (u <= 0)
			return i;
	}
	return V - 1;
}

/* Generates n tokens after the end-of-text token and prints their text. */
static enum lt_status print_sample(lt_model *m, const lt_tokenizer *tok, int n, uint64_t seed)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	lt_backend *be = lt_model_backend(m);
	int T = c->max_seq, V = c->vocab_size;
	enum lt_status st = lt_model_plan(m, 1, T);
	if (st != LT_OK)
		return st;
	int32_t *ctx = calloc((size_t)T, sizeof *ctx), *tgt = malloc((size_t)T * sizeof *tgt);
	int32_t *out = malloc((size_t)(n + 1) * sizeof *out);
	float *row = malloc((size_t)V * sizeof *row), *scratch = malloc((size_t)V * sizeof *scratch);
	if (!ctx || !tgt || !out || !row || !scratch) {
		lt_errmsg_set("cannot allocate the sampling buffers");
		st = LT_ERR_NOMEM;
		goto done;
	}
	for (int t = 0; t < T; t++)
		tgt[t] = -1;
	struct lt_rng r;
	lt_rng_seed(&r, seed, 99);
	int len = 1;
	ctx[0] = lt_tokenizer_eot_id(tok);
	for (int i = 0; i < n && st == LT_OK; i++) {
		double loss;
		long cnt;
		/* causal attention: the padding after position len-1 cannot change it */
		st = lt_model_forward(m, ctx, tgt, 0.0f, &loss, &cnt);
		if (st != LT_OK)
			break;
		be->ops->read(be, row, lt_ref_at(lt_model_logits(m), (size_t)(len - 1) * V), (size_t)V);
		int32_t next = sample_token(row, V, 0.8f, 40, &r, scratch);
		out[i] = next;
		if (len == T) {
			memmove(ctx, ctx + 1, (size_t)(T - 1) * sizeof *ctx);
			ctx[T - 1] = next;
		} else {
			ctx[len++] = next;
		}
	}
	if (st == LT_OK) {
		char *text;
		size_t tlen;
		if ((st = lt_tokenizer_decode(tok, out, (size_t)n, &text, &tlen)) == LT_OK) {
			printf("--- sample (%d tokens, temperature 0.8, top-k 40) ---\n%s\n---\n", n, text);
			free(text);
		}
	}
done:
	free(ctx);
	free(tgt);
	free(out);
	free(row);
	free(scratch);
	return st;
}

static enum lt_status run_training(const struct train_opts *o, const struct lt_preset *p)
{
	struct corpus c = { 0 };
	lt_backend *be = NULL;
	lt_model *m = NULL;
	lt_optim *opt = NULL;
	int32_t *tok = NULL;
	struct lt_model_config mc = p->model;
	int B = p->batch, T = p->seq;
	enum lt_status st = prepare_corpus(o, o->vocab ? o->vocab : mc.vocab_size, mc.max_seq, &c);
	if (st != LT_OK)
		goto out;
	mc.vocab_size = lt_tokenizer_vocab_size(c.tok);
	if ((st = lt_backend_new(o->device, o->threads, &be)) != LT_OK ||
	    (st = lt_model_new(be, &mc, &m)) != LT_OK || (st = lt_model_init(m, o->seed)) != LT_OK ||
	    (st = lt_model_plan(m, B, T)) != LT_OK ||
	    (st = lt_optim_new(m, 0, lt_model_num_params(m), &opt)) != LT_OK)
		goto out;
	struct lt_device_info dev;
	be->ops->info(be, &dev);
	printf("model: preset %s, %.2fM parameters, vocab %d, batch %d x seq %d, device %s\n", p->name,
	       (double)lt_model_num_params(m) / 1e6, mc.vocab_size, B, T, dev.name);

	tok = malloc(2 * (size_t)B * T * sizeof *tok);
	if (!tok) {
		lt_errmsg_set("cannot allocate %zu bytes of batch", 2 * (size_t)B * T * sizeof *tok);
		st = LT_ERR_NOMEM;
		goto out;
	}
	int32_t *tgt = tok + (size_t)B * T;
	struct lt_optim_config oc = { .lr = (float)o->lr, .min_lr = (float)o->lr / 10, .warmup_steps = o->steps / 12,
				      .total_steps = o->steps, .schedule = LT_SCHED_COSINE, .beta1 = 0.9f,
				      .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_clip = 1.0f };
	struct lt_rng r;
	lt_rng_seed(&r, o->seed, 1);
	double t0 = lt_cmd_seconds(), last = t0, loss_acc = 0;
	int step, acc = 0;
	for (step = 1; step <= o->steps && st == LT_OK; step++) {
		double loss, norm;
		long n;
		draw_batch(&r, &c.train, B, T, tok, tgt);
		lt_model_zero_grads(m);
		if ((st = lt_model_forward(m, tok, tgt, 1.0f / (float)(B * T), &loss, &n)) != LT_OK ||
		    (st = lt_model_backward(m)) != LT_OK || (st = lt_optim_step(opt, &oc, step, &norm)) != LT_OK)
			break;
		loss_acc += loss / (double)n;
		acc++;
		double now = lt_cmd_seconds();
		if (step % 50 == 0 || step == o->steps || now - last > 30) {
			printf("step %5d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s  %.0f s\n", step,
			       o->steps, loss_acc / acc, lt_lr_at(&oc, step), norm,
			       (double)step * B * T / (now - t0), now - t0);
			fflush(stdout);
			loss_acc = 0;
			acc = 0;
			last = now;
		}
		if (now - t0 > o->max_minutes * 60) {
			printf("time budget of %g minutes reached at step %d\n", o->max_minutes, step);
			break;
		}
	}
	double val;
	if (st != LT_OK || (st = validation_loss(m, &c.val, B, T, tok, tgt, &val)) != LT_OK)
		goto out;
	printf("validation loss %.4f nats/token (ln vocab = %.4f), perplexity %.2f\n", val,
	       log((double)mc.vocab_size), exp(val));
	if (o->sample_tokens > 0)
		st = print_sample(m, c.tok, o->sample_tokens, o->seed);
out:
	free(tok);
	lt_optim_free(opt);
	lt_model_free(m);
	lt_backend_free(be);
	lt_tokenizer_free(c.tok);
	lt_ids_free(&c.train);
	lt_ids_free(&c.val);
	return st;
}

int lt_cmd_train(int argc, char **argv)
{
	struct train_opts o = { .preset = "tiny", .device = "cpu", .run_dir = "runs/default",
				.steps = 600, .max_minutes = 5, .lr = 2e-3, .seed = 1, .sample_tokens = 200 };
	int rc = parse_options(argc, argv, &o);
	if (rc >= 0)
		return rc;
	const struct lt_preset *p = lt_cmd_preset("train", o.preset);
	if (!p)
		return 2;
	enum lt_status st = run_training(&o, p);
	if (st != LT_OK) {
		lt_report("train", st);
		return 1;
	}
	return 0;
}
