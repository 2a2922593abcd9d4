/* lltrain prepare: trains a byte-level BPE tokenizer on text files (or
 * takes a given tokenizer.json) and encodes the documents into train and
 * validation token shards, then says what it did and how fast. */
#include "config.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "conf.h"
#include "text/prepare.h"
#include "text/tokenizer.h"

struct prepare_args {
	const char *out, *tokenizer, *separator, *format, *template;
	long vocab, shard_tokens, max_seq;
	double val_fraction;
};

#define ARG(f) LT_CMD_FIELD(struct prepare_args, f)

static const struct lt_cmd_option prepare_options[] = {
	{ .name = "out", .kind = LT_CMD_TEXT, ARG(out), .arg = "DIR",
	  .help = "output directory (default data)" },
	{ .name = "vocab", .kind = LT_CMD_LONG, ARG(vocab), .min = 257,
	  .max = LT_TOKENIZER_MAX_VOCAB, .arg = "N",
	  .help = "tokens of the trained tokenizer (default 4096)" },
	{ .name = "tokenizer", .kind = LT_CMD_TEXT, ARG(tokenizer), .arg = "FILE",
	  .help = "encode with this tokenizer.json instead of training one" },
	{ .name = "format", .kind = LT_CMD_TEXT, ARG(format), .arg = "text|chat",
	  .help = "text files (default), or chat JSON Lines" },
	{ .name = "template", .kind = LT_CMD_TEXT, ARG(template), .arg = "NAME",
	  .help = "chat template: chatml, llama2 or llama3\n"
		  "(default: from the tokenizer's special tokens)" },
	{ .name = "doc-separator", .kind = LT_CMD_TEXT, ARG(separator), .arg = "STR",
	  .help = "a line equal to STR ends a document (default %);\n"
		  "\"\" makes each file one document" },
	{ .name = "val-fraction", .kind = LT_CMD_REAL, ARG(val_fraction), .min = 0, .max = 0.5,
	  .arg = "X", .help = "share of documents held out, 0 to 0.5 (default 0.05)" },
	{ .name = "shard-tokens", .kind = LT_CMD_LONG, ARG(shard_tokens), .min = 1,
	  .max = 1L << 40, .arg = "N", .help = "tokens per shard file (default 100000000)" },
	{ .name = "max-seq", .kind = LT_CMD_LONG, ARG(max_seq), .min = 1, .max = 1L << 30,
	  .arg = "N",
	  .help = "context length tokenizer_config.json advertises\n"
		  "(default 2048)" },
	{ .name = NULL },
};

/* The output directory has a name and the separator is one line; 0, or 2
 * after saying what is wrong. */
static int check_prepare_args(const void *args)
{
	const struct prepare_args *a = args;
	if (!a->out[0]) {
		fprintf(stderr, "lltrain prepare: --out '': expected a directory name\n");
		return 2;
	}
	if (strcmp(a->format, "text") && strcmp(a->format, "chat")) {
		fprintf(stderr, "lltrain prepare: --format '%s': expected text or chat\n", a->format);
		return 2;
	}
	if (a->template && strcmp(a->format, "chat")) {
		fprintf(stderr, "lltrain prepare: --template applies to --format chat only\n");
		return 2;
	}
	if (a->template && strcmp(a->template, "chatml") && strcmp(a->template, "llama2") &&
	    strcmp(a->template, "llama3")) {
		fprintf(stderr, "lltrain prepare: --template '%s': expected chatml, llama2 or "
			"llama3\n", a->template);
		return 2;
	}
	if (strchr(a->separator, '\n')) {
		fprintf(stderr, "lltrain prepare: --doc-separator: a line cannot hold a newline\n");
		return 2;
	}
	return 0;
}

static const struct lt_cmd_operands inputs = { 1, INT_MAX, "text files or directories to prepare" };

