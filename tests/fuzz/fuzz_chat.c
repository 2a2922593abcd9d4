/* Fuzzes the chat data reader: lt_prepare_run with chat set on the input
 * as a JSON Lines file of conversations, with a tokenizer that has the
 * special tokens of every template. A preparation that succeeds must give
 * example shards that the data loader opens with full checks, holding as
 * many examples as the preparation counted, and windows whose targets are
 * -1 or ids of the vocabulary.
 *
 * The first two bytes of an input are not part of the file but choose the
 * preparation: byte 0 bits 0-1 the template (chatml, llama2, llama3, or
 * the one the tokenizer points to), bit 2 holds out a quarter of the
 * conversations; byte 1 is the shard size (1 + 4 v tokens for its value v). */
#include "config.h"
#define LT_FUZZ_NAME chat
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "text/data.h"
#include "text/prepare.h"
#include "text/tokenizer.h"

static const char training_text[] =
	"hello there, how are you? fine thanks. the end. Be brief. user assistant system\n";

static const char *tokenizer_path;

/* A tokenizer trained once, with the templates' special tokens added. */
static void setup(void)
{
	static const char *const specials[] = { "<|im_start|>", "<|im_end|>", "<s>", "</s>",
						"<|begin_of_text|>", "<|start_header_id|>",
						"<|end_header_id|>", "<|eot_id|>" };
	struct lt_tokenizer_train_opts to = { .vocab_size = 300, .min_frequency = 1 };
	lt_tokenizer *tok = NULL;
	if (lt_tokenizer_train_buffer(training_text, sizeof training_text - 1, &to, &tok) != LT_OK ||
	    lt_tokenizer_save(tok, lt_fuzz_path("tok"), 64) != LT_OK)
		abort();
	int n = lt_tokenizer_vocab_size(tok);
	lt_tokenizer_free(tok);
	tokenizer_path = lt_fuzz_path("tok/tokenizer.json");
	json_t *root = json_load_file(tokenizer_path, 0, NULL);
	json_t *added = json_object_get(root, "added_tokens");
	for (int i = 0; added && i < 8; i++)
		json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
						       n + i, "content", specials[i], "single_word", 0,
						       "lstrip", 0, "rstrip", 0, "normalized", 0,
						       "special", 1));
	if (!added || json_dump_file(root, tokenizer_path, 0) != 0)
		abort();
	json_decref(root);
}

/* The prepared directory must open and hold what the preparation said. */
static void check_output(const char *dir, const struct lt_prepare_report *r)
{
	enum { B = 3, T = 8 };
	int32_t tok[B * T], tgt[B * T];
	long n;
	lt_data *d;
	if (lt_data_open(dir, r->vocab_size, &d) != LT_OK || !lt_data_has_examples(d) ||
	    lt_data_examples(d, LT_DATA_TRAIN) + lt_data_examples(d, LT_DATA_VAL) != r->n_docs)
		abort();
	if (lt_data_examples(d, LT_DATA_TRAIN) > 0) {
		if (lt_data_train_batch(d, 7, 0, B, T, tok, tgt) != LT_OK ||
		    lt_data_train_targets(d, 7, 0, B, T, &n) != LT_OK)
			abort();
		for (int i = 0; i < B * T; i++)
			if (tgt[i] < -1 || tgt[i] >= r->vocab_size)
				abort();
	}
	for (uint64_t i = 0; i < 3; i++)
		if (lt_data_val_batch(d, i, B, T, tok, tgt, &n) != LT_OK)
			abort();
	lt_data_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const templates[] = { "chatml", "llama2", "llama3", NULL };
	if (!tokenizer_path)
		setup();
	if (size < 2)
		return 0;
	const char *input = lt_fuzz_path("in.jsonl"), *out = lt_fuzz_path("out");
	lt_fuzz_write(input, data + 2, lt_fuzz_cap(size - 2));
	struct lt_prepare_opts o = {
		.inputs = &input, .n_inputs = 1, .out_dir = out, .tokenizer = tokenizer_path,
		.chat = 1, .chat_template = templates[data[0] & 3],
		.val_fraction = data[0] & 4 ? 0.25 : 0, .shard_tokens = 1 + 4 * (long)data[1],
		.model_max_length = 64,
	};
	struct lt_prepare_report r;
	if (lt_prepare_run(&o, &r) == LT_OK)
		check_output(out, &r);
	return 0;
}
