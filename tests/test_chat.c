/* Chat data below the command line (TAP): example shards written and read
 * back with their marks, damaged marks refused, the data loader's windows
 * of examples (padding, prompt targets -1, cuts, the draw by (seed,
 * sample), the trained-target count the trainer scales by), and the chat
 * templates' ids and marks on a tokenizer given special tokens. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <zlib.h>

#include "io/shard.h"
#include "tap.h"
#include "text/chat.h"
#include "text/data.h"
#include "text/tokenizer.h"

static void set_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* Example e (of 5) has 3 + 2e tokens 10e+1, 10e+2, ...; its second half is
 * trained. */
static size_t example(int e, int32_t *tok, uint8_t *trained)
{
	size_t n = 3 + 2 * (size_t)e;
	for (size_t i = 0; i < n; i++) {
		tok[i] = 10 * e + (int32_t)i + 1;
		trained[i] = i >= n / 2;
	}
	return n;
}

static enum lt_status write_examples(const char *path, int first, int count)
{
	lt_shard_writer *w;
	int32_t tok[16];
	uint8_t tr[16];
	enum lt_status st = lt_shard_writer_new_examples(path, 300, 0, &w);
	for (int e = first; st == LT_OK && e < first + count; e++) {
		size_t n = example(e, tok, tr);
		st = lt_shard_writer_add_example(w, tok, tr, n);
	}
	if (st == LT_OK)
		st = lt_shard_writer_finish(w);
	lt_shard_writer_free(w);
	return st;
}

static void test_shard_marks(void)
{
	lt_shard *s = NULL;
	enum lt_status st = write_examples(tap_at("ex.bin"), 0, 5);
	if (st == LT_OK)
		st = lt_shard_open(tap_at("ex.bin"), 300, 1, &s);
	const struct lt_shard_info *in = s ? lt_shard_info(s) : NULL;
	tap_ok(st == LT_OK && in->examples && in->n_docs == 5 && in->n_tokens == 35,
	       "an example shard of 5 examples (35 tokens) opens with full checks (%s)",
	       lt_errmsg());
	int good = st == LT_OK;
	uint64_t at = 0;
	for (int e = 0; good && e < 5; e++) {
		int32_t tok[16], want[16], got[16];
		uint8_t tr[16], marks[16];
		size_t n = example(e, want, tr);
		good = lt_shard_read(s, at, got, n) == LT_OK &&
		       lt_shard_read_marks(s, at, marks, n) == LT_OK &&
		       !memcmp(got, want, n * sizeof *got);
		for (size_t i = 0; good && i < n; i++)
			good = marks[i] == ((tr[i] ? LT_SHARD_TRAINED : 0) | (i ? 0 : LT_SHARD_START));
		(void)tok;
		at += n;
	}
	tap_ok(good, "every token and mark reads back: trained bits, a start on each first token");
	lt_shard_close(s);

	size_t n;
	unsigned char *p = tap_slurp(tap_at("ex.bin"), &n);
	tap_ok(p && n == 64 + 35 * 3 && p[8] == 2 && p[44] == 1 &&
	       (uint32_t)crc32(crc32(0L, Z_NULL, 0), p + 64, 105) ==
		       ((uint32_t)p[40] | (uint32_t)p[41] << 8 | (uint32_t)p[42] << 16 |
			(uint32_t)p[43] << 24),
	       "the file is version 2 with flag 1, tokens then marks, the data CRC over both");
	struct {
		const char *what, *text;
		size_t at;
		unsigned char v;
	} bad[] = {
		{ "a mark with an unknown bit", "mark 5 of token 3", 64 + 70 + 3, 5 },
		{ "a first token without a start", "mark 0 of token 0", 64 + 70, 0 },
		{ "an extra start", "6 examples start in the marks, the header says 5", 64 + 70 + 1,
		  2 },
	};
	for (size_t k = 0; p && k < sizeof bad / sizeof bad[0]; k++) {
		unsigned char *q = malloc(n);
		memcpy(q, p, n);
		q[bad[k].at] = bad[k].v;
		/* a CRC to match, so that the marks themselves are checked */
		set_le32(q + 40, (uint32_t)crc32(crc32(0L, Z_NULL, 0), q + 64, 105));
		set_le32(q + 60, (uint32_t)crc32(crc32(0L, Z_NULL, 0), q, 60));
		tap_write_file(tap_at("bad.bin"), q, n);
		free(q);
		st = lt_shard_open(tap_at("bad.bin"), 300, 1, &s);
		tap_ok(st == LT_ERR_FORMAT && strstr(lt_errmsg(), bad[k].text), "refused: %s (%s)",
		       bad[k].what, lt_errmsg());
		lt_shard_close(s);
		s = NULL;
	}
	if (p) {
		set_le32(p + 8, 1);
		set_le32(p + 60, (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, 60));
		tap_write_file(tap_at("bad.bin"), p, n);
	}
	st = lt_shard_open(tap_at("bad.bin"), 300, 0, &s);
	tap_ok(st == LT_ERR_FORMAT && strstr(lt_errmsg(), "flags 1 in a version 1 shard, expected 0"),
	       "refused: version 1 with the examples flag (%s)", lt_errmsg());
	lt_shard_close(s);
	free(p);
}

