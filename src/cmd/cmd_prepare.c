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
	const char *out, *tokenizer, *separator;
	long vocab, shard_tokens, max_seq;
	double val_fraction;
	char **inputs;
	int n_inputs;
};

static const struct lt_cmd_option prepare_options[] = {
	{ "out", required_argument, 'o', "DIR", "output directory (default data)" },
	{ "vocab", required_argument, 'v', "N", "tokens of the trained tokenizer (default 4096)" },
	{ "tokenizer", required_argument, 't', "FILE",
	  "encode with this tokenizer.json instead of training one" },
	{ "doc-separator", required_argument, 's', "STR",
	  "a line equal to STR ends a document (default %);\n"
	  "\"\" makes each file one document" },
	{ "val-fraction", required_argument, 'f', "X",
	  "share of documents held out, 0 to 0.5 (default 0.05)" },
	{ "shard-tokens", required_argument, 'n', "N", "tokens per shard file (default 100000000)" },
	{ "max-seq", required_argument, 'm', "N",
	  "context length tokenizer_config.json advertises\n"
	  "(default 2048)" },
	{ "help", no_argument, 'h', NULL, "this text" },
	{ NULL, 0, 0, NULL, NULL },
};

static const struct lt_cmd_usage prepare_usage = {
	.head = "usage: lltrain prepare [OPTIONS] INPUT...\n\n"
		"Trains a byte-level BPE tokenizer on the text files (a directory stands for\n"
		"the files in it), encodes every document with the end-of-text token after\n"
		"it, holds out evenly spaced documents for validation, and writes\n"
		"tokenizer.json, tokenizer_config.json, train_NNNN.bin, val_NNNN.bin and\n"
		"prepare.json into the output directory, which is replaced only when all\n"
		"of it succeeded.\n\n",
	.options = prepare_options,
	.column = 25,
};

/* Takes one option into the struct prepare_args at ctx; 0, or 2 after
 * saying why. */
static int take_prepare_option(void *ctx, int id, const char *value)
{
	struct prepare_args *a = ctx;
	switch (id) {
	case 'o': a->out = value; return 0;
	case 'v':
		return lt_cmd_long("prepare", "--vocab", value, 257, LT_TOKENIZER_MAX_VOCAB, &a->vocab);
	case 't': a->tokenizer = value; return 0;
	case 's': a->separator = value; return 0;
	case 'f':
		return lt_cmd_double("prepare", "--val-fraction", value, 0.0, 0.5, &a->val_fraction);
	case 'n':
		return lt_cmd_long("prepare", "--shard-tokens", value, 1, 1L << 40, &a->shard_tokens);
	case 'm': return lt_cmd_long("prepare", "--max-seq", value, 1, 1L << 30, &a->max_seq);
	default:
		LT_ASSERT(0);
		return 2;
	}
}

/* Fills a from argv; returns -1 to go on, else the exit status. */
static int parse_prepare_options(int argc, char **argv, struct prepare_args *a)
{
	int rc = lt_cmd_getopt(argc, argv, &prepare_usage, take_prepare_option, a);
	if (rc >= 0)
		return rc;
	if (!a->out[0]) {
		fprintf(stderr, "lltrain prepare: --out '': expected a directory name\n");
		return 2;
	}
	if (strchr(a->separator, '\n')) {
		fprintf(stderr, "lltrain prepare: --doc-separator: a line cannot hold a newline\n");
		return 2;
	}
	rc = lt_cmd_operands("prepare", argc, argv, 1, INT_MAX,
			     "text files or directories to prepare");
	a->inputs = argv + optind;
	a->n_inputs = argc - optind;
	return rc;
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
		.max_seq = 2048, .val_fraction = 0.05,
	};
	int rc = parse_prepare_options(argc, argv, &a);
	if (rc >= 0)
		return rc;
	struct lt_prepare_opts o = {
		.inputs = (const char *const *)a.inputs,
		.n_inputs = a.n_inputs,
		.out_dir = a.out,
		.tokenizer = a.tokenizer,
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
	print_summary(&a, &r);
	return 0;
}
