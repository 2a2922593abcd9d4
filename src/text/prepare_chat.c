/* Chat data preparation: JSON Lines of conversations (or prompt and
 * completion pairs) read line by line, checked, rendered through a chat
 * template into examples with trained marks, and written into example
 * shards with prepare.json beside them (see prepare.h). */
#include "config.h"
#include "text/prepare_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "io/fs.h"
#include "io/shard.h"
#include "text/chat.h"

/* What a line must be, for messages. */
#define EXPECTED "expected {\"messages\": [{\"role\": ..., \"content\": ...}, ...]} or " \
		 "{\"prompt\": ..., \"completion\": ...}"

/* One split's example shards: PREFIX_NNNN.bin, cut between examples. */
struct split_out {
	const char *prefix, *dir;
	int vocab_size, eot_id;
	uint64_t shard_tokens;
	lt_shard_writer *w;
	char **names;
	int n_shards;
	uint64_t tokens, trained, examples;
};

/* The state of one run over the files. */
struct chat_run {
	const struct lt_prepare_opts *o;
	lt_tokenizer *tok;
	lt_chat *chat;
	struct lt_chat_message *msgs;
	int msg_cap;
	struct lt_chat_tokens rendered;
	struct split_out train, val;
	uint64_t examples, longest, *file_examples;
};

static enum lt_status open_shard(struct split_out *s)
{
	char name[64], **grown;
	snprintf(name, sizeof name, "%s_%04d.bin", s->prefix, s->n_shards);
	if (!(grown = realloc(s->names, (size_t)(s->n_shards + 1) * sizeof *grown))) {
		lt_errmsg_set("cannot allocate the list of %d shards", s->n_shards + 1);
		return LT_ERR_NOMEM;
	}
	s->names = grown;
	if (!(s->names[s->n_shards] = lt_prepare_copy_string(name)))
		return LT_ERR_NOMEM;
	s->n_shards++;
	char *path = lt_fs_join_new(s->dir, name);
	if (!path)
		return LT_ERR_NOMEM;
	enum lt_status st = lt_shard_writer_new_examples(path, s->vocab_size, s->eot_id, &s->w);
	free(path);
	return st;
}

static enum lt_status close_shard(struct split_out *s)
{
	enum lt_status st = lt_shard_writer_finish(s->w);
	lt_shard_writer_free(s->w);
	s->w = NULL;
	return st;
}

static enum lt_status split_add(struct split_out *s, const struct lt_chat_tokens *t)
{
	enum lt_status st;
	if (!s->w && (st = open_shard(s)) != LT_OK)
		return st;
	if ((st = lt_shard_writer_add_example(s->w, t->ids, t->trained, t->n)) != LT_OK)
		return st;
	s->tokens += t->n;
	s->examples++;
	for (size_t i = 1; i < t->n; i++)
		s->trained += t->trained[i];
	if (lt_shard_writer_count(s->w) >= s->shard_tokens)
		return close_shard(s);
	return LT_OK;
}

/* A split without examples still gets one empty shard. */
static enum lt_status split_finish(struct split_out *s)
{
	enum lt_status st;
	if (!s->w && s->n_shards == 0 && (st = open_shard(s)) != LT_OK)
		return st;
	return s->w ? close_shard(s) : LT_OK;
}

static void split_free(struct split_out *s)
{
	lt_shard_writer_free(s->w);
	for (int i = 0; i < s->n_shards; i++)
		free(s->names[i]);
	free(s->names);
}

/* --------------------------------------------------------- one line */

static enum lt_status grow_messages(struct chat_run *cr, int n)
{
	if (n <= cr->msg_cap)
		return LT_OK;
	struct lt_chat_message *m = realloc(cr->msgs, (size_t)n * sizeof *m);
	if (!m) {
		lt_errmsg_set("cannot allocate %d chat messages", n);
		return LT_ERR_NOMEM;
	}
	cr->msgs = m;
	cr->msg_cap = n;
	return LT_OK;
}

