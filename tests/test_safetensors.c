/* Tests of the safetensors reader and writer: round trips of every dtype
 * lltrain reads, metadata, byte-exact deterministic headers, each bad input
 * checked by its error text, write failures (a fetch error, a file-size
 * limit) that must leave no file, and, where python3 has the safetensors
 * package, files exchanged with it in both directions. */
#include "config.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "io/fs.h"
#include "tap.h"

/* A hand-made file: an 8-byte length field (hlen), header bytes, then
 * ndata bytes of data (0, 1, 2, ...). */
static void make_raw(const char *name, uint64_t hlen, const char *header, size_t ndata)
{
	size_t hl = strlen(header), n = 8 + hl + ndata;
	unsigned char *p = malloc(n);
	if (!p)
		abort();
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(p + 8, header, hl);
	for (size_t i = 0; i < ndata; i++)
		p[8 + hl + i] = (unsigned char)i;
	if (!tap_write_file(tap_at(name), p, n))
		abort();
	free(p);
}

/* Whether the current error line starts with path and holds both parts. */
static int msg_has(const char *path, const char *a, const char *b)
{
	const char *m = lt_errmsg();
	return strncmp(m, path, strlen(path)) == 0 && strstr(m, a) && (!b || strstr(m, b));
}

static void expect_open_fail(const char *what, const char *name, enum lt_status want,
                             const char *a, const char *b)
{
	const char *path = tap_at(name);
	lt_st *st = NULL;
	enum lt_status rc;
	lt_errmsg_clear();
	rc = lt_st_open(path, &st);
	tap_ok(rc == want && st == NULL && msg_has(path, a, b), "refused: %s (%s)", what,
	       lt_status_str(rc));
	tap_diag("  %s", lt_errmsg());
	lt_st_close(st);
}

/* ---- round trip ---- */

static const double v_f64[6] = { -1, -0.75, -0.5, 1e-300, 0.25, 1e300 };
static const int64_t v_i64[3] = { -5, 0, 2147483647 };
static const int64_t v_big[2] = { 1, (int64_t)1 << 40 };
static const float v_f32[4] = { 1.5f, -2.25f, 3.0e38f, 1.0e-40f /* subnormal */ };
static const float v_scalar[1] = { 3.5f };
static const int32_t v_i32[4] = { -2147483647 - 1, -1, 0, 2147483647 };
static const uint16_t v_f16[6] = { 0x3C00, 0xC000, 0x0001, 0x7C00, 0x3555, 0x8000 };
static const float e_f16[6] = { 1.0f, -2.0f, 5.9604644775390625e-8f, INFINITY, 0.333251953125f, -0.0f };
static const uint16_t v_bf16[4] = { 0x3F80, 0xC040, 0x4049, 0x0000 };
static const float e_bf16[4] = { 1.0f, -3.0f, 3.140625f, 0.0f };
static const int8_t v_i8[2] = { -128, 127 };
static const uint8_t v_u8[3] = { 0, 200, 255 };
static const uint8_t v_bool[2] = { 1, 0 };
#define NSTREAM 300000 /* 1.2 MB, so the fetch and conversion loops take several chunks */
#define NOTE "\xc3\xbc" "n" "\xc3\xaf" "code \xe2\x9c\x93"

static float stream_val(uint64_t i)
{
	return (float)i * 0.5f;
}

/* Makes bytes of the "streamed" tensor on demand, as a device download would. */
static enum lt_status fetch_stream(void *ctx, uint64_t off, void *buf, size_t len)
{
	unsigned char *out = buf;
	(*(int *)ctx)++;
	for (size_t b = 0; b < len; b++) {
		uint64_t byte = off + b;
		float v = stream_val(byte / 4);
		unsigned char e[4];
		memcpy(e, &v, 4);
		out[b] = e[byte % 4];
	}
	return LT_OK;
}

