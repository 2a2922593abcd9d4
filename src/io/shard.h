/* Token shard files: a 64-byte header then little-endian tokens.
 *
 * Header (all little-endian):
 *   0  char[8]  magic "LTTOKENS"
 *   8  u32      version (1, or 2 for example shards)
 *  12  u32      vocab size of the tokenizer that wrote it
 *  16  u32      bytes per token (2 when vocab <= 65536, else 4)
 *  20  u32      end-of-text id (documents are separated by it)
 *  24  u64      token count
 *  32  u64      document count
 *  40  u32      CRC-32 of the token bytes
 *  44  u32      flags: 0 in version 1; 1 (LT_SHARD_EXAMPLES) in version 2
 *  48  u32[3]   reserved, 0
 *  60  u32      CRC-32 of bytes 0..59
 * A reader checks magic, version, header CRC, width, that the file size is
 * exactly 64 + count * width (+ count with LT_SHARD_EXAMPLES), and the
 * vocabulary it is given.
 *
 * Example shards (version 2, flag LT_SHARD_EXAMPLES) hold whole training
 * examples, such as chat conversations: after the tokens come count mark
 * bytes, one per token, bit 0 (LT_SHARD_TRAINED) set where the token is a
 * target the loss trains on, bit 1 (LT_SHARD_START) where an example
 * begins (the first token always); the document count is the example
 * count, and the data CRC covers the tokens and then the marks.
 *
 * Ownership: writers and readers are the caller's, released with their
 * _free/_close (which accept NULL). */
#ifndef LT_SHARD_H
#define LT_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define LT_SHARD_HEADER 64
#define LT_SHARD_EXAMPLES 1u
#define LT_SHARD_TRAINED 1u
#define LT_SHARD_START 2u

typedef struct lt_shard_writer lt_shard_writer;

/* Starts path.tmp; tokens stream through a buffer. */
enum lt_status lt_shard_writer_new(const char *path, int vocab_size, int eot_id,
				   lt_shard_writer **out);
/* The same for an example shard; its marks are kept in memory until
 * finish writes them after the tokens. */
enum lt_status lt_shard_writer_new_examples(const char *path, int vocab_size, int eot_id,
					    lt_shard_writer **out);
enum lt_status lt_shard_writer_add(lt_shard_writer *w, const int32_t *tokens, size_t n);
/* One whole example of an example shard: tokens[n], trained[i] != 0 where
 * token i is trained; counts it as a document. */
enum lt_status lt_shard_writer_add_example(lt_shard_writer *w, const int32_t *tokens,
					   const uint8_t *trained, size_t n);
/* Counts one finished document (the caller appended its EOT). */
void lt_shard_writer_end_document(lt_shard_writer *w);
uint64_t lt_shard_writer_count(const lt_shard_writer *w);
/* Writes the header, fsyncs, and publishes path.tmp as path (lt_fs_publish). */
enum lt_status lt_shard_writer_finish(lt_shard_writer *w);
/* Removes path.tmp if finish was not reached. */
void lt_shard_writer_free(lt_shard_writer *w);

struct lt_shard_info {
	int vocab_size, token_bytes, eot_id;
	int examples;   /* an example shard (LT_SHARD_EXAMPLES): marks follow the tokens */
	uint64_t n_tokens, n_docs;
};

typedef struct lt_shard lt_shard;

/* Opens and validates a shard, which stays open until lt_shard_close.
 * expect_vocab > 0 must equal the header's (else LT_ERR_FORMAT "PATH:
 * vocabulary N, the tokenizer has M"). verify_data != 0 also checks the
 * data CRC and every token < vocab.
 *
 * The reader reads the open file (pread), not a mapping of it: a shard
 * removed while in use still reads as it was (its data live on until
 * closed), and one truncated while in use fails the read with LT_ERR_IO
 * "PATH: ends at byte N, M bytes when opened: the shard was truncated
 * while in use", where a mapping would take SIGBUS (or read zeros within
 * its last page). */
enum lt_status lt_shard_open(const char *path, int expect_vocab, int verify_data, lt_shard **out);
void lt_shard_close(lt_shard *s);
const struct lt_shard_info *lt_shard_info(const lt_shard *s);
const char *lt_shard_path(const lt_shard *s);
/* out[i] = token at + i for i < n (at + n <= n_tokens). Fails when the
 * file was truncated since it was opened (LT_ERR_IO), or holds a token >=
 * the vocabulary there now (LT_ERR_FORMAT "PATH: token T at index I >=
 * vocabulary V"): no read gives the model a token outside its table. */
enum lt_status lt_shard_read(const lt_shard *s, uint64_t at, int32_t *out, size_t n);
/* An example shard's marks of tokens at .. at+n-1, as lt_shard_read. */
enum lt_status lt_shard_read_marks(const lt_shard *s, uint64_t at, uint8_t *out, size_t n);

#endif
