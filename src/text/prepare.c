/* Data preparation: trains (or loads) the tokenizer on the corpus, encodes
 * the documents in parallel batches into train and validation shards,
 * writes prepare.json, and puts the finished directory in place only when
 * every step succeeded. Listing the corpus and reading it into documents
 * is in prepare_corpus.c. */
#include "config.h"
#include "text/prepare.h"
#include "text/prepare_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <omp.h>

#include "clock.h"
#include "io/fs.h"
#include "io/shard.h"
#include "text/tokenizer.h"

/* Text encoded per parallel batch (unless the options say), and segments
 * per batch at most. */
#define BATCH_BYTES ((size_t)8 << 20)
#define BATCH_SEGMENTS ((size_t)1 << 16)

/* --------------------------------------------------------------- strings */

char *lt_prepare_copy_string(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	if (p)
		memcpy(p, s, n);
	else
		lt_errmsg_set("cannot allocate %zu bytes for a string", n);
	return p;
}

/* -------------------------------------------------------- the tokenizer */

static enum lt_status feed_trainer(void *ctx, const char *text, size_t len, int doc_end)
{
	(void)doc_end;
	return lt_tokenizer_trainer_add(ctx, text, len);
}

static enum lt_status train_tokenizer(const struct lt_prepare_opts *o, struct lt_corpus *c,
				      uint64_t *bytes, uint64_t *docs, lt_tokenizer **tok)
{
	struct lt_tokenizer_train_opts to = { .vocab_size = o->vocab_size, .min_frequency = 2 };
	lt_tokenizer_trainer *tr;
	enum lt_status st = lt_tokenizer_trainer_new(&to, &tr);
	if (st != LT_OK)
		return st;
	if ((st = lt_corpus_scan(c, o->doc_separator, o->read_block, feed_trainer, tr, bytes,
				  docs)) != LT_OK)
		goto done;
	if (*docs == 0) {
		lt_errmsg_set("the training corpus is empty: no text (%d file%s, %" PRIu64
			      " bytes)", c->n, c->n == 1 ? "" : "s", *bytes);
		lt_corpus_prefix_errmsg(c);
		st = LT_ERR_ARG;
		goto done;
	}
	if ((st = lt_tokenizer_trainer_finish(tr, tok)) != LT_OK)
		lt_corpus_prefix_errmsg(c);
done:
	lt_tokenizer_trainer_free(tr);
	return st;
}

static enum lt_status load_tokenizer(const char *path, lt_tokenizer **tok)
{
	enum lt_status st = lt_tokenizer_load(path, tok);
	if (st == LT_OK && lt_tokenizer_eot_id(*tok) < 0) {
		lt_errmsg_set("%s: no '%s' token, which lltrain puts after each document", path,
			      LT_TOKENIZER_EOT);
		lt_tokenizer_free(*tok);
		*tok = NULL;
		st = LT_ERR_FORMAT;
	}
	return st;
}

/* ------------------------------------------------------------ encoding */

/* Document i is held out when floor((i+1) f) > floor(i f): spread evenly,
 * about a fraction f of them, the first at i = ceil(1/f) - 1. */
int lt_prepare_is_validation(double f, uint64_t i)
{
	return floor((double)(i + 1) * f) > floor((double)i * f);
}

/* The documents a validation split of f needs. */
uint64_t lt_prepare_documents_needed(double f)
{
	uint64_t i = (uint64_t)ceil(1.0 / f);
	while (i > 1 && lt_prepare_is_validation(f, i - 2))
		i--;
	while (!lt_prepare_is_validation(f, i - 1))
		i++;
	return i;
}

/* One split's shards: prefix_NNNN.bin, each cut at shard_tokens tokens. */
struct output {
	const char *prefix, *dir;
	int vocab_size, eot_id;
	uint64_t shard_tokens;
	lt_shard_writer *w;
	char **names;
	int n_shards;
	uint64_t tokens, docs;
};

