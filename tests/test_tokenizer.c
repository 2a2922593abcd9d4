/* Tests the byte-level BPE tokenizer (TAP): training against a plain
 * reference, round trips, save and load, bad files. Two more modes feed
 * tests/check_tokenizer.py, which holds the ids up to the Hugging Face
 * library:
 *   test_tokenizer --dump DIR          train on the test corpus, save to DIR,
 *                                      write DIR/cases.json (texts and ids)
 *   test_tokenizer --encode TOKENIZER CASES
 *                                      load TOKENIZER, print the ids of the
 *                                      texts of CASES as JSON, and the texts
 *                                      decoding gives back
 *   test_tokenizer --encode-special TOKENIZER CASES
 *                                      the same with added tokens split out
 *   test_tokenizer --resave TOKENIZER DIR
 *                                      load TOKENIZER and save it in DIR
 * where a TOKENIZER ending in .gguf is read as a GGUF file's. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkdtemp, clock_gettime under -std=c11 */
#endif
#include "text/tokenizer.h"
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ------------------------------------------------------------ corpus */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

struct sbuf {
	char *s;
	size_t n, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		while (b->n + n + 1 > b->cap)
			b->cap = b->cap ? 2 * b->cap : 4096;
		if (!(b->s = realloc(b->s, b->cap))) {
			fprintf(stderr, "test_tokenizer: out of memory\n");
			exit(1);
		}
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static const char *const words[] = {
	"the", "the", "the", "of", "and", "and", "to", "a", "a", "in", "is", "was", "that", "it", "for",
	"keeper", "light", "lamp", "ship", "ships", "water", "night", "morning", "evening", "wind",
	"letter", "letters", "counted", "wrote", "climbed", "stairs", "glass", "winter", "north",
	"south", "tea", "strong", "grey", "sea", "west", "every", "month", "bright", "long",
	"don't", "it's", "we'll", "they've", "I'm", "you'd", "She's", "The", "He", "Every",
	"café", "naïve", "crème", "brûlée", "über", "Straße", "façade", "año", "niño",
	"中文", "分词", "日本語", "テキスト", "한국어", "Привет", "мир", "αβγ", "مرحبا", "नमस्ते",
	"🙂", "👍🏽", "🚢", "☕", "2024", "3.14", "42", "1,000", "12345", "007",
	"(x+1)", "a_b", "--", "...", "!", "?", "\"quoted\"", "'single'", "#tag", "e-mail",
};

static const char *const syllables[] = {
	"ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "an", "en", "or", "st", "th", "ing", "er",
	"é", "ü", "ñ", "ø", "ß", "ж", "ы", "λ", "ω", "中", "日", "本", "語", "한", "글",
};

/* Deterministic text: sentences of words from the list (the front more
 * often) and of made-up words, numbers, runs of spaces, tabs, blank
 * lines. */
static void make_corpus(struct sbuf *b, size_t bytes, uint64_t seed)
{
	size_t nw = sizeof words / sizeof *words, ns = sizeof syllables / sizeof *syllables;
	char num[16];
	rng_state = seed * 0x9e3779b97f4a7c15ULL + 1;
	while (b->n < bytes) {
		int len = 3 + (int)rnd(12), i, k;
		for (i = 0; i < len; i++) {
			uint32_t r = rnd(1000), kind = rnd(10);
			if (i)
				sb_puts(b, rnd(20) == 0 ? "  " : rnd(40) == 0 ? "\t" : " ");
			if (kind < 6) {
				/* Squaring a uniform draw favours the front of the list. */
				sb_puts(b, words[(uint64_t)r * r * nw / 1000000]);
			} else if (kind < 9) {
				/* Made-up words, also skewed to a small stock. */
				uint32_t w = rnd(3000);
				uint64_t save = rng_state;
				rng_state = (uint64_t)w * w / 3000 + 77;
				for (k = 1 + (int)rnd(4); k > 0; k--)
					sb_puts(b, syllables[rnd((uint32_t)ns)]);
				rng_state = save;
			} else {
				uint32_t top = rnd(100000), div = 1 + rnd(1000);
				snprintf(num, sizeof num, "%u", top / div);
				sb_puts(b, num);
			}
		}
		switch (rnd(10)) {
		case 0: sb_puts(b, ".\n\n"); break;
		case 1: sb_puts(b, "!\n"); break;
		case 2: sb_puts(b, ", "); break;
		case 3: sb_puts(b, "   \n"); break;
		default: sb_puts(b, ". "); break;
		}
	}
}

/* Texts whose ids are compared with the Hugging Face library; none holds
 * "<|endoftext|>", which that library splits out of text. */
static const char *const cases[] = {
	"Hello, world!",
	"The keeper of the north light wrote in his log every evening.",
	"The café served naïve crème brûlée in the façade of the Straße.",
	"中文分词测试，日本語のテキスト。한국어 문장입니다.",
	"Numbers: 0 1 12 123 1234 12345 3.14159 1,000,000 ①②③ ½ ٣٤",
	"Emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 ship🚢tea☕",
	"tabs\tand\t\tspaces   here    \n\n\nnew lines\r\nwindows\r\n",
	"   leading and trailing   ",
	"don't it's we'll they've I'm you'd she's 'quoted' DON'T I'LL",
	"",
	" ",
	"\n",
	"a",
	"x  \n\n y",
	"nbsp\u00a0here\u3000ideographic\u2028line\xc2\x85nel\u180emongolian\u200bzero",
	"Mixed: αβγ δε Привет мир مرحبا שלום नमस्ते",
	"combining e\u0301 a\u0308 ﬁ ligature ZWJ\u200d!",
	"int main(void) { return 0; } // x += 1; y->z[3] = \"s\";",
	"     \n\n\t\t  \n",
	"every every every evening, the the the lamp lamp",
};

#define N_CASES (sizeof cases / sizeof *cases)

static lt_tokenizer *train_corpus(const char *text, size_t len, int vocab_size)
{
	struct lt_tokenizer_train_opts o = { .vocab_size = vocab_size };
	lt_tokenizer *tok;
	enum lt_status st = lt_tokenizer_train_buffer(text, len, &o, &tok);
	if (st != LT_OK) {
		tap_diag("training failed: %s: %s", lt_status_str(st), lt_errmsg());
		return NULL;
	}
	return tok;
}

static int encode_str(lt_tokenizer *tok, const char *s, size_t n, lt_ids *ids)
{
	enum lt_status st;
	ids->n = 0;
	if ((st = lt_tokenizer_encode(tok, s, n, ids)) != LT_OK) {
		tap_diag("encode: %s: %s", lt_status_str(st), lt_errmsg());
		return 0;
	}
	return 1;
}

/* Encodes then decodes s[0..n); 1 if the bytes come back. */
static int round_trip(lt_tokenizer *tok, const char *s, size_t n, size_t *n_ids)
{
	lt_ids ids = { 0 };
	char *back = NULL;
	size_t blen = 0;
	int ok = encode_str(tok, s, n, &ids) &&
		lt_tokenizer_decode(tok, ids.v, ids.n, &back, &blen) == LT_OK &&
		blen == n && memcmp(back, s, n) == 0;
	if (n_ids)
		*n_ids = ids.n;
	free(back);
	lt_ids_free(&ids);
	return ok;
}

static int same_ids(const lt_ids *a, const lt_ids *b)
{
	return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

static int same_merges(const lt_tokenizer *a, const lt_tokenizer *b)
{
	int32_t i, x[3], y[3];
	if (lt_tokenizer_vocab_size(a) != lt_tokenizer_vocab_size(b) ||
			lt_tokenizer_n_merges(a) != lt_tokenizer_n_merges(b))
		return 0;
	for (i = 0; i < lt_tokenizer_n_merges(a); i++) {
		lt_tokenizer_merge(a, i, &x[0], &x[1], &x[2]);
		lt_tokenizer_merge(b, i, &y[0], &y[1], &y[2]);
		if (memcmp(x, y, sizeof x) != 0)
			return 0;
	}
	for (i = 0; i < lt_tokenizer_vocab_size(a); i++) {
		size_t la, lb;
		const char *ta = lt_tokenizer_token(a, i, &la), *tb = lt_tokenizer_token(b, i, &lb);
		if (la != lb || memcmp(ta, tb, la) != 0)
			return 0;
	}
	return 1;
}

/* ------------------------------------------------ reference trainer */

/* A plain BPE trainer to hold the real one to: it recounts every pair of
 * every word at each step. Words are the pre-tokens of text made only of
 * lower-case words, single spaces and newlines, where GPT-2's pattern gives
 * the first word of a line, " word" for the others, and "\n". */
#define REF_VOCAB 420

struct ref_word {
	int32_t sym[64];
	int n;
	long count;
};

static int ref_train(const char *text, int32_t (*merges)[3], int *n_merges, int *n_vocab)
{
	static struct ref_word w[4096];
	static long cnt[REF_VOCAB][REF_VOCAB];
	static char tokb[REF_VOCAB][64];
	static int tokl[REF_VOCAB];
	int nw = 0, nv = 257, nm = 0, i, j, a, b;
	const char *p = text;

	for (i = 0; i < 256; i++) {
		tokb[i][0] = (char)i;
		tokl[i] = 1;
	}
	tokl[256] = 0;
	while (*p) {
		const char *s = p;
		int n;
		if (*p == '\n')
			p++;
		else
			for (p += (*p == ' '); *p && *p != ' ' && *p != '\n'; p++)
				;
		n = (int)(p - s);
		if (n > 64)
			return 0;
		for (i = 0; i < nw; i++) {
			for (j = 0; j < n && w[i].n == n && w[i].sym[j] == (unsigned char)s[j]; j++)
				;
			if (j == n && w[i].n == n)
				break;
		}
		if (i < nw) {
			w[i].count++;
			continue;
		}
		if (nw == 4096)
			return 0;
		for (j = 0; j < n; j++)
			w[nw].sym[j] = (unsigned char)s[j];
		w[nw].n = n;
		w[nw++].count = 1;
	}
	while (nv < REF_VOCAB) {
		long best = 0;
		int ba = -1, bb = -1, to = -1, la, lb;
		memset(cnt, 0, sizeof cnt);
		for (i = 0; i < nw; i++)
			for (j = 0; j + 1 < w[i].n; j++)
				cnt[w[i].sym[j]][w[i].sym[j + 1]] += w[i].count;
		for (a = 0; a < nv; a++)
			for (b = 0; b < nv; b++)
				if (cnt[a][b] > best) {
					best = cnt[a][b];
					ba = a;
					bb = b;
				}
		if (best == 0)
			break;
		la = tokl[ba];
		lb = tokl[bb];
		if (la + lb > 64)
			return 0;
		for (i = 0; i < nv; i++)
			if (tokl[i] == la + lb && !memcmp(tokb[i], tokb[ba], (size_t)la) &&
					!memcmp(tokb[i] + la, tokb[bb], (size_t)lb))
				to = i;
		if (to < 0) {
			to = nv++;
			memcpy(tokb[to], tokb[ba], (size_t)la);
			memcpy(tokb[to] + la, tokb[bb], (size_t)lb);
			tokl[to] = la + lb;
		}
		merges[nm][0] = ba;
		merges[nm][1] = bb;
		merges[nm][2] = to;
		nm++;
		for (i = 0; i < nw; i++) {
			int o = 0;
			for (j = 0; j < w[i].n;)
				if (j + 1 < w[i].n && w[i].sym[j] == ba && w[i].sym[j + 1] == bb) {
					w[i].sym[o++] = to;
					j += 2;
				} else {
					w[i].sym[o++] = w[i].sym[j++];
				}
			w[i].n = o;
		}
	}
	*n_merges = nm;
	*n_vocab = nv;
	return 1;
}

static void test_reference(void)
{
	static const char *const syl[] = { "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "an", "en", "o", "u" };
	static int32_t ref[REF_VOCAB][3];
	char lex[80][16];
	struct sbuf b = { 0 };
	lt_tokenizer *tok;
	int i, j, nm = 0, nv = 0, same;

	rng_state = 12345;
	for (i = 0; i < 80; i++) {
		int k = 1 + (int)rnd(3);
		lex[i][0] = '\0';
		for (j = 0; j < k; j++)
			strcat(lex[i], syl[rnd(12)]);
	}
	for (i = 0; i < 3000; i++) {
		int k = 2 + (int)rnd(8);
		for (j = 0; j < k; j++) {
			uint32_t r = rnd(80);
			if (j)
				sb_puts(&b, " ");
			sb_puts(&b, lex[r * r / 80]);
		}
		sb_puts(&b, "\n");
	}
	if (!tap_ok(ref_train(b.s, ref, &nm, &nv), "reference trainer ran on %zu bytes", b.n)) {
		free(b.s);
		return;
	}
	tok = train_corpus(b.s, b.n, REF_VOCAB);
	same = tok && lt_tokenizer_vocab_size(tok) == nv && lt_tokenizer_n_merges(tok) == nm;
	for (i = 0; same && i < nm; i++) {
		int32_t x[3];
		lt_tokenizer_merge(tok, i, &x[0], &x[1], &x[2]);
		if (memcmp(x, ref[i], sizeof x) != 0) {
			tap_diag("merge %d: (%d %d -> %d), reference (%d %d -> %d)", i, x[0], x[1], x[2],
					ref[i][0], ref[i][1], ref[i][2]);
			same = 0;
		}
	}
	tap_ok(same, "incremental training gives the reference's %d merges and %d ids", nm, nv);
	lt_tokenizer_free(tok);
	free(b.s);
}

/* --------------------------------------------------------- bad files */

static char tmpdir[4096];

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	if (!f || fputs(text, f) == EOF || fclose(f) != 0) {
		fprintf(stderr, "test_tokenizer: cannot write %s\n", path);
		exit(1);
	}
}

#define BYTE_LEVEL_PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}"

static void expect_load_error(const char *name, const char *text, enum lt_status want, const char *msg)
{
	char path[4200];
	lt_tokenizer *tok = NULL;
	enum lt_status st;

	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	write_text(path, text);
	st = lt_tokenizer_load(path, &tok);
	if (!tap_ok(st == want && strstr(lt_errmsg(), msg) && strstr(lt_errmsg(), name) && !tok,
				"%s: fails with '%s'", name, msg))
		tap_diag("got %s: %s", lt_status_str(st), lt_errmsg());
	lt_tokenizer_free(tok);
	unlink(path);
}

static void test_bad_files(void)
{
	char path[4200];
	lt_tokenizer *tok = NULL;
	enum lt_status st;

	expect_load_error("notjson.json", "{\n  \"model\": {\n    \"type\": ,\n  }\n}\n", LT_ERR_FORMAT,
			"not JSON: line 3 column");
	expect_load_error("wordpiece.json",
			"{" BYTE_LEVEL_PRE ", \"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", LT_ERR_FORMAT,
			"model.type is 'WordPiece', expected 'BPE'");
	expect_load_error("array.json", "[1, 2, 3]", LT_ERR_FORMAT, "the top level is an array, expected an object");
	expect_load_error("prefix.json",
			"{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true}, "
			"\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
			LT_ERR_FORMAT, "pre_tokenizer.add_prefix_space is true, expected false");
	expect_load_error("whitespace.json",
			"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "pre_tokenizer.type is 'Whitespace', expected ByteLevel, Split, Digits, Metaspace");
	expect_load_error("punct.json",
			"{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\"}, "
			"{\"type\": \"Punctuation\"}]}, \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "pre_tokenizer.pretokenizers[1].type is 'Punctuation'");
	expect_load_error("behavior.json",
			"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
			"\"behavior\": \"Sideways\"}, \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "pre_tokenizer.behavior is 'Sideways', expected Isolated");
	expect_load_error("badregex.json",
			"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
			"\"behavior\": \"Isolated\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
			LT_ERR_FORMAT, "cannot compile the pre-tokenizer's pattern");
	expect_load_error("nfc.json",
			"{\"normalizer\": {\"type\": \"NFC\"}, " BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "normalizer.type is 'NFC', expected Prepend, Replace");
	expect_load_error("bytenorm.json",
			"{\"normalizer\": {\"type\": \"Prepend\", \"prepend\": \"x\"}, " BYTE_LEVEL_PRE
			", \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "normalizer.type is 'Prepend' in a byte-level tokenizer, expected no normalizer");
	expect_load_error("wpdecoder.json",
			"{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, {\"type\": \"WordPiece\"}]}, "
			"\"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "decoder.decoders[1].type is 'WordPiece'");
	expect_load_error("lstrip.json",
			"{\"added_tokens\": [{\"id\": 0, \"content\": \"<m>\", \"lstrip\": true}], " BYTE_LEVEL_PRE
			", \"model\": {\"type\": \"BPE\"}}",
			LT_ERR_FORMAT, "added_tokens[0].lstrip is true, expected false");
	{
		/* Bytes without a token are unknown, and with no unk_token they
		 * are dropped, as the Hugging Face library does. */
		lt_ids ids = { 0 };
		snprintf(path, sizeof path, "%s/nobytes.json", tmpdir);
		write_text(path, "{" BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
				"\"merges\": []}}");
		st = lt_tokenizer_load(path, &tok);
		tap_ok(st == LT_OK && lt_tokenizer_encode(tok, "ab\x01 a", 5, &ids) == LT_OK && ids.n == 3 &&
				ids.v[0] == 0 && ids.v[1] == 1 && ids.v[2] == 0,
				"a vocabulary without some byte tokens loads and drops those bytes");
		lt_ids_free(&ids);
		lt_tokenizer_free(tok);
		tok = NULL;
		unlink(path);
	}
	expect_load_error("hole.json",
			"{" BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}",
			LT_ERR_FORMAT, "id 1 is in neither model.vocab nor added_tokens");
	expect_load_error("badid.json",
			"{" BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"zero\"}, \"merges\": []}}",
			LT_ERR_FORMAT, "model.vocab['a'] is a string, expected an id");

	snprintf(path, sizeof path, "%s/absent.json", tmpdir);
	st = lt_tokenizer_load(path, &tok);
	tap_ok(st == LT_ERR_NOTFOUND && strstr(lt_errmsg(), "absent.json"), "a missing file is not found: %s",
			lt_errmsg());
	{
		const char *paths[1] = { path };
		struct lt_tokenizer_train_opts o = { .vocab_size = 300 };
		st = lt_tokenizer_train_files(paths, 1, &o, &tok);
		tap_ok(st == LT_ERR_NOTFOUND && strstr(lt_errmsg(), "absent.json") && !tok,
				"training on a missing file fails naming it: %s", lt_errmsg());
	}
}

/* A file that is a real tokenizer but with one merge broken. */
static void test_bad_merge(const char *good_dir)
{
	char path[4200];
	json_error_t jerr;
	json_t *root;
	lt_tokenizer *tok = NULL;
	enum lt_status st;

	snprintf(path, sizeof path, "%s/tokenizer.json", good_dir);
	if (!(root = json_load_file(path, 0, &jerr))) {
		tap_ok(0, "reload saved tokenizer.json with jansson: %s", jerr.text);
		return;
	}
	json_array_set_new(json_object_get(json_object_get(root, "model"), "merges"), 3,
			json_string("Ġth nosuchtoken"));
	snprintf(path, sizeof path, "%s/badmerge.json", tmpdir);
	json_dump_file(root, path, 0);
	json_decref(root);
	st = lt_tokenizer_load(path, &tok);
	tap_ok(st == LT_ERR_FORMAT && strstr(lt_errmsg(), "merges[3] 'Ġth nosuchtoken': 'nosuchtoken' is not in model.vocab"),
			"a merge of an unknown token fails: %s", lt_errmsg());
	lt_tokenizer_free(tok);
	unlink(path);
}

/* ------------------------------------------------------------- tests */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_config(const char *dir)
{
	char path[4200];
	json_error_t jerr;
	json_t *cfg;

	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	cfg = json_load_file(path, 0, &jerr);
	tap_ok(cfg && !strcmp(json_string_value(json_object_get(cfg, "tokenizer_class")), "PreTrainedTokenizerFast") &&
			!strcmp(json_string_value(json_object_get(cfg, "eos_token")), LT_TOKENIZER_EOT) &&
			json_integer_value(json_object_get(cfg, "model_max_length")) == 2048,
			"tokenizer_config.json names the class, the eos token and model_max_length");
	json_decref(cfg);
}

static void test_files_equal_buffer(void)
{
	struct lt_tokenizer_train_opts o = { .vocab_size = 1200 };
	struct sbuf b = { 0 };
	char path[4200];
	const char *paths[1] = { path };
	lt_tokenizer *a = NULL, *c = NULL;
	enum lt_status st;
	double t0;

	/* Over 2 MiB, so the file is read in blocks cut in the middle. */
	make_corpus(&b, (5u << 20) / 2, 7);
	snprintf(path, sizeof path, "%s/big.txt", tmpdir);
	write_text(path, b.s);
	t0 = now();
	st = lt_tokenizer_train_files(paths, 1, &o, &a);
	tap_diag("trained %d ids on a %.1f MB file in %.2f s", a ? lt_tokenizer_vocab_size(a) : 0, b.n / 1e6,
			now() - t0);
	if (st == LT_OK)
		st = lt_tokenizer_train_buffer(b.s, b.n, &o, &c);
	tap_ok(st == LT_OK && same_merges(a, c), "training from a file read in blocks equals training from memory");
	lt_tokenizer_free(a);
	lt_tokenizer_free(c);
	unlink(path);
	free(b.s);
}

static void run_tests(void)
{
	struct lt_tokenizer_train_opts o = { .vocab_size = 1000 };
	struct sbuf corpus = { 0 };
	lt_tokenizer *tok = NULL, *loaded = NULL, *clone = NULL;
	lt_ids ids = { 0 }, ids2 = { 0 };
	enum lt_status st;
	char *back = NULL;
	size_t i, n, blen;
	double t0;
	int ok;

	snprintf(tmpdir, sizeof tmpdir, "%s/test_tokenizer.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		tap_skip_all("cannot create a temporary directory under %s", tmpdir);

	/* Refusals. */
	st = lt_tokenizer_train_buffer("", 0, &o, &tok);
	tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "empty") && !tok, "an empty corpus is refused: %s", lt_errmsg());
	o.vocab_size = 100;
	st = lt_tokenizer_train_buffer("abc", 3, &o, &tok);
	tap_ok(st == LT_ERR_CONFIG && !tok, "a vocabulary smaller than 257 is refused: %s", lt_errmsg());
	o.vocab_size = 1000;
	o.min_frequency = 1000000000;
	st = lt_tokenizer_train_buffer("abababab abab", 13, &o, &tok);
	tap_ok(st == LT_OK && lt_tokenizer_vocab_size(tok) == 257 && lt_tokenizer_n_merges(tok) == 0,
			"no pair reaches min_frequency: only the bytes and the special token");
	lt_tokenizer_free(tok);
	tok = NULL;
	o.min_frequency = 0;

	test_reference();

	/* Training. */
	make_corpus(&corpus, 400000, 1);
	t0 = now();
	tok = train_corpus(corpus.s, corpus.n, 1000);
	if (!tap_ok(tok != NULL, "trains on a %zu-byte corpus in %.3f s", corpus.n, now() - t0))
		goto out;
	tap_ok(lt_tokenizer_vocab_size(tok) == 1000 && lt_tokenizer_eot_id(tok) == LT_TOKENIZER_EOT_ID,
			"vocabulary of %d with '%s' at %d", lt_tokenizer_vocab_size(tok), LT_TOKENIZER_EOT,
			lt_tokenizer_eot_id(tok));
	ok = 1;
	for (i = 0; i < 256; i++) {
		const char *t = lt_tokenizer_token(tok, (int32_t)i, &n);
		ok &= n == 1 && (unsigned char)t[0] == i;
	}
	{
		const char *t = lt_tokenizer_token(tok, LT_TOKENIZER_EOT_ID, &n);
		ok &= n == strlen(LT_TOKENIZER_EOT) && !memcmp(t, LT_TOKENIZER_EOT, n);
	}
	tap_ok(ok, "ids 0..255 are the bytes and 256 is the special token");
	ok = encode_str(tok, " the", 4, &ids) && ids.n == 1;
	ok &= encode_str(tok, " keeper", 7, &ids) && ids.n == 1;
	tap_ok(ok, "frequent words (' the', ' keeper') are one token each");

	/* Round trips. */
	for (i = 0; i < N_CASES; i++) {
		size_t nid = 0;
		ok = round_trip(tok, cases[i], strlen(cases[i]), &nid);
		tap_ok(ok, "round trip of case %zu (%zu bytes, %zu ids)", i, strlen(cases[i]), nid);
	}
	{
		static const char bad[] = "\xff\xfe abc \xc3( \xe2\x82 caf\xc3\xa9\x80 \xf0\x9f\x99\x82\xf0 end\xc3";
		tap_ok(round_trip(tok, bad, sizeof bad - 1, NULL), "round trip of bytes that are not UTF-8");
	}
	{
		static const char nul[] = "a\0b\0\0 c";
		tap_ok(round_trip(tok, nul, sizeof nul - 1, NULL), "round trip of text with NUL bytes");
	}
	{
		struct sbuf lng = { 0 };
		for (i = 0; i < 20000; i++)
			sb_puts(&lng, " ");
		for (i = 0; i < 20000; i++)
			sb_puts(&lng, "ab");
		sb_puts(&lng, "\n\n\n");
		for (i = 0; i < 5000; i++)
			sb_puts(&lng, "日本");
		tap_ok(round_trip(tok, lng.s, lng.n, NULL), "round trip of long runs (%zu bytes)", lng.n);
		free(lng.s);
	}
	ok = round_trip(tok, corpus.s, corpus.n, &n);
	tap_ok(ok, "round trip of the whole corpus (%zu ids)", n);

	/* The special token is never made from text. */
	ok = encode_str(tok, "a<|endoftext|>b", 15, &ids);
	for (i = 0; ok && i < ids.n; i++)
		ok = ids.v[i] != LT_TOKENIZER_EOT_ID;
	st = lt_tokenizer_append_eot(tok, &ids);
	tap_ok(ok && st == LT_OK && ids.v[ids.n - 1] == LT_TOKENIZER_EOT_ID,
			"text '<|endoftext|>' encodes as plain text; append_eot adds id 256");
	/* encode_special splits the added tokens out; token_id finds them. */
	ids.n = 0;
	ok = lt_tokenizer_encode_special(tok, "a<|endoftext|>b<|endoftext|>", 28, &ids) == LT_OK && ids.n == 4 &&
		ids.v[0] == 'a' && ids.v[1] == LT_TOKENIZER_EOT_ID && ids.v[2] == 'b' && ids.v[3] == LT_TOKENIZER_EOT_ID;
	tap_ok(ok, "encode_special gives the special token's id where the text spells it");
	tap_ok(lt_tokenizer_token_id(tok, LT_TOKENIZER_EOT, strlen(LT_TOKENIZER_EOT)) == LT_TOKENIZER_EOT_ID &&
			lt_tokenizer_token_id(tok, "a", 1) == 'a' && lt_tokenizer_token_id(tok, "<|nosuch|>", 10) == -1 &&
			lt_tokenizer_token_id(tok, "", 0) == -1,
			"token_id finds '%s', a byte's token, and no absent text", LT_TOKENIZER_EOT);
	{
		int32_t badid[2] = { 5, 1000 };
		st = lt_tokenizer_decode(tok, badid, 2, &back, &blen);
		tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "1000") && !back, "decoding an unknown id fails: %s",
				lt_errmsg());
	}

	/* The cache changes nothing; a clone encodes the same. */
	ok = encode_str(tok, corpus.s, corpus.n, &ids) && encode_str(tok, corpus.s, corpus.n, &ids2) &&
		same_ids(&ids, &ids2);
	ok &= lt_tokenizer_clone(tok, &clone) == LT_OK && encode_str(clone, corpus.s, corpus.n, &ids2) &&
		same_ids(&ids, &ids2);
	tap_ok(ok, "encoding twice and encoding with a clone give the same ids");

	/* Save, load, encode the same. */
	st = lt_tokenizer_save(tok, tmpdir, 2048);
	if (!tap_ok(st == LT_OK, "saves tokenizer.json and tokenizer_config.json"))
		tap_diag("%s: %s", lt_status_str(st), lt_errmsg());
	st = lt_tokenizer_load(tmpdir, &loaded);
	if (!tap_ok(st == LT_OK, "loads it back"))
		tap_diag("%s: %s", lt_status_str(st), lt_errmsg());
	tap_ok(loaded && same_merges(tok, loaded) && lt_tokenizer_eot_id(loaded) == LT_TOKENIZER_EOT_ID,
			"the loaded tokenizer has the same tokens, merges and special token");
	ok = loaded != NULL;
	for (i = 0; ok && i < N_CASES; i++)
		ok = encode_str(tok, cases[i], strlen(cases[i]), &ids) &&
			encode_str(loaded, cases[i], strlen(cases[i]), &ids2) && same_ids(&ids, &ids2);
	ok = ok && encode_str(tok, corpus.s, corpus.n, &ids) && encode_str(loaded, corpus.s, corpus.n, &ids2) &&
		same_ids(&ids, &ids2);
	tap_ok(ok, "the loaded tokenizer encodes every case and the corpus to the same ids");
	test_config(tmpdir);
	test_bad_merge(tmpdir);

	test_bad_files();
	test_files_equal_buffer();
out:
	{
		char path[4200];
		snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
		unlink(path);
		snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
	free(back);
	lt_ids_free(&ids);
	lt_ids_free(&ids2);
	lt_tokenizer_free(tok);
	lt_tokenizer_free(loaded);
	lt_tokenizer_free(clone);
	free(corpus.s);
}

/* ----------------------------------------- modes for check_tokenizer.py */

static json_t *ids_json(const lt_ids *ids)
{
	json_t *a = json_array();
	size_t i;
	for (i = 0; i < ids->n; i++)
		json_array_append_new(a, json_integer(ids->v[i]));
	return a;
}

static int die(const char *what, enum lt_status st)
{
	fprintf(stderr, "test_tokenizer: %s: %s: %s\n", what, lt_status_str(st), lt_errmsg());
	return 1;
}

/* Trains on the test corpus, saves to dir, writes dir/cases.json:
 * {"corpus": text, "cases": [{"text": ..., "ids": [...]}, ...]}. */
static int dump(const char *dir)
{
	struct sbuf corpus = { 0 };
	lt_tokenizer *tok;
	lt_ids ids = { 0 };
	json_t *root = json_object(), *arr = json_array();
	enum lt_status st;
	char path[4200];
	size_t i, k;

	make_corpus(&corpus, 400000, 1);
	if (!(tok = train_corpus(corpus.s, corpus.n, 1000)))
		return 1;
	if ((st = lt_tokenizer_save(tok, dir, 2048)) != LT_OK)
		return die("save", st);
	/* The fixed cases, then a few pieces of the corpus. */
	for (i = 0; i < N_CASES + 8; i++) {
		const char *s = i < N_CASES ? cases[i] : corpus.s + (i - N_CASES) * 40000;
		size_t n = i < N_CASES ? strlen(s) : 3000;
		json_t *c;
		/* Corpus pieces start and end on ASCII, so they are valid UTF-8. */
		if (i >= N_CASES) {
			while ((unsigned char)s[0] >= 0x80)
				s++;
			for (k = n; k > 0 && (unsigned char)s[k - 1] >= 0x80; k--)
				;
			n = k;
		}
		ids.n = 0;
		if ((st = lt_tokenizer_encode(tok, s, n, &ids)) != LT_OK)
			return die("encode", st);
		c = json_pack("{s:s%, s:o}", "text", s, n, "ids", ids_json(&ids));
		if (!c)
			return die("a case is not valid UTF-8", LT_ERR_ARG);
		json_array_append_new(arr, c);
	}
	json_object_set_new(root, "corpus", json_stringn(corpus.s, corpus.n));
	json_object_set_new(root, "cases", arr);
	snprintf(path, sizeof path, "%s/cases.json", dir);
	if (json_dump_file(root, path, JSON_INDENT(1)) != 0) {
		fprintf(stderr, "test_tokenizer: cannot write %s\n", path);
		return 1;
	}
	json_decref(root);
	lt_ids_free(&ids);
	lt_tokenizer_free(tok);
	free(corpus.s);
	return 0;
}

/* A tokenizer.json, or the tokenizer of a .gguf file. */
static enum lt_status load_any(const char *path, lt_tokenizer **tok)
{
	size_t n = strlen(path);
	if (n > 5 && !strcmp(path + n - 5, ".gguf"))
		return lt_tokenizer_load_gguf(path, tok);
	return lt_tokenizer_load(path, tok);
}

/* Loads a tokenizer and prints {"ids": [[...], ...]} for the texts of a
 * cases file; with special, the texts are encoded with their added tokens
 * split out, and "decoded" holds what decoding those ids gives. */
static int encode_cases(const char *tok_path, const char *cases_path, int special)
{
	lt_tokenizer *tok;
	lt_ids ids = { 0 };
	json_error_t jerr;
	json_t *root, *arr, *c, *out, *dec;
	enum lt_status st;
	size_t i;

	if ((st = load_any(tok_path, &tok)) != LT_OK)
		return die("load", st);
	out = json_array();
	dec = json_array();
	if (!(root = json_load_file(cases_path, 0, &jerr))) {
		fprintf(stderr, "test_tokenizer: %s: line %d: %s\n", cases_path, jerr.line, jerr.text);
		return 1;
	}
	arr = json_object_get(root, "cases");
	json_array_foreach(arr, i, c) {
		const json_t *t = json_object_get(c, "text");
		char *back;
		size_t blen;
		ids.n = 0;
		st = special ? lt_tokenizer_encode_special(tok, json_string_value(t), json_string_length(t), &ids)
			: lt_tokenizer_encode(tok, json_string_value(t), json_string_length(t), &ids);
		if (st != LT_OK)
			return die("encode", st);
		json_array_append_new(out, ids_json(&ids));
		if ((st = lt_tokenizer_decode(tok, ids.v, ids.n, &back, &blen)) != LT_OK)
			return die("decode", st);
		json_array_append_new(dec, json_stringn(back, blen));
		free(back);
	}
	c = json_pack("{s:o, s:o}", "ids", out, "decoded", dec);
	json_dumpf(c, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(c);
	json_decref(root);
	lt_ids_free(&ids);
	lt_tokenizer_free(tok);
	return 0;
}

/* Loads a tokenizer and saves it into dir, as prepare does. */
static int resave(const char *tok_path, const char *dir)
{
	lt_tokenizer *tok;
	enum lt_status st;

	if ((st = load_any(tok_path, &tok)) != LT_OK)
		return die("load", st);
	st = lt_tokenizer_save(tok, dir, 2048);
	lt_tokenizer_free(tok);
	return st == LT_OK ? 0 : die("save", st);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--dump"))
		return dump(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "--encode"))
		return encode_cases(argv[2], argv[3], 0);
	if (argc == 4 && !strcmp(argv[1], "--encode-special"))
		return encode_cases(argv[2], argv[3], 1);
	if (argc == 4 && !strcmp(argv[1], "--resave"))
		return resave(argv[2], argv[3]);
	if (argc != 1) {
		fprintf(stderr, "usage: test_tokenizer [--dump DIR | --encode[-special] TOKENIZER_JSON CASES_JSON |"
				" --resave TOKENIZER_JSON DIR]\n");
		return 2;
	}
	run_tests();
	return tap_done();
}
