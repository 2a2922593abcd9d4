/* Tests the GGUF reader on files built here byte by byte: a good file (v3
 * and v2) with metadata of every type and tensors of every type that
 * dequantizes, read back against values computed here in double from the
 * same bytes; then the file damaged in each way the reader must refuse,
 * each with its one-line message naming the file and the place. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "tap.h"

/* ---- building a file ---- */

struct buf {
	unsigned char *p;
	size_t n, cap;
};

/* Where the builder put the fields a damage overwrites. */
enum mark {
	M_MAGIC, M_VERSION, M_NTENSORS, M_NKV, M_KEY0_LEN, M_U8_TYPE, M_U8_KEY, M_BOOL,
	M_ARR_ELEM, M_ARR_COUNT, M_ALIGN_TYPE, M_ALIGN, M_T0_NAME, M_T0_NDIM, M_T0_DIM0,
	M_T0_DIM1, M_T1_NAME, M_T1_OFFSET, M_T0_OFFSET, M_DATA, NMARKS
};

static size_t marks[NMARKS];

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_le(struct buf *b, uint64_t v, int bytes)
{
	unsigned char c[8];
	for (int i = 0; i < bytes; i++)
		c[i] = (unsigned char)(v >> (8 * i));
	put(b, c, (size_t)bytes);
}

static void put_str(struct buf *b, const char *s)
{
	put_le(b, strlen(s), 8);
	put(b, s, strlen(s));
}

static void put_key(struct buf *b, const char *key, uint32_t type)
{
	put_str(b, key);
	put_le(b, type, 4);
}

static void patch(unsigned char *p, size_t at, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[at + (size_t)i] = (unsigned char)(v >> (8 * i));
}

/* The tensors of the good file: name, type, dims (innermost first). */
#define NT 6
static const struct {
	const char *name;
	uint32_t type;
	int ndim;
	int64_t dims[2];
} tens[NT] = {
	{ "t.q8", LT_GGUF_Q8_0, 2, { 64, 2 } }, { "t.q4", LT_GGUF_Q4_0, 2, { 32, 3 } },
	{ "t.q41", LT_GGUF_Q4_1, 1, { 64, 1 } }, { "t.f16", LT_GGUF_F16, 1, { 7, 1 } },
	{ "t.bf16", LT_GGUF_BF16, 2, { 2, 2 } }, { "t.f32", LT_GGUF_F32, 1, { 5, 1 } },
};
#define ALIGN 64

static size_t tensor_bytes(int i)
{
	uint64_t n = (uint64_t)tens[i].dims[0] * (uint64_t)(tens[i].ndim > 1 ? tens[i].dims[1] : 1);
	return (size_t)(n / lt_gguf_block_values(tens[i].type) * lt_gguf_block_bytes(tens[i].type));
}

/* f16 scales and values, chosen to cover normals, a subnormal and the extremes. */
static const uint16_t halfs[] = { 0x3c00, 0x2e66, 0xb555, 0x0001, 0x7bff, 0xc000, 0x0400, 0x3555 };

/* Deterministic bytes for the tensors; the f16 fields of each block are
 * then set to finite halves. */
static void tensor_data(int i, unsigned char *p, size_t n)
{
	uint32_t s = 12345u + (uint32_t)i * 777u;
	uint32_t bb = lt_gguf_block_bytes(tens[i].type);
	for (size_t k = 0; k < n; k++) {
		s = s * 1103515245u + 12345u;
		p[k] = (unsigned char)(s >> 16);
	}
	for (size_t k = 0, blk = 0; k < n; k += bb, blk++) {
		if (tens[i].type == LT_GGUF_Q8_0 || tens[i].type == LT_GGUF_Q4_0 ||
		    tens[i].type == LT_GGUF_Q4_1)
			patch(p, k, halfs[blk % 8], 2);
		if (tens[i].type == LT_GGUF_Q4_1)
			patch(p, k + 2, halfs[(blk + 3) % 8], 2);
		if (tens[i].type == LT_GGUF_F16)
			patch(p, k, halfs[blk % 8], 2);
		if (tens[i].type == LT_GGUF_F32)
			patch(p, k, 0x3e800000u + (uint32_t)blk * 0x01000000u, 4);
		if (tens[i].type == LT_GGUF_BF16) /* a finite exponent */
			p[k + 1] = (unsigned char)((p[k + 1] & 0x81) | 0x3e);
	}
}