static enum lt_status fetch_fail(void *ctx, uint64_t off, void *buf, size_t len)
{
	(void)ctx;
	memset(buf, 0, len);
	if (off >= ((uint64_t)1 << 20)) {
		lt_errmsg_set("device read failed");
		return LT_ERR_BACKEND;
	}
	return LT_OK;
}

/* The tensors of the sample file in the order added, widest first so each
 * tensor's offset is aligned to its element; "streamed" has no data here,
 * fetch_stream makes it. */
static const struct sample_tensor {
	const char *name;
	enum lt_st_dtype dtype;
	int ndim;
	int64_t shape[3];
	const void *data;
	uint64_t nbytes;
} tensors[] = {
	{ "f64", LT_ST_F64, 2, { 2, 3 }, v_f64, 48 },
	{ "i64", LT_ST_I64, 1, { 3 }, v_i64, 24 },
	{ "big", LT_ST_I64, 1, { 2 }, v_big, 16 },
	{ "f32", LT_ST_F32, 1, { 4 }, v_f32, 16 },
	{ "scalar", LT_ST_F32, 0, { 0 }, v_scalar, 4 },
	{ "i32", LT_ST_I32, 3, { 2, 1, 2 }, v_i32, 16 },
	{ "streamed", LT_ST_F32, 1, { NSTREAM }, NULL, 4 * NSTREAM },
	{ "empty", LT_ST_F32, 2, { 0, 4 }, NULL, 0 },
	{ "f16", LT_ST_F16, 1, { 6 }, v_f16, 12 },
	{ "bf16", LT_ST_BF16, 2, { 2, 2 }, v_bf16, 8 },
	{ "i8", LT_ST_I8, 1, { 2 }, v_i8, 2 },
	{ "u8", LT_ST_U8, 1, { 3 }, v_u8, 3 },
	{ "bool", LT_ST_BOOL, 1, { 2 }, v_bool, 2 },
};
#define NT (sizeof tensors / sizeof tensors[0])

/* Adds tensors[i] to w; fetches counts the calls of fetch_stream. */
static enum lt_status add_tensor(lt_st_writer *w, size_t i, int *fetches)
{
	const struct sample_tensor *t = &tensors[i];
	const int64_t *shape = t->ndim ? t->shape : NULL;
	if (!strcmp(t->name, "streamed"))
		return lt_st_writer_add_fetch(w, t->name, t->dtype, t->ndim, shape, fetch_stream,
		                              fetches);
	return lt_st_writer_add(w, t->name, t->dtype, t->ndim, shape, t->data);
}

static enum lt_status write_sample(const char *path, int *fetches)
{
	lt_st_writer *w = NULL;
	enum lt_status rc;
	if ((rc = lt_st_writer_new(path, &w)) != LT_OK)
		return rc;
	rc = lt_st_writer_set_meta(w, "format", "pt");
	for (size_t i = 0; rc == LT_OK && i < NT; i++)
		rc = add_tensor(w, i, fetches);
	if (rc == LT_OK && (rc = lt_st_writer_set_meta(w, "note", NOTE)) == LT_OK
	    && (rc = lt_st_writer_set_meta(w, "format", "lltrain")) == LT_OK)
		rc = lt_st_writer_finish(w);
	lt_st_writer_free(w);
	return rc;
}

static int info_is(const lt_st *st, const char *name, enum lt_st_dtype dt, int ndim,
                   const int64_t *shape, uint64_t nbytes)
{
	const struct lt_st_info *ti = lt_st_lookup(st, name);
	if (!ti || strcmp(ti->name, name) != 0 || ti->dtype != dt || ti->ndim != ndim
	    || ti->nbytes != nbytes || ti->offset % lt_st_dtype_size(dt) != 0)
		return 0;
	for (int i = 0; i < ndim; i++)
		if (ti->shape[i] != shape[i])
			return 0;
	return 1;
}

static int same_bits_f(const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(&a[i], &b[i], sizeof *a) != 0)
			return 0;
	return 1;
}

