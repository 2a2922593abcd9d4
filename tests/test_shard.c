/* Tests of token shards, the data loader and data preparation: shard round
 * trips in both token widths with the header checked byte by byte, every
 * corruption refused by its message, writer failures that leave no file,
 * training windows keyed by (seed, sample), sequential validation batches,
 * and `prepare` on generated corpora: documents counted, the text decoded
 * back from the shards, the same bytes with 1 and 2 threads, a document
 * larger than the read blocks, and failures that leave the output alone. */
#include "config.h"
#include "io/shard.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <omp.h>
#include <zlib.h>

#include "text/data.h"
#include "text/prepare.h"
#include "rng.h"
#include "io/fs.h"
#include "tap.h"
#include "text/tokenizer.h"

static const char *dir; /* the scratch directory */

static int same_file(const char *a, const char *b)
{
	size_t na, nb;
	unsigned char *pa = tap_slurp(a, &na), *pb = tap_slurp(b, &nb);
	int same = pa && pb && na == nb && !memcmp(pa, pb, na);
	free(pa);
	free(pb);
	return same;
}

/* Whether the error line starts with path and holds the text. */
static int msg_has(const char *path, const char *text)
{
	const char *m = lt_errmsg();
	return (!path || !strncmp(m, path, strlen(path))) && strstr(m, text);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void set_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint32_t crc_of(const unsigned char *p, size_t n)
{
	return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Writes a shard of n tokens f(i) with documents ending at every k-th. */
static enum lt_status make_shard(const char *path, int vocab, int eot, const int32_t *tok,
				 size_t n, size_t doc_every)
{
	lt_shard_writer *w;
	enum lt_status st = lt_shard_writer_new(path, vocab, eot, &w);
	for (size_t i = 0; st == LT_OK && i < n; i++) {
		/* in uneven pieces, so staging is crossed at odd places */
		size_t take = 1 + i % 7777 < n - i ? 1 + i % 7777 : n - i;
		st = lt_shard_writer_add(w, tok + i, take);
		for (size_t j = i; j < i + take; j++)
			if (doc_every && (j + 1) % doc_every == 0)
				lt_shard_writer_end_document(w);
		i += take - 1;
	}
	if (st == LT_OK)
		st = lt_shard_writer_finish(w);
	lt_shard_writer_free(w);
	return st;
}

/* ------------------------------------------------------------ shards */

static void test_round_trip(int vocab, size_t n, const char *name)
{
	int32_t *tok = malloc(n * sizeof *tok), *back = malloc(n * sizeof *back);
	int width = vocab <= 65536 ? 2 : 4;
	for (size_t i = 0; i < n; i++)
		tok[i] = (int32_t)((i * 2654435761u) % (uint32_t)vocab);
	tok[n - 1] = vocab - 1;
	enum lt_status st = make_shard(tap_at(name), vocab, 7, tok, n, 1000);
	lt_shard *s = NULL;
	if (st == LT_OK)
		st = lt_shard_open(tap_at(name), vocab, 1, &s);
	tap_ok(st == LT_OK, "%d-byte shard of %zu tokens written and opened with full checks (%s)",
	       width, n, lt_errmsg());
	if (!s) {
		tap_skip("no shard to read");
		tap_skip("no shard to read");
		free(tok);
		free(back);
		return;
	}
	const struct lt_shard_info *in = lt_shard_info(s);
	tap_ok(in->vocab_size == vocab && in->token_bytes == width && in->eot_id == 7 &&
	       in->n_tokens == n && in->n_docs == n / 1000 && !strcmp(lt_shard_path(s), tap_at(name)),
	       "%d-byte shard: header fields read back (vocab %d, %" PRIu64 " tokens, %" PRIu64
	       " documents)", width, in->vocab_size, in->n_tokens, in->n_docs);
	int same = lt_shard_read(s, 0, back, n) == LT_OK && !memcmp(tok, back, n * sizeof *tok);
	same = same && lt_shard_read(s, n - 3, back, 3) == LT_OK &&
	       !memcmp(back, tok + n - 3, 3 * sizeof *tok);
	tap_ok(same, "%d-byte shard: every token reads back, from the start and from an offset",
	       width);
	lt_shard_close(s);

	/* The bytes on disk, against the documented layout and zlib's CRC. */
	size_t len;
	unsigned char *p = tap_slurp(tap_at(name), &len);
	int layout = p && len == 64 + n * (size_t)width && !memcmp(p, "LTTOKENS", 8) &&
		     le32(p + 8) == 1 && le32(p + 12) == (uint32_t)vocab &&
		     le32(p + 16) == (uint32_t)width && le32(p + 20) == 7 && le64(p + 24) == n &&
		     le64(p + 32) == n / 1000 && le32(p + 44) == 0 && le32(p + 48) == 0 &&
		     le32(p + 52) == 0 && le32(p + 56) == 0 && le32(p + 60) == crc_of(p, 60) &&
		     le32(p + 40) == crc_of(p + 64, n * (size_t)width);
	for (size_t i = 0; layout && i < n; i++) {
		const unsigned char *q = p + 64 + i * (size_t)width;
		uint32_t v = width == 2 ? (uint32_t)q[0] | (uint32_t)q[1] << 8 : le32(q);
		layout = v == (uint32_t)tok[i];
	}
	tap_ok(layout, "%d-byte shard: the bytes follow the documented header and little-endian "
	       "tokens, with zlib's CRC-32 of header and data", width);
	free(p);
	free(tok);
	free(back);
}

/* Rewrites a copy of the good shard through edit, then expects open to
 * fail with the text (and the path first). */
static void expect_bad(const char *what, void (*edit)(unsigned char *p, size_t *n),
		       int expect_vocab, int verify, enum lt_status want, const char *text)
{
	size_t n;
	unsigned char *p = tap_slurp(tap_at("good.bin"), &n);
	lt_shard *s = NULL;
	if (!p || !(p = realloc(p, n + 16)))
		abort();
	edit(p, &n);
	tap_write_file(tap_at("bad.bin"), p, n);
	free(p);
	lt_errmsg_clear();
	enum lt_status st = lt_shard_open(tap_at("bad.bin"), expect_vocab, verify, &s);
	tap_ok(st == want && !s && msg_has(tap_at("bad.bin"), text), "refused: %s (%s)", what,
	       lt_status_str(st));
	tap_diag("  %s", lt_errmsg());
	lt_shard_close(s);
}

static void reseal(unsigned char *p)
{
	set_le32(p + 60, crc_of(p, 60));
}

static void edit_magic(unsigned char *p, size_t *n)
{
	(void)n;
	p[3] = 'X';
	reseal(p);
}

static void edit_version(unsigned char *p, size_t *n)
{
	(void)n;
	set_le32(p + 8, 3);
	reseal(p);
}

static void edit_header_bit(unsigned char *p, size_t *n)
{
	(void)n;
	p[25] ^= 1;
}

static void edit_count(unsigned char *p, size_t *n)
{
	(void)n;
	set_le32(p + 24, le32(p + 24) + 1);
	reseal(p);
}

static void edit_truncate(unsigned char *p, size_t *n)
{
	(void)p;
	*n -= 3;
}

static void edit_width(unsigned char *p, size_t *n)
{
	(void)n;
	set_le32(p + 16, 4);
	reseal(p);
}

static void edit_data_bit(unsigned char *p, size_t *n)
{
	(void)n;
	p[64 + 500] ^= 0x10;
}


/* A shard changed while open: removed, it still reads as it was; a token
 * overwritten in place with one past the vocabulary, or the file
 * truncated, fails the read naming the file. */
static void test_changed_under_reader(void)
{
	enum { N = 30000 };
	static int32_t tok[N], back[N];
	for (int i = 0; i < N; i++)
		tok[i] = (int32_t)(i % 1000);
	const char *path = tap_at("changing.bin");
	lt_shard *s = NULL;
	enum lt_status st = make_shard(path, 1000, 999, tok, N, 100);
	if (st == LT_OK)
		st = lt_shard_open(path, 1000, 1, &s);
	if (st != LT_OK) {
		tap_ok(0, "a shard to change opens (%s)", lt_errmsg());
		tap_skip("no shard to change");
		tap_skip("no shard to change");
		return;
	}
	unlink(path);
	st = lt_shard_read(s, 0, back, N);
	tap_ok(st == LT_OK && !memcmp(tok, back, sizeof tok),
	       "a shard removed while open reads back whole (%s)", st ? lt_errmsg() : "ok");
	lt_shard_close(s);

	make_shard(path, 1000, 999, tok, N, 100);
	st = lt_shard_open(path, 1000, 1, &s);
	FILE *f = fopen(path, "r+b");
	unsigned char big[2] = { 0xff, 0xff };  /* token 65535 at index 10 */
	if (f) {
		fseek(f, 64 + 2 * 10, SEEK_SET);
		fwrite(big, 1, 2, f);
		fclose(f);
	}
	st = st == LT_OK ? lt_shard_read(s, 5, back, 10) : st;
	tap_ok(st == LT_ERR_FORMAT && strstr(lt_errmsg(), "changing.bin: token 65535 at index 10 "
						      ">= vocabulary 1000"),
	       "a token past the vocabulary written into an open shard fails the read: %s",
	       lt_errmsg());
	lt_shard_close(s);

	make_shard(path, 1000, 999, tok, N, 100);
	st = lt_shard_open(path, 1000, 1, &s);
	if (st == LT_OK && truncate(path, 1000) != 0)
		st = LT_ERR_IO;
	st = st == LT_OK ? lt_shard_read(s, N - 100, back, 50) : LT_ERR_IO;
	tap_ok(st == LT_ERR_IO && strstr(lt_errmsg(), "changing.bin: ends at byte 1000, 60064 bytes "
						   "when opened: the shard was truncated while in use"),
	       "a shard truncated while open fails the read: %s", lt_errmsg());
	lt_shard_close(s);
}
/* token 123 becomes 9999 (vocabulary 5000), with both CRCs made right */
static void edit_token(unsigned char *p, size_t *n)
{
	p[64 + 2 * 123] = 9999 & 0xff;
	p[64 + 2 * 123 + 1] = 9999 >> 8;
	set_le32(p + 40, crc_of(p + 64, *n - 64));
	reseal(p);
}

static void edit_short(unsigned char *p, size_t *n)
{
	(void)p;
	*n = 40;
}

static void edit_none(unsigned char *p, size_t *n)
{
	(void)p;
	(void)n;
}

static void test_bad_shards(void)
{
	int32_t tok[1000];
	for (int i = 0; i < 1000; i++)
		tok[i] = (i * 37) % 5000;
	make_shard(tap_at("good.bin"), 5000, 256, tok, 1000, 100);
	expect_bad("bad magic", edit_magic, 0, 0, LT_ERR_FORMAT, "not a token shard (bad magic)");
	expect_bad("version 3", edit_version, 0, 0, LT_ERR_FORMAT,
		   "shard version 3, expected 1 or 2");
	expect_bad("a flipped header bit", edit_header_bit, 0, 0, LT_ERR_FORMAT,
		   "header checksum mismatch");
	expect_bad("one token more in the header than in the file", edit_count, 0, 0,
		   LT_ERR_FORMAT, "size 2064 bytes, header says 1001 tokens of 2 bytes "
		   "(expected 2066)");
	expect_bad("a truncated file", edit_truncate, 0, 0, LT_ERR_FORMAT,
		   "size 2061 bytes, header says 1000 tokens of 2 bytes (expected 2064)");
	expect_bad("4-byte tokens for a vocabulary of 5000", edit_width, 0, 0, LT_ERR_FORMAT,
		   "4 bytes per token for vocabulary 5000, expected 2");
	expect_bad("another tokenizer's vocabulary", edit_none, 4096, 0, LT_ERR_FORMAT,
		   "vocabulary 5000, the tokenizer has 4096");
	expect_bad("a flipped data bit (with data checks)", edit_data_bit, 5000, 1, LT_ERR_FORMAT,
		   "data checksum mismatch");
	expect_bad("a token outside the vocabulary", edit_token, 5000, 1, LT_ERR_FORMAT,
		   "token 9999 at index 123 >= vocabulary 5000");
	expect_bad("a file shorter than the header", edit_short, 0, 0, LT_ERR_FORMAT,
		   "size 40 bytes, too short for a token shard");

	/* without data checks a data bit flip is not seen: the check is the CRC's */
	lt_shard *s = NULL;
	size_t n;
	unsigned char *p = tap_slurp(tap_at("good.bin"), &n);
	edit_data_bit(p, &n);
	tap_write_file(tap_at("bad.bin"), p, n);
	free(p);
	tap_ok(lt_shard_open(tap_at("bad.bin"), 5000, 0, &s) == LT_OK,
	       "a data bit flip passes the header checks alone (verify_data finds it)");
	lt_shard_close(s);
	s = NULL;
	lt_errmsg_clear();
	enum lt_status st = lt_shard_open(tap_at("absent.bin"), 0, 0, &s);
	tap_ok(st == LT_ERR_NOTFOUND && msg_has(tap_at("absent.bin"), "No such file or directory"),
	       "a missing shard is LT_ERR_NOTFOUND naming it (%s)", lt_errmsg());
	mkdir(tap_at("adir.bin"), 0755);
	st = lt_shard_open(tap_at("adir.bin"), 0, 0, &s);
	tap_ok(st == LT_ERR_FORMAT && msg_has(tap_at("adir.bin"), "not a regular file"),
	       "a directory is not a shard (%s)", lt_errmsg());
	rmdir(tap_at("adir.bin"));
	unlink(tap_at("bad.bin"));
	unlink(tap_at("good.bin"));
}

static void test_writer_failures(void)
{
	lt_shard_writer *w = NULL;
	int32_t tok[3] = { 1, 2, 3 };
	enum lt_status st = lt_shard_writer_new(tap_at("nodir/x.bin"), 300, 256, &w);
	tap_ok(st != LT_OK && !w && msg_has(tap_at("nodir/x.bin.tmp"), "cannot create"),
	       "a shard in a missing directory fails naming the file (%s)", lt_errmsg());

	/* freed before finish: neither the target nor the .tmp stays */
	st = lt_shard_writer_new(tap_at("dropped.bin"), 300, 256, &w);
	if (st == LT_OK)
		st = lt_shard_writer_add(w, tok, 3);
	int had_tmp = tap_exists(tap_at("dropped.bin.tmp"));
	lt_shard_writer_free(w);
	tap_ok(st == LT_OK && had_tmp && !tap_exists(tap_at("dropped.bin.tmp")) &&
	       !tap_exists(tap_at("dropped.bin")),
	       "a writer freed before finish removes its .tmp and leaves no shard");

	st = lt_shard_writer_new(tap_at("range.bin"), 300, 256, &w);
	int32_t badtok[2] = { 5, 300 };
	if (st == LT_OK)
		st = lt_shard_writer_add(w, badtok, 2);
	tap_ok(st == LT_ERR_ARG && msg_has(tap_at("range.bin"), "token 300 at index 1 outside the "
	       "vocabulary [0, 300)"),
	       "a token outside the vocabulary is refused by the writer (%s)", lt_errmsg());
	lt_shard_writer_free(w);

	/* a write error (file-size limit) in the middle of the data */
	struct rlimit old, lim;
	int limited = getrlimit(RLIMIT_FSIZE, &old) == 0;
	if (limited) {
		lim = old;
		lim.rlim_cur = 65536;
		limited = (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > 65536) &&
			  setrlimit(RLIMIT_FSIZE, &lim) == 0;
	}
	if (!limited) {
		tap_skip("cannot lower RLIMIT_FSIZE to inject a write error");
		return;
	}
	void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
	size_t n = 200000;
	int32_t *many = calloc(n, sizeof *many);
	st = lt_shard_writer_new(tap_at("big.bin"), 300, 256, &w);
	if (st == LT_OK)
		st = lt_shard_writer_add(w, many, n);
	if (st == LT_OK)
		st = lt_shard_writer_finish(w);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, oldsig);
	int msg = msg_has(tap_at("big.bin.tmp"), "cannot write at byte") &&
		  msg_has(NULL, strerror(EFBIG));
	lt_shard_writer_free(w);
	tap_ok(st == LT_ERR_IO && msg && !tap_exists(tap_at("big.bin")) && !tap_exists(tap_at("big.bin.tmp")),
	       "a failed write is LT_ERR_IO naming the file, and leaves no shard and no .tmp (%s)",
	       lt_errmsg());
	free(many);
}

/* --------------------------------------------------------- the loader */

#define TRAIN0 3000
#define TRAIN1 1500
#define VAL0 100
#define VAL1 50

/* Shards whose token values say where they are: train_0000 holds 0..2999,
 * train_0001 3000..4499, val_0000 4500..4599, val_0001 4600..4649. */
static void make_data_dir(const char *d)
{
	int32_t tok[TRAIN0];
	char path[4300];
	mkdir(d, 0755);
	const struct { const char *name; int first, n; } parts[] = {
		{ "train_0000.bin", 0, TRAIN0 }, { "train_0001.bin", TRAIN0, TRAIN1 },
		{ "val_0000.bin", TRAIN0 + TRAIN1, VAL0 },
		{ "val_0001.bin", TRAIN0 + TRAIN1 + VAL0, VAL1 },
	};
	for (int k = 0; k < 4; k++) {
		for (int i = 0; i < parts[k].n; i++)
			tok[i] = parts[k].first + i;
		snprintf(path, sizeof path, "%s/%s", d, parts[k].name);
		make_shard(path, 5000, 4999, tok, (size_t)parts[k].n, 0);
	}
	/* not shards: a writer's leftover and another name */
	snprintf(path, sizeof path, "%s/train_0002.bin.tmp", d);
	tap_write_file(path, "junk", 4);
	snprintf(path, sizeof path, "%s/notes.txt", d);
	tap_write_file(path, "junk", 4);
}

/* Row b of a batch is one run of consecutive values inside one shard, and
 * targets are the tokens shifted by one. */
static int row_is_window(const int32_t *tok, const int32_t *tgt, int T)
{
	int shard = tok[0] < TRAIN0 ? 0 : 1;
	int end = shard == 0 ? TRAIN0 : TRAIN0 + TRAIN1;
	if (tok[0] < 0 || tgt[T - 1] >= end)
		return 0;
	for (int t = 0; t < T; t++)
		if (tok[t] != tok[0] + t || tgt[t] != tok[t] + 1)
			return 0;
	return 1;
}

static void test_loader(void)
{
	const char *d = tap_at("data");
	lt_data *data = NULL;
	enum lt_status st;
	int B = 4, T = 16;
	int32_t tok[4 * 16], tgt[4 * 16], one_tok[16], one_tgt[16];
	make_data_dir(d);
	lt_errmsg_clear();
	st = lt_data_open(d, 5000, &data);
	tap_ok(st == LT_OK && lt_data_tokens(data, LT_DATA_TRAIN) == TRAIN0 + TRAIN1 &&
	       lt_data_tokens(data, LT_DATA_VAL) == VAL0 + VAL1,
	       "the loader opens two train and two val shards and counts their tokens (%s)",
	       lt_errmsg());
	if (!data) {
		tap_skip("no data");
		return;
	}
	st = lt_data_train_batch(data, 42, 10, B, T, tok, tgt);
	int windows = st == LT_OK;
	for (int b = 0; b < B; b++)
		windows = windows && row_is_window(tok + b * T, tgt + b * T, T);
	tap_ok(windows, "training rows are windows inside one shard, targets shifted by one");

	int32_t again_tok[4 * 16], again_tgt[4 * 16];
	lt_data_train_batch(data, 42, 10, B, T, again_tok, again_tgt);
	int same = !memcmp(tok, again_tok, sizeof tok) && !memcmp(tgt, again_tgt, sizeof tgt);
	lt_data_train_batch(data, 43, 10, B, T, again_tok, again_tgt);
	int other = memcmp(tok, again_tok, sizeof tok) != 0;
	tap_ok(same && other, "a training batch is a function of (seed, first sample): same "
	       "again, different for another seed");

	int split_same = 1;
	for (int b = 0; b < B; b++) {
		lt_data_train_batch(data, 42, 10 + (uint64_t)b, 1, T, one_tok, one_tgt);
		split_same = split_same && !memcmp(one_tok, tok + b * T, sizeof one_tok) &&
			     !memcmp(one_tgt, tgt + b * T, sizeof one_tgt);
	}
	tap_ok(split_same, "sample s is the same window in a batch of 4 and in a batch of 1");

	/* over many samples: both shards, both ends of each, in proportion */
	long from0 = 0, n = 4000, ok_rows = 0;
	int32_t lo[2] = { INT32_MAX, INT32_MAX }, hi[2] = { -1, -1 };
	for (long s = 0; s < n; s++) {
		lt_data_train_batch(data, 7, (uint64_t)s, 1, T, one_tok, one_tgt);
		int k = one_tok[0] < TRAIN0 ? 0 : 1;
		ok_rows += row_is_window(one_tok, one_tgt, T);
		from0 += k == 0;
		lo[k] = one_tok[0] < lo[k] ? one_tok[0] : lo[k];
		hi[k] = one_tok[0] > hi[k] ? one_tok[0] : hi[k];
	}
	double share = (double)from0 / (double)n;
	double want = (TRAIN0 - T) / (double)(TRAIN0 + TRAIN1 - 2 * T);
	tap_ok(ok_rows == n && fabs(share - want) < 0.04 && lo[0] < 40 && hi[0] > TRAIN0 - T - 40 &&
	       lo[1] < TRAIN0 + 40 && hi[1] > TRAIN0 + TRAIN1 - T - 40,
	       "4000 samples: all windows inside a shard, %.3f from the first (expected %.3f), "
	       "starts reaching both ends of both shards", share, want);

	st = lt_data_train_batch(data, 1, 0, 1, TRAIN0, one_tok, one_tgt);
	tap_ok(st == LT_ERR_ARG && msg_has(d, "no training shard holds a window of 3001 tokens "
	       "(the longest has 3000)"), "a window longer than every shard is refused (%s)",
	       lt_errmsg());

	/* validation: B=2, T=16, so batch i covers tokens 32i .. 32i+32 */
	long real;
	int seq = 1;
	for (uint64_t i = 0; i < 4; i++) {
		lt_data_val_batch(data, i, 2, T, tok, tgt, &real);
		for (int j = 0; j < 2 * T; j++) {
			int32_t want_tok = (int32_t)(TRAIN0 + TRAIN1 + 32 * i + (uint64_t)j);
			seq = seq && tok[j] == want_tok && tgt[j] == want_tok + 1;
		}
		seq = seq && real == 2 * T;
	}
	tap_ok(seq, "validation batches are consecutive windows from the start, across the "
	       "shard boundary, targets shifted by one");
	/* batch 4 covers 128..159 of 150 tokens: 21 targets exist (129..149) */
	lt_data_val_batch(data, 4, 2, T, tok, tgt, &real);
	int tail = real == 21;
	for (int j = 0; j < 2 * T; j++) {
		int32_t pos = 128 + j;
		tail = tail && tok[j] == (pos < 150 ? TRAIN0 + TRAIN1 + pos : 0) &&
		       tgt[j] == (pos + 1 < 150 ? TRAIN0 + TRAIN1 + pos + 1 : -1);
	}
	lt_data_val_batch(data, 5, 2, T, tok, tgt, &real);
	int past = real == 0 && tgt[0] == -1 && tgt[2 * T - 1] == -1;
	lt_data_val_batch(data, UINT64_MAX / 2, 2, T, tok, tgt, &real);
	past = past && real == 0;
	tap_ok(tail && past, "the last validation batch has target -1 past the end (21 real), "
	       "later ones none");
	lt_data_close(data);

	data = NULL;
	st = lt_data_open(d, 4096, &data);
	tap_ok(st == LT_ERR_FORMAT && !data &&
	       msg_has(d, "vocabulary 5000, the tokenizer has 4096"),
	       "shards of another vocabulary are refused (%s)", lt_errmsg());
	char path[4300];
	snprintf(path, sizeof path, "%s/val_0000.bin", d);
	unlink(path);
	snprintf(path, sizeof path, "%s/val_0001.bin", d);
	unlink(path);
	st = lt_data_open(d, 5000, &data);
	tap_ok(st == LT_ERR_NOTFOUND && !data && msg_has(d, "no val_*.bin token shards"),
	       "a directory without validation shards is refused (%s)", lt_errmsg());
	lt_fs_remove_tree(d);
}

/* ------------------------------------------------------- preparation */

/* The documents of a file by the rule, read whole: lines equal to sep
 * (a trailing CR aside) end documents; empty documents are dropped. */
struct docs {
	char **text;
	size_t *len;
	size_t n;
};

static void docs_push(struct docs *d, const char *p, size_t n)
{
	if (n == 0)
		return;
	d->text = realloc(d->text, (d->n + 1) * sizeof *d->text);
	d->len = realloc(d->len, (d->n + 1) * sizeof *d->len);
	d->text[d->n] = malloc(n + 1);
	memcpy(d->text[d->n], p, n);
	d->len[d->n++] = n;
}

static void reference_documents(const char *path, const char *sep, struct docs *d)
{
	size_t n, start = 0, line = 0, seplen = strlen(sep);
	unsigned char *p = tap_slurp(path, &n);
	const char *s = (const char *)p;
	if (!seplen) {
		docs_push(d, s, n);
		free(p);
		return;
	}
	while (line < n) {
		const char *nl = memchr(s + line, '\n', n - line);
		size_t end = nl ? (size_t)(nl - s) : n, l = end - line;
		if (l > 0 && s[end - 1] == '\r')
			l--;
		if (l == seplen && !memcmp(s + line, sep, l)) {
			docs_push(d, s + start, line - start);
			start = end + 1;
		}
		line = end + 1;
	}
	if (start < n)
		docs_push(d, s + start, n - start);
	free(p);
}

static void docs_free(struct docs *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->text[i]);
	free(d->text);
	free(d->len);
	memset(d, 0, sizeof *d);
}

