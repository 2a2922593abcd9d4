/* The training and validation token streams of a prepared data directory
 * (train_*.bin, val_*.bin next to tokenizer.json), and the batches drawn
 * from them.
 *
 * Training batches are a pure function of (seed, sample index): sample s is
 * a window of T+1 tokens at an offset drawn from the random stream (seed, s)
 * over all training tokens (a window never spans two shards). A run's data
 * cursor is therefore just the number of samples consumed, which makes a
 * resumed run see exactly the batches an uninterrupted one would, and lets
 * data-parallel ranks take disjoint sample indices.
 *
 * Validation batches are consecutive non-overlapping windows from the start
 * of the validation tokens.
 *
 * Example data (shards of whole examples with trained marks, as prepare
 * --format chat writes) give each example a window of its own instead:
 * sample s is example k drawn uniformly from (seed, s), validation window
 * w is example w. The window holds the example's first T tokens, then the
 * end-of-text id as padding; a target is the next token where that token
 * is trained, else -1 (the prompt, the padding), so the loss sees only
 * the trained tokens. An example longer than T+1 tokens is cut to T+1.
 *
 * Ownership: lt_data_open gives an lt_data that lt_data_close releases. */
#ifndef LT_DATA_H
#define LT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct lt_data lt_data;

enum lt_data_split { LT_DATA_TRAIN, LT_DATA_VAL };

/* Opens dir's shards (train_*.bin and val_*.bin, in name order, shorter
 * names first so that train_10000 follows train_9999), checking each in
 * full: header, data CRC and every token below vocab_size (0 takes the
 * first shard's vocabulary). Fails with LT_ERR_NOTFOUND naming dir when it
 * holds no train_*.bin or no val_*.bin, with the shard's error otherwise. */
enum lt_status lt_data_open(const char *dir, int vocab_size, lt_data **out);
void lt_data_close(lt_data *d);

uint64_t lt_data_tokens(const lt_data *d, enum lt_data_split split);

/* The training windows of samples first .. first+B-1: tokens[B*T] and
 * targets[B*T] (the window shifted by one). Each window start is uniform
 * over every start of every shard that leaves T+1 tokens, drawn from
 * lt_rng stream (seed, 0x6461746100000000 + sample). Needs a shard longer
 * than T (else LT_ERR_ARG naming the directory). */
enum lt_status lt_data_train_batch(const lt_data *d, uint64_t seed, uint64_t first, int B, int T,
				   int32_t *tokens, int32_t *targets);
/* Validation batch `index`: B consecutive windows of T (+1 for targets),
 * window b of batch i starting at token (i*B + b)*T of the validation
 * shards read as one stream; positions past the end get token 0 and target
 * -1. *n counts the real targets (0 past the end). */
enum lt_status lt_data_val_batch(const lt_data *d, uint64_t index, int B, int T,
				 int32_t *tokens, int32_t *targets, long *n);
/* 1 for example data (all of its shards example shards), 0 for token data. */
int lt_data_has_examples(const lt_data *d);
/* The examples of a split (0 for token data), and how many of them are
 * longer than a window of T (more than T+1 tokens, so cut). */
uint64_t lt_data_examples(const lt_data *d, enum lt_data_split split);
uint64_t lt_data_truncated(const lt_data *d, enum lt_data_split split, int T);
/* *n = the trained targets of training samples first .. first+count-1 in
 * windows of T: count*T for token data, fewer for example data. */
enum lt_status lt_data_train_targets(const lt_data *d, uint64_t seed, uint64_t first,
				     uint64_t count, int T, long *n);
/* The validation windows of T that hold data: later batches are all past
 * the end. */
uint64_t lt_data_val_windows(const lt_data *d, int T);
/* All of them fail as lt_shard_read does when a shard changed under the run
 * (truncated, or a token outside the vocabulary), naming it. */

#endif