static void put_metadata(struct buf *b)
{
	marks[M_KEY0_LEN] = b->n;
	put_key(b, "general.architecture", LT_GGUF_V_STRING);
	put_str(b, "llama");
	marks[M_U8_KEY] = b->n + 8;
	put_key(b, "k.u8", LT_GGUF_V_U8);
	marks[M_U8_TYPE] = b->n - 4;
	put_le(b, 200, 1);
	put_key(b, "k.i8", LT_GGUF_V_I8);
	put_le(b, (uint8_t)-100, 1);
	put_key(b, "k.u16", LT_GGUF_V_U16);
	put_le(b, 65535, 2);
	put_key(b, "k.i16", LT_GGUF_V_I16);
	put_le(b, (uint16_t)-30000, 2);
	put_key(b, "k.u32", LT_GGUF_V_U32);
	put_le(b, 4000000000u, 4);
	put_key(b, "k.i32", LT_GGUF_V_I32);
	put_le(b, (uint32_t)-5, 4);
	put_key(b, "k.u64", LT_GGUF_V_U64);
	put_le(b, UINT64_MAX, 8);
	put_key(b, "k.i64", LT_GGUF_V_I64);
	put_le(b, (uint64_t)INT64_MIN, 8);
	put_key(b, "k.f32", LT_GGUF_V_F32);
	put_le(b, 0x3fa00000u, 4); /* 1.25 */
	put_key(b, "k.f64", LT_GGUF_V_F64);
	put_le(b, 0xc00921fb54442d18ull, 8); /* -pi */
	put_key(b, "k.bool", LT_GGUF_V_BOOL);
	marks[M_BOOL] = b->n;
	put_le(b, 1, 1);
	put_key(b, "k.strs", LT_GGUF_V_ARRAY);
	marks[M_ARR_ELEM] = b->n;
	put_le(b, LT_GGUF_V_STRING, 4);
	marks[M_ARR_COUNT] = b->n;
	put_le(b, 3, 8);
	put_str(b, "a");
	put_str(b, "");
	put_str(b, "h\xc3\xa9llo");
	put_key(b, "k.i16s", LT_GGUF_V_ARRAY);
	put_le(b, LT_GGUF_V_I16, 4);
	put_le(b, 3, 8);
	put_le(b, (uint16_t)-1, 2);
	put_le(b, 2, 2);
	put_le(b, 30000, 2);
	put_key(b, "k.f32s", LT_GGUF_V_ARRAY);
	put_le(b, LT_GGUF_V_F32, 4);
	put_le(b, 2, 8);
	put_le(b, 0x3f000000u, 4); /* 0.5 */
	put_le(b, 0xbfa00000u, 4); /* -1.25 */
	put_str(b, "general.alignment");
	marks[M_ALIGN_TYPE] = b->n;
	put_le(b, LT_GGUF_V_U32, 4);
	marks[M_ALIGN] = b->n;
	put_le(b, ALIGN, 4);
}
#define NKV 16

static void put_directory(struct buf *b, const size_t *off)
{
	for (int i = 0; i < NT; i++) {
		if (i <= 1)
			marks[i == 0 ? M_T0_NAME : M_T1_NAME] = b->n + 8;
		put_str(b, tens[i].name);
		if (i == 0)
			marks[M_T0_NDIM] = b->n;
		put_le(b, (uint64_t)tens[i].ndim, 4);
		for (int d = 0; d < tens[i].ndim; d++) {
			if (i == 0)
				marks[d ? M_T0_DIM1 : M_T0_DIM0] = b->n;
			put_le(b, (uint64_t)tens[i].dims[d], 8);
		}
		put_le(b, tens[i].type, 4);
		if (i <= 1)
			marks[i == 0 ? M_T0_OFFSET : M_T1_OFFSET] = b->n;
		put_le(b, off[i], 8);
	}
}