static const char *words[] = {
	"the", "keeper", "light", "lamp", "wrote", "sea", "grey", "ships", "tea", "storm",
	"glass", "north", "south", "Überfahrt", "café", "naïve", "日本", "語", "über", "—",
	"42", "3.14", "don't", "it's", "we'll", "(note)", "\"quoted\"", "x\ty", "a  b", "?!",
};

/* Random text of about n bytes from the word list. */
static void random_text(struct lt_rng *r, char *out, size_t n)
{
	size_t at = 0;
	while (at + 40 < n) {
		const char *w = words[lt_rng_below(r, sizeof words / sizeof *words)];
		at += (size_t)snprintf(out + at, n - at, "%s%s", w,
				       lt_rng_below(r, 9) == 0 ? "\n" : " ");
	}
	out[at] = '\0';
}

/* Writes the test corpus: in/a.txt and in/dir/{b,c}.txt with documents
 * between "%" lines (one CRLF separator, empty documents, no final newline
 * in one file), and files the listing must skip. */
static void make_corpus(void)
{
	struct lt_rng r;
	char doc[1200];
	FILE *f;
	lt_rng_seed(&r, 99, 1);
	mkdir(tap_at("in"), 0755);
	mkdir(tap_at("in/dir"), 0755);
	mkdir(tap_at("in/dir/sub"), 0755);
	f = fopen(tap_at("in/a.txt"), "w");
	for (int i = 0; i < 30; i++) {
		random_text(&r, doc, 80 + lt_rng_below(&r, 1000));
		fprintf(f, "%s\n%s\n", doc, i == 5 ? "%\r" : i == 9 ? "%\n%" : "%");
	}
	fclose(f);
	f = fopen(tap_at("in/dir/b.txt"), "w");
	for (int i = 0; i < 25; i++) {
		random_text(&r, doc, 80 + lt_rng_below(&r, 1000));
		fprintf(f, "%s%s", i ? "\n%\n" : "", doc);
	}
	fclose(f);
	f = fopen(tap_at("in/dir/c.txt"), "w");
	fprintf(f, "%%\nfirst of c\n%%\n\n%%\n  %% not a separator\nlast of c\n");
	fclose(f);
	tap_write_file(tap_at("in/dir/.hidden"), "hidden text\n", 12);
	tap_write_file(tap_at("in/dir/c.dat"), "index\n", 6);
	tap_write_file(tap_at("in/dir/c.u8"), "link\n", 5);
	tap_write_file(tap_at("in/dir/sub/d.txt"), "nested\n", 7);
}