static enum lt_status open_shard(struct output *out)
{
	char name[64], **grown;
	snprintf(name, sizeof name, "%s_%04d.bin", out->prefix, out->n_shards);
	if (!(grown = realloc(out->names, (size_t)(out->n_shards + 1) * sizeof *grown))) {
		lt_errmsg_set("cannot allocate the list of %d shards", out->n_shards + 1);
		return LT_ERR_NOMEM;
	}
	out->names = grown;
	if (!(out->names[out->n_shards] = lt_prepare_copy_string(name)))
		return LT_ERR_NOMEM;
	out->n_shards++;
	char *path = lt_fs_join_new(out->dir, name);
	if (!path)
		return LT_ERR_NOMEM;
	enum lt_status st = lt_shard_writer_new(path, out->vocab_size, out->eot_id, &out->w);
	free(path);
	return st;
}

static enum lt_status close_shard(struct output *out)
{
	enum lt_status st = lt_shard_writer_finish(out->w);
	lt_shard_writer_free(out->w);
	out->w = NULL;
	return st;
}

/* Appends ids; doc_end: the last of them is the EOT that ends a document. */
static enum lt_status output_add(struct output *out, const int32_t *ids, size_t n, int doc_end)
{
	enum lt_status st;
	while (n > 0) {
		if (!out->w && (st = open_shard(out)) != LT_OK)
			return st;
		uint64_t room = out->shard_tokens - lt_shard_writer_count(out->w);
		size_t take = n < room ? n : (size_t)room;
		if ((st = lt_shard_writer_add(out->w, ids, take)) != LT_OK)
			return st;
		ids += take;
		n -= take;
		out->tokens += take;
		if (n == 0 && doc_end) {
			lt_shard_writer_end_document(out->w);
			out->docs++;
		}
		if (lt_shard_writer_count(out->w) == out->shard_tokens &&
		    (st = close_shard(out)) != LT_OK)
			return st;
	}
	return LT_OK;
}

/* Closes the open shard; a split with no tokens still gets one empty shard. */
static enum lt_status output_finish(struct output *out)
{
	enum lt_status st;
	if (!out->w && out->n_shards == 0 && (st = open_shard(out)) != LT_OK)
		return st;
	return out->w ? close_shard(out) : LT_OK;
}

static void output_free(struct output *out)
{
	lt_shard_writer_free(out->w);
	for (int i = 0; i < out->n_shards; i++)
		free(out->names[i]);
	free(out->names);
}

struct segment {
	size_t off, len;
	uint64_t doc;
	int doc_end;
};

/* Pass 2: segments gather into a batch, the batch is encoded in parallel
 * (one tokenizer per thread), then written in document order. */
struct encoder {
	double val_fraction;
	size_t batch_bytes;
	lt_tokenizer **toks;
	int n_toks;
	int32_t eot;
	char *text;
	size_t len, cap;
	struct segment *segs;
	lt_ids *ids;
	size_t n, seg_cap;
	uint64_t doc;         /* index of the document being read */
	struct output train, val;
};

static enum lt_status encode_batch(struct encoder *e)
{
	enum lt_status st = LT_OK;
	long failed_at = -1;
	char failure[512] = "";
	long n = (long)e->n;

#pragma omp parallel for num_threads(e->n_toks) schedule(dynamic, 1)
	for (long i = 0; i < n; i++) {
		lt_tokenizer *tok = e->toks[omp_get_thread_num()];
		const struct segment *s = &e->segs[i];
		enum lt_status r = lt_tokenizer_encode(tok, e->text + s->off, s->len, &e->ids[i]);
		if (r == LT_OK && s->doc_end)
			r = lt_tokenizer_append_eot(tok, &e->ids[i]);
		if (r != LT_OK) {
			/* the message is per thread: keep the earliest segment's */
#pragma omp critical(prepare_failure)
			if (failed_at < 0 || i < failed_at) {
				failed_at = i;
				st = r;
				snprintf(failure, sizeof failure, "%s", lt_errmsg());
			}
		}
	}
	if (st != LT_OK) {
		lt_errmsg_set("%s", failure);
		return st;
	}
	for (size_t i = 0; i < e->n && st == LT_OK; i++) {
		const struct segment *s = &e->segs[i];
		struct output *out = lt_prepare_is_validation(e->val_fraction, s->doc) ? &e->val
										       : &e->train;
		st = output_add(out, e->ids[i].v, e->ids[i].n, s->doc_end);
	}
	for (size_t i = 0; i < e->n; i++)
		lt_ids_free(&e->ids[i]);
	e->n = 0;
	e->len = 0;
	return st;
}

