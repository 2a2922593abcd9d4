/* Fuzzes the token shard reader: lt_shard_open on the input as a file, as
 * eval opens one, then every token read; and lt_data_open on a directory
 * where the input is both train_0000.bin and val_0000.bin, as training
 * opens its data, then training and validation batches drawn from it.
 *
 * The first byte of an input is not part of the file but says how to open
 * it: bit 0 writes the correct header CRC-32 into bytes 60..63 and bit 1
 * the correct data CRC-32 into bytes 40..43 (so that mutations get past
 * the checksums to the checks behind them), bit 2 verifies the data in
 * lt_shard_open (lt_data_open always does), bits 3-4 choose the vocabulary
 * expected: any (0), the header's, or one more than the header's, and bits
 * 5-7 the batches' sequence length (1 to 8 tokens). */
#include "config.h"
#define LT_FUZZ_NAME shard
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "io/shard.h"
#include "text/data.h"

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> 8 * i);
}

/* Reads every token in blocks: a verified shard reads whole; any read
 * that succeeds gives only tokens below the vocabulary. */
static void read_all(const lt_shard *s, int verified)
{
	const struct lt_shard_info *in = lt_shard_info(s);
	int32_t buf[256];
	for (uint64_t at = 0; at < in->n_tokens;) {
		size_t n = in->n_tokens - at < 256 ? (size_t)(in->n_tokens - at) : 256;
		if (lt_shard_read(s, at, buf, n) != LT_OK) {
			if (verified)
				abort();
			return;
		}
		for (size_t i = 0; i < n; i++)
			if (buf[i] < 0 || buf[i] >= in->vocab_size)
				abort();
		at += n;
	}
}

/* Batches of 3 windows of T tokens from the directory's shards. */
static void draw_batches(const char *dir, int expect, int T)
{
	int32_t tok[3 * 8], tgt[3 * 8];
	long n;
	lt_data *d;
	if (lt_data_open(dir, expect, &d) != LT_OK)
		return;
	lt_data_train_batch(d, 7, 0, 3, T, tok, tgt);
	lt_data_train_batch(d, 7, UINT64_MAX - 1, 3, T, tok, tgt);
	for (uint64_t i = 0; i < 4; i++)
		lt_data_val_batch(d, i, 3, T, tok, tgt, &n);
	lt_data_val_batch(d, UINT64_MAX, 3, T, tok, tgt, &n);
	lt_data_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = lt_fuzz_path("eval.bin"), *dir = lt_fuzz_dir("data");
	unsigned char *file;
	unsigned mode;
	int expect = 0;
	lt_shard *s;

	if (size < 1)
		return 0;
	mode = data[0];
	size = lt_fuzz_cap(size - 1);
	if (!(file = malloc(size + 1)))
		return 0;
	memcpy(file, data + 1, size);
	if (size >= LT_SHARD_HEADER) {
		if (mode & 2)
			put_u32(file + 40, (uint32_t)crc32(crc32(0L, Z_NULL, 0),
							  file + LT_SHARD_HEADER,
							  (uInt)(size - LT_SHARD_HEADER)));
		if (mode & 1)
			put_u32(file + 60, (uint32_t)crc32(crc32(0L, Z_NULL, 0), file, 60));
		if ((mode >> 3 & 3) == 1)
			expect = (int)(get_u32(file + 12) & 0x7fffffff);
		else if ((mode >> 3 & 3) == 2)
			expect = (int)((get_u32(file + 12) + 1) & 0x7fffffff);
	}
	lt_fuzz_write(path, file, size);
	lt_fuzz_write(lt_fuzz_path("data/train_0000.bin"), file, size);
	lt_fuzz_write(lt_fuzz_path("data/val_0000.bin"), file, size);
	free(file);
	if (lt_shard_open(path, expect, (mode & 4) != 0, &s) == LT_OK) {
		const struct lt_shard_info *in = lt_shard_info(s);
		if ((expect > 0 && in->vocab_size != expect) ||
		    LT_SHARD_HEADER + in->n_tokens * (uint64_t)(in->token_bytes + in->examples) !=
			    size ||
		    in->n_docs > in->n_tokens || in->eot_id >= in->vocab_size)
			abort(); /* a header that does not say what the file is */
		read_all(s, (mode & 4) != 0);
		lt_shard_close(s);
	}
	draw_batches(dir, expect, 1 + (int)(mode >> 5));
	return 0;
}