static void test_round_trip(void)
{
	static const char head[] = "{\"__metadata__\":{\"format\":\"lltrain\",\"note\":\"" NOTE "\"},\"f64\":";
	const char *path = tap_at("sample.safetensors"), *path2 = tap_at("sample2.safetensors");
	int fetches = 0, ok;
	lt_st *st = NULL;
	unsigned char *b1, *b2;
	size_t n1, n2;
	uint64_t hlen = 0;

	lt_errmsg_clear();
	tap_ok(write_sample(path, &fetches) == LT_OK,
	       "writer writes every dtype, a scalar, an empty and a streamed tensor %s", lt_errmsg());
	tap_ok(fetches == 2, "the 1.2 MB streamed tensor was fetched in 2 chunks (%d)", fetches);
	tap_ok(write_sample(path2, &fetches) == LT_OK, "writer writes it a second time");
	b1 = tap_slurp(path, &n1);
	b2 = tap_slurp(path2, &n2);
	tap_ok(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0, "the same calls give the same bytes (%zu)", n1);
	if (b1 && n1 >= 9)
		for (int i = 7; i >= 0; i--)
			hlen = hlen << 8 | b1[i];
	tap_ok(b1 && n1 > 9 + sizeof head && (8 + hlen) % 8 == 0 && memcmp(b1 + 8, head, sizeof head - 1) == 0,
	       "header starts with __metadata__ (keys in first-set order), then tensors in order added; data start at byte %llu",
	       (unsigned long long)(8 + hlen));
	free(b1);
	free(b2);

	if (!tap_ok(lt_st_open(path, &st) == LT_OK, "reader opens it %s", lt_errmsg()))
		return;
	ok = lt_st_count(st) == NT;
	for (size_t i = 0; ok && i < NT; i++)
		ok = strcmp(lt_st_at(st, i)->name, tensors[i].name) == 0;
	tap_ok(ok, "reader lists the %zu tensors in header order", NT);
	ok = lt_st_lookup(st, "scalar")->numel == 1;
	for (size_t i = 0; ok && i < NT; i++)
		ok = info_is(st, tensors[i].name, tensors[i].dtype, tensors[i].ndim, tensors[i].shape,
		             tensors[i].nbytes);
	tap_ok(ok, "info: dtype, shape, size and aligned offset of each tensor");
	{
		double d[6];
		float f[6];
		tap_ok(lt_st_read_f64(st, "f64", d, 6) == LT_OK && memcmp(d, v_f64, sizeof d) == 0,
		       "F64 read as double is exact");
		tap_ok(lt_st_read_f32(st, "f64", f, 6) == LT_OK && f[0] == -1.0f && f[4] == 0.25f
		       && f[3] == 0.0f && isinf(f[5]), "F64 read as float rounds (1e300 to inf)");
		tap_ok(lt_st_read_f32(st, "f32", f, 4) == LT_OK && same_bits_f(f, v_f32, 4),
		       "F32 read as float is exact");
		tap_ok(lt_st_read_f64(st, "f32", d, 4) == LT_OK && d[1] == -2.25 && d[3] == (double)1.0e-40f,
		       "F32 read as double is exact");
		tap_ok(lt_st_read_f32(st, "f16", f, 6) == LT_OK && same_bits_f(f, e_f16, 6),
		       "F16 read as float: normal, subnormal, inf and -0 exact");
		tap_ok(lt_st_read_f64(st, "f16", d, 6) == LT_OK && d[4] == 0.333251953125 && d[2] == ldexp(1, -24),
		       "F16 read as double");
		tap_ok(lt_st_read_f32(st, "bf16", f, 4) == LT_OK && same_bits_f(f, e_bf16, 4),
		       "BF16 read as float");
		tap_ok(lt_st_read_f32(st, "scalar", f, 1) == LT_OK && f[0] == 3.5f, "0-d tensor reads as one element");
		tap_ok(lt_st_read_f32(st, "empty", f, 0) == LT_OK, "empty tensor reads as nothing");
	}
	{
		int32_t i[4];
		tap_ok(lt_st_read_i32(st, "i64", i, 3) == LT_OK && i[0] == -5 && i[1] == 0 && i[2] == 2147483647,
		       "I64 read as int32 within range");
		tap_ok(lt_st_read_i32(st, "i32", i, 4) == LT_OK && memcmp(i, v_i32, sizeof i) == 0,
		       "I32 read as int32");
		tap_ok(lt_st_read_i32(st, "i8", i, 2) == LT_OK && i[0] == -128 && i[1] == 127
		       && lt_st_read_i32(st, "u8", i, 3) == LT_OK && i[1] == 200 && i[2] == 255
		       && lt_st_read_i32(st, "bool", i, 2) == LT_OK && i[0] == 1 && i[1] == 0,
		       "I8, U8 and BOOL read as int32");
	}
	{
		float *f = malloc(NSTREAM * sizeof *f);
		double *d = malloc(NSTREAM * sizeof *d);
		int good = f && d && lt_st_read_f32(st, "streamed", f, NSTREAM) == LT_OK
		           && lt_st_read_f64(st, "streamed", d, NSTREAM) == LT_OK;
		for (uint64_t i = 0; good && i < NSTREAM; i++)
			good = f[i] == stream_val(i) && d[i] == (double)stream_val(i);
		tap_ok(good, "the streamed tensor reads back whole, as float and as double (chunked)");
		free(f);
		free(d);
	}
	{
		const char *k, *v;
		lt_st_meta_at(st, 0, &k, &v);
		tap_ok(lt_st_meta_count(st) == 2 && strcmp(k, "format") == 0 && strcmp(v, "lltrain") == 0
		       && lt_st_meta(st, "note") && strcmp(lt_st_meta(st, "note"), NOTE) == 0
		       && lt_st_meta(st, "absent") == NULL, "metadata: replaced value, UTF-8 value, absent key");
	}
	{
		unsigned char raw[8];
		tap_ok(lt_st_read_raw(st, "bf16", raw, 8) == LT_OK && memcmp(raw, v_bf16, 8) == 0,
		       "raw read gives the stored bytes");
	}

	/* Reads that must fail, each by its message. */
	{
		int32_t i[2];
		float f[6];
		const struct lt_st_info *ti = NULL;
		lt_errmsg_clear();
		tap_ok(lt_st_read_i32(st, "big", i, 2) == LT_ERR_FORMAT
		       && msg_has(path, "tensor 'big': element 1 = 1099511627776 does not fit in int32", NULL),
		       "I64 beyond int32 is refused");
		tap_diag("  %s", lt_errmsg());
		tap_ok(lt_st_read_f32(st, "i32", f, 4) == LT_ERR_FORMAT
		       && msg_has(path, "tensor 'i32': cannot read I32 as float", NULL), "I32 read as float is refused");
		tap_diag("  %s", lt_errmsg());
		tap_ok(lt_st_read_f32(st, "f64", f, 5) == LT_ERR_FORMAT
		       && msg_has(path, "tensor 'f64': shape [2, 3] holds 6 elements but 5 were expected", NULL),
		       "a read of the wrong element count is refused");
		tap_diag("  %s", lt_errmsg());
		tap_ok(lt_st_lookup(st, "model.nope") == NULL
		       && lt_st_find(st, "model.nope", &ti) == LT_ERR_NOTFOUND && ti == NULL
		       && msg_has(path, "no tensor 'model.nope'", NULL)
		       && lt_st_read_f32(st, "model.nope", f, 1) == LT_ERR_NOTFOUND,
		       "a missing tensor name is not found, by name");
		tap_diag("  %s", lt_errmsg());
	}
	lt_st_close(st);
}

