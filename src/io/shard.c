/* Token shard files: the streaming writer (path.tmp, header last, fsync,
 * lt_fs_publish) and the validating reader, which reads through its open
 * file with pread (see shard.h). */
#include "config.h"
#include "io/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "io/fs.h"

_Static_assert(sizeof(off_t) >= 8, "lltrain needs a 64-bit off_t for shards over 2 GiB");

static const char shard_magic[8] = { 'L', 'T', 'T', 'O', 'K', 'E', 'N', 'S' };
#define SHARD_VERSION 1u
#define SHARD_VERSION_EXAMPLES 2u
/* Tokens staged before each write(2): 64 Ki tokens, 128 or 256 KiB. */
#define STAGE_TOKENS ((size_t)1 << 16)

/* ------------------------------------------------------- little-endian */

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* zlib's crc32 takes uInt lengths: feed it in pieces. */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, uint64_t n)
{
	while (n > 0) {
		uInt take = n > (1u << 30) ? (1u << 30) : (uInt)n;
		crc = (uint32_t)crc32(crc, p, take);
		p += take;
		n -= take;
	}
	return crc;
}

static int token_width_for(int vocab_size)
{
	return vocab_size <= 65536 ? 2 : 4;
}

/* ------------------------------------------------------------- writer */

struct lt_shard_writer {
	char *path, *tmp;
	int fd;
	int vocab_size, width, eot_id;
	uint64_t n_tokens, n_docs;
	uint32_t crc;
	unsigned char *stage;     /* STAGE_TOKENS * width bytes */
	size_t staged;            /* tokens in stage */
	int examples;             /* an example shard: marks[n_tokens] follow */
	uint8_t *marks;
	size_t marks_cap;
	int failed, finished;
};

/* write(2) all of p, or set the error naming the path and the byte. */
static enum lt_status write_all(int fd, const unsigned char *p, size_t n, const char *path,
				uint64_t at)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			lt_errmsg_set("%s: cannot write at byte %" PRIu64 ": %s", path, at,
				      k < 0 ? strerror(errno) : "no progress");
			return LT_ERR_IO;
		}
		p += k;
		n -= (size_t)k;
		at += (uint64_t)k;
	}
	return LT_OK;
}

enum lt_status lt_shard_writer_new(const char *path, int vocab_size, int eot_id,
				   lt_shard_writer **out)
{
	static const unsigned char zero_header[LT_SHARD_HEADER];
	lt_shard_writer *w;
	*out = NULL;
	if (vocab_size <= 0 || eot_id < 0 || eot_id >= vocab_size) {
		lt_errmsg_set("%s: vocabulary %d with end-of-text id %d: expected 0 <= id < "
			      "vocabulary", path, vocab_size, eot_id);
		return LT_ERR_ARG;
	}
	if (!(w = calloc(1, sizeof *w))) {
		lt_errmsg_set("%s: cannot allocate a shard writer", path);
		return LT_ERR_NOMEM;
	}
	w->fd = -1;
	w->vocab_size = vocab_size;
	w->width = token_width_for(vocab_size);
	w->eot_id = eot_id;
	w->crc = (uint32_t)crc32(0L, Z_NULL, 0);
	w->path = strdup(path);
	w->tmp = lt_fs_tmp_new(path);
	w->stage = malloc(STAGE_TOKENS * (size_t)w->width);
	if (!w->path || !w->tmp || !w->stage) {
		lt_shard_writer_free(w);
		lt_errmsg_set("%s: cannot allocate a shard writer", path);
		return LT_ERR_NOMEM;
	}
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int err = errno;
		lt_errmsg_set("%s: cannot create: %s", w->tmp, strerror(err));
		free(w->tmp);
		w->tmp = NULL; /* nothing to remove */
		lt_shard_writer_free(w);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	/* The header is written last; hold its place. */
	enum lt_status st = write_all(w->fd, zero_header, sizeof zero_header, w->tmp, 0);
	if (st != LT_OK) {
		lt_shard_writer_free(w);
		return st;
	}
	*out = w;
	return LT_OK;
}