static const char *corpus_inputs[] = { NULL, NULL };
static size_t read_block; /* of run_prepare; 0 = the default */

/* Prepares the corpus; batches of 2 KiB (many, and the big document's
 * pieces alone in theirs) when threads is 2, the default with 1. */
static enum lt_status run_prepare(const char *out, int threads, double val, long shard_tokens,
				  const char *tokenizer, struct lt_prepare_report *rep)
{
	struct lt_prepare_opts o = {
		.inputs = corpus_inputs, .n_inputs = 2, .out_dir = out, .tokenizer = tokenizer,
		.vocab_size = 320, .doc_separator = "%", .val_fraction = val,
		.shard_tokens = shard_tokens, .model_max_length = 64,
		.batch_bytes = threads > 1 ? 2048 : 0, .read_block = read_block,
	};
	omp_set_num_threads(threads);
	lt_errmsg_clear();
	enum lt_status st = lt_prepare_run(&o, rep);
	omp_set_num_threads(2);
	return st;
}

/* All tokens of dir/PREFIX_NNNN.bin in order, and the shards' doc counts. */
static int32_t *read_split(const char *d, const char *prefix, int n_shards, size_t *n,
			   uint64_t *docs)
{
	int32_t *all = NULL;
	*n = 0;
	*docs = 0;
	for (int k = 0; k < n_shards; k++) {
		char path[4300];
		lt_shard *s;
		snprintf(path, sizeof path, "%s/%s_%04d.bin", d, prefix, k);
		if (lt_shard_open(path, 0, 1, &s) != LT_OK)
			return all;
		size_t m = lt_shard_info(s)->n_tokens;
		all = realloc(all, (*n + m + 1) * sizeof *all);
		if (lt_shard_read(s, 0, all + *n, m) != LT_OK) {
			lt_shard_close(s);
			return all;
		}
		*n += m;
		*docs += lt_shard_info(s)->n_docs;
		lt_shard_close(s);
	}
	return all;
}

