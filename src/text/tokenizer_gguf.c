/* The tokenizer of a GGUF file (see tokenizer.h): its vocabulary put into
 * the tokenizer.json document that Hugging Face's conversion of the same
 * model gives, which the tokenizer.json reader then loads, so both forms
 * encode alike and saving writes a tokenizer.json; and the other way, a
 * tokenizer.json, byte-level or SentencePiece-style, as the tokenizer.ggml.*
 * metadata of a GGUF file that llama.cpp reads. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "io/gguf.h"
#include "io/gguf_write.h"
#include "text/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Token types of tokenizer.ggml.token_type. */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The pre-tokenizers of tokenizer.ggml.pre, as tokenizer.json has them;
 * the first name is llama.cpp's (which reads "gpt2" as its default). */
static const struct {
	const char *name, *alias, *json;
	int ignore_merges;
} pres[] = {
	{ "gpt-2", "gpt2", "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}", 0 },
	{ "smollm", "smollm", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, "
		"{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}]}", 0 },
	{ "llama-bpe", "llama-bpe", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
		"\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*"
		"|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
		"{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]}", 1 },
};

static const char byte_level[] = "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
	"\"use_regex\": true}";
static const char spm_normalizer[] = "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
	"\"prepend\": \"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]}";
static const char spm_normalizer_plain[] = "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
	"\"content\": \"\xe2\x96\x81\"}";
static const char spm_decoder[] = "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
	"{\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, "
	"{\"type\": \"Strip\", \"content\": \" \", \"start\": %d, \"stop\": 0}]}";

/* Sets obj.key to the JSON text s: 1, or 0 with the error set. */
static int set_json(json_t *obj, const char *key, const char *s)
{
	json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);
	if (!v || json_object_set_new(obj, key, v)) {
		lt_errmsg_set("out of memory building the tokenizer of a GGUF file");
		return 0;
	}
	return 1;
}

/* model.vocab and added_tokens from tokens and token_type; *unk gets the
 * unknown token's text (or stays NULL). */
static enum lt_status read_vocab(const lt_gguf *g, json_t *vocab, json_t *added, const char **unk)
{
	enum lt_status st;
	enum lt_gguf_vtype elem;
	uint64_t n, nt = 0;
	int has_types = lt_gguf_has(g, "tokenizer.ggml.token_type");

	if ((st = lt_gguf_get_array(g, "tokenizer.ggml.tokens", &elem, &n)) != LT_OK)
		return st;
	if (has_types && (st = lt_gguf_get_array(g, "tokenizer.ggml.token_type", &elem, &nt)) != LT_OK)
		return st;
	if (n > LT_TOKENIZER_MAX_VOCAB || (has_types && nt != n)) {
		lt_errmsg_set("tokenizer.ggml.tokens has %llu entries and token_type %llu, expected the same number "
				"up to %d", (unsigned long long)n, (unsigned long long)nt, LT_TOKENIZER_MAX_VOCAB);
		return LT_ERR_FORMAT;
	}
	for (uint64_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		int64_t type = TT_NORMAL;
		if ((st = lt_gguf_array_str(g, "tokenizer.ggml.tokens", i, &s, &len)) != LT_OK ||
				(has_types && (st = lt_gguf_array_int(g, "tokenizer.ggml.token_type", i, &type)) != LT_OK))
			return st;
		json_t *probe = json_stringn(s, len);
		if (!probe || strlen(s) != len) {
			json_decref(probe);
			lt_errmsg_set("tokenizer.ggml.tokens[%llu] is not UTF-8 text without NUL bytes", (unsigned long long)i);
			return LT_ERR_FORMAT;
		}
		json_decref(probe);
		if (type == TT_UNKNOWN && !*unk)
			*unk = s;
		if ((type == TT_CONTROL || type == TT_USER) &&
				json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
						"content", s, "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
						"special", type == TT_CONTROL)))
			return LT_ERR_NOMEM;
		if (json_object_get(vocab, s)) {
			if (type == TT_CONTROL || type == TT_USER)
				continue;
			lt_errmsg_set("tokenizer.ggml.tokens[%llu] '%s' repeats token %lld", (unsigned long long)i, s,
					(long long)json_integer_value(json_object_get(vocab, s)));
			return LT_ERR_FORMAT;
		}
		if (json_object_set_new(vocab, s, json_integer((json_int_t)i)))
			return LT_ERR_NOMEM;
	}
	return LT_OK;
}