/* Message i of the array into cr->msgs[i]. */
static enum lt_status read_message(struct chat_run *cr, const json_t *m, size_t i)
{
	const json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
	if (!json_is_object(m)) {
		lt_errmsg_set("messages[%zu] is not an object, expected {\"role\": ..., "
			      "\"content\": ...}", i);
		return LT_ERR_FORMAT;
	}
	if (!json_is_string(role)) {
		lt_errmsg_set("messages[%zu]: %s \"role\", expected \"system\", \"user\" or "
			      "\"assistant\"", i, role ? "a non-string" : "no");
		return LT_ERR_FORMAT;
	}
	int r = lt_chat_role_parse(json_string_value(role));
	if (r < 0) {
		lt_errmsg_set("messages[%zu]: role \"%s\", expected \"system\", \"user\" or "
			      "\"assistant\"", i, json_string_value(role));
		return LT_ERR_FORMAT;
	}
	if (!json_is_string(content)) {
		lt_errmsg_set("messages[%zu]: %s \"content\", expected a string", i,
			      content ? "a non-string" : "no");
		return LT_ERR_FORMAT;
	}
	cr->msgs[i] = (struct lt_chat_message){ .role = (enum lt_chat_role)r,
						.content = json_string_value(content),
						.len = json_string_length(content) };
	return LT_OK;
}

/* The conversation of a parsed line into cr->msgs (*n of them); its strings
 * live as long as root. */
static enum lt_status read_conversation(struct chat_run *cr, const json_t *root, int *n)
{
	const json_t *msgs = json_object_get(root, "messages");
	const json_t *prompt = json_object_get(root, "prompt"), *done = json_object_get(root, "completion");
	enum lt_status st;
	*n = 0;
	if (!json_is_object(root) || (!msgs && !prompt && !done)) {
		lt_errmsg_set("%s", EXPECTED);
		return LT_ERR_FORMAT;
	}
	if (!msgs) {
		if (!json_is_string(prompt) || !json_is_string(done)) {
			lt_errmsg_set("expected \"prompt\" and \"completion\" strings");
			return LT_ERR_FORMAT;
		}
		if ((st = grow_messages(cr, 2)) != LT_OK)
			return st;
		cr->msgs[0] = (struct lt_chat_message){ LT_CHAT_USER, json_string_value(prompt),
							json_string_length(prompt) };
		cr->msgs[1] = (struct lt_chat_message){ LT_CHAT_ASSISTANT, json_string_value(done),
							json_string_length(done) };
		*n = 2;
		return LT_OK;
	}
	if (!json_is_array(msgs) || json_array_size(msgs) == 0 ||
	    json_array_size(msgs) > (size_t)1 << 20) {
		lt_errmsg_set("\"messages\" is not a non-empty array, expected [{\"role\": ..., "
			      "\"content\": ...}, ...]");
		return LT_ERR_FORMAT;
	}
	size_t count = json_array_size(msgs);
	int answers = 0;
	if ((st = grow_messages(cr, (int)count)) != LT_OK)
		return st;
	for (size_t i = 0; i < count; i++) {
		if ((st = read_message(cr, json_array_get(msgs, i), i)) != LT_OK)
			return st;
		answers += cr->msgs[i].role == LT_CHAT_ASSISTANT;
	}
	if (answers == 0) {
		lt_errmsg_set("no assistant message, expected at least one (the text trained on)");
		return LT_ERR_FORMAT;
	}
	*n = (int)count;
	return LT_OK;
}

/* Line `number` of `path`: parsed, rendered and added to its split. */
static enum lt_status add_line(struct chat_run *cr, const char *path, uint64_t number,
			       const char *line, size_t len)
{
	json_error_t err;
	json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
	enum lt_status st;
	int n = 0;
	if (!root) {
		lt_errmsg_set("not JSON (%s at column %d): %s", err.text, err.column, EXPECTED);
		st = LT_ERR_FORMAT;
	} else {
		st = read_conversation(cr, root, &n);
	}
	if (st == LT_OK)
		st = lt_chat_render(cr->chat, cr->tok, cr->msgs, n, &cr->rendered);
	if (st == LT_OK) {
		int val = lt_prepare_is_validation(cr->o->val_fraction, cr->examples);
		st = split_add(val ? &cr->val : &cr->train, &cr->rendered);
		cr->examples++;
		if (cr->rendered.n > cr->longest)
			cr->longest = cr->rendered.n;
	}
	json_decref(root);
	if (st != LT_OK)
		lt_errmsg_prefix("%s:%" PRIu64, path, number);
	return st;
}