/* data/: train_0000.bin examples 0..4, val_0000.bin examples 5..6. */
static void test_windows(void)
{
	lt_data *d = NULL;
	char dir[4096];
	lt_errmsg_clear();
	snprintf(dir, sizeof dir, "%s", tap_at("data"));
	mkdir(dir, 0755);
	enum lt_status st = write_examples(tap_at("data/train_0000.bin"), 0, 5);
	if (st == LT_OK)
		st = write_examples(tap_at("data/val_0000.bin"), 5, 2);
	if (st == LT_OK)
		st = lt_data_open(dir, 300, &d);
	tap_ok(st == LT_OK && lt_data_has_examples(d) && lt_data_examples(d, LT_DATA_TRAIN) == 5 &&
	       lt_data_examples(d, LT_DATA_VAL) == 2 && lt_data_truncated(d, LT_DATA_TRAIN, 8) == 1,
	       "the loader indexes 5 training and 2 validation examples; 1 is longer than 9 (%s)",
	       lt_errmsg());
	if (st != LT_OK) {
		tap_skip("no data to draw from");
		tap_skip("no data to draw from");
		tap_skip("no data to draw from");
		return;
	}
	/* every window is one whole example at its start, padded with 0 */
	enum { B = 64, T = 8 };
	int32_t tok[B * T], tgt[B * T], tok2[B * T], tgt2[B * T];
	long counted = 0, want_count = 0;
	int good = lt_data_train_batch(d, 7, 100, B, T, tok, tgt) == LT_OK, seen[5] = { 0 };
	for (int b = 0; good && b < B; b++) {
		int e = (tok[b * T] - 1) / 10;
		int32_t w[16];
		uint8_t tr[16];
		size_t n = example(e, w, tr);
		good = e >= 0 && e < 5;
		seen[e] = 1;
		for (int t = 0; good && t < T; t++) {
			int32_t wt = (size_t)t < n ? w[t] : 0;
			int32_t wg = (size_t)t + 1 < n && tr[t + 1] ? w[t + 1] : -1;
			good = tok[b * T + t] == wt && tgt[b * T + t] == wg;
			want_count += wg >= 0;
		}
	}
	tap_ok(good && seen[0] && seen[4],
	       "each window is one example from its start: padding 0, targets -1 but for "
	       "trained tokens, the longest cut to 9 tokens");
	good = lt_data_train_batch(d, 7, 110, 4, T, tok2, tgt2) == LT_OK &&
	       !memcmp(tok2, tok + 10 * T, sizeof(int32_t) * 4 * T) &&
	       !memcmp(tgt2, tgt + 10 * T, sizeof(int32_t) * 4 * T) &&
	       lt_data_train_targets(d, 7, 100, B, T, &counted) == LT_OK && counted == want_count;
	tap_ok(good, "sample s draws the same example in any batch, and the trained-target count "
	       "of samples 100..163 is the windows' (%ld, expected %ld)", counted, want_count);
	long n1 = 0, n2 = 0;
	good = lt_data_val_windows(d, T) == 2 &&
	       lt_data_val_batch(d, 0, 2, T, tok, tgt, &n1) == LT_OK && tok[0] == 51 &&
	       tok[T] == 61 && lt_data_val_batch(d, 1, 2, T, tok, tgt, &n2) == LT_OK && n2 == 0 &&
	       tgt[0] == -1 && tgt[2 * T - 1] == -1;
	/* example 5: 13 tokens, trained from 6, cut to 9: targets 6..8 (3);
	 * example 6: 15 tokens, trained from 7: target 7..8 (2) */
	tap_ok(good && n1 == 5, "validation window w is example w; past them no targets (%ld)", n1);
	lt_data_close(d);
}

/* A tokenizer of a little text, with the special tokens of every template
 * added after its vocabulary, saved in dir and loaded. */