static enum lt_status flush_stage(lt_shard_writer *w)
{
	size_t bytes = w->staged * (size_t)w->width;
	uint64_t at = LT_SHARD_HEADER + (w->n_tokens - w->staged) * (uint64_t)w->width;
	if (bytes == 0)
		return LT_OK;
	w->crc = crc_update(w->crc, w->stage, bytes);
	w->staged = 0;
	enum lt_status st = write_all(w->fd, w->stage, bytes, w->tmp, at);
	if (st != LT_OK)
		w->failed = 1;
	return st;
}

enum lt_status lt_shard_writer_add(lt_shard_writer *w, const int32_t *tokens, size_t n)
{
	if (w->failed || w->finished) {
		lt_errmsg_set("%s: tokens added to a shard writer that %s", w->path,
			      w->failed ? "failed" : "has finished");
		return LT_ERR_ARG;
	}
	for (size_t i = 0; i < n; i++) {
		int32_t t = tokens[i];
		if (t < 0 || t >= w->vocab_size) {
			lt_errmsg_set("%s: token %" PRId32 " at index %" PRIu64 " outside the "
				      "vocabulary [0, %d)", w->path, t, w->n_tokens, w->vocab_size);
			w->failed = 1;
			return LT_ERR_ARG;
		}
		unsigned char *p = w->stage + w->staged * (size_t)w->width;
		p[0] = (unsigned char)t;
		p[1] = (unsigned char)(t >> 8);
		if (w->width == 4) {
			p[2] = (unsigned char)(t >> 16);
			p[3] = (unsigned char)(t >> 24);
		}
		w->staged++;
		w->n_tokens++;
		if (w->staged == STAGE_TOKENS) {
			enum lt_status st = flush_stage(w);
			if (st != LT_OK)
				return st;
		}
	}
	return LT_OK;
}

enum lt_status lt_shard_writer_new_examples(const char *path, int vocab_size, int eot_id,
					    lt_shard_writer **out)
{
	enum lt_status st = lt_shard_writer_new(path, vocab_size, eot_id, out);
	if (st == LT_OK)
		(*out)->examples = 1;
	return st;
}

/* Room for n more marks. */
static enum lt_status grow_marks(lt_shard_writer *w, size_t n)
{
	size_t need = (size_t)w->n_tokens + n, cap = w->marks_cap ? w->marks_cap : 4096;
	if (need <= w->marks_cap)
		return LT_OK;
	while (cap < need)
		cap *= 2;
	uint8_t *m = realloc(w->marks, cap);
	if (!m) {
		lt_errmsg_set("%s: cannot allocate the marks of %zu tokens", w->path, cap);
		w->failed = 1;
		return LT_ERR_NOMEM;
	}
	w->marks = m;
	w->marks_cap = cap;
	return LT_OK;
}

enum lt_status lt_shard_writer_add_example(lt_shard_writer *w, const int32_t *tokens,
					   const uint8_t *trained, size_t n)
{
	LT_ASSERT(w->examples);
	size_t at = (size_t)w->n_tokens;
	enum lt_status st = n ? grow_marks(w, n) : LT_OK;
	if (st == LT_OK)
		st = lt_shard_writer_add(w, tokens, n);
	if (st != LT_OK || n == 0)
		return st;
	for (size_t i = 0; i < n; i++)
		w->marks[at + i] = (uint8_t)((trained[i] ? LT_SHARD_TRAINED : 0) |
					     (i == 0 ? LT_SHARD_START : 0));
	w->n_docs++;
	return LT_OK;
}

void lt_shard_writer_end_document(lt_shard_writer *w)
{
	w->n_docs++;
}

uint64_t lt_shard_writer_count(const lt_shard_writer *w)
{
	return w->n_tokens;
}