static enum lt_status gather_segment(void *ctx, const char *text, size_t len, int doc_end)
{
	struct encoder *e = ctx;
	if (e->len + len > e->cap) {
		size_t ncap = e->cap * 2 > e->len + len ? e->cap * 2 : e->len + len;
		char *grown = realloc(e->text, ncap);
		if (!grown) {
			lt_errmsg_set("cannot allocate %zu bytes for a batch of text", ncap);
			return LT_ERR_NOMEM;
		}
		e->text = grown;
		e->cap = ncap;
	}
	memcpy(e->text + e->len, text, len);
	e->segs[e->n] = (struct segment){ .off = e->len, .len = len, .doc = e->doc,
					  .doc_end = doc_end };
	e->n++;
	e->len += len;
	e->doc += (uint64_t)doc_end;
	if (e->len >= e->batch_bytes || e->n == e->seg_cap)
		return encode_batch(e);
	return LT_OK;
}

static void encoder_free(struct encoder *e)
{
	for (int i = 1; i < e->n_toks; i++)
		lt_tokenizer_free(e->toks[i]);
	free(e->toks);
	free(e->text);
	free(e->segs);
	if (e->ids)
		for (size_t i = 0; i < e->seg_cap; i++)
			lt_ids_free(&e->ids[i]);
	free(e->ids);
	output_free(&e->train);
	output_free(&e->val);
}

/* Sets up the batch and one tokenizer per thread (tok itself for the first). */
static enum lt_status encoder_init(struct encoder *e, const struct lt_prepare_opts *o,
				   lt_tokenizer *tok, const char *dir)
{
	int threads = omp_get_max_threads();
	struct output proto = { .dir = dir, .vocab_size = lt_tokenizer_vocab_size(tok),
				.eot_id = lt_tokenizer_eot_id(tok),
				.shard_tokens = (uint64_t)o->shard_tokens };
	e->val_fraction = o->val_fraction;
	e->eot = lt_tokenizer_eot_id(tok);
	e->train = proto;
	e->train.prefix = "train";
	e->val = proto;
	e->val.prefix = "val";
	e->seg_cap = BATCH_SEGMENTS;
	e->batch_bytes = o->batch_bytes ? o->batch_bytes : BATCH_BYTES;
	e->cap = e->batch_bytes + (o->read_block ? o->read_block : LT_PREPARE_READ_BLOCK);
	e->toks = calloc((size_t)threads, sizeof *e->toks);
	e->segs = malloc(e->seg_cap * sizeof *e->segs);
	e->ids = calloc(e->seg_cap, sizeof *e->ids);
	e->text = malloc(e->cap);
	if (!e->toks || !e->segs || !e->ids || !e->text) {
		lt_errmsg_set("cannot allocate a batch of %zu bytes to encode", e->cap);
		return LT_ERR_NOMEM;
	}
	e->toks[0] = tok;
	e->n_toks = 1;
	for (int i = 1; i < threads; i++) {
		enum lt_status st = lt_tokenizer_clone(tok, &e->toks[i]);
		if (st != LT_OK)
			return st;
		e->n_toks++;
	}
	return LT_OK;
}

/* ------------------------------------------------------- prepare.json */