static enum lt_status gpt2_merges(const lt_gguf *g, json_t *merges)
{
	enum lt_gguf_vtype elem;
	uint64_t n;
	enum lt_status st = lt_gguf_get_array(g, "tokenizer.ggml.merges", &elem, &n);

	for (uint64_t i = 0; st == LT_OK && i < n; i++) {
		const char *s;
		if ((st = lt_gguf_array_str(g, "tokenizer.ggml.merges", i, &s, NULL)) == LT_OK &&
				json_array_append_new(merges, json_string(s)))
			st = LT_ERR_NOMEM;
	}
	return st;
}

/* One candidate merge of a SentencePiece vocabulary: left + right = the
 * token `to`, of score `score`. */
struct spm_merge {
	double score;
	int64_t to, left, right;
};

/* By the joined token's score, highest first, then in the order Hugging
 * Face's conversion keeps (the joined token's id, then left's and right's). */
static int cmp_spm(const void *x, const void *y)
{
	const struct spm_merge *a = x, *b = y;
	if (a->score != b->score)
		return a->score > b->score ? -1 : 1;
	if (a->to != b->to)
		return a->to < b->to ? -1 : 1;
	if (a->left != b->left)
		return a->left < b->left ? -1 : 1;
	return a->right < b->right ? -1 : a->right > b->right;
}

/* A SentencePiece vocabulary has scores, not merges: every split of a
 * token into two tokens is a merge, ranked by the joined token's score. */
static enum lt_status spm_merges(const lt_gguf *g, const json_t *vocab, json_t *merges)
{
	struct spm_merge *m = NULL;
	size_t nm = 0, cap = 0;
	uint64_t n;
	enum lt_gguf_vtype elem;
	enum lt_status st;
	char buf[1024];

	if ((st = lt_gguf_get_array(g, "tokenizer.ggml.tokens", &elem, &n)) != LT_OK)
		return st;
	for (uint64_t i = 0; i < n; i++) {
		const char *s;
		size_t len;
		double score;
		if ((st = lt_gguf_array_str(g, "tokenizer.ggml.tokens", i, &s, &len)) != LT_OK ||
				(st = lt_gguf_array_float(g, "tokenizer.ggml.scores", i, &score)) != LT_OK)
			goto done;
		if (len >= sizeof buf || json_integer_value(json_object_get(vocab, s)) != (json_int_t)i)
			continue;
		for (size_t k = 1; k < len; k++) {
			const json_t *l, *r;
			if (((unsigned char)s[k] & 0xc0) == 0x80)
				continue;
			memcpy(buf, s, k);
			buf[k] = '\0';
			if (!(l = json_object_get(vocab, buf)) || !(r = json_object_get(vocab, s + k)))
				continue;
			if (nm == cap && (st = lt_tok_grow(&m, &cap, nm + 1, sizeof *m, "merges")) != LT_OK)
				goto done;
			m[nm++] = (struct spm_merge){ score, (int64_t)i, json_integer_value(l), json_integer_value(r) };
		}
	}
	if (nm > 1)  /* m is NULL when no merge was found */
		qsort(m, nm, sizeof *m, cmp_spm);
	for (size_t i = 0; i < nm; i++) {
		const char *l, *r;
		if ((st = lt_gguf_array_str(g, "tokenizer.ggml.tokens", (uint64_t)m[i].left, &l, NULL)) != LT_OK ||
				(st = lt_gguf_array_str(g, "tokenizer.ggml.tokens", (uint64_t)m[i].right, &r, NULL)) != LT_OK)
			goto done;
		if (json_array_append_new(merges, json_pack("[s, s]", l, r))) {
			st = LT_ERR_NOMEM;
			goto done;
		}
	}
done:
	free(m);
	return st;
}

