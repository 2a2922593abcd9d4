/* The tokenizer's files (see tokenizer.h): Hugging Face tokenizer.json and
 * tokenizer_config.json, written and read through jansson, with tokens in
 * GPT-2's byte alphabet. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdir and stat under -std=c11 */
#endif
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "io/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

/* ------------------------------------------------- GPT-2 byte alphabet */

/* GPT-2 shows each byte as one character: the printable Latin-1 bytes
 * ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) as themselves, the other 68
 * bytes as U+0100.. in byte order. */
static unsigned byte_char(unsigned b)
{
	if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
		return b;
	if (b <= 0x20)
		return 256 + b;
	if (b <= 0xa0)
		return 256 + 33 + (b - 0x7f);
	return 256 + 67; /* 0xad */
}

/* The byte a code point stands for, or -1 if it is not in the alphabet. */
static int char_byte(unsigned cp)
{
	if (cp < 256)
		return byte_char(cp) == cp ? (int)cp : -1;
	if (cp < 256 + 33)
		return (int)(cp - 256);
	if (cp < 256 + 67)
		return (int)(cp - 256 - 33 + 0x7f);
	if (cp == 256 + 67)
		return 0xad;
	return -1;
}

/* Writes the alphabet's characters for bytes s[0..n) to out (room for 2n
 * + 1 bytes), NUL-terminated; returns the length. */