/* Splits ids on EOT; document j of the split must decode to the next
 * expected document of that split. */
static int split_matches(const lt_tokenizer *tok, const int32_t *ids, size_t n,
			 const struct docs *expect, double f, int val)
{
	size_t doc = 0, start = 0;
	int32_t eot = lt_tokenizer_eot_id(tok);
	for (size_t i = 0; i < n; i++) {
		if (ids[i] != eot)
			continue;
		while (doc < expect->n &&
		       (floor((double)(doc + 1) * f) > floor((double)doc * f)) != val)
			doc++;
		char *text;
		size_t len;
		if (doc >= expect->n ||
		    lt_tokenizer_decode(tok, ids + start, i - start, &text, &len) != LT_OK)
			return 0;
		int same = len == expect->len[doc] && !memcmp(text, expect->text[doc], len);
		free(text);
		if (!same) {
			tap_diag("  document %zu differs", doc);
			return 0;
		}
		doc++;
		start = i + 1;
	}
	return start == n;
}

static int dirs_same(const char *a, const char *b, int train_shards, int val_shards)
{
	const char *names[] = { "tokenizer.json", "tokenizer_config.json" };
	char pa[4300], pb[4300];
	int same = 1;
	for (int i = 0; i < 2; i++) {
		snprintf(pa, sizeof pa, "%s/%s", a, names[i]);
		snprintf(pb, sizeof pb, "%s/%s", b, names[i]);
		same = same && same_file(pa, pb);
	}
	for (int k = 0; k < train_shards + val_shards; k++) {
		const char *prefix = k < train_shards ? "train" : "val";
		int i = k < train_shards ? k : k - train_shards;
		snprintf(pa, sizeof pa, "%s/%s_%04d.bin", a, prefix, i);
		snprintf(pb, sizeof pb, "%s/%s_%04d.bin", b, prefix, i);
		same = same && same_file(pa, pb);
	}
	return same;
}