/* The pipeline around the model for tokenizer.ggml.model kind. */
static enum lt_status pipeline(const lt_gguf *g, const char *kind, json_t *root, json_t *model,
		const char *unk)
{
	const char *pre = "gpt2";
	enum lt_status st;
	char dec[sizeof spm_decoder + 8];
	int prefix = 1;

	if (!strcmp(kind, "gpt2")) {
		size_t i;
		if (lt_gguf_has(g, "tokenizer.ggml.pre") &&
				(st = lt_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL)) != LT_OK)
			return st;
		for (i = 0; i < sizeof pres / sizeof *pres && strcmp(pres[i].name, pre) &&
				strcmp(pres[i].alias, pre); i++)
			;
		if (i == sizeof pres / sizeof *pres) {
			lt_errmsg_set("tokenizer.ggml.pre is '%s', expected gpt-2, gpt2, smollm or llama-bpe", pre);
			return LT_ERR_FORMAT;
		}
		if (!set_json(root, "pre_tokenizer", pres[i].json) || !set_json(root, "decoder", byte_level) ||
				json_object_set_new(model, "ignore_merges", json_boolean(pres[i].ignore_merges)))
			return LT_ERR_NOMEM;
		return LT_OK;
	}
	if (lt_gguf_has(g, "tokenizer.ggml.add_space_prefix") &&
			(st = lt_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix)) != LT_OK)
		return st;
	snprintf(dec, sizeof dec, spm_decoder, prefix ? 1 : 0);
	if (!set_json(root, "normalizer", prefix ? spm_normalizer : spm_normalizer_plain) ||
			!set_json(root, "decoder", dec) ||
			json_object_set_new(model, "byte_fallback", json_true()) ||
			json_object_set_new(model, "fuse_unk", json_true()) ||
			json_object_set_new(model, "unk_token", unk ? json_string(unk) : json_null()))
		return LT_ERR_NOMEM;
	return LT_OK;
}

/* The tokenizer.json document of an open GGUF file, into *root. */
static enum lt_status gguf_document(const lt_gguf *g, json_t **root)
{
	json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
	json_t *model = json_object(), *doc = json_object();
	const char *kind, *unk = NULL;
	enum lt_status st = LT_ERR_NOMEM;

	*root = NULL;
	/* The document holds the parts from the start (json_object_set adds a
	 * reference), so that one release of each frees everything. */
	if (!vocab || !merges || !added || !model || !doc ||
			json_object_set_new(model, "type", json_string("BPE")) || json_object_set(model, "vocab", vocab) ||
			json_object_set(model, "merges", merges) || json_object_set_new(doc, "version", json_string("1.0")) ||
			json_object_set(doc, "added_tokens", added) || json_object_set(doc, "model", model))
		goto done;
	if ((st = lt_gguf_get_str(g, "tokenizer.ggml.model", &kind, NULL)) != LT_OK)
		goto done;
	if (strcmp(kind, "gpt2") && strcmp(kind, "llama")) {
		lt_errmsg_set("tokenizer.ggml.model is '%s', expected gpt2 or llama", kind);
		st = LT_ERR_FORMAT;
		goto done;
	}
	if ((st = read_vocab(g, vocab, added, &unk)) != LT_OK ||
			(st = !strcmp(kind, "gpt2") ? gpt2_merges(g, merges) : spm_merges(g, vocab, merges)) != LT_OK ||
			(st = pipeline(g, kind, doc, model, unk)) != LT_OK)
		goto done;
	*root = json_incref(doc);
done:
	if (st == LT_ERR_NOMEM)
		lt_errmsg_set("out of memory building the tokenizer of a GGUF file");
	json_decref(vocab);
	json_decref(merges);
	json_decref(added);
	json_decref(model);
	json_decref(doc);
	return st;
}

enum lt_status lt_tokenizer_load_gguf(const char *path, lt_tokenizer **out)
{
	lt_gguf *g = NULL;
	json_t *root = NULL;
	enum lt_status st;

