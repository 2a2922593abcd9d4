/* Fuzzes what reads the corpus text itself: lt_prepare_run on the input as
 * a corpus file (documents split at separator lines, a tokenizer trained
 * on it or a given one loaded, every document encoded into shards), and
 * the tokenizer's encoding, which must give back every byte string
 * (binary junk and invalid UTF-8 included) when its ids are decoded. A
 * preparation that succeeds must hold each document's ids, encoded whole by
 * the tokenizer it wrote, then the end-of-text id, in its split and in
 * corpus order, however the text was cut into pieces on the way.
 *
 * The first three bytes of an input are not part of the corpus but choose
 * the preparation: byte 0 bit 0 trains a tokenizer (of 257 to 320 tokens,
 * bits 1-6) instead of using one trained once on a fixed text, bit 7 holds
 * out a fifth of the documents; byte 1 bits 0-1 pick the document
 * separator ("", "%", "--" or "x"), bits 2-7 the shard size (1 + 4 v^2
 * tokens for their value v: 1 to 15877); byte 2 is the size of the blocks
 * the file is read in (1 to 255 bytes, so that short texts are cut into
 * pieces; 0: the default). */
#include "config.h"
#define LT_FUZZ_NAME corpus
#include "fuzz.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/shard.h"
#include "text/prepare.h"
#include "text/tokenizer.h"

static const char training_text[] =
	"The keeper of the north light wrote in his log every evening. The wind came "
	"from the west and the sea was grey.\n%\nIn the morning he cleaned the glass: "
	"one fishing boat, two cargo ships \xe2\x80\x94 caf\xc3\xa9, na\xc3\xafve, "
	"\xe6\x97\xa5\xe6\x9c\xac 12345 !!! ...\n";

static lt_tokenizer *fixed;     /* trained once on training_text */
static const char *fixed_path;  /* and saved as this tokenizer.json */

static void teardown(void)
{
	lt_tokenizer_free(fixed);
}

static void setup(void)
{
	struct lt_tokenizer_train_opts to = { .vocab_size = 300, .min_frequency = 1 };
	if (lt_tokenizer_train_buffer(training_text, sizeof training_text - 1, &to, &fixed) != LT_OK ||
	    lt_tokenizer_save(fixed, lt_fuzz_path("tok"), 64) != LT_OK)
		abort();
	fixed_path = lt_fuzz_path("tok/tokenizer.json");
	atexit(teardown);
}

/* decode(encode(text)) must be text. */
static void round_trip(lt_tokenizer *tok, const char *text, size_t len)
{
	lt_ids ids = { 0 };
	char *back = NULL;
	size_t blen = 0;
	if (lt_tokenizer_encode(tok, text, len, &ids) != LT_OK)
		abort(); /* any bytes are accepted */
	if (lt_tokenizer_decode(tok, ids.v, ids.n, &back, &blen) != LT_OK || blen != len ||
	    memcmp(back, text, len) != 0)
		abort(); /* the ids do not give the text back */
	free(back);
	lt_ids_free(&ids);
}

/* The documents of text, as prepare.h defines them: a line equal to sep
 * (a CR before its newline allowed) ends one, as does the end; empty ones
 * are dropped. Each is handed to fn(ctx, index, text, len). */
static void documents(const char *text, size_t len, const char *sep,
		      void (*fn)(void *ctx, uint64_t i, const char *doc, size_t n), void *ctx)
{
	size_t start = 0, pos = 0, ns = strlen(sep);
	uint64_t i = 0;
	while (ns && pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len, n = end - pos;
		if (n && text[end - 1] == '\r')
			n--;
		if (n == ns && !memcmp(text + pos, sep, ns)) {
			if (pos > start)
				fn(ctx, i++, text + start, pos - start);
			start = nl ? end + 1 : len;
		}
		pos = nl ? end + 1 : len;
	}
	if (len > start)
		fn(ctx, i, text + start, len - start);
}