static void test_prepare(void)
{
	struct lt_prepare_report rep, rep2;
	struct docs expect = { 0 };
	char a_path[4300], dir_path[4300];
	snprintf(a_path, sizeof a_path, "%s", tap_at("in/a.txt"));
	snprintf(dir_path, sizeof dir_path, "%s", tap_at("in/dir"));
	corpus_inputs[0] = a_path;
	corpus_inputs[1] = dir_path;
	make_corpus();
	reference_documents(tap_at("in/a.txt"), "%", &expect);
	reference_documents(tap_at("in/dir/b.txt"), "%", &expect);
	reference_documents(tap_at("in/dir/c.txt"), "%", &expect);

	enum lt_status st = run_prepare(tap_at("out1"), 1, 0.1, 700, NULL, &rep);
	tap_ok(st == LT_OK && rep.n_files == 3 && rep.n_docs == expect.n && rep.vocab_size == 320,
	       "prepare: 3 files (hidden, .dat, .u8 and subdirectories skipped), %" PRIu64
	       " documents (expected %zu) (%s)", rep.n_docs, expect.n, lt_errmsg());
	if (st != LT_OK) {
		tap_skip("prepare failed");
		return;
	}
	lt_tokenizer *tok = NULL;
	lt_tokenizer_load(tap_at("out1/tokenizer.json"), &tok);
	size_t ntrain, nval;
	uint64_t dtrain, dval;
	int32_t *train = read_split(tap_at("out1"), "train", rep.train_shards, &ntrain, &dtrain);
	int32_t *val = read_split(tap_at("out1"), "val", rep.val_shards, &nval, &dval);
	size_t eots = 0;
	for (size_t i = 0; i < ntrain; i++)
		eots += train[i] == LT_TOKENIZER_EOT_ID;
	for (size_t i = 0; i < nval; i++)
		eots += val[i] == LT_TOKENIZER_EOT_ID;
	size_t want_val = 0;
	for (size_t i = 0; i < expect.n; i++)
		want_val += floor((double)(i + 1) * 0.1) > floor((double)i * 0.1);
	tap_ok(ntrain == rep.train_tokens && nval == rep.val_tokens && eots == expect.n &&
	       dtrain + dval == expect.n && dval == want_val && ntrain > 700 &&
	       rep.train_shards == (int)((ntrain + 699) / 700) && rep.val_shards >= 1,
	       "one EOT per document (%zu), %" PRIu64 " held out as every tenth, shards cut every "
	       "700 tokens (%d train, %d val)", eots, dval, rep.train_shards, rep.val_shards);
	tap_ok(tok && split_matches(tok, train, ntrain, &expect, 0.1, 0) &&
	       split_matches(tok, val, nval, &expect, 0.1, 1),
	       "the shards decode to the original documents, each in its split and in order");
	free(train);
	free(val);

	json_t *j = json_load_file(tap_at("out1/prepare.json"), 0, NULL);
	json_t *shards = json_object_get(j, "shards");
	tap_ok(j && json_integer_value(json_object_get(j, "bytes")) == (json_int_t)rep.bytes &&
	       json_integer_value(json_object_get(json_object_get(j, "tokens"), "train")) ==
	       (json_int_t)rep.train_tokens &&
	       json_integer_value(json_object_get(json_object_get(j, "documents"), "val")) ==
	       (json_int_t)dval &&
	       json_array_size(json_object_get(shards, "train")) == (size_t)rep.train_shards &&
	       !strcmp(json_string_value(json_object_get(j, "doc_separator")), "%") &&
	       json_array_size(json_object_get(j, "files")) == 3 &&
	       lt_prepare_is_done(tap_at("out1")) && !lt_prepare_is_done(tap_at("in")),
	       "prepare.json records bytes, tokens, documents, shards and files; is_done sees it");
	json_decref(j);

	st = run_prepare(tap_at("out2"), 2, 0.1, 700, NULL, &rep2);
	tap_ok(st == LT_OK && dirs_same(tap_at("out1"), tap_at("out2"), rep.train_shards, rep.val_shards),
	       "with 2 threads and batches of 2 KiB the tokenizer and every shard are byte for "
	       "byte those of 1 thread and one batch");

	/* files read 61 bytes at a time: documents handed on in pieces cut at
	 * every safe place, and lines (separators too) across the blocks */
	lt_fs_remove_tree(tap_at("out2"));
	read_block = 61;
	st = run_prepare(tap_at("out2"), 1, 0.1, 700, NULL, &rep2);
	read_block = 0;
	tap_ok(st == LT_OK && dirs_same(tap_at("out1"), tap_at("out2"), rep.train_shards, rep.val_shards),
	       "read 61 bytes at a time, the tokenizer and every shard are byte for byte the "
	       "same (%s)", lt_errmsg());

	/* the same again through the given tokenizer */
	lt_fs_remove_tree(tap_at("out2"));
	st = run_prepare(tap_at("out2"), 2, 0.1, 700, tap_at("out1/tokenizer.json"), &rep2);
	tap_ok(st == LT_OK && dirs_same(tap_at("out1"), tap_at("out2"), rep.train_shards, rep.val_shards),
	       "encoding with the saved tokenizer.json gives the same shards (%s)", lt_errmsg());
	lt_fs_remove_tree(tap_at("out2"));

	/* a failure leaves the earlier preparation as it was */
	size_t n_before;
	unsigned char *before = tap_slurp(tap_at("out1/prepare.json"), &n_before);
	corpus_inputs[1] = tap_at("in/absent.txt");
	st = run_prepare(tap_at("out1"), 2, 0.1, 700, NULL, &rep2);
	corpus_inputs[1] = dir_path;
	size_t n_after;
	unsigned char *after = tap_slurp(tap_at("out1/prepare.json"), &n_after);
	tap_ok(st == LT_ERR_NOTFOUND && msg_has(tap_at("in/absent.txt"), "No such file or directory") &&
	       before && after && n_before == n_after && !memcmp(before, after, n_before) &&
	       lt_prepare_is_done(tap_at("out1")) && tap_count_entries(dir, "out1.", 0) == 0,
	       "a missing second input fails naming it, leaving the earlier output untouched (%s)",
	       lt_errmsg());
	free(before);
	free(after);

	/* too few documents for the held-out share */
	st = run_prepare(tap_at("out1"), 2, 0.01, 700, tap_at("out1/tokenizer.json"), &rep2);
	tap_ok(st == LT_ERR_ARG && msg_has(a_path, "too few to hold out a fraction 0.01") &&
	       lt_prepare_is_done(tap_at("out1")) && tap_count_entries(dir, "out1.", 0) == 0,
	       "too few documents for the validation share is refused, output kept (%s)",
	       lt_errmsg());

	/* replacing an earlier preparation */
	st = run_prepare(tap_at("out1"), 2, 0.5, 100000, tap_at("out1/tokenizer.json"), &rep2);
	j = json_load_file(tap_at("out1/prepare.json"), 0, NULL);
	char stale[4300];
	snprintf(stale, sizeof stale, "%s/train_0001.bin", tap_at("out1"));
	tap_ok(st == LT_OK && json_real_value(json_object_get(j, "val_fraction")) == 0.5 &&
	       rep2.train_shards == 1 && !tap_exists(stale) && tap_count_entries(dir, "out1.", 0) == 0,
	       "a new preparation replaces the earlier one whole (no stale shards, nothing aside)");
	json_decref(j);

	/* a directory that is not a preparation is never replaced */
	mkdir(tap_at("mine"), 0755);
	tap_write_file(tap_at("mine/notes.txt"), "keep", 4);
	st = run_prepare(tap_at("mine"), 2, 0.1, 700, NULL, &rep2);
	tap_ok(st == LT_ERR_ARG && msg_has(tap_at("mine"), "holds no prepare.json") &&
	       tap_exists(tap_at("mine/notes.txt")) && tap_count_entries(dir, "mine.", 0) == 0,
	       "a non-empty directory without prepare.json is refused and kept (%s)", lt_errmsg());

	/* an empty corpus */
	tap_write_file(tap_at("empty.txt"), "", 0);
	const char *one[] = { tap_at("empty.txt") };
	struct lt_prepare_opts o = { .inputs = one, .n_inputs = 1, .out_dir = tap_at("out3"),
				     .vocab_size = 300, .doc_separator = "%", .val_fraction = 0.1,
				     .shard_tokens = 100, .model_max_length = 64 };
	st = lt_prepare_run(&o, &rep2);
	tap_ok(st == LT_ERR_ARG && msg_has(tap_at("empty.txt"), "no text (1 file, 0 bytes)") &&
	       !tap_exists(tap_at("out3")) && tap_count_entries(dir, "out3", 0) == 0,
	       "an empty corpus is refused naming it, and no output appears (%s)", lt_errmsg());

	/* a tokenizer.json that is not one */
	const char *bad = "{\"model\": {\"type\": \"WordPiece\"}}";
	tap_write_file(tap_at("bad.json"), bad, strlen(bad));
	st = run_prepare(tap_at("out3"), 2, 0.1, 700, tap_at("bad.json"), &rep2);
	tap_ok(st == LT_ERR_FORMAT && msg_has(tap_at("bad.json"), "expected") && !tap_exists(tap_at("out3")),
	       "a file that is not a byte-level BPE tokenizer.json is refused naming it (%s)",
	       lt_errmsg());

	lt_tokenizer_free(tok);
	docs_free(&expect);
	lt_fs_remove_tree(tap_at("out1"));
	lt_fs_remove_tree(tap_at("mine"));
	lt_fs_remove_tree(tap_at("in"));
}