static void test_exact_header(void)
{
	static const float two[2] = { 1, 2 };
	static const int64_t s2[] = { 2 };
	static const char want[] = "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
	                           "\"data_offsets\":[0,8]}}";
	const char *path = tap_at("tiny.safetensors");
	size_t wl = strlen(want), padded = (wl + 7) / 8 * 8, n;
	lt_st_writer *w = NULL;
	unsigned char *b;
	int ok;

	ok = lt_st_writer_new(path, &w) == LT_OK && lt_st_writer_add(w, "a", LT_ST_F32, 1, s2, two) == LT_OK
	     && lt_st_writer_set_meta(w, "k", "v") == LT_OK && lt_st_writer_finish(w) == LT_OK;
	lt_st_writer_free(w);
	b = tap_slurp(path, &n);
	ok = ok && b && n == 8 + padded + 8 && b[0] == padded && b[1] == 0 && b[7] == 0
	     && memcmp(b + 8, want, wl) == 0 && memcmp(b + 8 + padded, two, 8) == 0;
	for (size_t i = wl; ok && i < padded; i++)
		ok = b[8 + i] == ' ';
	tap_ok(ok, "exact bytes: length, compact JSON, space padding to 8, data");
	free(b);
}

/* ---- bad files ---- */

/* A bad file (header NULL: made by test_bad_files itself, or absent), and
 * what opening it must say: status want, and an error line that starts
 * with the path and holds a and b (b NULL: a only). The others hold an
 * 8-byte length field (hlen, 0 for the header's own length), the header
 * and ndata bytes of data. */