/* The 64 header bytes for the writer's counts and data CRC. */
static void encode_header(const lt_shard_writer *w, unsigned char h[LT_SHARD_HEADER])
{
	memset(h, 0, LT_SHARD_HEADER);
	memcpy(h, shard_magic, sizeof shard_magic);
	put_u32(h + 8, w->examples ? SHARD_VERSION_EXAMPLES : SHARD_VERSION);
	put_u32(h + 44, w->examples ? LT_SHARD_EXAMPLES : 0);
	put_u32(h + 12, (uint32_t)w->vocab_size);
	put_u32(h + 16, (uint32_t)w->width);
	put_u32(h + 20, (uint32_t)w->eot_id);
	put_u64(h + 24, w->n_tokens);
	put_u64(h + 32, w->n_docs);
	put_u32(h + 40, w->crc);
	put_u32(h + 60, crc_update((uint32_t)crc32(0L, Z_NULL, 0), h, 60));
}

enum lt_status lt_shard_writer_finish(lt_shard_writer *w)
{
	unsigned char h[LT_SHARD_HEADER];
	enum lt_status st;
	if (w->failed || w->finished) {
		lt_errmsg_set("%s: finish on a shard writer that %s", w->path,
			      w->failed ? "failed" : "has finished");
		return LT_ERR_ARG;
	}
	if ((st = flush_stage(w)) != LT_OK)
		return st;
	if (w->examples && w->n_tokens > 0) {
		w->crc = crc_update(w->crc, w->marks, w->n_tokens);
		st = write_all(w->fd, w->marks, (size_t)w->n_tokens, w->tmp,
			       LT_SHARD_HEADER + w->n_tokens * (uint64_t)w->width);
		if (st != LT_OK) {
			w->failed = 1;
			return st;
		}
	}
	encode_header(w, h);
	if (lseek(w->fd, 0, SEEK_SET) != 0) {
		lt_errmsg_set("%s: cannot seek to the header: %s", w->tmp, strerror(errno));
		w->failed = 1;
		return LT_ERR_IO;
	}
	if ((st = write_all(w->fd, h, sizeof h, w->tmp, 0)) != LT_OK) {
		w->failed = 1;
		return st;
	}
	if (fsync(w->fd) != 0) {
		lt_errmsg_set("%s: fsync failed: %s", w->tmp, strerror(errno));
		w->failed = 1;
		return LT_ERR_IO;
	}
	int rc = close(w->fd);
	w->fd = -1;
	if (rc != 0) {
		lt_errmsg_set("%s: close failed: %s", w->tmp, strerror(errno));
		w->failed = 1;
		return LT_ERR_IO;
	}
	if ((st = lt_fs_publish(w->tmp, w->path)) != LT_OK) {
		w->failed = 1;
		return st;
	}
	w->finished = 1;
	return LT_OK;
}

void lt_shard_writer_free(lt_shard_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (!w->finished && w->tmp)
		unlink(w->tmp);
	free(w->path);
	free(w->tmp);
	free(w->stage);
	free(w->marks);
	free(w);
}

/* ------------------------------------------------------------- reader */

/* Bytes each pread takes at most: verifying a whole shard, and reading
 * tokens for a batch (on the stack). */
#define READ_CHUNK ((size_t)1 << 16)
#define READ_SMALL ((size_t)1 << 13)

struct lt_shard {
	char *path;
	int fd;
	uint64_t size;  /* when opened */
	struct lt_shard_info info;
};