static json_t *string_array(char *const *names, int n)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(names[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *record_json(const struct lt_prepare_opts *o, const struct lt_corpus *c,
			   const struct encoder *e, const lt_tokenizer *tok, uint64_t bytes)
{
	json_t *inputs = json_array(), *files = json_array();
	for (int i = 0; inputs && i < o->n_inputs; i++)
		json_array_append_new(inputs, json_string(o->inputs[i]));
	for (int i = 0; files && i < c->n; i++)
		json_array_append_new(files, json_pack("{s:s, s:I, s:I}", "path", c->files[i].path,
						       "bytes", (json_int_t)c->files[i].bytes,
						       "documents", (json_int_t)c->files[i].docs));
	return json_pack("{s:s, s:i, s:o, s:o, s:{s:s, s:s?, s:i, s:i}, s:s, s:f, s:I, s:I,"
			 " s:{s:I, s:I}, s:{s:I, s:I}, s:{s:o, s:o}}",
			 "format", "lltrain prepared data", "version", 1,
			 "inputs", inputs, "files", files,
			 "tokenizer", "file", "tokenizer.json", "from", o->tokenizer,
			 "vocab_size", (int)lt_tokenizer_vocab_size(tok),
			 "eot_id", (int)lt_tokenizer_eot_id(tok),
			 "doc_separator", o->doc_separator, "val_fraction", o->val_fraction,
			 "shard_tokens", (json_int_t)o->shard_tokens, "bytes", (json_int_t)bytes,
			 "documents", "train", (json_int_t)e->train.docs,
			 "val", (json_int_t)e->val.docs,
			 "tokens", "train", (json_int_t)e->train.tokens,
			 "val", (json_int_t)e->val.tokens,
			 "shards", "train", string_array(e->train.names, e->train.n_shards),
			 "val", string_array(e->val.names, e->val.n_shards));
}

/* Writes dir/prepare.json and fsyncs it (dir is the temporary output
 * directory, published whole once everything in it is written). */
static enum lt_status write_record(const char *dir, json_t *j)
{
	char *path = lt_fs_join_new(dir, "prepare.json");
	if (!path)
		return LT_ERR_NOMEM;
	enum lt_status st = lt_fs_write_json_new(path, j);
	free(path);
	return st;
}

/* ------------------------------------------------ the output directory */

static int holds_prepare_json(const char *dir)
{
	char *path = lt_fs_join_new(dir, "prepare.json");
	struct stat sb;
	int yes = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
	free(path);
	return yes;
}

/* Refuses an out_dir that is not absent, empty, or an earlier preparation. */
static enum lt_status check_replaceable(const char *out)
{
	int has_files;
	enum lt_status st = lt_fs_output_dir(out, 0, &has_files);
	if (st == LT_OK && has_files && !holds_prepare_json(out)) {
		lt_errmsg_set("%s: not empty and holds no prepare.json (not prepared data); "
			      "refusing to replace it", out);
		return LT_ERR_ARG;
	}
	return st;
}

/* mkdir -p of the directory that will hold out. */
static enum lt_status make_parents(const char *out)
{
	const char *slash = strrchr(out, '/');
	if (!slash || slash == out)
		return LT_OK;
	char *parent = lt_prepare_copy_string(out);
	if (!parent)
		return LT_ERR_NOMEM;
	parent[slash - out] = '\0';
	enum lt_status st = lt_fs_make_dirs(parent);
	free(parent);
	return st;
}

/* Puts the finished tmp directory at out. An earlier preparation there is
 * moved aside first (to out.old-PID) and removed only once the new one is
 * in place. */
static enum lt_status move_into_place(const char *tmp, const char *out)
{
	enum lt_status st = check_replaceable(out);
	if (st != LT_OK)
		return st;
	size_t n = strlen(out) + 32;
	char *aside = malloc(n);
	if (!aside) {
		lt_errmsg_set("cannot allocate %zu bytes for a path", n);
		return LT_ERR_NOMEM;
	}
	snprintf(aside, n, "%s.old-%ld", out, (long)getpid());
	lt_fs_discard(aside); /* left by an earlier run of this pid that crashed */
	st = lt_fs_publish_dir(tmp, out, aside);
	free(aside);
	return st;
}

/* --------------------------------------------------------- the whole run */

static enum lt_status check_options(const struct lt_prepare_opts *o)
{
	if (o->chat && !o->tokenizer) {
		lt_errmsg_set("chat data needs the model's tokenizer (--tokenizer): a chat "
			      "template's special tokens come from it");
		return LT_ERR_ARG;
	}
	if (o->n_inputs <= 0 || !o->inputs) {
		lt_errmsg_set("no corpus: name text files or directories to prepare");
		return LT_ERR_ARG;
	}
	if (!o->out_dir || !o->out_dir[0]) {
		lt_errmsg_set("no output directory");
		return LT_ERR_ARG;
	}
	if (!o->tokenizer && (o->vocab_size < 257 || o->vocab_size > LT_TOKENIZER_MAX_VOCAB)) {
		lt_errmsg_set("vocabulary size %d: expected 257 (256 bytes and %s) to %d",
			      o->vocab_size, LT_TOKENIZER_EOT, LT_TOKENIZER_MAX_VOCAB);
		return LT_ERR_ARG;
	}
	if (!(o->val_fraction >= 0 && o->val_fraction <= 0.5)) {
		lt_errmsg_set("validation fraction %g: expected 0 to 0.5", o->val_fraction);
		return LT_ERR_ARG;
	}
	if (o->shard_tokens < 1) {
		lt_errmsg_set("shard size %ld tokens: expected at least 1", o->shard_tokens);
		return LT_ERR_ARG;
	}
	if (o->model_max_length < 1) {
		lt_errmsg_set("model_max_length %ld: expected at least 1", o->model_max_length);
		return LT_ERR_ARG;
	}
	if (o->doc_separator && strchr(o->doc_separator, '\n')) {
		lt_errmsg_set("document separator '%s': a line cannot hold a newline",
			      o->doc_separator);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* out_dir without trailing slashes (so "out/" and "out" name one thing). */
static char *clean_out_dir(const char *dir)
{
	char *p = lt_prepare_copy_string(dir);
	if (!p)
		return NULL;
	for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
		p[n - 1] = '\0';
	return p;
}

/* Pass 2: sets up e, encodes every document into its shards and closes
 * them; bytes and docs count what was read. */
static enum lt_status encode_corpus(const struct lt_prepare_opts *o, struct lt_corpus *c,
				    lt_tokenizer *tok, const char *tmp, struct encoder *e,
				    uint64_t *bytes, uint64_t *docs)
{
	enum lt_status st;
	if ((st = encoder_init(e, o, tok, tmp)) != LT_OK ||
	    (st = lt_corpus_scan(c, o->doc_separator, o->read_block, gather_segment, e, bytes,
				  docs)) != LT_OK)
		return st;
	if (e->n > 0 && (st = encode_batch(e)) != LT_OK)
		return st;
	if (*docs == 0) {
		lt_errmsg_set("the training corpus is empty: no text (%d file%s, %" PRIu64
			      " bytes)", c->n, c->n == 1 ? "" : "s", *bytes);
		lt_corpus_prefix_errmsg(c);
		return LT_ERR_ARG;
	}
	if (o->val_fraction > 0 && e->val.docs == 0) {
		lt_errmsg_set("%" PRIu64 " documents, too few to hold out a fraction %g for "
			      "validation (at least %" PRIu64 " needed; more text, or a "
			      "different --doc-separator)", *docs, o->val_fraction,
			      lt_prepare_documents_needed(o->val_fraction));
		lt_corpus_prefix_errmsg(c);
		return LT_ERR_ARG;
	}
	if ((st = output_finish(&e->train)) != LT_OK)
		return st;
	return output_finish(&e->val);
}

/* Pass 2 and the files, inside the temporary directory tmp. */
static enum lt_status encode_into(const struct lt_prepare_opts *o, struct lt_corpus *c,
				  lt_tokenizer *tok, const char *tmp,
				  struct lt_prepare_report *r)
{
	struct encoder e = { 0 };
	uint64_t bytes = 0, docs = 0;
	double t0 = lt_seconds();
	json_t *j;
	enum lt_status st = encode_corpus(o, c, tok, tmp, &e, &bytes, &docs);
	r->encode_seconds = lt_seconds() - t0;
	if (st != LT_OK || (st = lt_tokenizer_save(tok, tmp, o->model_max_length)) != LT_OK)
		goto done;
	j = record_json(o, c, &e, tok, bytes);
	st = write_record(tmp, j);
	json_decref(j);
done:
	r->bytes = bytes;
	r->n_docs = docs;
	r->train_tokens = e.train.tokens;
	r->val_tokens = e.val.tokens;
	r->train_shards = e.train.n_shards;
	r->val_shards = e.val.n_shards;
	encoder_free(&e);
	return st;
}

enum lt_status lt_prepare_run(const struct lt_prepare_opts *opts, struct lt_prepare_report *r)
{
	struct lt_prepare_opts o = *opts;
	struct lt_corpus c = { 0 };
	lt_tokenizer *tok = NULL;
	char *out = NULL, *tmp = NULL;
	enum lt_status st;

	memset(r, 0, sizeof *r);
	if (!o.doc_separator)
		o.doc_separator = "";
	if ((st = check_options(&o)) != LT_OK)
		return st;
	if (!(out = clean_out_dir(o.out_dir)))
		return LT_ERR_NOMEM;
	o.out_dir = out;
	if ((st = check_replaceable(out)) != LT_OK || (st = lt_corpus_list(&o, &c)) != LT_OK)
		goto done;
	r->n_files = c.n;
	double t0 = lt_seconds();
	if (o.tokenizer && o.chat) {
		st = lt_tokenizer_load(o.tokenizer, &tok);
	} else if (o.tokenizer) {
		st = load_tokenizer(o.tokenizer, &tok);
	} else {
		uint64_t bytes, docs;
		st = train_tokenizer(&o, &c, &bytes, &docs, &tok);
		if (st == LT_OK && o.verbose)
			printf("tokenizer: %d tokens learned from %d file%s (%" PRIu64 " bytes, %"
			       PRIu64 " documents) in %.1f s\n", (int)lt_tokenizer_vocab_size(tok),
			       c.n, c.n == 1 ? "" : "s", bytes, docs, lt_seconds() - t0);
	}
	r->tokenizer_seconds = lt_seconds() - t0;
	if (st != LT_OK)
		goto done;
	r->vocab_size = (int)lt_tokenizer_vocab_size(tok);
	if ((st = make_parents(out)) != LT_OK)
		goto done;
	size_t n = strlen(out) + sizeof ".tmp-XXXXXX";
	if (!(tmp = malloc(n))) {
		lt_errmsg_set("cannot allocate %zu bytes for a path", n);
		st = LT_ERR_NOMEM;
		goto done;
	}
	snprintf(tmp, n, "%s.tmp-XXXXXX", out);
	if (!mkdtemp(tmp)) {
		lt_errmsg_set("%s: cannot create a temporary directory: %s", tmp, strerror(errno));
		free(tmp);
		tmp = NULL;
		st = LT_ERR_IO;
		goto done;
	}
	mode_t mask = umask(0);
	umask(mask);
	chmod(tmp, 0777 & ~mask);
	st = o.chat ? lt_prepare_chat(&o, &c, tok, tmp, r) : encode_into(&o, &c, tok, tmp, r);
	if (st == LT_OK && o.verbose && !o.chat)
		printf("encoded: %" PRIu64 " documents, %" PRIu64 " training and %" PRIu64
		       " validation tokens in %.1f s\n", r->n_docs, r->train_tokens,
		       r->val_tokens, r->encode_seconds);
	if (st == LT_OK)
		st = move_into_place(tmp, out);
done:
	if (tmp && st != LT_OK)
		lt_fs_discard(tmp);
	if (o.verbose)
		fflush(stdout);
	free(tmp);
	free(out);
	lt_tokenizer_free(tok);
	lt_corpus_free(&c);
	return st;
}

/* ---------------------------------------------------------- is it done */

static int shards_exist(const char *dir, const json_t *names)
{
	size_t i;
	const json_t *v;
	if (!json_is_array(names) || json_array_size(names) == 0)
		return 0;
	json_array_foreach(names, i, v) {
		struct stat sb;
		const char *name = json_string_value(v);
		char *path = name && !strchr(name, '/') ? lt_fs_join_new(dir, name) : NULL;
		int there = path && stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
		free(path);
		if (!there)
			return 0;
	}
	return 1;
}

int lt_prepare_is_done(const char *dir)
{
	char *record = lt_fs_join_new(dir, "prepare.json"), *tokfile = lt_fs_join_new(dir, "tokenizer.json");
	json_t *root = record ? json_load_file(record, 0, NULL) : NULL;
	json_t *shards = json_object_get(root, "shards");
	struct stat sb;
	int done = root && tokfile && stat(tokfile, &sb) == 0 && S_ISREG(sb.st_mode) &&
		   shards_exist(dir, json_object_get(shards, "train")) &&
		   shards_exist(dir, json_object_get(shards, "val"));
	json_decref(root);
	free(record);
	free(tokfile);
	return done;
}