static const struct bad_file {
	const char *what, *name;
	uint64_t hlen;
	const char *header;
	size_t ndata;
	enum lt_status want;
	const char *a, *b;
} bad_files[] = {
	{ "a missing file", "absent.safetensors", 0, NULL, 0, LT_ERR_IO, "cannot open",
	  "No such file" },
	{ "a 5-byte file", "short.safetensors", 0, NULL, 0, LT_ERR_FORMAT, "truncated: 5 bytes",
	  NULL },
	{ "a header length larger than the file", "hlen_big.safetensors", 4096, "{}", 90,
	  LT_ERR_FORMAT, "truncated: header says 4096 bytes but the file has 92", NULL },
	{ "an absurd header length", "hlen_huge.safetensors", UINT64_C(0x3f8000003f800000), "", 8,
	  LT_ERR_FORMAT, "over the 100000000-byte limit", NULL },
	{ "a zero header length", "hlen_zero.safetensors", 0, "", 16, LT_ERR_FORMAT,
	  "header length 0 is too small", NULL },
	{ "a truncated file", "cut.safetensors", 0, NULL, 0, LT_ERR_FORMAT,
	  "tensor 'bool': data_offsets", "end past the data" },
	{ "malformed JSON", "json.safetensors", 0,
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [1] \"data_offsets\": [0, 4]}}", 4, LT_ERR_FORMAT,
	  "header is not valid JSON: line 1, column 50:", "'}' expected near '\"data_offsets\"'" },
	{ "malformed JSON on line 3", "json3.safetensors", 0,
	  "{\n  \"a\": {\n    \"dtype\": \"F32\",,\n", 4, LT_ERR_FORMAT,
	  "header is not valid JSON: line 3,", NULL },
	{ "a header that is not an object", "notobj.safetensors", 0, "[1, 2]", 0, LT_ERR_FORMAT,
	  "header is not a JSON object", NULL },
	{ "a duplicate tensor name", "dup.safetensors", 0,
	  "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, LT_ERR_FORMAT,
	  "duplicate object key near '\"a\"'", NULL },
	{ "an unknown dtype", "dtype.safetensors", 0,
	  "{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, LT_ERR_FORMAT,
	  "tensor 'a': unknown dtype 'Q4'", NULL },
	{ "a missing dtype", "nodtype.safetensors", 0, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
	  4, LT_ERR_FORMAT, "tensor 'a': no \"dtype\" string", NULL },
	{ "a shape that does not match its offsets", "shape.safetensors", 0,
	  "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, LT_ERR_FORMAT,
	  "tensor 'w': shape [2, 3] of F32 is 24 bytes but data_offsets [0, 20] span 20", NULL },
	{ "a negative dimension", "negshape.safetensors", 0,
	  "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, LT_ERR_FORMAT,
	  "tensor 'w': shape[0] is not a non-negative integer", NULL },
	{ "offsets past the data", "past.safetensors", 0,
	  "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[20],\"data_offsets\":[10,90]}}", 80,
	  LT_ERR_FORMAT,
	  "tensor 'model.norm.weight': data_offsets [10, 90] end past the data (80 bytes", NULL },
	{ "offsets that run backwards", "backwards.safetensors", 0,
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, LT_ERR_FORMAT,
	  "tensor 'a': data_offsets [8, 4] begin after end", NULL },
	{ "offsets that are not a pair", "offs.safetensors", 0,
	  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, LT_ERR_FORMAT,
	  "tensor 'a': \"data_offsets\" is not [begin, end]", NULL },
	{ "overlapping tensors", "overlap.safetensors", 0,
	  "{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]},"
	  "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 24, LT_ERR_FORMAT,
	  "tensors 'a' [0, 16] and 'b' [8, 24] overlap", NULL },
	{ "a metadata value that is not a string", "meta.safetensors", 0,
	  "{\"__metadata__\":{\"n\":3}}", 0, LT_ERR_FORMAT,
	  "\"__metadata__\" value of 'n' is not a string", NULL },
};