static lt_tokenizer *special_tokenizer(const char *dir)
{
	static const char text[] = "hello there, how are you? fine thanks. the end. Be brief.";
	static const char *const specials[] = { "<|im_start|>", "<|im_end|>", "<s>", "</s>",
						"<|begin_of_text|>", "<|start_header_id|>",
						"<|end_header_id|>", "<|eot_id|>" };
	struct lt_tokenizer_train_opts o = { .vocab_size = 300, .min_frequency = 2 };
	lt_tokenizer *tok = NULL;
	char path[4200];
	if (lt_tokenizer_train_buffer(text, sizeof text - 1, &o, &tok) != LT_OK ||
	    lt_tokenizer_save(tok, dir, 64) != LT_OK)
		return NULL;
	int n = lt_tokenizer_vocab_size(tok);
	lt_tokenizer_free(tok);
	tok = NULL;
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	json_t *root = json_load_file(path, 0, NULL);
	json_t *added = json_object_get(root, "added_tokens");
	for (int i = 0; added && i < 8; i++)
		json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
						       n + i, "content", specials[i], "single_word", 0,
						       "lstrip", 0, "rstrip", 0, "normalized", 0,
						       "special", 1));
	if (!added || json_dump_file(root, path, 0) != 0 || lt_tokenizer_load(path, &tok) != LT_OK)
		tok = NULL;
	json_decref(root);
	return tok;
}

/* The rendering of msgs decoded, and the decoded runs of trained tokens
 * joined by '|'. */
static int rendered_as(const lt_chat *c, lt_tokenizer *tok, const struct lt_chat_message *m,
		       int n, const char *want, const char *want_trained)
{
	struct lt_chat_tokens out = { 0 };
	char *text = NULL, runs[1024] = "";
	size_t len;
	int same = lt_chat_render(c, tok, m, n, &out) == LT_OK &&
		   lt_tokenizer_decode(tok, out.ids, out.n, &text, &len) == LT_OK &&
		   !strcmp(text, want);
	for (size_t i = 0; same && i < out.n; i++) {
		size_t k;
		const char *piece = lt_tokenizer_token(tok, out.ids[i], &k);
		if (out.trained[i] && i > 0 && !out.trained[i - 1] && runs[0])
			strcat(runs, "|");
		if (out.trained[i])
			strncat(runs, piece, k);
	}
	if (!same || strcmp(runs, want_trained))
		tap_diag("  got %s\n  trained %s", text ? text : "(nothing)", runs);
	free(text);
	lt_chat_tokens_free(&out);
	return same && !strcmp(runs, want_trained);
}

static void test_templates(void)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", tap_at("tok"));
	lt_errmsg_clear();
	lt_tokenizer *tok = special_tokenizer(dir);
	struct lt_chat_message m[] = {
		{ LT_CHAT_SYSTEM, "Be brief.", 9 },
		{ LT_CHAT_USER, "hello there ", 12 },
		{ LT_CHAT_ASSISTANT, " fine thanks.", 13 },
		{ LT_CHAT_USER, "how are you?", 12 },
		{ LT_CHAT_ASSISTANT, "the end.", 8 },
	};
	static const struct {
		enum lt_chat_template t;
		const char *text, *trained;
	} want[] = {
		{ LT_CHAT_CHATML,
		  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello there <|im_end|>\n"
		  "<|im_start|>assistant\n fine thanks.<|im_end|>\n<|im_start|>user\nhow are you?"
		  "<|im_end|>\n<|im_start|>assistant\nthe end.<|im_end|>\n",
		  " fine thanks.<|im_end|>|the end.<|im_end|>" },
		{ LT_CHAT_LLAMA2,
		  "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhello there [/INST] fine thanks. </s>"
		  "<s>[INST] how are you? [/INST] the end. </s>",
		  " fine thanks. </s>| the end. </s>" },
		{ LT_CHAT_LLAMA3,
		  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
		  "<|start_header_id|>user<|end_header_id|>\n\nhello there<|eot_id|>"
		  "<|start_header_id|>assistant<|end_header_id|>\n\nfine thanks.<|eot_id|>"
		  "<|start_header_id|>user<|end_header_id|>\n\nhow are you?<|eot_id|>"
		  "<|start_header_id|>assistant<|end_header_id|>\n\nthe end.<|eot_id|>",
		  "fine thanks.<|eot_id|>|the end.<|eot_id|>" },
	};
	tap_ok(tok != NULL, "a tokenizer with the templates' special tokens loads (%s)", lt_errmsg());
	for (int k = 0; k < 3; k++) {
		lt_chat *c = NULL;
		int good = tok && lt_chat_new(tok, want[k].t, &c) == LT_OK &&
			   rendered_as(c, tok, m, 5, want[k].text, want[k].trained);
		tap_ok(good, "%s: ids decode to the rendering, trained marks on the answers and their "
		       "end-of-turn tokens", lt_chat_template_name(want[k].t));
		lt_chat_free(c);
	}
	enum lt_chat_template t = LT_CHAT_LLAMA2;
	tap_ok(tok && lt_chat_detect(tok, &t) == LT_OK && t == LT_CHAT_CHATML,
	       "a tokenizer with <|im_start|> is taken for chatml");
	lt_tokenizer_free(tok);
}

int main(void)
{
	tap_scratch_new("lt_chat");
	tap_plan(16);
	test_shard_marks();
	test_windows();
	test_templates();
	return tap_scratch_done();
}