static size_t bytes_to_chars(const char *s, size_t n, char *out)
{
	size_t i, o = 0;
	for (i = 0; i < n; i++) {
		unsigned cp = byte_char((unsigned char)s[i]);
		if (cp < 0x80) {
			out[o++] = (char)cp;
		} else {
			out[o++] = (char)(0xc0 | cp >> 6);
			out[o++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	out[o] = '\0';
	return o;
}

/* Reads alphabet characters (valid UTF-8, as jansson gives) back into bytes
 * (out has room for n); returns the byte count or -1 if a character is not
 * in the alphabet. */
static long chars_to_bytes(const char *s, size_t n, char *out)
{
	size_t i = 0, o = 0;
	while (i < n) {
		unsigned c = (unsigned char)s[i], cp;
		int b;
		if (c < 0x80) {
			cp = c;
			i += 1;
		} else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
			cp = (c & 0x1f) << 6 | ((unsigned char)s[i + 1] & 0x3f);
			i += 2;
		} else {
			return -1;
		}
		if ((b = char_byte(cp)) < 0)
			return -1;
		out[o++] = (char)b;
	}
	return (long)o;
}

/* ------------------------------------------------------- saving */

/* The builders return the new JSON, or NULL with the error set; their
 * helpers return 1, or 0 with the error set. */

/* The tokenizer.json text of a token: byte-level characters, or an added
 * token's own text where that is not byte-level. A new string, or NULL. */
static char *token_key(const lt_tokenizer *tok, int32_t id)
{
	const char *s = tok->blob + tok->off[id];
	size_t n = tok->off[id + 1] - tok->off[id];
	char *k = malloc(2 * n + 1);

	if (!k) {
		lt_errmsg_set("cannot allocate %zu bytes for a token", 2 * n + 1);
		return NULL;
	}
	if (tok->raw[id]) {
		memcpy(k, s, n);
		k[n] = '\0';
	} else {
		bytes_to_chars(s, n, k);
	}
	return k;
}

static json_t *byte_level_object(void)
{
	return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
			"trim_offsets", 1, "use_regex", 1);
}

static json_t *added_token_object(const lt_tokenizer *tok, int32_t id, const char *content, int with_id)
{
	int special = tok->kind[id] == LT_TOK_SPECIAL;
	if (with_id)
		return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (int)id, "content", content,
				"single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
	return json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", content, "single_word", 0,
			"lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
}

/* model.vocab gets every token's key and id, added_tokens the special and
 * added tokens again with their flags. 1, or 0 with the error set. */
static int vocab_json(const lt_tokenizer *tok, json_t *vocab, json_t *added)
{
	for (int32_t i = 0; i < tok->n_vocab; i++) {
		char *key = token_key(tok, i);
		if (!key)
			return 0;
		if (json_object_get(vocab, key)) {
			lt_errmsg_set("tokens %lld and %" PRId32 " are both '%s'",
					(long long)json_integer_value(json_object_get(vocab, key)), i, key);
			free(key);
			return 0;
		}
		int bad = json_object_set_new(vocab, key, json_integer(i)) != 0 ||
			(tok->kind[i] != LT_TOK_NORMAL &&
			 json_array_append_new(added, added_token_object(tok, i, key, 1)) != 0);
		free(key);
		if (bad) {
			lt_errmsg_set("out of memory while building tokenizer.json");
			return 0;
		}
	}
	return 1;
}

/* 1 when a side of a merge holds a space, which an added token's own
 * (not byte-level) text can; 0 when none does; -1 with the error set. */
static int merge_has_space(const lt_tokenizer *tok)
{
	for (int32_t r = 0; r < tok->n_merges; r++) {
		for (int side = 0; side < 2; side++) {
			char *key = token_key(tok, side ? tok->merges[r].b : tok->merges[r].a);
			int space = key && strchr(key, ' ');
			free(key);
			if (!key)
				return -1;
			if (space)
				return 1;
		}
	}
	return 0;
}

/* The model.merges entry of merge rank r: "left right", or with arrays
 * set ["left", "right"] (the form a side with a space needs, and which
 * Hugging Face's library then wants for every merge). NULL with the error
 * set. */
static json_t *merge_json(const lt_tokenizer *tok, int32_t r, int arrays)
{
	char *left = token_key(tok, tok->merges[r].a);
	char *right = left ? token_key(tok, tok->merges[r].b) : NULL;
	char *pair = NULL;
	json_t *j = NULL;

	if (right && arrays) {
		j = json_pack("[s, s]", left, right);
	} else if (right) {
		size_t la = strlen(left), lb = strlen(right);
		if ((pair = malloc(la + lb + 2))) {
			memcpy(pair, left, la);
			pair[la] = ' ';
			memcpy(pair + la + 1, right, lb + 1);
			j = json_string(pair);
		}
	}
	if (right && !j)
		lt_errmsg_set("out of memory while building tokenizer.json");
	free(pair);
	free(left);
	free(right);
	return j;
}

/* model.merges gets every merge in rank order, all as "left right" or,
 * where a side holds a space, all as ["left", "right"]. 1, or 0 with the
 * error set. */
static int merges_json(const lt_tokenizer *tok, json_t *merges)
{
	int arrays = merge_has_space(tok);
	if (arrays < 0)
		return 0;
	for (int32_t i = 0; i < tok->n_merges; i++) {
		json_t *pair = merge_json(tok, i, arrays);
		if (!pair)
			return 0;
		if (json_array_append_new(merges, pair) != 0) {
			lt_errmsg_set("out of memory while building tokenizer.json");
			return 0;
		}
	}
	return 1;
}

/* Builds the tokenizer.json document, or NULL with the error set. */
static json_t *tokenizer_json(const lt_tokenizer *tok)
{
	json_t *root = NULL, *model = NULL, *vocab = NULL, *merges = NULL, *added = NULL, *post = NULL;
	int bad;

	if (!(root = json_object()) || !(model = json_object()) || !(vocab = json_object()) ||
			!(merges = json_array()) || !(added = json_array()))
		goto nomem;
	if (!vocab_json(tok, vocab, added) || !merges_json(tok, merges))
		goto fail;
	if (json_object_set_new(model, "type", json_string("BPE")) ||
			json_object_set_new(model, "dropout", json_null()) ||
			json_object_set_new(model, "unk_token", json_null()) ||
			json_object_set_new(model, "continuing_subword_prefix", json_null()) ||
			json_object_set_new(model, "end_of_word_suffix", json_null()) ||
			json_object_set_new(model, "fuse_unk", json_false()) ||
			json_object_set_new(model, "byte_fallback", json_false()) ||
			(tok->ignore_merges && json_object_set_new(model, "ignore_merges", json_true())))
		goto nomem;
	/* A _new setter takes the value even when it fails. */
	bad = json_object_set_new(model, "vocab", vocab);
	vocab = NULL;
	bad |= json_object_set_new(model, "merges", merges);
	merges = NULL;
	if (bad)
		goto nomem;
	if (!(post = byte_level_object()) || json_object_set_new(post, "trim_offsets", json_false()))
		goto nomem;
	if (json_object_set_new(root, "version", json_string("1.0")) ||
			json_object_set_new(root, "truncation", json_null()) ||
			json_object_set_new(root, "padding", json_null()))
		goto nomem;
	bad = json_object_set_new(root, "added_tokens", added);
	added = NULL;
	bad |= json_object_set_new(root, "normalizer", json_null());
	bad |= json_object_set_new(root, "pre_tokenizer", byte_level_object());
	bad |= json_object_set_new(root, "post_processor", post);
	post = NULL;
	bad |= json_object_set_new(root, "decoder", byte_level_object());
	if (!bad && !lt_tok_pipe_to_json(&tok->pipe, root, model))
		goto fail;
	bad |= json_object_set_new(root, "model", model);
	model = NULL;
	if (bad)
		goto nomem;
	return root;
nomem:
	lt_errmsg_set("out of memory while building tokenizer.json");
fail:
	json_decref(post);
	json_decref(added);
	json_decref(merges);
	json_decref(vocab);
	json_decref(model);
	json_decref(root);
	return NULL;
}

static json_t *config_json(const lt_tokenizer *tok, long model_max_length)
{
	json_t *cfg = json_object(), *dec = json_object();
	int32_t i;

	if (!cfg || !dec)
		goto fail;
	if (json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast")))
		goto fail;
	if (tok->eot_id >= 0 &&
			(json_object_set_new(cfg, "bos_token", json_string(LT_TOKENIZER_EOT)) ||
			 json_object_set_new(cfg, "eos_token", json_string(LT_TOKENIZER_EOT)) ||
			 json_object_set_new(cfg, "unk_token", json_string(LT_TOKENIZER_EOT))))
		goto fail;
	if (json_object_set_new(cfg, "model_max_length", json_integer(model_max_length)) ||
			json_object_set_new(cfg, "add_prefix_space", json_false()) ||
			json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false()))
		goto fail;
	for (i = 0; i < tok->n_vocab; i++) {
		char idbuf[24], *k;
		json_t *o;
		if (tok->kind[i] == LT_TOK_NORMAL)
			continue;
		if (!(k = token_key(tok, i)))
			goto fail;
		o = added_token_object(tok, i, k, 0);
		free(k);
		snprintf(idbuf, sizeof idbuf, "%" PRId32, i);
		if (json_object_set_new(dec, idbuf, o))
			goto fail;
	}
	if (json_object_set_new(cfg, "added_tokens_decoder", dec)) {
		dec = NULL;
		goto fail;
	}
	return cfg;
fail:
	json_decref(dec);
	json_decref(cfg);
	lt_errmsg_set("out of memory while building tokenizer_config.json");
	return NULL;
}

/* Publishes j, indented and ending in a newline, as dir/name. */
static enum lt_status write_json_atomic(const char *dir, const char *name, const json_t *j)
{
	char *path = lt_fs_join_new(dir, name);
	if (!path)
		return LT_ERR_NOMEM;
	enum lt_status st = lt_fs_publish_json(path, j);
	free(path);
	return st;
}

enum lt_status lt_tokenizer_save(const lt_tokenizer *tok, const char *dir, long model_max_length)
{
	json_t *j;
	enum lt_status st;

	if (model_max_length <= 0) {
		lt_errmsg_set("model_max_length %ld is not positive", model_max_length);
		return LT_ERR_ARG;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		lt_errmsg_set("%s: cannot create the directory: %s", dir, strerror(errno));
		return LT_ERR_IO;
	}
	if (!(j = tokenizer_json(tok)))
		return LT_ERR_NOMEM;
	st = write_json_atomic(dir, "tokenizer.json", j);
	json_decref(j);
	if (st != LT_OK)
		return st;
	if (!(j = config_json(tok, model_max_length)))
		return LT_ERR_NOMEM;
	st = write_json_atomic(dir, "tokenizer_config.json", j);
	json_decref(j);
	return st;
}

/* ------------------------------------------------------------ loading */

/* The checks and readers return 1, or 0 with the error set, which
 * load_json reports as LT_ERR_FORMAT (a failed allocation in read_merges
 * included); token_bytes returns its own status. */

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	case JSON_NULL: return "null";
	}
	return "something else";
}