	*out = NULL;
	if ((st = lt_gguf_open(path, &g)) != LT_OK)
		return st;
	if ((st = gguf_document(g, &root)) == LT_OK)
		st = lt_tok_load_json(root, out);
	if (st != LT_OK && !strstr(lt_errmsg(), path))
		lt_errmsg_prefix("%s", path);
	json_decref(root);
	lt_gguf_close(g);
	return st;
}

/* ---- a tokenizer.json as GGUF metadata ---- */

/* What the metadata is made of: the tokens by id, their types, the
 * merges as "left right". */
struct gguf_vocab {
	const char **tokens;
	int32_t *types;
	float *scores;          /* model llama only */
	char **pads;            /* "[PADn]" for ids the tokenizer leaves empty */
	const char **merges;
	char **merge_text;      /* merges given as pairs, joined */
	size_t n, n_merges;
};

static void free_gguf_vocab(struct gguf_vocab *v)
{
	for (size_t i = 0; v->pads && i < v->n; i++)
		free(v->pads[i]);
	for (size_t i = 0; v->merge_text && i < v->n_merges; i++)
		free(v->merge_text[i]);
	free(v->tokens);
	free(v->types);
	free(v->scores);
	free(v->pads);
	free(v->merges);
	free(v->merge_text);
}

/* The llama.cpp name of root's pre-tokenizer, or NULL when it is none of
 * those it knows. */
static const char *pre_name(const json_t *root)
{
	const json_t *pre = json_object_get(root, "pre_tokenizer");
	for (size_t i = 0; pre && i < sizeof pres / sizeof *pres; i++) {
		json_t *known = json_loads(pres[i].json, 0, NULL);
		int same = known && json_equal(known, pre);
		json_decref(known);
		if (same)
			return pres[i].name;
	}
	return NULL;
}

/* How a tokenizer.json goes into GGUF: a byte-level BPE as model gpt2
 * under the name llama.cpp gives its pre-tokenizer, or a SentencePiece-style
 * BPE (spaces as U+2581, byte fallback) as model llama, whose merges
 * llama.cpp finds from scores, with or without a U+2581 put first. */
struct gguf_kind {
	int spm;
	const char *pre;      /* gpt2 only */
	int space_prefix;     /* llama only */
};

/* Whether v is the JSON document text. */
static int json_is(const json_t *v, const char *text)
{
	json_t *known = json_loads(text, 0, NULL);
	int same = known && v && json_equal(known, (json_t *)v);
	json_decref(known);
	return same;
}

/* Metaspace with U+2581 put before the first piece of text only, as
 * llama.cpp's SentencePiece tokenizer does. */
static int metaspace_first(const json_t *pre)
{
	const char *type = json_string_value(json_object_get(pre, "type"));
	const char *r = json_string_value(json_object_get(pre, "replacement"));
	const char *scheme = json_string_value(json_object_get(pre, "prepend_scheme"));
	return type && !strcmp(type, "Metaspace") && r && !strcmp(r, "\xe2\x96\x81") &&
		scheme && !strcmp(scheme, "first");
}

/* The SentencePiece-style pipelines llama.cpp runs: Prepend + Replace (or
 * Replace alone) as the normalizer and no pre-tokenizer, or Metaspace. */
static int spm_kind(const json_t *root, struct gguf_kind *k)
{
	const json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
	int no_norm = !norm || json_is_null(norm), no_pre = !pre || json_is_null(pre);
	k->spm = 1;
	if (no_pre && (json_is(norm, spm_normalizer) || json_is(norm, spm_normalizer_plain))) {
		k->space_prefix = json_is(norm, spm_normalizer);
		return 1;
	}
	k->space_prefix = 1;
	return no_norm && metaspace_first(pre);
}

