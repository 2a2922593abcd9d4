/* Fuzzes the tokenizer.json reader: lt_tokenizer_load on the input as a
 * file, and a tokenizer that loads encodes text, plainly and with its
 * added tokens split out (a fixed sample with
 * multi-byte, invalid UTF-8 and the special token's text, and the input's
 * own first bytes), decodes the ids again, is cloned as prepare's threads
 * clone it, and has its merges and tokens listed. As `lltrain prepare
 * --tokenizer FILE` does, it is saved again; what it saves must load back
 * to the same tokens and merges (training reads that copy). */
#include "config.h"
#define LT_FUZZ_NAME tokenizer
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

/* How much of the input is also encoded as text. */
#define TEXT_MAX 4096

static const char sample[] =
	"Hello, world! It's 2024 and we're testing 'll 've 'd's.\n\n\t  end  "
	"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 "
	"\xff\xfe bad \xc3 utf8 \xed\xa0\x80 <|endoftext|> x\r\n";

static void encode_decode(lt_tokenizer *tok, const char *text, size_t len)
{
	lt_ids ids = { 0 };
	char *back = NULL;
	size_t blen;

	if (lt_tokenizer_encode(tok, text, len, &ids) == LT_OK) {
		for (size_t i = 0; i < ids.n; i++)
			if (ids.v[i] < 0 || ids.v[i] >= lt_tokenizer_vocab_size(tok))
				abort(); /* encoding gives ids of the vocabulary */
		lt_tokenizer_append_eot(tok, &ids);
		if (lt_tokenizer_decode(tok, ids.v, ids.n, &back, &blen) == LT_OK)
			free(back);
	}
	/* Again with the added tokens split out of the text. */
	ids.n = 0;
	if (lt_tokenizer_encode_special(tok, text, len, &ids) == LT_OK)
		for (size_t i = 0; i < ids.n; i++)
			if (ids.v[i] < 0 || ids.v[i] >= lt_tokenizer_vocab_size(tok))
				abort();
	lt_ids_free(&ids);
}

static void walk(const lt_tokenizer *tok)
{
	int32_t n = lt_tokenizer_vocab_size(tok), a, b, to;
	size_t len;
	for (int32_t r = 0; r < lt_tokenizer_n_merges(tok); r++)
		if (lt_tokenizer_merge(tok, r, &a, &b, &to) != LT_OK || a < 0 || a >= n || b < 0 ||
		    b >= n || to < 0 || to >= n)
			abort(); /* merges name tokens of the vocabulary */
	for (int32_t i = 0; i < n; i++)
		if (!lt_tokenizer_token(tok, i, &len))
			abort();
	lt_tokenizer_merge(tok, -1, &a, &b, &to);
	lt_tokenizer_token(tok, n, &len);
}

/* 1 when a and b have the same tokens (bytes and special token) and merges. */
static int same_tokenizer(const lt_tokenizer *a, const lt_tokenizer *b)
{
	int32_t n = lt_tokenizer_vocab_size(a);
	if (n != lt_tokenizer_vocab_size(b) || lt_tokenizer_eot_id(a) != lt_tokenizer_eot_id(b) ||
	    lt_tokenizer_n_merges(a) != lt_tokenizer_n_merges(b))
		return 0;
	for (int32_t i = 0; i < n; i++) {
		size_t la, lb;
		const char *x = lt_tokenizer_token(a, i, &la), *y = lt_tokenizer_token(b, i, &lb);
		if (la != lb || memcmp(x, y, la) != 0)
			return 0;
	}
	for (int32_t r = 0; r < lt_tokenizer_n_merges(a); r++) {
		int32_t m[6];
		lt_tokenizer_merge(a, r, &m[0], &m[1], &m[2]);
		lt_tokenizer_merge(b, r, &m[3], &m[4], &m[5]);
		if (m[0] != m[3] || m[1] != m[4] || m[2] != m[5])
			return 0;
	}
	return 1;
}

/* Saves tok as prepare saves a given tokenizer; a copy that saves must load
 * back the same. */
static void save_and_reload(const lt_tokenizer *tok)
{
	const char *dir = lt_fuzz_path("saved");
	lt_tokenizer *back;
	if (lt_tokenizer_save(tok, dir, 64) != LT_OK)
		return;
	if (lt_tokenizer_load(dir, &back) != LT_OK || !same_tokenizer(tok, back))
		abort(); /* prepare would write a tokenizer.json that is not the one it used */
	lt_tokenizer_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = lt_fuzz_path("tokenizer.json");
	lt_tokenizer *tok, *clone;

	size = lt_fuzz_cap(size);
	lt_fuzz_write(path, data, size);
	if (lt_tokenizer_load(path, &tok) != LT_OK)
		return 0;
	walk(tok);
	encode_decode(tok, sample, sizeof sample - 1);
	encode_decode(tok, (const char *)data, size < TEXT_MAX ? size : TEXT_MAX);
	if (lt_tokenizer_clone(tok, &clone) == LT_OK) {
		encode_decode(clone, sample, sizeof sample - 1);
		lt_tokenizer_free(clone);
	}
	save_and_reload(tok);
	lt_tokenizer_free(tok);
	return 0;
}