/* Checks that obj.type (named what) is the string want. */
static int check_type(const json_t *obj, const char *what, const char *want)
{
	const json_t *t = json_object_get(obj, "type");
	if (!json_is_string(t)) {
		lt_errmsg_set("%s.type is %s, expected '%s'", what, t ? json_kind(t) : "missing", want);
		return 0;
	}
	if (strcmp(json_string_value(t), want) != 0) {
		lt_errmsg_set("%s.type is '%s', expected '%s'", what, json_string_value(t), want);
		return 0;
	}
	return 1;
}

/* A member that must be absent, null, or (if empty_ok) "". */
static int check_unset(const json_t *obj, const char *what, const char *key, int empty_ok)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v) || (empty_ok && json_is_string(v) && !json_string_value(v)[0]))
		return 1;
	if (json_is_string(v))
		lt_errmsg_set("%s.%s is '%s', expected null", what, key, json_string_value(v));
	else
		lt_errmsg_set("%s.%s is %s, expected null", what, key, json_kind(v));
	return 0;
}

/* Checks the model's members around its vocabulary and merges; the
 * normalizer, pre-tokenizer and decoder are read by lt_tok_pipe_from_json. */
static int check_model(const json_t *root)
{
	const json_t *model = json_object_get(root, "model"), *v;

	if (!json_is_object(model)) {
		lt_errmsg_set("model is %s, expected a BPE object", model ? json_kind(model) : "missing");
		return 0;
	}
	if (json_object_get(model, "type") || !json_object_get(model, "merges"))
		if (!check_type(model, "model", "BPE"))
			return 0;
	if (!check_unset(model, "model", "dropout", 0) ||
			!check_unset(model, "model", "continuing_subword_prefix", 1) ||
			!check_unset(model, "model", "end_of_word_suffix", 1))
		return 0;
	v = json_object_get(model, "ignore_merges");
	if (v && !json_is_boolean(v)) {
		lt_errmsg_set("model.ignore_merges is %s, expected true or false", json_kind(v));
		return 0;
	}
	return 1;
}