static enum lt_status check_writable(const char *path, const json_t *root, struct gguf_kind *k)
{
	const json_t *model = json_object_get(root, "model"), *norm = json_object_get(root, "normalizer");
	const char *type = json_string_value(json_object_get(model, "type"));
	if (!json_is_object(model) || (type && strcmp(type, "BPE")) ||
			!json_is_object(json_object_get(model, "vocab")) ||
			!json_is_array(json_object_get(model, "merges"))) {
		lt_errmsg_set("%s: model: expected a BPE model with vocab and merges", path);
		return LT_ERR_FORMAT;
	}
	if ((norm && !json_is_null(norm)) || json_is_true(json_object_get(model, "byte_fallback"))) {
		if (spm_kind(root, k))
			return LT_OK;
		lt_errmsg_set("%s: a SentencePiece-style tokenizer whose normalizer and pre_tokenizer "
				"llama.cpp does not run (expected Prepend and Replace of U+2581, or Metaspace "
				"with prepend_scheme first)", path);
		return LT_ERR_FORMAT;
	}
	*k = (struct gguf_kind){ 0 };
	if (!(k->pre = pre_name(root))) {
		lt_errmsg_set("%s: pre_tokenizer: none that llama.cpp knows (expected GPT-2's ByteLevel, "
				"SmolLM's or Llama 3's)", path);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* "<0xNN>": a byte of the fallback. */
static int is_byte_token(const char *s)
{
	return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' &&
		strchr("0123456789ABCDEF", s[3]) && strchr("0123456789ABCDEF", s[4]);
}

/* v->tokens and v->types for ids [0, v->n): model.vocab, then the added
 * tokens (control when special, user-defined otherwise), then "[PADn]"
 * (unused) for an id neither names; for SentencePiece (spm), the unknown
 * token and the <0xNN> bytes of the vocabulary get their own types. */
static enum lt_status vocab_tokens(const char *path, const json_t *root, int spm, struct gguf_vocab *v)
{
	const json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab"), *val, *a;
	const char *key;
	size_t i;
	json_object_foreach((json_t *)vocab, key, val) {
		json_int_t id = json_integer_value(val);
		if (!json_is_integer(val) || id < 0 || (size_t)id >= v->n) {
			lt_errmsg_set("%s: model.vocab['%s']: expected an id below %zu", path, key, v->n);
			return LT_ERR_FORMAT;
		}
		v->tokens[id] = key;
		v->types[id] = TT_NORMAL;
	}
	json_array_foreach(json_object_get(root, "added_tokens"), i, a) {
		json_int_t id = json_integer_value(json_object_get(a, "id"));
		const char *content = json_string_value(json_object_get(a, "content"));
		if (!content || id < 0 || (size_t)id >= v->n) {
			lt_errmsg_set("%s: added_tokens[%zu]: expected an id below %zu and its content",
					path, i, v->n);
			return LT_ERR_FORMAT;
		}
		v->tokens[id] = content;
		v->types[id] = json_is_true(json_object_get(a, "special")) ? TT_CONTROL : TT_USER;
	}
	for (i = 0; i < v->n; i++) {
		char buf[32];
		if (v->tokens[i] && v->types[i] == TT_NORMAL && spm) {
			const char *unk = json_string_value(json_object_get(json_object_get(root, "model"),
					"unk_token"));
			v->types[i] = unk && !strcmp(unk, v->tokens[i]) ? TT_UNKNOWN :
				is_byte_token(v->tokens[i]) ? TT_BYTE : TT_NORMAL;
		}
		if (v->tokens[i])
			continue;
		snprintf(buf, sizeof buf, "[PAD%zu]", i);
		if (!(v->pads[i] = strdup(buf)))
			return LT_ERR_NOMEM;
		v->tokens[i] = v->pads[i];
		v->types[i] = TT_UNUSED;
	}
	return LT_OK;
}

/* v->merges from model.merges ("left right" strings or [left, right]). */
static enum lt_status vocab_merges(const char *path, const json_t *root, struct gguf_vocab *v)
{
	const json_t *merges = json_object_get(json_object_get(root, "model"), "merges"), *m;
	size_t i;
	json_array_foreach(merges, i, m) {
		const char *l = json_string_value(json_array_get(m, 0));
		const char *r = json_string_value(json_array_get(m, 1));
		if (json_is_string(m)) {
			v->merges[i] = json_string_value(m);
			continue;
		}
		if (!l || !r) {
			lt_errmsg_set("%s: model.merges[%zu]: expected \"left right\" or [left, right]",
					path, i);
			return LT_ERR_FORMAT;
		}
		size_t n = strlen(l) + strlen(r) + 2;
		if (!(v->merge_text[i] = malloc(n)))
			return LT_ERR_NOMEM;
		snprintf(v->merge_text[i], n, "%s %s", l, r);
		v->merges[i] = v->merge_text[i];
	}
	return LT_OK;
}

/* SentencePiece ranks merges by the joined token's score, highest first
 * (llama.cpp, and lltrain's reading of such a file, merge any two
 * neighbours that join into a token): a token's score is minus the rank of
 * the first merge that makes it, and a token no merge makes scores below
 * them all, so the merges keep tokenizer.json's order. */
static enum lt_status vocab_scores(const char *path, const json_t *root, struct gguf_vocab *v)
{
	const json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
	char buf[1024];
	for (size_t i = 0; i < v->n; i++)
		v->scores[i] = -(float)(v->n_merges + 1);
	for (size_t i = v->n_merges; i-- > 0;) {
		const char *sp = strchr(v->merges[i], ' ');
		size_t ll = sp ? (size_t)(sp - v->merges[i]) : 0, rl = sp ? strlen(sp + 1) : 0;
		json_int_t id;
		if (!sp || ll + rl >= sizeof buf) {
			lt_errmsg_set("%s: model.merges[%zu] '%s': expected two tokens joining into one "
					"under %zu bytes", path, i, v->merges[i], sizeof buf);
			return LT_ERR_FORMAT;
		}
		memcpy(buf, v->merges[i], ll);
		memcpy(buf + ll, sp + 1, rl + 1);
		id = json_integer_value(json_object_get(vocab, buf));
		if (json_object_get(vocab, buf) && id >= 0 && (size_t)id < v->n)
			v->scores[id] = -(float)i;
	}
	return LT_OK;
}

static enum lt_status read_gguf_vocab(const char *path, const json_t *root, size_t n, int spm,
		struct gguf_vocab *v)
{
	enum lt_status st;
	v->n = n;
	v->n_merges = json_array_size(json_object_get(json_object_get(root, "model"), "merges"));
	v->tokens = calloc(n, sizeof *v->tokens);
	v->types = calloc(n, sizeof *v->types);
	v->scores = calloc(n, sizeof *v->scores);
	v->pads = calloc(n, sizeof *v->pads);
	v->merges = calloc(v->n_merges + 1, sizeof *v->merges);
	v->merge_text = calloc(v->n_merges + 1, sizeof *v->merge_text);
	if (!v->tokens || !v->types || !v->scores || !v->pads || !v->merges || !v->merge_text)
		st = LT_ERR_NOMEM;
	else if ((st = vocab_tokens(path, root, spm, v)) == LT_OK &&
			(st = vocab_merges(path, root, v)) == LT_OK && spm)
		st = vocab_scores(path, root, v);
	if (st == LT_ERR_NOMEM)
		lt_errmsg_set("%s: out of memory gathering the vocabulary", path);
	return st;
}

/* The id of a tokenizer_config.json token entry (a string, or an object
 * with its content), or -1. */
static int32_t config_token(const lt_tokenizer *tok, const json_t *config, const char *key)
{
	const json_t *e = json_object_get(config, key);
	const char *s = json_is_object(e) ? json_string_value(json_object_get(e, "content")) :
			json_string_value(e);
	return s ? lt_tokenizer_token_id(tok, s, strlen(s)) : -1;
}

/* The conversations lltrain's chat templates render (chat.c), as Jinja
 * templates for tokenizer.chat_template: ChatML and Llama 3 (a Llama 2
 * template comes only from tokenizer_config.json). */
static const char chatml_jinja[] = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + "
	"'\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
	"{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char llama3_jinja[] = "{{ '<|begin_of_text|>' }}{% for message in messages %}"
	"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
	"'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
	"{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/* The chat template: tokenizer_config.json's, else the one of lltrain's
 * templates whose special tokens the tokenizer has (ChatML, Llama 3), else
 * NULL. */
static const char *chat_template(const lt_tokenizer *tok, const json_t *config)
{
	const char *chat = json_string_value(json_object_get(config, "chat_template"));
	enum lt_chat_template t;
	if (chat || lt_chat_detect(tok, &t) != LT_OK)
		return chat;
	return t == LT_CHAT_CHATML ? chatml_jinja : t == LT_CHAT_LLAMA3 ? llama3_jinja : NULL;
}

/* bos and eos (tokenizer_config.json's, else the end-of-text token where
 * there is one), no token added by llama.cpp, and the chat template. */
static enum lt_status write_specials(lt_gguf_writer *w, const lt_tokenizer *tok, const json_t *config)
{
	int32_t eot = lt_tokenizer_eot_id(tok), bos = config_token(tok, config, "bos_token");
	int32_t eos = config_token(tok, config, "eos_token");
	const char *chat = chat_template(tok, config);
	enum lt_status st = LT_OK;
	bos = bos >= 0 ? bos : eot;
	eos = eos >= 0 ? eos : eot;
	if (bos >= 0)
		st = lt_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
	if (st == LT_OK && eos >= 0)
		st = lt_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
	if (st == LT_OK)
		st = lt_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 0);
	if (st == LT_OK)
		st = lt_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", 0);
	if (st == LT_OK && chat)
		st = lt_gguf_writer_add_str(w, "tokenizer.chat_template", chat);
	return st;
}

static enum lt_status add_gpt2(lt_gguf_writer *w, const struct gguf_kind *k, const struct gguf_vocab *v)
{
	enum lt_status st;
	if ((st = lt_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2")) != LT_OK ||
			(st = lt_gguf_writer_add_str(w, "tokenizer.ggml.pre", k->pre)) != LT_OK)
		return st;
	return lt_gguf_writer_add_strs(w, "tokenizer.ggml.merges", v->merges, v->n_merges);
}

static enum lt_status add_spm(lt_gguf_writer *w, const struct gguf_kind *k, const struct gguf_vocab *v)
{
	enum lt_status st;
	size_t unk = 0;
	while (unk < v->n && v->types[unk] != TT_UNKNOWN)
		unk++;
	if ((st = lt_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama")) != LT_OK ||
			(st = lt_gguf_writer_add_f32s(w, "tokenizer.ggml.scores", v->scores, v->n)) != LT_OK ||
			(st = lt_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", k->space_prefix)) != LT_OK)
		return st;
	return unk < v->n ? lt_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk) : LT_OK;
}

enum lt_status lt_tokenizer_add_gguf(const char *path, const char *config_path,
		const lt_tokenizer *tok, int32_t vocab_size, struct lt_gguf_writer *w)
{
	json_error_t err;
	json_t *root = json_load_file(path, 0, &err), *config = NULL;
	struct gguf_vocab v = { 0 };
	struct gguf_kind k = { 0 };
	enum lt_status st;
	if (!root) {
		lt_errmsg_set("%s:%d: %s", path, err.line, err.text);
		return LT_ERR_FORMAT;
	}
	if (config_path && !(config = json_load_file(config_path, 0, &err))) {
		json_decref(root);
		lt_errmsg_set("%s:%d: %s", config_path, err.line, err.text);
		return LT_ERR_FORMAT;
	}
	if ((st = check_writable(path, root, &k)) == LT_OK &&
			(st = read_gguf_vocab(path, root, (size_t)vocab_size, k.spm, &v)) == LT_OK &&
			(st = lt_gguf_writer_add_strs(w, "tokenizer.ggml.tokens", v.tokens, v.n)) == LT_OK &&
			(st = lt_gguf_writer_add_i32s(w, "tokenizer.ggml.token_type", v.types, v.n)) == LT_OK &&
			(st = k.spm ? add_spm(w, &k, &v) : add_gpt2(w, &k, &v)) == LT_OK)
		st = write_specials(w, tok, config);
	free_gguf_vocab(&v);
	json_decref(config);
	json_decref(root);
	return st;
}
