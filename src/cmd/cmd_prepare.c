/* lltrain prepare: trains a byte-level BPE tokenizer on text files (or
 * takes a given tokenizer.json) and encodes the documents into train and
 * validation token shards, then says what it did and how fast. */
#include "config.h"

#include <getopt.h>
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

static void print_help(void)
{
	printf("usage: lltrain prepare [OPTIONS] INPUT...\n\n"
	       "Trains a byte-level BPE tokenizer on the text files (a directory stands for\n"
	       "the files in it), encodes every document with the end-of-text token after\n"
	       "it, holds out evenly spaced documents for validation, and writes\n"
	       "tokenizer.json, tokenizer_config.json, train_NNNN.bin, val_NNNN.bin and\n"
	       "prepare.json into the output directory, which is replaced only when all\n"
	       "of it succeeded.\n\n"
	       "  --out DIR              output directory (default data)\n"
	       "  --vocab N              tokens of the trained tokenizer (default 4096)\n"
	       "  --tokenizer FILE       encode with this tokenizer.json instead of training one\n"
	       "  --doc-separator STR    a line equal to STR ends a document (default %%);\n"
	       "                         \"\" makes each file one document\n"
	       "  --val-fraction X       share of documents held out, 0 to 0.5 (default 0.05)\n"
	       "  --shard-tokens N       tokens per shard file (default 100000000)\n"
	       "  --max-seq N            context length tokenizer_config.json advertises\n"
	       "                         (default 2048)\n"
	       "  --help                 this text\n");
}

/* Fills a from argv; returns -1 to go on, else the exit status. */
static int parse_prepare_options(int argc, char **argv, struct prepare_args *a)
{
	static const struct option longopts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "vocab", required_argument, NULL, 'v' },
		{ "tokenizer", required_argument, NULL, 't' },
		{ "doc-separator", required_argument, NULL, 's' },
		{ "val-fraction", required_argument, NULL, 'f' },
		{ "shard-tokens", required_argument, NULL, 'n' },
		{ "max-seq", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, bad = 0;
	optind = 1;
	while (!bad && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'o': a->out = optarg; break;
		case 'v':
			bad = lt_cmd_long("prepare", "--vocab", optarg, 257, LT_TOKENIZER_MAX_VOCAB, &a->vocab);
			break;
		case 't': a->tokenizer = optarg; break;
		case 's': a->separator = optarg; break;
		case 'f':
			bad = lt_cmd_double("prepare", "--val-fraction", optarg, 0.0, 0.5, &a->val_fraction);
			break;
		case 'n':
			bad = lt_cmd_long("prepare", "--shard-tokens", optarg, 1, 1L << 40, &a->shard_tokens);
			break;
		case 'm':
			bad = lt_cmd_long("prepare", "--max-seq", optarg, 1, 1L << 30, &a->max_seq);
			break;
		case 'h': print_help(); return 0;
		default: return 2;
		}
	}
	if (bad)
		return 2;
	if (!a->out[0]) {
		fprintf(stderr, "lltrain prepare: --out '': expected a directory name\n");
		return 2;
	}
	if (strchr(a->separator, '\n')) {
		fprintf(stderr, "lltrain prepare: --doc-separator: a line cannot hold a newline\n");
		return 2;
	}
	if (optind >= argc) {
		fprintf(stderr, "lltrain prepare: expected text files or directories to prepare "
			"(see --help)\n");
		return 2;
	}
	a->inputs = argv + optind;
	a->n_inputs = argc - optind;
	return -1;
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