/* The tables of a loaded file, freed by loaded_fini. */
struct loaded {
	size_t n;
	const char **text; /* by id: its string in the file */
	size_t *text_len;
	uint8_t *kind, *raw;
	int charlevel; /* tokens are their own text */
	char *blob;
	size_t *off;
	struct lt_merge *merges;
	size_t n_merges;
};

static void loaded_fini(struct loaded *ld)
{
	free(ld->text);
	free(ld->text_len);
	free(ld->kind);
	free(ld->raw);
	free(ld->blob);
	free(ld->off);
	free(ld->merges);
}

/* The id that model.vocab gives the string s, or -1 (error set). */
static int32_t vocab_id(const json_t *vocab, const char *s, size_t i, const char *pair)
{
	const json_t *v = json_object_get(vocab, s);
	if (!v) {
		lt_errmsg_set("merges[%zu] '%s': '%s' is not in model.vocab", i, pair, s);
		return -1;
	}
	return (int32_t)json_integer_value(v);
}

/* The two sides of merges[i], given as "left right" or ["left", "right"]:
 * 1, or 0 with the error set. */
static int merge_sides(const json_t *m, size_t i, const char **a, size_t *la,
		const char **b, size_t *lb)
{
	if (json_is_string(m)) {
		const char *s = json_string_value(m), *sp = strchr(s, ' ');
		if (!sp || strchr(sp + 1, ' ')) {
			lt_errmsg_set("merges[%zu] is '%s', expected two tokens separated by one space", i, s);
			return 0;
		}
		*a = s;
		*la = (size_t)(sp - s);
		*b = sp + 1;
		*lb = strlen(*b);
		return 1;
	}
	if (json_is_array(m) && json_array_size(m) == 2 &&
			json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
		*a = json_string_value(json_array_get(m, 0));
		*b = json_string_value(json_array_get(m, 1));
		*la = strlen(*a);
		*lb = strlen(*b);
		return 1;
	}
	lt_errmsg_set("merges[%zu] is %s, expected \"left right\" or [\"left\", \"right\"]", i, json_kind(m));
	return 0;
}