/* Checks the header fields that do not depend on the caller. */
static enum lt_status check_header(const char *path, const unsigned char *h, uint64_t size,
				   struct lt_shard_info *info)
{
	if (memcmp(h, shard_magic, sizeof shard_magic) != 0) {
		lt_errmsg_set("%s: not a token shard (bad magic)", path);
		return LT_ERR_FORMAT;
	}
	uint32_t version = get_u32(h + 8);
	if (version != SHARD_VERSION && version != SHARD_VERSION_EXAMPLES) {
		lt_errmsg_set("%s: shard version %" PRIu32 ", expected %u or %u", path, version,
			      SHARD_VERSION, SHARD_VERSION_EXAMPLES);
		return LT_ERR_FORMAT;
	}
	uint32_t stored = get_u32(h + 60);
	uint32_t computed = crc_update((uint32_t)crc32(0L, Z_NULL, 0), h, 60);
	if (stored != computed) {
		lt_errmsg_set("%s: header checksum mismatch (stored %08" PRIx32 ", computed %08"
			      PRIx32 ")", path, stored, computed);
		return LT_ERR_FORMAT;
	}
	uint32_t vocab = get_u32(h + 12), width = get_u32(h + 16), eot = get_u32(h + 20);
	if (vocab == 0 || vocab > (1u << 31) - 1) {
		lt_errmsg_set("%s: vocabulary %" PRIu32 " in the header, expected 1 to 2^31-1",
			      path, vocab);
		return LT_ERR_FORMAT;
	}
	if (width != (uint32_t)token_width_for((int)vocab)) {
		lt_errmsg_set("%s: %" PRIu32 " bytes per token for vocabulary %" PRIu32
			      ", expected %d", path, width, vocab, token_width_for((int)vocab));
		return LT_ERR_FORMAT;
	}
	if (eot >= vocab) {
		lt_errmsg_set("%s: end-of-text id %" PRIu32 " >= vocabulary %" PRIu32, path, eot,
			      vocab);
		return LT_ERR_FORMAT;
	}
	uint32_t flags = get_u32(h + 44);
	if (flags != (version == SHARD_VERSION ? 0 : LT_SHARD_EXAMPLES)) {
		lt_errmsg_set("%s: flags %" PRIu32 " in a version %" PRIu32 " shard, expected %u",
			      path, flags, version, version == SHARD_VERSION ? 0 : LT_SHARD_EXAMPLES);
		return LT_ERR_FORMAT;
	}
	/* an example shard has a mark byte after each token's bytes */
	width += flags ? 1 : 0;
	uint64_t count = get_u64(h + 24), docs = get_u64(h + 32);
	if (count > (UINT64_MAX - LT_SHARD_HEADER) / width ||
	    size != LT_SHARD_HEADER + count * width) {
		/* the product only matters when it did not overflow */
		if (count <= (UINT64_MAX - LT_SHARD_HEADER) / width)
			lt_errmsg_set("%s: size %" PRIu64 " bytes, header says %" PRIu64 " tokens "
				      "of %" PRIu32 " bytes (expected %" PRIu64 ")", path, size,
				      count, width, LT_SHARD_HEADER + count * width);
		else
			lt_errmsg_set("%s: size %" PRIu64 " bytes, header says %" PRIu64 " tokens "
				      "of %" PRIu32 " bytes (more than a file holds)", path, size,
				      count, width);
		return LT_ERR_FORMAT;
	}
	if (docs > count) {
		lt_errmsg_set("%s: header says %" PRIu64 " documents in %" PRIu64 " tokens",
			      path, docs, count);
		return LT_ERR_FORMAT;
	}
	*info = (struct lt_shard_info){ .vocab_size = (int)vocab,
					.token_bytes = (int)width - (flags ? 1 : 0), .eot_id = (int)eot,
					.examples = flags != 0, .n_tokens = count, .n_docs = docs };
	return LT_OK;
}

/* p[n] = the file's bytes at offset `at`. The file was opened at `size`
 * bytes, which covers them: fewer means it was truncated since (or the
 * read failed), said naming the file and its size now. */
static enum lt_status read_at(const lt_shard *s, unsigned char *p, size_t n, uint64_t at)
{
	while (n > 0) {
		ssize_t got = pread(s->fd, p, n, (off_t)at);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			lt_errmsg_set("%s: read of %zu bytes at offset %" PRIu64 " failed: %s",
				      s->path, n, at, strerror(errno));
			return LT_ERR_IO;
		}
		if (got == 0) {
			struct stat sb;
			long long now = fstat(s->fd, &sb) == 0 ? (long long)sb.st_size : -1;
			lt_errmsg_set("%s: ends at byte %lld, %" PRIu64 " bytes when opened: the "
				      "shard was truncated while in use", s->path, now, s->size);
			return LT_ERR_IO;
		}
		p += got;
		n -= (size_t)got;
		at += (uint64_t)got;
	}
	return LT_OK;
}

/* out[i] = token i of p[n tokens], each checked against the vocabulary
 * (the first at index `first`). */