static const struct lt_cmd_usage prepare_usage = {
	.cmd = "prepare",
	.head = "usage: lltrain prepare [OPTIONS] INPUT...\n\n"
		"Trains a byte-level BPE tokenizer on the text files (a directory stands for\n"
		"the files in it), encodes every document with the end-of-text token after\n"
		"it, holds out evenly spaced documents for validation, and writes\n"
		"tokenizer.json, tokenizer_config.json, train_NNNN.bin, val_NNNN.bin and\n"
		"prepare.json into the output directory, which is replaced only when all\n"
		"of it succeeded. With --format chat the inputs are JSON Lines of\n"
		"conversations, rendered with a chat template into one example each.\n\n",
	.options = prepare_options,
	.column = 25,
	.check = check_prepare_args,
	.operands = &inputs,
};

static void print_chat_summary(const struct prepare_args *a, const struct lt_prepare_report *r)
{
	double mb = (double)r->bytes / 1e6;
	printf("prepared %s\n", a->out);
	printf("  files:        %d (%.2f MB)\n", r->n_files, mb);
	printf("  examples:     %llu, the longest %llu tokens\n", (unsigned long long)r->n_docs,
	       (unsigned long long)r->longest);
	printf("  template:     %s%s\n", r->chat_template, a->template ? "" : " (from the tokenizer)");
	printf("  vocabulary:   %d (given tokenizer)\n", r->vocab_size);
	printf("  tokens:       %llu train (%llu trained), %llu validation (%llu trained)\n",
	       (unsigned long long)r->train_tokens, (unsigned long long)r->train_trained,
	       (unsigned long long)r->val_tokens, (unsigned long long)r->val_trained);
	printf("  shards:       %d train, %d validation\n", r->train_shards, r->val_shards);
	printf("  encoding:     %.2f s\n", r->encode_seconds);
}

static void print_summary(const struct prepare_args *a, const struct lt_prepare_report *r)
{
	double mb = (double)r->bytes / 1e6;
	printf("prepared %s\n", a->out);
	printf("  files:        %d (%.2f MB)\n", r->n_files, mb);
	printf("  documents:    %llu\n", (unsigned long long)r->n_docs);
	printf("  vocabulary:   %d%s\n", r->vocab_size, a->tokenizer ? " (given tokenizer)" : "");
	printf("  tokens:       %llu train, %llu validation\n",
	       (unsigned long long)r->train_tokens, (unsigned long long)r->val_tokens);
	printf("  shards:       %d train, %d validation\n", r->train_shards, r->val_shards);
	if (a->tokenizer)
		printf("  tokenizer:    loaded in %.2f s\n", r->tokenizer_seconds);
	else
		printf("  tokenizer:    trained in %.2f s\n", r->tokenizer_seconds);
	printf("  encoding:     %.2f s, %.2f MB/s\n", r->encode_seconds,
	       r->encode_seconds > 0 ? mb / r->encode_seconds : 0.0);
}

int lt_cmd_prepare(int argc, char **argv)
{
	struct prepare_args a = {
		.out = "data", .separator = "%", .vocab = 4096, .shard_tokens = 100000000,
		.max_seq = 2048, .val_fraction = 0.05, .format = "text",
	};
	int rc = lt_cmd_parse(argc, argv, &prepare_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	struct lt_prepare_opts o = {
		.inputs = (const char *const *)(argv + optind),
		.n_inputs = argc - optind,
		.out_dir = a.out,
		.tokenizer = a.tokenizer,
		.chat = !strcmp(a.format, "chat"),
		.chat_template = a.template,
		.vocab_size = (int)a.vocab,
		.doc_separator = a.separator,
		.val_fraction = a.val_fraction,
		.shard_tokens = a.shard_tokens,
		.model_max_length = a.max_seq,
		.verbose = 1,
	};
	struct lt_prepare_report r;
	lt_errmsg_clear();
	enum lt_status st = lt_prepare_run(&o, &r);
	if (st != LT_OK) {
		lt_report("prepare", st);
		return 1;
	}
	if (o.chat)
		print_chat_summary(&a, &r);
	else
		print_summary(&a, &r);
	return 0;
}