static int read_merges(const json_t *vocab, const json_t *merges, struct loaded *ld)
{
	size_t i, cap = 0;
	char *buf = NULL;

	if (!json_is_array(merges)) {
		lt_errmsg_set("model.merges is %s, expected an array", merges ? json_kind(merges) : "missing");
		return 0;
	}
	ld->n_merges = json_array_size(merges);
	if (ld->n_merges > LT_TOKENIZER_MAX_VOCAB) {
		lt_errmsg_set("model.merges has %zu entries, more than the %d lltrain reads",
				ld->n_merges, LT_TOKENIZER_MAX_VOCAB);
		return 0;
	}
	if (!(ld->merges = lt_tok_alloc_zero(ld->n_merges, sizeof *ld->merges, "merges")))
		return 0;
	for (i = 0; i < ld->n_merges; i++) {
		const char *a, *b;
		size_t la, lb, need;
		int32_t ia, ib, to;

		if (!merge_sides(json_array_get(merges, i), i, &a, &la, &b, &lb))
			goto fail;
		need = 3 * (la + lb) + 8;
		if (need > cap) {
			char *nb = realloc(buf, need);
			if (!nb) {
				lt_errmsg_set("cannot allocate %zu bytes for a merge", need);
				goto fail;
			}
			buf = nb;
			cap = need;
		}
		/* buf: "a\0b\0ab\0" for look-ups, then "a b" for messages. */
		memcpy(buf, a, la);
		buf[la] = '\0';
		memcpy(buf + la + 1, b, lb);
		buf[la + 1 + lb] = '\0';
		char *ab = buf + la + lb + 2, *shown = ab + la + lb + 1;
		memcpy(ab, a, la);
		memcpy(ab + la, b, lb);
		ab[la + lb] = '\0';
		memcpy(shown, a, la);
		shown[la] = ' ';
		memcpy(shown + la + 1, b, lb);
		shown[la + 1 + lb] = '\0';
		if ((ia = vocab_id(vocab, buf, i, shown)) < 0 || (ib = vocab_id(vocab, buf + la + 1, i, shown)) < 0)
			goto fail;
		if ((to = vocab_id(vocab, ab, i, shown)) < 0) {
			lt_errmsg_set("merges[%zu] '%s': the joined token '%s' is not in model.vocab", i, shown, ab);
			goto fail;
		}
		ld->merges[i] = (struct lt_merge){ .a = ia, .b = ib, .to = to };
	}
	free(buf);
	return 1;
fail:
	free(buf);
	return 0;
}

/* Assigns string s (of n bytes) to id; a second, different string for the
 * same id is an error. */
static int assign_id(struct loaded *ld, int64_t id, const char *s, size_t n, const char *where)
{
	if (ld->text[id] && (ld->text_len[id] != n || memcmp(ld->text[id], s, n) != 0)) {
		lt_errmsg_set("%s gives id %" PRId64 " to '%s', but it is already '%s'", where, id, s, ld->text[id]);
		return 0;
	}
	ld->text[id] = s;
	ld->text_len[id] = n;
	return 1;
}

/* The largest id that model.vocab and added_tokens give, each checked on
 * the way; -1 (error set) where one is bad or there is none. */
static int64_t largest_id(const json_t *vocab, const json_t *added)
{
	int64_t max_id = -1;
	const char *key;
	const json_t *v;

	json_object_foreach((json_t *)vocab, key, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= LT_TOKENIZER_MAX_VOCAB) {
			lt_errmsg_set("model.vocab['%s'] is %s, expected an id from 0 to %d", key,
					json_is_integer(v) ? "out of range" : json_kind(v), LT_TOKENIZER_MAX_VOCAB - 1);
			return -1;
		}
		if (json_integer_value(v) > max_id)
			max_id = json_integer_value(v);
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		const json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
		if (!json_is_object(a) || !json_is_integer(id) || json_integer_value(id) < 0 ||
				json_integer_value(id) >= LT_TOKENIZER_MAX_VOCAB ||
				!json_is_string(json_object_get(a, "content"))) {
			lt_errmsg_set("added_tokens[%zu] is not an object with an id (0 to %d) and a content string",
					i, LT_TOKENIZER_MAX_VOCAB - 1);
			return -1;
		}
		if (json_integer_value(id) > max_id)
			max_id = json_integer_value(id);
	}
	if (max_id < 0)
		lt_errmsg_set("model.vocab is empty");
	return max_id;
}