/* A document of ~2.6 MB: 1.1 MB of English (the first 1 MiB block is cut
 * inside it), a 1.2 MB stretch of CJK words without an ASCII space (no
 * safe cut within a read block: the buffer must grow), then English again;
 * then a short document. Shards must hold exactly the whole-document
 * encodings. */
static void test_big_document(void)
{
	struct lt_rng r;
	size_t cap = 3u << 20, n = 0;
	char *text = malloc(cap);
	static const char *cjk[] = {
		"日本語", "の", "文章", "、", "です", "。", "\xe3\x80\x80" /* ideographic space */
	};
	lt_rng_seed(&r, 5, 5);
	random_text(&r, text, 1100000);
	n = strlen(text);
	/* Words run together across the end of the first block, the last byte
	 * of which falls inside "keeper": a cut there would change the ids. */
	text[1048497] = ' ';
	for (int i = 0; i < 100; i++)
		text[1048498 + i] = "thekeeper"[i % 9];
	text[1048598] = ' ';
	while (n < 2300000) {
		const char *w = cjk[lt_rng_below(&r, 7)];
		memcpy(text + n, w, strlen(w));
		n += strlen(w);
	}
	random_text(&r, text + n, 400000);
	n += strlen(text + n);
	size_t doc1 = n;
	n += (size_t)snprintf(text + n, cap - n, "\n%%\nA short one.\n");
	tap_write_file(tap_at("big.txt"), text, n);

	lt_tokenizer *tok = NULL;
	struct lt_tokenizer_train_opts to = { .vocab_size = 400, .min_frequency = 2 };
	lt_tokenizer_train_buffer(text, 200000, &to, &tok);
	lt_tokenizer_save(tok, tap_at("tok"), 64);

	const char *one[] = { tap_at("big.txt") };
	struct lt_prepare_opts o = { .inputs = one, .n_inputs = 1, .out_dir = tap_at("bigout"),
				     .tokenizer = tap_at("tok/tokenizer.json"), .doc_separator = "%",
				     .val_fraction = 0, .shard_tokens = 1 << 20,
				     .model_max_length = 64, .batch_bytes = 65536 };
	struct lt_prepare_report rep;
	lt_errmsg_clear();
	enum lt_status st = lt_prepare_run(&o, &rep);
	lt_ids want = { 0 };
	lt_tokenizer_encode(tok, text, doc1 + 1, &want); /* the document keeps its newline */
	lt_tokenizer_append_eot(tok, &want);
	lt_tokenizer_encode(tok, "A short one.\n", 13, &want);
	lt_tokenizer_append_eot(tok, &want);
	size_t got_n, vn;
	uint64_t docs, vdocs;
	int32_t *got = read_split(tap_at("bigout"), "train", rep.train_shards, &got_n, &docs);
	int32_t *v = read_split(tap_at("bigout"), "val", 1, &vn, &vdocs);
	tap_ok(st == LT_OK && rep.n_docs == 2 && docs == 2 && got_n == want.n && vn == 0 &&
	       rep.val_shards == 1 && !memcmp(got, want.v, want.n * sizeof *got),
	       "a 2.6 MB document with a 1.2 MB stretch without spaces is encoded exactly as in "
	       "one piece (%zu tokens; val fraction 0 writes one empty val shard) (%s)",
	       got_n, lt_errmsg());
	free(got);
	free(v);
	lt_ids_free(&want);
	lt_tokenizer_free(tok);
	free(text);
	lt_fs_remove_tree(tap_at("bigout"));
	lt_fs_remove_tree(tap_at("tok"));
	unlink(tap_at("big.txt"));
}

int main(void)
{
	dir = tap_scratch_new("lt_shard");
	tap_plan(53);
	test_round_trip(5000, 200000, "w2.bin");
	test_round_trip(70000, 3000, "w4.bin");
	{
		int32_t none = 0;
		lt_shard *s = NULL;
		enum lt_status st = make_shard(tap_at("empty.bin"), 300, 256, &none, 0, 0);
		if (st == LT_OK)
			st = lt_shard_open(tap_at("empty.bin"), 300, 1, &s);
		tap_ok(st == LT_OK && lt_shard_info(s)->n_tokens == 0,
		       "an empty shard is valid (64 bytes)");
		lt_shard_close(s);
	}
	test_bad_shards();
	test_changed_under_reader();
	test_writer_failures();
	test_loader();
	test_prepare();
	test_big_document();
	return tap_scratch_done();
}