/* The good file, version `version`, in b. */
static void build(struct buf *b, uint32_t version)
{
	size_t off[NT], at = 0;
	static const unsigned char zeros[ALIGN];
	b->n = 0;
	for (int i = 0; i < NT; i++) {
		off[i] = at;
		at += (tensor_bytes(i) + ALIGN - 1) / ALIGN * ALIGN;
	}
	marks[M_MAGIC] = b->n;
	put(b, "GGUF", 4);
	marks[M_VERSION] = b->n;
	put_le(b, version, 4);
	marks[M_NTENSORS] = b->n;
	put_le(b, NT, 8);
	marks[M_NKV] = b->n;
	put_le(b, NKV, 8);
	put_metadata(b);
	put_directory(b, off);
	put(b, zeros, (ALIGN - b->n % ALIGN) % ALIGN);
	marks[M_DATA] = b->n;
	for (int i = 0; i < NT; i++) {
		unsigned char *p = malloc(tensor_bytes(i));
		tensor_data(i, p, tensor_bytes(i));
		put(b, zeros, marks[M_DATA] + off[i] - b->n);
		put(b, p, tensor_bytes(i));
		free(p);
	}
}

/* ---- the expected values, in double ---- */

static double half(uint16_t h)
{
	int e = (h >> 10) & 31, m = h & 1023;
	double v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m, -24);
	return h & 0x8000 ? -v : v;
}