static enum lt_status decode_tokens(const lt_shard *s, const unsigned char *p, size_t n,
				    uint64_t first, int32_t *out)
{
	int width = s->info.token_bytes;
	for (size_t i = 0; i < n; i++, p += width) {
		uint32_t t = width == 2 ? ((uint32_t)p[0] | (uint32_t)p[1] << 8) : get_u32(p);
		if (t >= (uint32_t)s->info.vocab_size) {
			lt_errmsg_set("%s: token %" PRIu32 " at index %" PRIu64 " >= vocabulary %d",
				      s->path, t, first + i, s->info.vocab_size);
			return LT_ERR_FORMAT;
		}
		out[i] = (int32_t)t;
	}
	return LT_OK;
}

/* An example shard's marks, a chunk at a time into *crc: each one only
 * LT_SHARD_TRAINED and LT_SHARD_START, the first a start, as many starts as
 * the header's examples. *bad gets the first fault; the status is a read's. */
static enum lt_status verify_marks(const lt_shard *s, unsigned char *buf, uint32_t *crc,
				   enum lt_status *bad)
{
	const struct lt_shard_info *in = &s->info;
	uint64_t base = LT_SHARD_HEADER + in->n_tokens * (uint64_t)in->token_bytes, starts = 0;
	for (uint64_t i = 0; i < in->n_tokens; i += READ_CHUNK) {
		size_t n = in->n_tokens - i < READ_CHUNK ? (size_t)(in->n_tokens - i) : READ_CHUNK;
		enum lt_status st = read_at(s, buf, n, base + i);
		if (st != LT_OK)
			return st;
		*crc = crc_update(*crc, buf, n);
		for (size_t k = 0; k < n && *bad == LT_OK; k++) {
			starts += (buf[k] & LT_SHARD_START) != 0;
			if (buf[k] > (LT_SHARD_TRAINED | LT_SHARD_START) ||
			    (i + k == 0 && !(buf[k] & LT_SHARD_START))) {
				lt_errmsg_set("%s: mark %u of token %" PRIu64 ": expected bits 0 "
					      "(trained) and 1 (starts an example, set on the first)",
					      s->path, buf[k], i + k);
				*bad = LT_ERR_FORMAT;
			}
		}
	}
	if (*bad == LT_OK && starts != in->n_docs) {
		lt_errmsg_set("%s: %" PRIu64 " examples start in the marks, the header says %" PRIu64,
			      s->path, starts, in->n_docs);
		*bad = LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* Reads every token a chunk at a time: their CRC against the header's
 * (h), and every token against the vocabulary; a CRC that differs is
 * named first (a damaged file, rather than one of its tokens). */
static enum lt_status verify_tokens(const lt_shard *s, const unsigned char *h)
{
	const struct lt_shard_info *in = &s->info;
	size_t per = READ_CHUNK / (size_t)in->token_bytes;
	unsigned char *buf = malloc(READ_CHUNK);
	int32_t *tokens = malloc(per * sizeof *tokens);
	uint32_t computed = (uint32_t)crc32(0L, Z_NULL, 0), stored = get_u32(h + 40);
	enum lt_status st = LT_OK, bad = LT_OK;
	if (!buf || !tokens) {
		lt_errmsg_set("%s: cannot allocate the read buffer", s->path);
		st = LT_ERR_NOMEM;
	}
	for (uint64_t i = 0; st == LT_OK && i < in->n_tokens; i += per) {
		size_t n = in->n_tokens - i < per ? (size_t)(in->n_tokens - i) : per;
		size_t bytes = n * (size_t)in->token_bytes;
		st = read_at(s, buf, bytes, LT_SHARD_HEADER + i * (uint64_t)in->token_bytes);
		if (st == LT_OK)
			computed = crc_update(computed, buf, bytes);
		if (st == LT_OK && bad == LT_OK)
			bad = decode_tokens(s, buf, n, i, tokens);
	}
	/* the marks' message must not hide a token's: keep the first fault */
	enum lt_status bad_mark = LT_OK;
	char token_fault[512] = "";
	if (bad != LT_OK)
		snprintf(token_fault, sizeof token_fault, "%s", lt_errmsg());
	if (st == LT_OK && in->examples)
		st = verify_marks(s, buf, &computed, &bad_mark);
	if (bad != LT_OK)
		lt_errmsg_set("%s", token_fault);
	else
		bad = bad_mark;
	free(buf);
	free(tokens);
	if (st == LT_OK && stored != computed) {
		lt_errmsg_set("%s: data checksum mismatch (stored %08" PRIx32 ", computed %08"
			      PRIx32 ")", s->path, stored, computed);
		return LT_ERR_FORMAT;
	}
	return st != LT_OK ? st : bad;
}

/* Opens the file into s (a regular file of at least a header); its size
 * is in s->size. */
static enum lt_status open_file(lt_shard *s)
{
	int fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
	struct stat sb;
	if (fd < 0) {
		int err = errno;
		lt_errmsg_set("%s: %s", s->path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	s->fd = fd;
	if (fstat(fd, &sb) != 0) {
		lt_errmsg_set("%s: %s", s->path, strerror(errno));
		return LT_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		lt_errmsg_set("%s: not a regular file, expected a token shard", s->path);
		return LT_ERR_FORMAT;
	}
	s->size = (uint64_t)sb.st_size;
	if (s->size < LT_SHARD_HEADER) {
		lt_errmsg_set("%s: size %" PRIu64 " bytes, too short for a token shard (a %d-byte "
			      "header)", s->path, s->size, LT_SHARD_HEADER);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

enum lt_status lt_shard_open(const char *path, int expect_vocab, int verify_data, lt_shard **out)
{
	lt_shard *s = calloc(1, sizeof *s);
	unsigned char h[LT_SHARD_HEADER];
	enum lt_status st;
	*out = NULL;
	if (!s || !(s->path = strdup(path))) {
		free(s);
		lt_errmsg_set("%s: cannot allocate a shard reader", path);
		return LT_ERR_NOMEM;
	}
	s->fd = -1;
	if ((st = open_file(s)) != LT_OK || (st = read_at(s, h, sizeof h, 0)) != LT_OK ||
	    (st = check_header(path, h, s->size, &s->info)) != LT_OK)
		goto fail;
	if (expect_vocab > 0 && s->info.vocab_size != expect_vocab) {
		lt_errmsg_set("%s: vocabulary %d, the tokenizer has %d", path, s->info.vocab_size,
			      expect_vocab);
		st = LT_ERR_FORMAT;
		goto fail;
	}
	if (verify_data && (st = verify_tokens(s, h)) != LT_OK)
		goto fail;
	*out = s;
	return LT_OK;
fail:
	lt_shard_close(s);
	return st;
}

void lt_shard_close(lt_shard *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s);
}

const struct lt_shard_info *lt_shard_info(const lt_shard *s)
{
	return &s->info;
}

const char *lt_shard_path(const lt_shard *s)
{
	return s->path;
}

enum lt_status lt_shard_read_marks(const lt_shard *s, uint64_t at, uint8_t *out, size_t n)
{
	LT_ASSERT(s->info.examples && at <= s->info.n_tokens && n <= s->info.n_tokens - at);
	uint64_t base = LT_SHARD_HEADER + s->info.n_tokens * (uint64_t)s->info.token_bytes;
	return n ? read_at(s, out, n, base + at) : LT_OK;
}

enum lt_status lt_shard_read(const lt_shard *s, uint64_t at, int32_t *out, size_t n)
{
	LT_ASSERT(at <= s->info.n_tokens && n <= s->info.n_tokens - at);
	size_t width = (size_t)s->info.token_bytes, per = READ_SMALL / width;
	unsigned char buf[READ_SMALL];
	enum lt_status st = LT_OK;
	for (size_t done = 0; done < n && st == LT_OK; done += per) {
		size_t m = n - done < per ? n - done : per;
		uint64_t first = at + done;
		st = read_at(s, buf, m * width, LT_SHARD_HEADER + first * width);
		if (st == LT_OK)
			st = decode_tokens(s, buf, m, first, out + done);
	}
	return st;
}