static int is_blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

/* Every line of one file; *bytes counts what was read. */
static enum lt_status add_file(struct chat_run *cr, const char *path, uint64_t *bytes)
{
	FILE *f = fopen(path, "rb");
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	uint64_t number = 0;
	enum lt_status st = LT_OK;
	if (!f) {
		lt_errmsg_set("%s: %s", path, strerror(errno));
		return errno == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	while (st == LT_OK && (got = getline(&line, &cap, f)) >= 0) {
		number++;
		*bytes += (uint64_t)got;
		if (!is_blank(line, (size_t)got))
			st = add_line(cr, path, number, line, (size_t)got);
	}
	if (st == LT_OK && ferror(f)) {
		lt_errmsg_set("%s: read failed after line %" PRIu64 ": %s", path, number,
			      strerror(errno));
		st = LT_ERR_IO;
	}
	free(line);
	fclose(f);
	return st;
}

/* ------------------------------------------------------- prepare.json */

static json_t *names_json(char *const *names, int n)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(names[i]));
	return a;
}

static json_t *chat_record(const struct chat_run *cr, const struct lt_corpus *c, uint64_t bytes)
{
	const struct lt_prepare_opts *o = cr->o;
	json_t *inputs = json_array(), *files = json_array();
	for (int i = 0; inputs && i < o->n_inputs; i++)
		json_array_append_new(inputs, json_string(o->inputs[i]));
	for (int i = 0; files && i < c->n; i++)
		json_array_append_new(files, json_pack("{s:s, s:I, s:I}", "path", c->files[i].path,
						       "bytes", (json_int_t)c->files[i].bytes,
						       "examples", (json_int_t)cr->file_examples[i]));
	return json_pack("{s:s, s:i, s:s, s:s, s:o, s:o, s:{s:s, s:s, s:i, s:i}, s:f, s:I, s:I,"
			 " s:I, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:o, s:o}}",
			 "format", "lltrain prepared data", "version", 1, "data", "chat",
			 "template", lt_chat_template_name(lt_chat_template_of(cr->chat)),
			 "inputs", inputs, "files", files,
			 "tokenizer", "file", "tokenizer.json", "from", o->tokenizer,
			 "vocab_size", (int)lt_tokenizer_vocab_size(cr->tok),
			 "eot_id", cr->train.eot_id, "val_fraction", o->val_fraction,
			 "shard_tokens", (json_int_t)o->shard_tokens, "bytes", (json_int_t)bytes,
			 "longest_example", (json_int_t)cr->longest,
			 "examples", "train", (json_int_t)cr->train.examples,
			 "val", (json_int_t)cr->val.examples,
			 "tokens", "train", (json_int_t)cr->train.tokens,
			 "val", (json_int_t)cr->val.tokens,
			 "trained_tokens", "train", (json_int_t)cr->train.trained,
			 "val", (json_int_t)cr->val.trained,
			 "shards", "train", names_json(cr->train.names, cr->train.n_shards),
			 "val", names_json(cr->val.names, cr->val.n_shards));
}

static enum lt_status write_chat_record(const struct chat_run *cr, const struct lt_corpus *c,
					const char *dir, uint64_t bytes)
{
	json_t *j = chat_record(cr, c, bytes);
	char *path = lt_fs_join_new(dir, "prepare.json");
	enum lt_status st = LT_ERR_NOMEM;
	if (!j)
		lt_errmsg_set("cannot build prepare.json");
	else if (path)
		st = lt_fs_write_json_new(path, j);
	json_decref(j);
	free(path);
	return st;
}

/* ----------------------------------------------------------- the run */