/* Value k of tensor i from its bytes p. */
static double expected(int i, const unsigned char *p, size_t k)
{
	size_t blk = k / 32, j = k % 32;
	const unsigned char *b;
	uint32_t u;
	float f;
	switch (tens[i].type) {
	case LT_GGUF_Q8_0:
		b = p + blk * 34;
		return half((uint16_t)(b[0] | b[1] << 8)) * (signed char)b[2 + j];
	case LT_GGUF_Q4_0:
		b = p + blk * 18;
		return half((uint16_t)(b[0] | b[1] << 8)) *
		       ((j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8);
	case LT_GGUF_Q4_1:
		b = p + blk * 20;
		return half((uint16_t)(b[0] | b[1] << 8)) * (j < 16 ? b[4 + j] & 15 : b[4 + j - 16] >> 4) +
		       half((uint16_t)(b[2] | b[3] << 8));
	case LT_GGUF_F16:
		return half((uint16_t)(p[2 * k] | p[2 * k + 1] << 8));
	case LT_GGUF_BF16:
		u = (uint32_t)(p[2 * k] | p[2 * k + 1] << 8) << 16;
		memcpy(&f, &u, 4);
		return f;
	default:
		u = (uint32_t)p[4 * k] | (uint32_t)p[4 * k + 1] << 8 | (uint32_t)p[4 * k + 2] << 16 |
		    (uint32_t)p[4 * k + 3] << 24;
		memcpy(&f, &u, 4);
		return f;
	}
}

/* The worst error of the file's tensor i, as read, relative to its largest
 * value (one f32 rounding allowed). */
static double tensor_error(const lt_gguf *g, int i)
{
	const struct lt_gguf_tensor *t = lt_gguf_tensor_lookup(g, tens[i].name);
	size_t nb = tensor_bytes(i), n;
	unsigned char *p = malloc(nb);
	float *got;
	double worst = 0, big = 0;
	if (!t || !p)
		return INFINITY;
	n = (size_t)t->numel;
	got = malloc(n * sizeof *got);
	tensor_data(i, p, nb);
	if (!got || lt_gguf_read_f32(g, t, got, n) != LT_OK) {
		free(p);
		free(got);
		return INFINITY;
	}
	for (size_t k = 0; k < n; k++)
		big = fmax(big, fabs(expected(i, p, k)));
	for (size_t k = 0; k < n; k++)
		worst = tap_worst(worst, fabs(got[k] - expected(i, p, k)) / fmax(big, 1e-30));
	free(p);
	free(got);
	return worst;
}

/* ---- the checks ---- */

static const char *write_buf(const char *name, const unsigned char *p, size_t n)
{
	const char *path = tap_at(name);
	if (!tap_write_file(path, p, n))
		abort();
	return path;
}

static void check_good(const struct buf *b, uint32_t version)
{
	char name[32];
	const char *path, *s;
	lt_gguf *g;
	int64_t iv;
	double fv;
	int bv, good;
	size_t len;
	uint64_t count;
	enum lt_gguf_vtype elem;

	snprintf(name, sizeof name, "good-v%" PRIu32 ".gguf", version);
	path = write_buf(name, b->p, b->n);
	if (!tap_ok(lt_gguf_open(path, &g) == LT_OK, "v%" PRIu32 ": a good file opens %s", version,
		    lt_errmsg())) {
		tap_skip("the file did not open");
		return;
	}
	good = lt_gguf_version(g) == version && lt_gguf_alignment(g) == ALIGN &&
	       lt_gguf_data_offset(g) == marks[M_DATA] && lt_gguf_kv_count(g) == NKV &&
	       strcmp(lt_gguf_kv_key(g, 1), "k.u8") == 0 && lt_gguf_kv_type(g, 12, &elem) == LT_GGUF_V_ARRAY &&
	       elem == LT_GGUF_V_STRING && lt_gguf_tensor_count(g) == NT;
	for (int i = 0; i < 8; i++) {
		static const char *const keys[8] = { "k.u8", "k.i8", "k.u16", "k.i16", "k.u32", "k.i32", "k.i64", "k.bool" };
		static const int64_t want[8] = { 200, -100, 65535, -30000, 4000000000, -5, INT64_MIN, 1 };
		if (i < 7)
			good = good && lt_gguf_get_int(g, keys[i], &iv) == LT_OK && iv == want[i];
		else
			good = good && lt_gguf_get_bool(g, keys[i], &bv) == LT_OK && bv == 1;
	}
	good = good && lt_gguf_get_float(g, "k.f32", &fv) == LT_OK && fv == 1.25 &&
	       lt_gguf_get_float(g, "k.f64", &fv) == LT_OK && fv == -M_PI &&
	       lt_gguf_get_str(g, "general.architecture", &s, &len) == LT_OK && strcmp(s, "llama") == 0 && len == 5;
	tap_ok(good, "v%" PRIu32 ": header, and scalars of every width read back", version);
	good = lt_gguf_get_array(g, "k.strs", &elem, &count) == LT_OK && elem == LT_GGUF_V_STRING && count == 3 &&
	       lt_gguf_array_str(g, "k.strs", 0, &s, &len) == LT_OK && strcmp(s, "a") == 0 && len == 1 &&
	       lt_gguf_array_str(g, "k.strs", 1, &s, &len) == LT_OK && len == 0 &&
	       lt_gguf_array_str(g, "k.strs", 2, &s, &len) == LT_OK && strcmp(s, "h\xc3\xa9llo") == 0 && len == 6 &&
	       lt_gguf_array_int(g, "k.i16s", 0, &iv) == LT_OK && iv == -1 &&
	       lt_gguf_array_int(g, "k.i16s", 2, &iv) == LT_OK && iv == 30000 &&
	       lt_gguf_array_float(g, "k.f32s", 1, &fv) == LT_OK && fv == -1.25;
	tap_ok(good, "v%" PRIu32 ": arrays of strings, integers and floats read back", version);
	good = 1;
	for (int i = 0; i < NT; i++) {
		const struct lt_gguf_tensor *t = lt_gguf_tensor_at(g, i);
		good = good && strcmp(t->name, tens[i].name) == 0 && t->type == tens[i].type &&
		       t->ndim == tens[i].ndim && t->dims[0] == tens[i].dims[0] &&
		       t->dims[1] == tens[i].dims[1] && t->nbytes == tensor_bytes(i) &&
		       t->offset % ALIGN == 0 && lt_gguf_tensor_lookup(g, t->name) == t;
	}
	tap_ok(good, "v%" PRIu32 ": the tensor directory (names, types, dims, sizes, aligned offsets)", version);
	for (int i = 0; i < NT; i++) {
		double e = tensor_error(g, i);
		tap_ok(e <= 0x1p-23, "v%" PRIu32 ": %s (%s) dequantizes as computed in double (error %.3g)",
		       version, tens[i].name, lt_gguf_type_name(tens[i].type), e);
	}
	lt_gguf_close(g);
}

/* A getter that must fail with status want and a message holding `has`. */
static void refused_get(enum lt_status got, enum lt_status want, const char *has, const char *what)
{
	const char *m = lt_errmsg();
	tap_ok(got == want && strstr(m, has) && !strchr(m, '\n'), "getter refuses %s: %s", what, m);
}

static void check_getters(const struct buf *b)
{
	const char *path = write_buf("getters.gguf", b->p, b->n), *s;
	lt_gguf *g;
	int64_t iv;
	double fv;
	const struct lt_gguf_tensor *t;
	float f[64];
	unsigned char raw[8];
	if (lt_gguf_open(path, &g) != LT_OK) {
		tap_ok(0, "the getters' file opens: %s", lt_errmsg());
		return;
	}
	refused_get(lt_gguf_get_int(g, "no.such", &iv), LT_ERR_NOTFOUND, "no metadata key 'no.such'", "an absent key");
	refused_get(lt_gguf_get_int(g, "k.f32", &iv), LT_ERR_FORMAT, "key 'k.f32' is a f32, expected an integer",
		    "a float as an integer");
	refused_get(lt_gguf_get_str(g, "k.u8", &s, NULL), LT_ERR_FORMAT, "expected a string", "an integer as a string");
	refused_get(lt_gguf_get_int(g, "k.u64", &iv), LT_ERR_FORMAT, "larger than 2^63 - 1", "a u64 past int64");
	refused_get(lt_gguf_get_float(g, "k.strs", &fv), LT_ERR_FORMAT, "is an array", "an array as a float");
	refused_get(lt_gguf_array_str(g, "k.strs", 3, &s, NULL), LT_ERR_ARG, "element 3 asked of an array of 3",
		    "an index past an array");
	refused_get(lt_gguf_array_int(g, "k.strs", 0, &iv), LT_ERR_FORMAT, "an array of string, expected an array of integers",
		    "strings as integers");
	refused_get(lt_gguf_tensor_find(g, "nope", &t), LT_ERR_NOTFOUND, "no tensor 'nope'", "an absent tensor");
	t = lt_gguf_tensor_lookup(g, "t.f32");
	refused_get(lt_gguf_read_f32(g, t, f, 4), LT_ERR_ARG, "4 values asked, the tensor has 5", "a wrong count");
	refused_get(lt_gguf_read_raw(g, t, raw, 8), LT_ERR_ARG, "8 bytes asked, the tensor (F32) has 20", "a wrong size");
	refused_get(lt_gguf_dequantize(LT_GGUF_Q4_K, raw, 8, f, 256), LT_ERR_ARG, "cannot dequantize tensors of type Q4_K",
		    "a type it does not convert");
	refused_get(lt_gguf_dequantize(LT_GGUF_Q8_0, raw, 8, f, 32), LT_ERR_ARG, "expected whole blocks",
		    "sizes that disagree");
	lt_gguf_close(g);
}

/* One damage: the good file with `v` (bytes wide) at mark + delta, or cut
 * to `cut` bytes when cut > 0; opening it must fail with `has` in a one-line
 * message naming the file. */
struct damage {
	const char *what;
	enum mark at;
	size_t delta;
	uint64_t v;
	int bytes;
	size_t cut;
	const char *has;
};

static const struct damage damages[] = {
	{ "a wrong magic", M_MAGIC, 0, 'G' | 'G' << 8 | 'M' << 16 | 'L' << 24, 4, 0, "byte 0: not a GGUF file" },
	{ "version 1", M_VERSION, 0, 1, 4, 0, "byte 4: GGUF version 1, expected 2 or 3" },
	{ "version 4", M_VERSION, 0, 4, 4, 0, "GGUF version 4, expected 2 or 3" },
	{ "a file cut inside the header", M_MAGIC, 0, 0, 0, 10, "byte 8: the tensor count needs 8 bytes, only 2 left" },
	{ "2^40 tensors", M_NTENSORS, 0, 1ull << 40, 8, 0, "tensors cannot be described" },
	{ "2^60 key/values", M_NKV, 0, 1ull << 60, 8, 0, "key/values cannot fit" },
	{ "a key longer than the file", M_KEY0_LEN, 0, 1ull << 62, 8, 0, "a key of 4611686018427387904 bytes runs past the end" },
	{ "value type 13", M_U8_TYPE, 0, 13, 4, 0, "key 'k.u8': value type 13 is not one of 0..12" },
	{ "a bool of 2", M_BOOL, 0, 2, 1, 0, "key 'k.bool': bool value 2, expected 0 or 1" },
	{ "an array of arrays", M_ARR_ELEM, 0, LT_GGUF_V_ARRAY, 4, 0, "key 'k.strs': an array of arrays" },
	{ "an array count past the file", M_ARR_COUNT, 0, 1ull << 50, 8, 0, "key 'k.strs': an array of 1125899906842624 string values does not fit" },
	{ "a key given twice", M_U8_KEY, 2, 'i', 1, 0, "key 'k.i8' appears twice" },
	{ "an alignment of 48", M_ALIGN, 0, 48, 4, 0, "'general.alignment': expected a u32 power of two" },
	{ "an alignment of 0", M_ALIGN, 0, 0, 4, 0, "'general.alignment': expected a u32 power of two" },
	{ "an i32 alignment", M_ALIGN_TYPE, 0, LT_GGUF_V_I32, 4, 0, "'general.alignment': expected a u32 power of two, found i32" },
	{ "5 dimensions", M_T0_NDIM, 0, 5, 4, 0, "tensor 't.q8': 5 dimensions, expected 1 to 4" },
	{ "0 dimensions", M_T0_NDIM, 0, 0, 4, 0, "tensor 't.q8': 0 dimensions, expected 1 to 4" },
	{ "a dimension past int64", M_T0_DIM1, 0, 1ull << 63, 8, 0, "tensor 't.q8': dimension 1 is 9223372036854775808" },
	{ "an element count past 64 bits", M_T0_DIM1, 0, 1ull << 62, 8, 0, "tensor 't.q8': its element count overflows" },
	{ "a row of 33 Q8_0 values", M_T0_DIM0, 0, 33, 8, 0, "tensor 't.q8': a row of 33 values is not a whole number of Q8_0 blocks of 32" },
	{ "a misaligned offset", M_T1_OFFSET, 0, ALIGN * 3 + 4, 8, 0, "tensor 't.q4': offset 196 in the data section is not a multiple of the alignment 64" },
	{ "an offset past the end", M_T1_OFFSET, 0, 1ull << 40, 8, 0, "tensor 't.q4': 54 bytes at offset 1099511627776" },
	{ "an offset near 2^64", M_T1_OFFSET, 0, UINT64_MAX - 63, 8, 0, "tensor 't.q4': 54 bytes at offset 18446744073709551552" },
	{ "two tensors sharing bytes", M_T1_OFFSET, 0, 64, 8, 0, "tensors 't.q8' and 't.q4' share bytes at offset" },
	{ "a tensor name given twice", M_T1_NAME, 3, '8', 1, 0, "tensor 't.q8' appears twice" },
	{ "the last tensor cut", M_MAGIC, 0, 0, 0, 1, "tensor 't.f32': 20 bytes at offset" },
	{ "the data section cut off", M_MAGIC, 0, 0, 0, 2, "the data section starts at byte" },
};
#define NDAMAGES (sizeof damages / sizeof damages[0])

static void check_damage(const struct buf *b, const struct damage *d)
{
	unsigned char *p = malloc(b->n);
	size_t n = b->n;
	const char *path, *m;
	lt_gguf *g = NULL;
	enum lt_status st;
	memcpy(p, b->p, n);
	if (d->cut == 1)
		n -= 8;                     /* into the last tensor */
	else if (d->cut == 2)
		n = marks[M_DATA] - 1;      /* before the data section */
	else if (d->cut)
		n = d->cut;
	else
		patch(p, marks[d->at] + d->delta, d->v, d->bytes);
	path = write_buf("damaged.gguf", p, n);
	lt_errmsg_clear();
	st = lt_gguf_open(path, &g);
	m = lt_errmsg();
	tap_ok(st == LT_ERR_FORMAT && !g && strstr(m, path) == m && strstr(m, d->has) && !strchr(m, '\n'),
	       "refused: %s", d->what);
	tap_diag("  %s", m);
	lt_gguf_close(g);
	free(p);
}

/* lt_gguf_dequantize on one hand-made block of each quantized type. */
static void check_blocks(void)
{
	unsigned char q8[34], q4[18], q41[20];
	float f[32];
	double worst = 0;
	patch(q8, 0, 0x2e66, 2);            /* d = 0.0999755859375 */
	patch(q4, 0, 0xb800, 2);            /* d = -0.5 */
	patch(q41, 0, 0x3400, 2);           /* d = 0.25 */
	patch(q41, 2, 0xc500, 2);           /* m = -5 */
	for (int j = 0; j < 32; j++)
		q8[2 + j] = (unsigned char)(int8_t)(j * 8 - 128);
	for (int j = 0; j < 16; j++) {
		q4[2 + j] = (unsigned char)(j | (15 - j) << 4);
		q41[4 + j] = (unsigned char)((j * 7) % 16 | (j * 3 % 16) << 4);
	}
	lt_gguf_dequantize(LT_GGUF_Q8_0, q8, 34, f, 32);
	for (int j = 0; j < 32; j++)
		worst = tap_worst(worst, fabs(f[j] - 0.0999755859375 * (j * 8 - 128)));
	lt_gguf_dequantize(LT_GGUF_Q4_0, q4, 18, f, 32);
	for (int j = 0; j < 32; j++)
		worst = tap_worst(worst, fabs(f[j] - -0.5 * ((j < 16 ? j : 15 - (j - 16)) - 8)));
	lt_gguf_dequantize(LT_GGUF_Q4_1, q41, 20, f, 32);
	for (int j = 0; j < 32; j++)
		worst = tap_worst(worst, fabs(f[j] - (0.25 * (j < 16 ? j * 7 % 16 : (j - 16) * 3 % 16) - 5)));
	tap_ok(worst == 0, "hand-made Q8_0, Q4_0 and Q4_1 blocks: low nibbles are values 0-15, high ones 16-31 (error %g)",
	       worst);
}

/* F16 of one float through lt_gguf_quantize. */
static uint16_t half_of(float f)
{
	unsigned char b[2];
	lt_gguf_quantize(LT_GGUF_F16, &f, 1, b, 2);
	return (uint16_t)(b[0] | b[1] << 8);
}

/* Halves rounded to nearest even at the edges: ties, subnormals,
 * the largest half and beyond, NaN. */
static void check_halves(void)
{
	static const struct { float f; uint16_t h; } cases[] = {
		{ 1.0f, 0x3c00 },           { -2.0f, 0xc000 },
		{ 1.0f + 0x1p-11f, 0x3c00 }, /* a tie: to the even one below */
		{ 1.0f + 0x3p-11f, 0x3c02 }, /* a tie: to the even one above */
		{ 1.0f + 0x1p-10f, 0x3c01 }, { 65504.0f, 0x7bff },
		{ 65519.0f, 0x7bff },        { 65520.0f, 0x7c00 },
		{ 0x1p-24f, 0x0001 },        { 0x1p-25f, 0x0000 }, /* a tie: to zero */
		{ 0x3p-25f, 0x0002 },        { 0x1p-14f, 0x0400 },
		{ 0x1.ff8p-15f, 0x03ff },    { 0x1.ffcp-15f, 0x0400 }, /* a tie: up to the smallest normal */
	};
	int bad = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (half_of(cases[i].f) != cases[i].h) {
			tap_diag("  %a -> 0x%04x, expected 0x%04x", cases[i].f, half_of(cases[i].f),
				 cases[i].h);
			bad++;
		}
	tap_ok(bad == 0 && half_of(NAN) == 0x7e00 && (half_of(-INFINITY) == 0xfc00),
	       "floats quantize to F16 rounded to nearest even (%d wrong)", bad);
}

/* Blocks whose values are exact multiples of an exact scale quantize to
 * exactly those multiples, and the dequantized blocks back to the same
 * bytes. */
static void check_exact_blocks(void)
{
	float x[32], y[32];
	unsigned char q8[34], q4[18], again[34];
	for (int j = 0; j < 32; j++)
		x[j] = 0.25f * (float)((j * 37) % 255 - 127);  /* includes -127 and 127 */
	lt_gguf_quantize(LT_GGUF_Q8_0, x, 32, q8, 34);
	int ok = q8[0] == 0x00 && q8[1] == 0x34;  /* d = 0.25 */
	for (int j = 0; j < 32; j++)
		ok &= (int8_t)q8[2 + j] == (j * 37) % 255 - 127;
	lt_gguf_dequantize(LT_GGUF_Q8_0, q8, 34, y, 32);
	lt_gguf_quantize(LT_GGUF_Q8_0, y, 32, again, 34);
	tap_ok(ok && !memcmp(q8, again, 34), "Q8_0: q = x / d with d = max |x| / 127, and back to the same bytes");
	for (int j = 0; j < 32; j++)
		x[j] = 0.5f * (float)((j * 5 + 3) % 16 - 8);
	x[7] = -4.0f;  /* the first value of largest magnitude: d = -4 / -8 */
	lt_gguf_quantize(LT_GGUF_Q4_0, x, 32, q4, 18);
	ok = q4[0] == 0x00 && q4[1] == 0x38;  /* d = 0.5 */
	for (int j = 0; j < 16; j++)
		ok &= (q4[2 + j] & 15) == (int)(x[j] * 2.0f) + 8 && q4[2 + j] >> 4 == (int)(x[j + 16] * 2.0f) + 8;
	lt_gguf_dequantize(LT_GGUF_Q4_0, q4, 18, y, 32);
	lt_gguf_quantize(LT_GGUF_Q4_0, y, 32, again, 18);
	tap_ok(ok && !memcmp(q4, again, 18), "Q4_0: q = x / d + 8 with d = (signed max) / -8, and back to the same bytes");
}

/* Random blocks: every value back within the type's rounding of its
 * block's scale, plus the half rounding of the scale itself (127 or 8
 * steps of 2^-11), where Q4_0 clamps +8 d to +7 d: a whole step. */
static void check_quantize_error(void)
{
	enum { N = 32 * 64 };
	static float x[N], y[N];
	static unsigned char q[N * 4];
	uint64_t s = 12345;
	for (int i = 0; i < N; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		x[i] = ((float)(s >> 40) / (float)(1u << 24) - 0.5f) * (float)(1 + i / 32);
	}
	const uint32_t types[] = { LT_GGUF_Q8_0, LT_GGUF_Q4_0, LT_GGUF_BF16, LT_GGUF_F16 };
	const double steps[] = { 1.0 / 127, 1.0 / 8, 0x1p-7, 0x1p-10 }, within[] = { 0.57, 1.01, 0.5, 0.5 };
	for (int k = 0; k < 4; k++) {
		uint32_t t = types[k], bb = lt_gguf_block_bytes(t), bv = lt_gguf_block_values(t);
		double worst = 0;
		lt_gguf_quantize(t, x, N, q, N / bv * bb);
		lt_gguf_dequantize(t, q, N / bv * bb, y, N);
		for (int b = 0; b < N / 32; b++) {
			double amax = 0;
			for (int j = 0; j < 32; j++)
				amax = fmax(amax, fabs(x[32 * b + j]));
			for (int j = 0; j < 32; j++) {
				double scale = bv == 1 ? fmax(fabs(x[32 * b + j]), 0x1p-14) : amax;
				worst = tap_worst(worst, fabs(y[32 * b + j] - x[32 * b + j]) / (steps[k] * scale));
			}
		}
		tap_ok(worst <= within[k], "%s: random values back within %.3g steps (%.4f)",
		       lt_gguf_type_name(t), within[k], worst);
	}
	unsigned char raw[40];
	enum lt_status st = lt_gguf_quantize(LT_GGUF_Q4_1, x, 32, raw, 20);
	tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "cannot quantize into Q4_1"),
	       "quantize refuses Q4_1: %s", lt_errmsg());
	st = lt_gguf_quantize(LT_GGUF_Q8_0, x, 32, raw, 36);
	tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "expected whole blocks"),
	       "quantize refuses bytes that are not whole blocks: %s", lt_errmsg());
	lt_errmsg_clear();
}

int main(void)
{
	struct buf b = { 0 };
	tap_plan(2 * (4 + NT) + 12 + (int)NDAMAGES + 1 + 1 + 2 + 4 + 2);
	tap_scratch_new("test_gguf");
	check_blocks();
	check_halves();
	check_exact_blocks();
	check_quantize_error();
	build(&b, 2);
	check_good(&b, 2);
	build(&b, 3);
	check_good(&b, 3);
	check_getters(&b);
	for (size_t i = 0; i < NDAMAGES; i++)
		check_damage(&b, &damages[i]);
	free(b.p);
	return tap_scratch_done();
}