/* The ids a split of the preparation must hold. */
struct expect {
	lt_tokenizer *tok;
	double val_fraction;
	int val;         /* which split */
	lt_ids ids;
	uint64_t docs;
};

static void expect_document(void *ctx, uint64_t i, const char *doc, size_t n)
{
	struct expect *e = ctx;
	e->docs++;
	if ((floor((double)(i + 1) * e->val_fraction) > floor((double)i * e->val_fraction)) != e->val)
		return;
	if (lt_tokenizer_encode(e->tok, doc, n, &e->ids) != LT_OK ||
	    lt_tokenizer_append_eot(e->tok, &e->ids) != LT_OK)
		abort();
}

/* 1 when the n_shards shards out/PREFIX_NNNN.bin hold exactly want. */
static int shards_hold(const char *out, const char *prefix, int n_shards, const lt_ids *want)
{
	size_t at = 0;
	for (int k = 0; k < n_shards; k++) {
		char path[4200];
		lt_shard *s;
		int32_t buf[256];
		snprintf(path, sizeof path, "%s/%s_%04d.bin", out, prefix, k);
		if (lt_shard_open(path, 0, 1, &s) != LT_OK)
			return 0;
		uint64_t n = lt_shard_info(s)->n_tokens;
		for (uint64_t i = 0; i < n; i += 256) {
			size_t m = n - i < 256 ? (size_t)(n - i) : 256;
			if (lt_shard_read(s, i, buf, m) != LT_OK ||
			    at + m > want->n || memcmp(buf, want->v + at, m * sizeof *buf) != 0) {
				lt_shard_close(s);
				return 0;
			}
			at += m;
		}
		lt_shard_close(s);
	}
	return at == want->n;
}

/* The shards of the preparation in out hold every document, whole. */
static void check_output(const char *out, const struct lt_prepare_opts *o,
			 const struct lt_prepare_report *r, const char *text, size_t len)
{
	struct expect e = { .val_fraction = o->val_fraction };
	if (lt_tokenizer_load(out, &e.tok) != LT_OK)
		abort(); /* the tokenizer it wrote loads */
	round_trip(e.tok, text, len);
	for (e.val = 0; e.val < 2; e.val++) {
		e.docs = 0;
		documents(text, len, o->doc_separator, expect_document, &e);
		if (e.docs != r->n_docs ||
		    !shards_hold(out, e.val ? "val" : "train", e.val ? r->val_shards : r->train_shards,
				 &e.ids))
			abort(); /* a document is not in its shards as it encodes whole */
		lt_ids_free(&e.ids);
	}
	lt_tokenizer_free(e.tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const seps[] = { "", "%", "--", "x" };
	const char *corpus = lt_fuzz_path("corpus.txt"), *out = lt_fuzz_path("data");
	struct lt_prepare_opts o = { 0 };
	struct lt_prepare_report r;

	if (!fixed)
		setup();
	if (size < 3)
		return 0;
	const char *text = (const char *)data + 3;
	size_t len = lt_fuzz_cap(size - 3);
	lt_fuzz_write(corpus, text, len);
	round_trip(fixed, text, len);

	o.inputs = &corpus;
	o.n_inputs = 1;
	o.out_dir = out;
	o.tokenizer = data[0] & 1 ? NULL : fixed_path;
	o.vocab_size = 257 + (data[0] >> 1 & 63);
	o.val_fraction = data[0] & 128 ? 0.2 : 0;
	o.doc_separator = seps[data[1] & 3];
	o.shard_tokens = 1 + 4 * (data[1] >> 2) * (data[1] >> 2);
	o.model_max_length = 64;
	o.batch_bytes = 1024;
	o.read_block = data[2];
	if (lt_prepare_run(&o, &r) != LT_OK)
		return 0;
	if (!lt_prepare_is_done(out))
		abort(); /* a finished preparation is seen as one */
	check_output(out, &o, &r, text, len);
	return 0;
}