/* Gives each id its string from model.vocab and added_tokens, and each
 * added token its kind: 1, or 0 with the error set. */
static int assign_ids(struct loaded *ld, const json_t *vocab, const json_t *added)
{
	const char *key;
	const json_t *v;

	json_object_foreach((json_t *)vocab, key, v)
		if (!assign_id(ld, json_integer_value(v), key, strlen(key), "model.vocab"))
			return 0;
	for (size_t i = 0; i < json_array_size(added); i++) {
		const json_t *a = json_array_get(added, i), *c = json_object_get(a, "content");
		int64_t id = json_integer_value(json_object_get(a, "id"));
		if (!assign_id(ld, id, json_string_value(c), json_string_length(c), "added_tokens"))
			return 0;
		ld->kind[id] = json_is_true(json_object_get(a, "special")) ? LT_TOK_SPECIAL : LT_TOK_ADDED;
	}
	return 1;
}

/* The bytes of every id into ld->blob and ld->off: byte-level text
 * decoded, or an added token's own text where it is not byte-level. */
static enum lt_status token_bytes(struct loaded *ld)
{
	size_t nb = 0;

	for (size_t i = 0; i < ld->n; i++) {
		if (!ld->text[i]) {
			lt_errmsg_set("id %zu is in neither model.vocab nor added_tokens", i);
			return LT_ERR_FORMAT;
		}
		nb += ld->text_len[i];
	}
	if (!(ld->blob = lt_tok_alloc_zero(nb, 1, "the vocabulary")))
		return LT_ERR_NOMEM;
	nb = 0;
	for (size_t i = 0; i < ld->n; i++) {
		long k = ld->charlevel ? -1 : chars_to_bytes(ld->text[i], ld->text_len[i], ld->blob + nb);
		if (k < 0) {
			if (ld->kind[i] == LT_TOK_NORMAL && !ld->charlevel) {
				lt_errmsg_set("model.vocab token '%s' (id %zu) is not byte-level text, expected "
						"only characters of GPT-2's byte alphabet", ld->text[i], i);
				return LT_ERR_FORMAT;
			}
			memcpy(ld->blob + nb, ld->text[i], ld->text_len[i]);
			k = (long)ld->text_len[i];
			ld->raw[i] = 1;
		}
		ld->off[i] = nb;
		nb += (size_t)k;
	}
	ld->off[ld->n] = nb;
	return LT_OK;
}

/* byte_id[b] = the id of byte b's token in model.vocab (its byte-level
 * character, or the <0xNN> token of byte fallback), or -1 where there is
 * none: such a byte is then unknown, as in the Hugging Face library. */
static void byte_ids(const json_t *vocab, int32_t byte_id[256], int charlevel)
{
	for (size_t i = 0; i < 256; i++) {
		char k[8];
		const json_t *v;
		if (charlevel)
			snprintf(k, sizeof k, "<0x%02zX>", i);
		else
			bytes_to_chars((const char *)&(unsigned char){ (unsigned char)i }, 1, k);
		v = json_object_get(vocab, k);
		byte_id[i] = v ? (int32_t)json_integer_value(v) : -1;
	}
}

/* Added tokens that strip spaces or match whole words are not read. */
static int check_added_flags(const json_t *added)
{
	static const char *const flags[] = { "single_word", "lstrip", "rstrip" };

	for (size_t i = 0; i < json_array_size(added); i++)
		for (size_t f = 0; f < 3; f++)
			if (json_is_true(json_object_get(json_array_get(added, i), flags[f]))) {
				lt_errmsg_set("added_tokens[%zu].%s is true, expected false", i, flags[f]);
				return 0;
			}
	return 1;
}