/* The template named, or the one the tokenizer points to. */
static enum lt_status pick_template(const struct lt_prepare_opts *o, lt_tokenizer *tok,
				    lt_chat **chat)
{
	enum lt_chat_template t;
	enum lt_status st = o->chat_template ? lt_chat_template_parse(o->chat_template, &t)
					     : lt_chat_detect(tok, &t);
	if (st == LT_OK)
		st = lt_chat_new(tok, t, chat);
	if (st != LT_OK)
		lt_errmsg_prefix("%s", o->tokenizer);
	return st;
}

static enum lt_status check_counts(const struct chat_run *cr, const struct lt_corpus *c)
{
	if (cr->examples == 0) {
		lt_errmsg_set("no conversations: every line is blank");
		lt_corpus_prefix_errmsg(c);
		return LT_ERR_ARG;
	}
	if (cr->o->val_fraction > 0 && cr->val.examples == 0) {
		lt_errmsg_set("%" PRIu64 " conversations, too few to hold out a fraction %g for "
			      "validation (at least %" PRIu64 " needed)", cr->examples,
			      cr->o->val_fraction, lt_prepare_documents_needed(cr->o->val_fraction));
		lt_corpus_prefix_errmsg(c);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* Every file's lines into the shards; *bytes counts what was read. */
static enum lt_status add_files(struct chat_run *cr, struct lt_corpus *c, uint64_t *bytes)
{
	enum lt_status st = LT_OK;
	for (int i = 0; i < c->n && st == LT_OK; i++) {
		uint64_t before = cr->examples, b = 0;
		st = add_file(cr, c->files[i].path, &b);
		c->files[i].bytes = b;
		c->files[i].docs = cr->file_examples[i] = cr->examples - before;
		*bytes += b;
	}
	if (st == LT_OK)
		st = check_counts(cr, c);
	if (st == LT_OK && (st = split_finish(&cr->train)) == LT_OK)
		st = split_finish(&cr->val);
	return st;
}

enum lt_status lt_prepare_chat(const struct lt_prepare_opts *o, struct lt_corpus *c,
			       lt_tokenizer *tok, const char *dir, struct lt_prepare_report *r)
{
	struct chat_run cr = { .o = o, .tok = tok };
	uint64_t bytes = 0;
	double t0 = lt_seconds();
	enum lt_status st = pick_template(o, tok, &cr.chat);
	if (st != LT_OK)
		return st;
	int32_t eot = lt_tokenizer_eot_id(tok);
	struct split_out proto = { .dir = dir, .vocab_size = lt_tokenizer_vocab_size(tok),
				   .eot_id = eot >= 0 ? eot : lt_chat_end_id(cr.chat),
				   .shard_tokens = (uint64_t)o->shard_tokens };
	cr.train = proto;
	cr.train.prefix = "train";
	cr.val = proto;
	cr.val.prefix = "val";
	if (!(cr.file_examples = calloc((size_t)c->n, sizeof *cr.file_examples))) {
		lt_errmsg_set("cannot allocate the counts of %d files", c->n);
		st = LT_ERR_NOMEM;
	}
	if (st == LT_OK)
		st = add_files(&cr, c, &bytes);
	r->encode_seconds = lt_seconds() - t0;
	if (st == LT_OK)
		st = lt_tokenizer_save(tok, dir, o->model_max_length);
	if (st == LT_OK)
		st = write_chat_record(&cr, c, dir, bytes);
	r->bytes = bytes;
	r->n_docs = cr.examples;
	r->train_tokens = cr.train.tokens;
	r->val_tokens = cr.val.tokens;
	r->train_trained = cr.train.trained;
	r->val_trained = cr.val.trained;
	r->train_shards = cr.train.n_shards;
	r->val_shards = cr.val.n_shards;
	r->longest = cr.longest;
	r->chat_template = lt_chat_template_name(lt_chat_template_of(cr.chat));
	split_free(&cr.train);
	split_free(&cr.val);
	lt_chat_tokens_free(&cr.rendered);
	lt_chat_free(cr.chat);
	free(cr.msgs);
	free(cr.file_examples);
	return st;
}
