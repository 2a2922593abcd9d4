/* Data preparation: trains a byte-level BPE tokenizer on text files (or
 * loads a given one), then encodes the documents into token shards with a
 * held-out validation split and the end-of-text token after each document.
 * Files stream through in blocks, so corpora larger than memory work.
 *
 * Inputs are files, or directories standing for the regular files directly
 * in them (not hidden ones, *.dat or *.u8), sorted; the inputs keep their
 * order. A line equal to doc_separator (a CR before its newline allowed)
 * ends a document, as does each file; empty documents are dropped.
 * Document i (over the whole corpus) is held out when
 * floor((i+1) f) > floor(i f). Documents are encoded in parallel batches
 * (one tokenizer clone per OpenMP thread) and written in corpus order, so
 * the output is the same for any thread count. Shards are cut at exactly
 * shard_tokens tokens; a split without tokens gets one empty shard.
 *
 * With chat set, the inputs are JSON Lines of conversations instead, each
 * line {"messages": [{"role": R, "content": C}, ...]} (R system, user or
 * assistant) or {"prompt": P, "completion": C} (a user message and the
 * answer). Each conversation goes through the chat template (chat_template,
 * or the one the tokenizer's special tokens point to) into one example of
 * an example shard (see io/shard.h), its assistant content and end-of-turn
 * tokens marked trained; example i is held out as document i is. A line
 * that is not such an object is refused naming the file, the line and what
 * was expected; blank lines are skipped. Shards are cut between examples,
 * once they hold shard_tokens tokens or more.
 *
 * Everything is written into out_dir.tmp-XXXXXX, which replaces out_dir
 * only at the end: out_dir may be absent, empty or an earlier preparation
 * (holding prepare.json), which is kept when anything fails. */
#ifndef LT_PREPARE_H
#define LT_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct lt_prepare_opts {
	const char *const *inputs;  /* text files or directories of them */
	int n_inputs;
	const char *out_dir;        /* created if missing */
	const char *tokenizer;      /* an existing tokenizer.json to use; NULL trains one */
	int chat;                   /* inputs are chat JSON Lines (needs tokenizer) */
	const char *chat_template;  /* chatml, llama2, llama3; NULL: from the tokenizer */
	int vocab_size;             /* of the trained tokenizer */
	const char *doc_separator;  /* a line equal to it ends a document; "" = one per file */
	double val_fraction;        /* in [0, 0.5]; documents are held out evenly */
	long shard_tokens;          /* tokens per shard file */
	long model_max_length;      /* what tokenizer_config.json advertises */
	int verbose;                /* progress lines on stdout */
	size_t batch_bytes;         /* text encoded per parallel batch; 0 = 8 MiB */
	size_t read_block;          /* bytes read from a file at a time; 0 = 1 MiB (a
				     * small one lets tests reach the cuts in short texts) */
};

struct lt_prepare_report {
	int n_files, vocab_size;
	uint64_t n_docs, train_tokens, val_tokens, bytes;
	int train_shards, val_shards;
	double tokenizer_seconds, encode_seconds;
	/* chat data: n_docs counts examples; the template used, the trained
	 * tokens of each split and the longest example */
	const char *chat_template;
	uint64_t train_trained, val_trained, longest;
};

/* Runs the preparation; out_dir gets tokenizer.json, tokenizer_config.json,
 * train_NNNN.bin, val_NNNN.bin and prepare.json (what was done). Errors name
 * the file: missing or unreadable input, an empty corpus, a bad tokenizer. */
enum lt_status lt_prepare_run(const struct lt_prepare_opts *o, struct lt_prepare_report *r);

/* 1 when dir holds prepare.json, tokenizer.json and the shards it lists. */
int lt_prepare_is_done(const char *dir);

#endif