static void test_bad_files(void)
{
	static const char junk[5] = "abcde";
	size_t n;
	unsigned char *b = tap_slurp(tap_at("sample.safetensors"), &n);
	if (!b || !tap_write_file(tap_at("cut.safetensors"), b, n - 1))
		abort();
	free(b);
	tap_write_file(tap_at("short.safetensors"), junk, 5);
	for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
		const struct bad_file *f = &bad_files[i];
		if (f->header)
			make_raw(f->name, f->hlen ? f->hlen : strlen(f->header), f->header, f->ndata);
		expect_open_fail(f->what, f->name, f->want, f->a, f->b);
	}
}

/* ---- writer failures ---- */

static void test_writer_errors(void)
{
	static const int64_t s1[] = { 1 }, sneg[] = { -2 }, sbig[] = { 1 << 20 };
	static const float one[1] = { 1 };
	const char *path = tap_at("w.safetensors");
	lt_st_writer *w = NULL;
	float *big;

	lt_st_writer_new(path, &w);
	lt_st_writer_add(w, "a", LT_ST_F32, 1, s1, one);
	tap_ok(lt_st_writer_add(w, "a", LT_ST_F32, 1, s1, one) == LT_ERR_ARG
	       && msg_has(path, "tensor 'a' added twice", NULL), "a duplicate name is refused");
	tap_ok(lt_st_writer_add(w, "__metadata__", LT_ST_F32, 1, s1, one) == LT_ERR_ARG
	       && lt_st_writer_add(w, "", LT_ST_F32, 1, s1, one) == LT_ERR_ARG
	       && lt_st_writer_add(w, "bad\xff", LT_ST_F32, 1, s1, one) == LT_ERR_ARG
	       && lt_st_writer_set_meta(w, "k", "\xc3") == LT_ERR_ARG,
	       "reserved, empty and non-UTF-8 names are refused");
	tap_ok(lt_st_writer_add(w, "n", LT_ST_F32, 1, sneg, one) == LT_ERR_ARG
	       && msg_has(path, "shape[0] = -2 is negative", NULL)
	       && lt_st_writer_add(w, "d", LT_ST_F32, LT_ST_MAX_DIMS + 1, s1, one) == LT_ERR_ARG,
	       "a negative dimension or too many dimensions are refused");
	tap_ok(!tap_exists(path) && lt_st_writer_finish(w) == LT_OK && tap_exists(path)
	       && lt_st_writer_finish(w) == LT_ERR_ARG
	       && lt_st_writer_add(w, "late", LT_ST_F32, 1, s1, one) == LT_ERR_ARG,
	       "nothing is on disk before finish; a second finish or a late add is refused");
	lt_st_writer_free(w);

	path = tap_at("nodir/x.safetensors");
	w = NULL;
	lt_st_writer_new(path, &w);
	lt_st_writer_add(w, "a", LT_ST_F32, 1, s1, one);
	tap_ok(lt_st_writer_finish(w) == LT_ERR_IO && msg_has(path, "cannot create", "No such file"),
	       "a file in a missing directory fails with the path");
	tap_diag("  %s", lt_errmsg());
	lt_st_writer_free(w);

	/* A fetch that fails on its second chunk: its status comes back with
	 * its message, and the partial file is gone. */
	path = tap_at("fetch.safetensors");
	w = NULL;
	{
		static const int64_t s3m[] = { 3 << 20 };
		lt_st_writer_new(path, &w);
		lt_st_writer_add(w, "a", LT_ST_F32, 1, s1, one);
		lt_st_writer_add_fetch(w, "dev", LT_ST_U8, 1, s3m, fetch_fail, NULL);
		tap_ok(lt_st_writer_finish(w) == LT_ERR_BACKEND
		       && msg_has(path, "tensor 'dev': fetching bytes 1048576..2097152", "device read failed")
		       && !tap_exists(path), "a failing fetch aborts the write and removes the partial file");
		tap_diag("  %s", lt_errmsg());
		lt_st_writer_free(w);
	}

	/* A write error (the file-size limit stands in for a full disk). */
	path = tap_at("limit.safetensors");
	w = NULL;
	big = calloc((size_t)sbig[0], sizeof *big);
	{
		struct rlimit old, lim;
		int limited = getrlimit(RLIMIT_FSIZE, &old) == 0;
		if (limited) {
			lim = old;
			lim.rlim_cur = 65536;
			limited = (old.rlim_cur == RLIM_INFINITY || old.rlim_cur > 65536)
			          && setrlimit(RLIMIT_FSIZE, &lim) == 0;
		}
		if (!limited || !big) {
			tap_skip("cannot lower RLIMIT_FSIZE to inject a write error");
		} else {
			enum lt_status rc;
			void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
			lt_st_writer_new(path, &w);
			lt_st_writer_add(w, "big", LT_ST_F32, 1, sbig, big);
			rc = lt_st_writer_finish(w);
			setrlimit(RLIMIT_FSIZE, &old);
			signal(SIGXFSZ, oldsig);
			tap_ok(rc == LT_ERR_IO && msg_has(path, "writing tensor 'big' (4194304 bytes) at byte 65536",
			                                  strerror(EFBIG))
			       && !tap_exists(path), "a failed write is LT_ERR_IO naming path, tensor and byte, and leaves no file");
			tap_diag("  %s", lt_errmsg());
			lt_st_writer_free(w);
		}
	}
	free(big);

	lt_st_close(NULL);
	lt_st_writer_free(NULL);
	tap_ok(1, "lt_st_close and lt_st_writer_free accept NULL");
}

