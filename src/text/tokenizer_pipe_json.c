/* The tokenizer's pipeline in tokenizer.json (see tokenizer_impl.h): the
 * normalizer, pre_tokenizer, decoder and BPE model flags of a file read
 * into a struct lt_tok_pipe, and written back on save. Everything outside
 * the forms lltrain computes alike is refused, naming its JSON path. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* The readers return 1, or 0 with the error set. */

/* White space as the Hugging Face library's regex engine (Oniguruma) has
 * it, for \s in the file's patterns (as in GPT-2's, tokenizer.c). */
#define WS "\\t\\n\\x{0b}\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
	"\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

#define U2581 "\xe2\x96\x81"

static const char *str_of(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Keeps a copy of s in *dst (a new string). */
static int keep(char **dst, const char *s)
{
	if (!(*dst = strdup(s))) {
		lt_errmsg_set("out of memory reading the tokenizer's pipeline");
		return 0;
	}
	return 1;
}

/* A pattern of the file in PCRE2's words: \s and \S spelt as Oniguruma's
 * white space (inside a class, \s only). A new string, or NULL. */
static char *onig_to_pcre(const char *re, const char *path)
{
	size_t n = strlen(re), o = 0;
	char *d = malloc(n * sizeof WS + 16);
	int in_class = 0;

	if (!d) {
		lt_errmsg_set("out of memory reading %s", path);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (re[i] == '\\' && i + 1 < n) {
			char c = re[++i];
			const char *put = NULL;
			if (c == 's')
				put = in_class ? WS : "[" WS "]";
			else if (c == 'S' && !in_class)
				put = "[^" WS "]";
			if (put) {
				memcpy(d + o, put, strlen(put));
				o += strlen(put);
			} else {
				d[o++] = '\\';
				d[o++] = c;
			}
			continue;
		}
		if (re[i] == '[' && !in_class)
			in_class = 1;
		else if (re[i] == ']' && in_class)
			in_class = 0;
		d[o++] = re[i];
	}
	d[o] = '\0';
	return d;
}

/* A literal string as a PCRE2 pattern. A new string, or NULL. */
static char *literal_pattern(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *d = malloc(2 * n + 1);

	if (!d) {
		lt_errmsg_set("out of memory reading the tokenizer's pipeline");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x80 && !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z'))
			d[o++] = '\\';
		d[o++] = (char)c;
	}
	d[o] = '\0';
	return d;
}

static int add_step(struct lt_tok_pipe *p, char *pattern, enum lt_split_behavior how, int invert,
		const char *path)
{
	if (!pattern)
		return 0;
	if (p->n_steps == LT_TOK_MAX_STEPS) {
		free(pattern);
		lt_errmsg_set("%s: more than %d split steps", path, LT_TOK_MAX_STEPS);
		return 0;
	}
	p->step[p->n_steps++] = (struct lt_split_step){ .pattern = pattern, .behavior = how, .invert = invert };
	return 1;
}

static int add_norm(struct lt_tok_pipe *p, enum lt_norm_kind kind, const char *a, const char *b,
		int first_only, const char *path)
{
	struct lt_norm_op *op;

	if (p->n_norm == LT_TOK_MAX_NORM) {
		lt_errmsg_set("%s: more than %d normalizer steps", path, LT_TOK_MAX_NORM);
		return 0;
	}
	op = &p->norm[p->n_norm++];
	*op = (struct lt_norm_op){ .kind = kind, .first_only = first_only };
	return keep(&op->a, a) && keep(&op->b, b ? b : "");
}

/* A string member, or 0 with the error naming path.key. */
static const char *need_str(const json_t *o, const char *key, const char *path)
{
	const char *s = str_of(o, key);
	if (!s)
		lt_errmsg_set("%s.%s is not a string", path, key);
	return s;
}

/* The string of a {"String": s} pattern; NULL with the error set for a
 * Regex or anything else. */
static const char *string_pattern(const json_t *o, const char *path)
{
	const char *s = str_of(json_object_get(o, "pattern"), "String");
	if (!s)
		lt_errmsg_set("%s.pattern is not {\"String\": ...}, the only pattern lltrain reads here", path);
	return s;
}

/* ------------------------------------------------------------ normalizer */

static int read_normalizer(const json_t *n, const char *path, struct lt_tok_pipe *p)
{
	const char *type = str_of(n, "type"), *a, *b;
	char sub[160];

	if (!n || json_is_null(n))
		return 1;
	if (!type) {
		lt_errmsg_set("%s is not an object with a type", path);
		return 0;
	}
	if (!strcmp(type, "Sequence")) {
		const json_t *list = json_object_get(n, "normalizers");
		if (!json_is_array(list)) {
			lt_errmsg_set("%s.normalizers is not an array", path);
			return 0;
		}
		for (size_t i = 0; i < json_array_size(list); i++) {
			snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
			if (!read_normalizer(json_array_get(list, i), sub, p))
				return 0;
		}
		return 1;
	}
	if (!strcmp(type, "Prepend"))
		return (a = need_str(n, "prepend", path)) && add_norm(p, LT_NORM_PREPEND, a, NULL, 0, path);
	if (!strcmp(type, "Replace"))
		return (a = string_pattern(n, path)) && (b = need_str(n, "content", path)) && a[0] &&
			add_norm(p, LT_NORM_REPLACE, a, b, 0, path);
	lt_errmsg_set("%s.type is '%s', expected Prepend, Replace or a Sequence of them", path, type);
	return 0;
}

/* --------------------------------------------------------- pre_tokenizer */

static const char *const behaviors[] = {
	[LT_SPLIT_ISOLATED] = "Isolated", [LT_SPLIT_REMOVED] = "Removed",
	[LT_SPLIT_MERGED_PREV] = "MergedWithPrevious", [LT_SPLIT_MERGED_NEXT] = "MergedWithNext",
	[LT_SPLIT_CONTIGUOUS] = "Contiguous",
};

static int read_split(const json_t *o, const char *path, struct lt_tok_pipe *p)
{
	const json_t *pat = json_object_get(o, "pattern");
	const char *how = str_of(o, "behavior"), *re = str_of(pat, "Regex"), *lit = str_of(pat, "String");
	int b;

	for (b = 0; how && b < (int)(sizeof behaviors / sizeof *behaviors); b++)
		if (!strcmp(how, behaviors[b]))
			break;
	if (!how || b == (int)(sizeof behaviors / sizeof *behaviors)) {
		lt_errmsg_set("%s.behavior is %s%s%s, expected Isolated, Removed, MergedWithPrevious, "
				"MergedWithNext or Contiguous", path, how ? "'" : "", how ? how : "not a string", how ? "'" : "");
		return 0;
	}
	if (!re && !lit) {
		lt_errmsg_set("%s.pattern is not {\"Regex\": ...} or {\"String\": ...}", path);
		return 0;
	}
	return add_step(p, re ? onig_to_pcre(re, path) : literal_pattern(lit), (enum lt_split_behavior)b,
			json_is_true(json_object_get(o, "invert")), path);
}

/* Metaspace: spaces become the replacement, which is put before the text
 * (by its prepend_scheme), and with split the text is cut before each. */
static int read_metaspace(const json_t *o, const char *path, struct lt_tok_pipe *p, int first)
{
	const char *r = str_of(o, "replacement"), *scheme = str_of(o, "prepend_scheme");
	const json_t *aps = json_object_get(o, "add_prefix_space"), *split = json_object_get(o, "split");
	int prepend = scheme ? strcmp(scheme, "never") != 0 : !json_is_false(aps);

	if (!first) {
		lt_errmsg_set("%s: Metaspace after another pre-tokenizer, expected it first", path);
		return 0;
	}
	if (!r || !r[0]) {
		lt_errmsg_set("%s.replacement is not a non-empty string", path);
		return 0;
	}
	if (scheme && strcmp(scheme, "always") && strcmp(scheme, "first") && strcmp(scheme, "never")) {
		lt_errmsg_set("%s.prepend_scheme is '%s', expected always, first or never", path, scheme);
		return 0;
	}
	if (!add_norm(p, LT_NORM_REPLACE, " ", r, 0, path))
		return 0;
	if (prepend && !add_norm(p, LT_NORM_META_PREPEND, r, NULL, scheme && !strcmp(scheme, "first"), path))
		return 0;
	return json_is_false(split) || add_step(p, literal_pattern(r), LT_SPLIT_MERGED_NEXT, 0, path);
}

static int read_pre(const json_t *o, const char *path, struct lt_tok_pipe *p, int *bytelevel)
{
	const char *type = str_of(o, "type");
	char sub[160];

	if (!type) {
		lt_errmsg_set("%s is not an object with a type", path);
		return 0;
	}
	if (!strcmp(type, "Sequence")) {
		const json_t *list = json_object_get(o, "pretokenizers");
		if (!json_is_array(list)) {
			lt_errmsg_set("%s.pretokenizers is not an array", path);
			return 0;
		}
		for (size_t i = 0; i < json_array_size(list); i++) {
			snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
			if (!read_pre(json_array_get(list, i), sub, p, bytelevel))
				return 0;
		}
		return 1;
	}
	if (!strcmp(type, "ByteLevel")) {
		const json_t *v = json_object_get(o, "add_prefix_space");
		if (json_is_true(v)) {
			lt_errmsg_set("%s.add_prefix_space is true, expected false", path);
			return 0;
		}
		*bytelevel = 1;
		if (json_is_false(json_object_get(o, "use_regex")))
			return 1;
		return add_step(p, strdup(lt_pretok_gpt2_pattern), LT_SPLIT_ISOLATED, 0, path);
	}
	if (!strcmp(type, "Split"))
		return read_split(o, path, p);
	if (!strcmp(type, "Digits"))
		return add_step(p, strdup(json_is_true(json_object_get(o, "individual_digits")) ? "\\p{N}" : "\\p{N}+"),
				LT_SPLIT_ISOLATED, 0, path);
	if (!strcmp(type, "Metaspace"))
		return read_metaspace(o, path, p, p->n_steps == 0 && p->n_norm == 0);
	lt_errmsg_set("%s.type is '%s', expected ByteLevel, Split, Digits, Metaspace or a Sequence of them",
			path, type);
	return 0;
}

/* --------------------------------------------------------------- decoder */

static int read_decoder(const json_t *o, const char *path, struct lt_tok_pipe *p, int *bytelevel)
{
	const char *type = str_of(o, "type"), *s;
	char sub[160];

	if (!o || json_is_null(o))
		return 1;
	if (!type) {
		lt_errmsg_set("%s is not an object with a type", path);
		return 0;
	}
	if (!strcmp(type, "Sequence")) {
		const json_t *list = json_object_get(o, "decoders");
		if (!json_is_array(list)) {
			lt_errmsg_set("%s.decoders is not an array", path);
			return 0;
		}
		for (size_t i = 0; i < json_array_size(list); i++) {
			snprintf(sub, sizeof sub, "%s.decoders[%zu]", path, i);
			if (!read_decoder(json_array_get(list, i), sub, p, bytelevel))
				return 0;
		}
		return 1;
	}
	if (!strcmp(type, "ByteLevel")) {
		*bytelevel = 1;
		return 1;
	}
	if (!strcmp(type, "ByteFallback")) {
		p->dec_bytes = 1;
		return 1;
	}
	if (!strcmp(type, "Fuse"))
		return 1;
	if (!strcmp(type, "Replace")) {
		if (!(s = string_pattern(o, path)))
			return 0;
		if (strcmp(s, U2581) || !str_of(o, "content") || strcmp(str_of(o, "content"), " ")) {
			lt_errmsg_set("%s: a Replace of '%s', expected U+2581 by a space", path, s);
			return 0;
		}
		p->dec_meta = 1;
		return 1;
	}
	if (!strcmp(type, "Strip")) {
		const json_t *start = json_object_get(o, "start");
		if (!str_of(o, "content") || strcmp(str_of(o, "content"), " ") || !json_is_integer(start) ||
				json_integer_value(start) < 0 || json_integer_value(start) > 16 ||
				json_integer_value(json_object_get(o, "stop")) != 0) {
			lt_errmsg_set("%s: a Strip other than of leading spaces (content ' ', start 0..16, stop 0)", path);
			return 0;
		}
		p->dec_strip = (int)json_integer_value(start);
		return 1;
	}
	if (!strcmp(type, "Metaspace")) {
		const char *scheme = str_of(o, "prepend_scheme");
		p->dec_meta = 1;
		p->dec_strip = scheme ? strcmp(scheme, "never") != 0 : !json_is_false(json_object_get(o, "add_prefix_space"));
		return 1;
	}
	lt_errmsg_set("%s.type is '%s', expected ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace "
			"or a Sequence of them", path, type);
	return 0;
}

/* --------------------------------------------------------------- the whole */

/* The JSON text of a member ("null" where it is absent). */
static int dump_member(const json_t *root, const char *key, char **dst)
{
	const json_t *v = json_object_get(root, key);
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
	if (!s) {
		lt_errmsg_set("out of memory keeping tokenizer.json's %s", key);
		return 0;
	}
	*dst = s;
	return 1;
}

static int read_model_flags(const json_t *model, struct lt_tok_pipe *p)
{
	const json_t *unk = json_object_get(model, "unk_token"), *bf = json_object_get(model, "byte_fallback");

	if (bf && !json_is_boolean(bf)) {
		lt_errmsg_set("model.byte_fallback is not true or false");
		return 0;
	}
	if (unk && !json_is_null(unk) && !json_is_string(unk)) {
		lt_errmsg_set("model.unk_token is not a string or null");
		return 0;
	}
	p->byte_fallback = json_is_true(bf);
	p->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
	return !json_is_string(unk) || keep(&p->unk, json_string_value(unk));
}

int lt_tok_pipe_from_json(const struct json_t *root, struct lt_tok_pipe *p)
{
	const json_t *pre = json_object_get(root, "pre_tokenizer"), *norm = json_object_get(root, "normalizer");
	int bytelevel = 0;

	memset(p, 0, sizeof *p);
	if (!read_normalizer(norm, "normalizer", p))
		goto fail;
	if (pre && !json_is_null(pre) && !read_pre(pre, "pre_tokenizer", p, &bytelevel))
		goto fail;
	if (!read_decoder(json_object_get(root, "decoder"), "decoder", p, &bytelevel) ||
			!read_model_flags(json_object_get(root, "model"), p))
		goto fail;
	p->charlevel = !bytelevel;
	if (bytelevel && norm && !json_is_null(norm)) {
		lt_errmsg_set("normalizer.type is '%s' in a byte-level tokenizer, expected no normalizer",
				str_of(norm, "type") ? str_of(norm, "type") : "?");
		goto fail;
	}
	if (bytelevel && (p->dec_meta || p->dec_strip || p->dec_bytes || p->byte_fallback)) {
		lt_errmsg_set("decoder: U+2581 spaces or byte fallback in a byte-level tokenizer");
		goto fail;
	}
	if (!dump_member(root, "normalizer", &p->json_normalizer) || !dump_member(root, "pre_tokenizer", &p->json_pre) ||
			!dump_member(root, "post_processor", &p->json_post) || !dump_member(root, "decoder", &p->json_decoder))
		goto fail;
	return 1;
fail:
	lt_tok_pipe_fini(p);
	return 0;
}

/* Sets root.key to the JSON text s, where there is one. */
static int put_member(struct json_t *root, const char *key, const char *s)
{
	json_t *v;
	if (!s)
		return 1;
	if (!(v = json_loads(s, JSON_DECODE_ANY, NULL)) || json_object_set_new(root, key, v)) {
		lt_errmsg_set("cannot rebuild tokenizer.json's %s", key);
		return 0;
	}
	return 1;
}

int lt_tok_pipe_to_json(const struct lt_tok_pipe *p, struct json_t *root, struct json_t *model)
{
	if (!put_member(root, "normalizer", p->json_normalizer) || !put_member(root, "pre_tokenizer", p->json_pre) ||
			!put_member(root, "post_processor", p->json_post) || !put_member(root, "decoder", p->json_decoder))
		return 0;
	if (json_object_set_new(model, "byte_fallback", json_boolean(p->byte_fallback)) ||
			json_object_set_new(model, "fuse_unk", json_boolean(p->fuse_unk)) ||
			json_object_set_new(model, "unk_token", p->unk ? json_string(p->unk) : json_null())) {
		lt_errmsg_set("out of memory while building tokenizer.json");
		return 0;
	}
	return 1;
}
