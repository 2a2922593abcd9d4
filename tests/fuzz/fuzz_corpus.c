/* Fuzzes what reads the corpus text itself: lt_prepare_run on the input as
 * a corpus file (documents split at separator lines, a tokenizer trained
 * on it or a given one loaded, every document encoded into shards), and
 * the tokenizer's encoding, which must give back every byte string
 * (binary junk and invalid UTF-8 included) when its ids are decoded.
 *
 * The first three bytes of an input are not part of the corpus but choose
 * the preparation: byte 0 bit 0 trains a tokenizer (of 257 to 320 tokens,
 * bits 1-6) instead of using one trained once on a fixed text, bit 7 holds
 * out a fifth of the documents; byte 1 bits 0-1 pick the document
 * separator ("", "%", "--" or "x"), bits 2-7 the shard size (1 + 4 v^2
 * tokens for their value v: 1 to 15877); byte 2 is the size of the blocks the file is read in (1 to 255
 * bytes, so that short texts are cut into pieces; 0: the default). */
#include "config.h"
#define LT_FUZZ_NAME corpus
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const seps[] = { "", "%", "--", "x" };
	const char *corpus = lt_fuzz_path("corpus.txt"), *out = lt_fuzz_path("data");
	struct lt_prepare_opts o = { 0 };
	struct lt_prepare_report r;
	lt_tokenizer *tok;

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
	if (lt_tokenizer_load(out, &tok) != LT_OK)
		abort(); /* the tokenizer it wrote loads */
	round_trip(tok, text, len);
	lt_tokenizer_free(tok);
	return 0;
}