enum lt_status lt_tok_load_json(const struct json_t *root, lt_tokenizer **out)
{
	const json_t *model, *vocab, *added;
	struct loaded ld = { 0 };
	struct lt_tok_pipe pipe;
	enum lt_status st;
	int64_t max_id;
	int32_t byte_id[256];

	if (!json_is_object(root)) {
		lt_errmsg_set("the top level is %s, expected an object", json_kind(root));
		return LT_ERR_FORMAT;
	}
	if (!check_model(root) || !check_added_flags(json_object_get(root, "added_tokens")) ||
			!lt_tok_pipe_from_json(root, &pipe))
		return LT_ERR_FORMAT;
	ld.charlevel = pipe.charlevel;
	model = json_object_get(root, "model");
	vocab = json_object_get(model, "vocab");
	added = json_object_get(root, "added_tokens");
	st = LT_ERR_FORMAT;
	if (!json_is_object(vocab)) {
		lt_errmsg_set("model.vocab is %s, expected an object", vocab ? json_kind(vocab) : "missing");
		goto done;
	}
	if (added && !json_is_null(added) && !json_is_array(added)) {
		lt_errmsg_set("added_tokens is %s, expected an array", json_kind(added));
		goto done;
	}
	if ((max_id = largest_id(vocab, added)) < 0)
		goto done;
	ld.n = (size_t)max_id + 1;
	st = LT_ERR_NOMEM;
	if (!(ld.text = lt_tok_alloc_zero(ld.n, sizeof *ld.text, "the vocabulary")) ||
			!(ld.text_len = lt_tok_alloc_zero(ld.n, sizeof *ld.text_len, "the vocabulary")) ||
			!(ld.kind = lt_tok_alloc_zero(ld.n, 1, "the vocabulary")) ||
			!(ld.raw = lt_tok_alloc_zero(ld.n, 1, "the vocabulary")) ||
			!(ld.off = lt_tok_alloc_zero(ld.n + 1, sizeof *ld.off, "the vocabulary")))
		goto done;
	st = LT_ERR_FORMAT;
	if (!assign_ids(&ld, vocab, added))
		goto done;
	if ((st = token_bytes(&ld)) != LT_OK)
		goto done;
	st = LT_ERR_FORMAT;
	byte_ids(vocab, byte_id, ld.charlevel);
	if (!read_merges(vocab, json_object_get(model, "merges"), &ld))
		goto done;
	{
		struct lt_tok_parts parts = {
			.n_vocab = (int32_t)ld.n, .blob = ld.blob, .off = ld.off, .kind = ld.kind, .raw = ld.raw,
			.byte_id = byte_id, .n_merges = (int32_t)ld.n_merges, .merges = ld.merges,
			.ignore_merges = json_is_true(json_object_get(model, "ignore_merges")), .pipe = &pipe,
		};
		st = lt_tok_build(&parts, out);
	}
done:
	loaded_fini(&ld);
	lt_tok_pipe_fini(&pipe);
	return st;
}

enum lt_status lt_tokenizer_load(const char *path, lt_tokenizer **out)
{
	struct stat sb;
	json_error_t jerr;
	json_t *root;
	enum lt_status st;
	char *file;
	FILE *f;
	size_t n = strlen(path) + sizeof "/tokenizer.json";

	*out = NULL;
	if (!(file = malloc(n))) {
		lt_errmsg_set("cannot allocate %zu bytes for a path", n);
		return LT_ERR_NOMEM;
	}
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
		snprintf(file, n, "%s/tokenizer.json", path);
	else
		snprintf(file, n, "%s", path);
	if (!(f = fopen(file, "rb"))) {
		int err = errno;
		lt_errmsg_set("%s: cannot open: %s", file, strerror(err));
		free(file);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	{
		char magic[4];
		if (fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4)) {
			fclose(f);
			st = lt_tokenizer_load_gguf(file, out);
			free(file);
			return st;
		}
		rewind(f);
	}
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root) {
		lt_errmsg_set("%s: not JSON: line %d column %d: %s", file, jerr.line, jerr.column, jerr.text);
		free(file);
		return LT_ERR_FORMAT;
	}
	st = lt_tok_load_json(root, out);
	if (st != LT_OK)
		lt_errmsg_prefix("%s", file);
	json_decref(root);
	free(file);
	return st;
}
