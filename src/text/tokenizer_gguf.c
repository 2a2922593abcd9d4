/* The tokenizer of a GGUF file (see tokenizer.h): its vocabulary put into
 * the tokenizer.json document that Hugging Face's conversion of the same
 * model gives, which the tokenizer.json reader then loads, so both forms
 * encode alike and saving writes a tokenizer.json. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"
#include "io/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Token types of tokenizer.ggml.token_type. */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* The pre-tokenizers of tokenizer.ggml.pre, as tokenizer.json has them. */
static const struct {
	const char *name, *json;
	int ignore_merges;
} pres[] = {
	{ "gpt2", "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}", 0 },
	{ "smollm", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": true}, "
		"{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}]}", 0 },
	{ "llama-bpe", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
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
		for (i = 0; i < sizeof pres / sizeof *pres && strcmp(pres[i].name, pre); i++)
			;
		if (i == sizeof pres / sizeof *pres) {
			lt_errmsg_set("tokenizer.ggml.pre is '%s', expected gpt2, smollm or llama-bpe", pre);
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