/* ---- the Python safetensors package, both ways ---- */

static const char py_check[] =
	"import sys\n"
	"import numpy as np\n"
	"from safetensors import safe_open\n"
	"from safetensors.numpy import save_file\n"
	"ours, theirs = sys.argv[1], sys.argv[2]\n"
	"with safe_open(ours, framework='np') as f:\n"
	"    assert f.metadata() == {'format': 'lltrain', 'note': '\\u00fcn\\u00efcode \\u2713'}, f.metadata()\n"
	"    assert sorted(f.keys()) == sorted(['f64', 'i64', 'big', 'f32', 'scalar', 'i32', 'streamed',\n"
	"                                       'empty', 'f16', 'bf16', 'i8', 'u8', 'bool'])\n"
	"    t = f.get_tensor('f64')\n"
	"    assert t.dtype == np.float64 and t.shape == (2, 3)\n"
	"    assert t.ravel().tolist() == [-1, -0.75, -0.5, 1e-300, 0.25, 1e300]\n"
	"    t = f.get_tensor('streamed')\n"
	"    assert t.dtype == np.float32 and np.array_equal(t, np.arange(300000, dtype=np.float32) * 0.5)\n"
	"    assert f.get_tensor('scalar').shape == () and f.get_tensor('scalar') == 3.5\n"
	"    assert f.get_tensor('empty').shape == (0, 4)\n"
	"    assert f.get_tensor('i32').shape == (2, 1, 2)\n"
	"    assert f.get_tensor('f16').view(np.uint16).tolist() == [0x3C00, 0xC000, 1, 0x7C00, 0x3555, 0x8000]\n"
	"    assert f.get_tensor('i64').tolist() == [-5, 0, 2147483647]\n"
	"    assert f.get_tensor('u8').tolist() == [0, 200, 255] and f.get_tensor('bool').tolist() == [True, False]\n"
	"save_file({'w': (np.arange(12, dtype=np.float16) / 4).reshape(3, 4),\n"
	"           'ids': np.array([[1, -2, 3]], dtype=np.int64), 'mask': np.array([True, False]),\n"
	"           'd': np.array([1e300, -0.5])}, theirs, metadata={'who': 'python'})\n";

static void test_python(void)
{
	const char *script = tap_at("check.py"), *ours = tap_at("sample.safetensors"), *theirs = tap_at("py.safetensors");
	/* make check's python (the test environment's, where it was made) */
	const char *py = getenv("PYTHON3") && *getenv("PYTHON3") ? getenv("PYTHON3") : "python3";
	char cmd[13000];
	lt_st *st = NULL;

	snprintf(cmd, sizeof cmd, "'%s' -c 'import numpy, safetensors.numpy' >/dev/null 2>&1", py);
	if (system(cmd) != 0) {
		tap_skip("%s with numpy and safetensors not found (pip install numpy safetensors)", py);
		tap_skip("%s with numpy and safetensors not found (pip install numpy safetensors)", py);
		return;
	}
	tap_write_file(script, py_check, strlen(py_check));
	snprintf(cmd, sizeof cmd, "'%s' -B '%s' '%s' '%s'", py, script, ours, theirs);
	tap_ok(system(cmd) == 0, "the Python safetensors package loads our file and its values");
	{
		float w[12];
		int32_t ids[3], mask[2];
		double d[2];
		int ok;
		lt_errmsg_clear();
		ok = lt_st_open(theirs, &st) == LT_OK && lt_st_read_f32(st, "w", w, 12) == LT_OK
		         && lt_st_read_i32(st, "ids", ids, 3) == LT_OK && lt_st_read_i32(st, "mask", mask, 2) == LT_OK
		         && lt_st_read_f64(st, "d", d, 2) == LT_OK && lt_st_meta(st, "who")
		         && strcmp(lt_st_meta(st, "who"), "python") == 0;
		for (int i = 0; ok && i < 12; i++)
			ok = w[i] == (float)i / 4;
		ok = ok && ids[0] == 1 && ids[1] == -2 && ids[2] == 3 && mask[0] == 1 && mask[1] == 0
		     && d[0] == 1e300 && d[1] == -0.5;
		tap_ok(ok, "we read a file written by the Python package %s", lt_errmsg());
		lt_st_close(st);
	}
}

int main(void)
{
	tap_scratch_new("lt_st");
	tap_plan(57);
	test_round_trip();
	test_exact_header();
	test_bad_files();
	test_writer_errors();
	test_python();
	return tap_scratch_done();
}
