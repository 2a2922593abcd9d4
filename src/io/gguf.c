/* GGUF files: the checking reader of the header, metadata and tensor
 * directory, and the tensors read with pread and dequantized (see gguf.h
 * for the format and the rules). */
#include "config.h"
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAGIC "GGUF"
#define DEFAULT_ALIGNMENT 32
/* Bytes dequantized per pread in lt_gguf_read_f32. */
#define READ_CHUNK ((size_t)1 << 20)

/* ---- types ---- */

static const char *const vtype_names[LT_GGUF_V_COUNT] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static const size_t vtype_sizes[LT_GGUF_V_COUNT] = {
	1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8,
};

const char *lt_gguf_vtype_name(enum lt_gguf_vtype t)
{
	return (unsigned)t < LT_GGUF_V_COUNT ? vtype_names[t] : "unknown";
}

static const struct {
	const char *name;
	uint32_t values, bytes;
} types[] = {
	[LT_GGUF_F32] = { "F32", 1, 4 },    [LT_GGUF_F16] = { "F16", 1, 2 },
	[LT_GGUF_Q4_0] = { "Q4_0", 32, 18 }, [LT_GGUF_Q4_1] = { "Q4_1", 32, 20 },
	[LT_GGUF_Q5_0] = { "Q5_0", 32, 22 }, [LT_GGUF_Q5_1] = { "Q5_1", 32, 24 },
	[LT_GGUF_Q8_0] = { "Q8_0", 32, 34 }, [LT_GGUF_Q8_1] = { "Q8_1", 32, 36 },
	[LT_GGUF_Q2_K] = { "Q2_K", 256, 84 }, [LT_GGUF_Q3_K] = { "Q3_K", 256, 110 },
	[LT_GGUF_Q4_K] = { "Q4_K", 256, 144 }, [LT_GGUF_Q5_K] = { "Q5_K", 256, 176 },
	[LT_GGUF_Q6_K] = { "Q6_K", 256, 210 }, [LT_GGUF_Q8_K] = { "Q8_K", 256, 292 },
	[LT_GGUF_I8] = { "I8", 1, 1 },       [LT_GGUF_I16] = { "I16", 1, 2 },
	[LT_GGUF_I32] = { "I32", 1, 4 },     [LT_GGUF_I64] = { "I64", 1, 8 },
	[LT_GGUF_F64] = { "F64", 1, 8 },     [LT_GGUF_BF16] = { "BF16", 1, 2 },
};
#define NTYPES (sizeof types / sizeof types[0])

const char *lt_gguf_type_name(uint32_t type)
{
	static _Thread_local char buf[32];
	if (type < NTYPES && types[type].name)
		return types[type].name;
	snprintf(buf, sizeof buf, "type %" PRIu32, type);
	return buf;
}

uint32_t lt_gguf_block_values(uint32_t type)
{
	return type < NTYPES ? types[type].values : 0;
}

uint32_t lt_gguf_block_bytes(uint32_t type)
{
	return type < NTYPES ? types[type].bytes : 0;
}

int lt_gguf_can_dequantize(uint32_t type)
{
	return type == LT_GGUF_F32 || type == LT_GGUF_F16 || type == LT_GGUF_BF16 ||
	       type == LT_GGUF_Q8_0 || type == LT_GGUF_Q4_0 || type == LT_GGUF_Q4_1;
}

/* ---- dequantization ---- */

static uint16_t load_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_le64(const unsigned char *p)
{
	return (uint64_t)load_le32(p) | (uint64_t)load_le32(p + 4) << 32;
}

/* IEEE half to float, exactly (subnormals, infinities and NaNs included). */
static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
	float f;
	if (exp == 0) {
		f = ldexpf((float)mant, -24);
		return sign ? -f : f;
	}
	if (exp == 0x1f)
		bits = sign | 0x7f800000u | mant << 13;
	else
		bits = sign | (exp + 112) << 23 | mant << 13;
	memcpy(&f, &bits, sizeof f);
	return f;
}

static float bits_to_float(uint32_t bits)
{
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

/* Q8_0: an f16 scale d, then 32 int8 q; value j is d * q[j]. */
static void dequant_q8_0(const unsigned char *b, float *out)
{
	float d = half_to_float(load_le16(b));
	for (int j = 0; j < 32; j++)
		out[j] = d * (float)(int8_t)b[2 + j];
}

/* Q4_0: an f16 scale d, then 16 bytes; byte j holds value j in its low
 * nibble and value j + 16 in its high one, each (q - 8) * d. */
static void dequant_q4_0(const unsigned char *b, float *out)
{
	float d = half_to_float(load_le16(b));
	for (int j = 0; j < 16; j++) {
		out[j] = (float)((b[2 + j] & 0x0f) - 8) * d;
		out[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
	}
}

/* Q4_1: an f16 scale d and an f16 minimum m, then 16 bytes of nibbles in
 * Q4_0's order, each q * d + m. */
static void dequant_q4_1(const unsigned char *b, float *out)
{
	float d = half_to_float(load_le16(b)), m = half_to_float(load_le16(b + 2));
	for (int j = 0; j < 16; j++) {
		out[j] = (float)(b[4 + j] & 0x0f) * d + m;
		out[j + 16] = (float)(b[4 + j] >> 4) * d + m;
	}
}

enum lt_status lt_gguf_dequantize(uint32_t type, const void *src, size_t nbytes, float *dst,
				  size_t n)
{
	const unsigned char *p = src;
	uint32_t bv = lt_gguf_block_values(type), bb = lt_gguf_block_bytes(type);
	if (!lt_gguf_can_dequantize(type)) {
		lt_errmsg_set("cannot dequantize tensors of type %s (F32, F16, BF16, Q8_0, Q4_0 or "
			      "Q4_1 expected)", lt_gguf_type_name(type));
		return LT_ERR_ARG;
	}
	if (n % bv != 0 || nbytes / bb != n / bv || nbytes % bb != 0) {
		lt_errmsg_set("%s: %zu values in %zu bytes: expected whole blocks of %" PRIu32
			      " values in %" PRIu32 " bytes", lt_gguf_type_name(type), n, nbytes, bv, bb);
		return LT_ERR_ARG;
	}
	for (size_t i = 0, blk = 0; i < n; i += bv, blk += bb) {
		switch (type) {
		case LT_GGUF_F32: dst[i] = bits_to_float(load_le32(p + blk)); break;
		case LT_GGUF_F16: dst[i] = half_to_float(load_le16(p + blk)); break;
		case LT_GGUF_BF16: dst[i] = bits_to_float((uint32_t)load_le16(p + blk) << 16); break;
		case LT_GGUF_Q8_0: dequant_q8_0(p + blk, dst + i); break;
		case LT_GGUF_Q4_0: dequant_q4_0(p + blk, dst + i); break;
		default: dequant_q4_1(p + blk, dst + i); break;
		}
	}
	return LT_OK;
}

/* ---- the open file ---- */

/* One metadata entry. Scalars live in `u` (integers as their bits, the
 * sign extended for signed types); a string in str/len; an array's
 * numbers as the file's bytes in raw, its strings in one block of
 * NUL-terminated strings with soff[i] the start of string i (count + 1
 * entries, so that the length is soff[i + 1] - soff[i] - 1). */
struct kv {
	char *key;
	enum lt_gguf_vtype type, elem;
	union {
		uint64_t u;
		double f;
	} v;
	char *str;
	size_t len;
	uint64_t count;
	unsigned char *raw;
	uint64_t *soff;
};

struct lt_gguf {
	char *path;
	int fd;
	uint64_t size;
	uint32_t version, alignment;
	uint64_t data_offset;
	size_t nkv;
	struct kv *kv;
	struct kv **kv_sorted;
	size_t nt;
	struct lt_gguf_tensor *t;
	struct lt_gguf_tensor **t_sorted;
};

/* A buffered cursor over the header with its byte offset. */
struct cursor {
	FILE *f;
	const char *path;
	uint64_t pos, size;
};

static enum lt_status cur_read(struct cursor *c, void *p, uint64_t n, const char *what)
{
	if (n > c->size - c->pos) {
		lt_errmsg_set("%s: byte %" PRIu64 ": %s needs %" PRIu64 " bytes, only %" PRIu64
			      " left in the file", c->path, c->pos, what, n, c->size - c->pos);
		return LT_ERR_FORMAT;
	}
	if (n && fread(p, 1, (size_t)n, c->f) != n) {
		lt_errmsg_set("%s: byte %" PRIu64 ": cannot read %s: %s", c->path, c->pos, what,
			      ferror(c->f) ? strerror(errno) : "unexpected end of file");
		return LT_ERR_IO;
	}
	c->pos += n;
	return LT_OK;
}

static enum lt_status cur_u32(struct cursor *c, uint32_t *v, const char *what)
{
	unsigned char b[4];
	enum lt_status st = cur_read(c, b, 4, what);
	if (st == LT_OK)
		*v = load_le32(b);
	return st;
}

static enum lt_status cur_u64(struct cursor *c, uint64_t *v, const char *what)
{
	unsigned char b[8];
	enum lt_status st = cur_read(c, b, 8, what);
	if (st == LT_OK)
		*v = load_le64(b);
	return st;
}

/* A string: u64 length and bytes, into a NUL-terminated copy. */
static enum lt_status cur_string(struct cursor *c, char **out, size_t *len, const char *what)
{
	uint64_t n, at = c->pos;
	enum lt_status st = cur_u64(c, &n, what);
	if (st != LT_OK)
		return st;
	if (n > c->size - c->pos) {
		lt_errmsg_set("%s: byte %" PRIu64 ": %s of %" PRIu64 " bytes runs past the end of "
			      "the file (%" PRIu64 " bytes left)", c->path, at, what, n, c->size - c->pos);
		return LT_ERR_FORMAT;
	}
	if (!(*out = malloc((size_t)n + 1))) {
		lt_errmsg_set("%s: cannot allocate %" PRIu64 " bytes for %s", c->path, n + 1, what);
		return LT_ERR_NOMEM;
	}
	if ((st = cur_read(c, *out, n, what)) != LT_OK) {
		free(*out);
		*out = NULL;
		return st;
	}
	(*out)[n] = '\0';
	if (len)
		*len = (size_t)n;
	return LT_OK;
}

/* A value type: one of the thirteen, and for an array element not an
 * array. */
static enum lt_status cur_vtype(struct cursor *c, const char *key, int elem,
				enum lt_gguf_vtype *out)
{
	uint32_t t;
	uint64_t at = c->pos;
	enum lt_status st = cur_u32(c, &t, elem ? "an array's element type" : "a value type");
	if (st != LT_OK)
		return st;
	if (t >= LT_GGUF_V_COUNT) {
		lt_errmsg_set("%s: byte %" PRIu64 ": key '%s': value type %" PRIu32 " is not one of "
			      "0..12", c->path, at, key, t);
		return LT_ERR_FORMAT;
	}
	if (elem && t == LT_GGUF_V_ARRAY) {
		lt_errmsg_set("%s: byte %" PRIu64 ": key '%s': an array of arrays (nested arrays are "
			      "not supported)", c->path, at, key);
		return LT_ERR_FORMAT;
	}
	*out = (enum lt_gguf_vtype)t;
	return LT_OK;
}

/* A scalar of a fixed size into kv->v. */
static enum lt_status read_scalar(struct cursor *c, struct kv *kv)
{
	unsigned char b[8] = { 0 };
	uint64_t at = c->pos;
	size_t n = vtype_sizes[kv->type];
	enum lt_status st = cur_read(c, b, n, "a value");
	uint64_t u = load_le64(b);
	if (st != LT_OK)
		return st;
	switch (kv->type) {
	case LT_GGUF_V_I8: kv->v.u = (uint64_t)(int64_t)(int8_t)b[0]; break;
	case LT_GGUF_V_I16: kv->v.u = (uint64_t)(int64_t)(int16_t)load_le16(b); break;
	case LT_GGUF_V_I32: kv->v.u = (uint64_t)(int64_t)(int32_t)load_le32(b); break;
	case LT_GGUF_V_F32: kv->v.f = bits_to_float(load_le32(b)); break;
	case LT_GGUF_V_F64: memcpy(&kv->v.f, &u, sizeof u); break;
	case LT_GGUF_V_BOOL:
		if (b[0] > 1) {
			lt_errmsg_set("%s: byte %" PRIu64 ": key '%s': bool value %u, expected 0 or 1",
				      c->path, at, kv->key, b[0]);
			return LT_ERR_FORMAT;
		}
		/* fall through */
	default: kv->v.u = u; break;
	}
	return LT_OK;
}

/* An array of strings into kv->str (the block) and kv->soff. */
static enum lt_status read_string_array(struct cursor *c, struct kv *kv)
{
	size_t cap = 256, used = 0;
	enum lt_status st = LT_OK;
	if (!(kv->soff = malloc(((size_t)kv->count + 1) * sizeof *kv->soff)) ||
	    !(kv->str = malloc(cap))) {
		lt_errmsg_set("%s: key '%s': cannot allocate an array of %" PRIu64 " strings",
			      c->path, kv->key, kv->count);
		return LT_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < kv->count && st == LT_OK; i++) {
		char *s;
		size_t n;
		if ((st = cur_string(c, &s, &n, "a string of an array")) != LT_OK) {
			lt_errmsg_prefix("key '%s': element %" PRIu64 ": ", kv->key, i);
			break;
		}
		if (used + n + 1 > cap) {
			char *p;
			while (used + n + 1 > cap)
				cap *= 2;
			if (!(p = realloc(kv->str, cap))) {
				free(s);
				lt_errmsg_set("%s: key '%s': cannot allocate %zu bytes of strings",
					      c->path, kv->key, cap);
				return LT_ERR_NOMEM;
			}
			kv->str = p;
		}
		kv->soff[i] = used;
		memcpy(kv->str + used, s, n + 1);
		used += n + 1;
		free(s);
	}
	kv->soff[kv->count] = used;
	return st;
}

/* An array: element type, count, elements. */
static enum lt_status read_array(struct cursor *c, struct kv *kv)
{
	uint64_t at;
	enum lt_status st = cur_vtype(c, kv->key, 1, &kv->elem);
	if (st != LT_OK)
		return st;
	at = c->pos;
	if ((st = cur_u64(c, &kv->count, "an array's count")) != LT_OK)
		return st;
	/* each element takes at least one byte (a string eight) */
	if (kv->count > (c->size - c->pos) / (kv->elem == LT_GGUF_V_STRING ? 8 : vtype_sizes[kv->elem])) {
		lt_errmsg_set("%s: byte %" PRIu64 ": key '%s': an array of %" PRIu64 " %s values "
			      "does not fit in the %" PRIu64 " bytes left", c->path, at, kv->key,
			      kv->count, vtype_names[kv->elem], c->size - c->pos);
		return LT_ERR_FORMAT;
	}
	if (kv->elem == LT_GGUF_V_STRING)
		return read_string_array(c, kv);
	if (!(kv->raw = malloc((size_t)(kv->count * vtype_sizes[kv->elem]) + 1))) {
		lt_errmsg_set("%s: key '%s': cannot allocate an array of %" PRIu64 " values", c->path,
			      kv->key, kv->count);
		return LT_ERR_NOMEM;
	}
	return cur_read(c, kv->raw, kv->count * vtype_sizes[kv->elem], "an array's values");
}

static int cmp_kv(const void *a, const void *b)
{
	return strcmp((*(const struct kv *const *)a)->key, (*(const struct kv *const *)b)->key);
}

static int cmp_tensor(const void *a, const void *b)
{
	return strcmp((*(const struct lt_gguf_tensor *const *)a)->name,
		      (*(const struct lt_gguf_tensor *const *)b)->name);
}

static struct kv *find_kv(const lt_gguf *g, const char *key)
{
	struct kv k = { .key = (char *)key }, *kp = &k, **hit;
	if (!g->kv_sorted)
		return NULL;
	hit = bsearch(&kp, g->kv_sorted, g->nkv, sizeof *g->kv_sorted, cmp_kv);
	return hit ? *hit : NULL;
}

/* Sorts the keys for lookup and refuses a key given twice. */
static enum lt_status index_kv(lt_gguf *g)
{
	if (!g->nkv)
		return LT_OK;
	if (!(g->kv_sorted = malloc(g->nkv * sizeof *g->kv_sorted))) {
		lt_errmsg_set("%s: cannot allocate the metadata index", g->path);
		return LT_ERR_NOMEM;
	}
	for (size_t i = 0; i < g->nkv; i++)
		g->kv_sorted[i] = &g->kv[i];
	qsort(g->kv_sorted, g->nkv, sizeof *g->kv_sorted, cmp_kv);
	for (size_t i = 1; i < g->nkv; i++) {
		if (strcmp(g->kv_sorted[i - 1]->key, g->kv_sorted[i]->key) == 0) {
			lt_errmsg_set("%s: key '%s' appears twice in the metadata (each key once "
				      "expected)", g->path, g->kv_sorted[i]->key);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* The key/values, one after another. */
static enum lt_status read_metadata(struct cursor *c, lt_gguf *g, uint64_t nkv)
{
	enum lt_status st;
	/* a key/value takes at least 8 (key length) + 4 (type) + 1 bytes */
	if (nkv > (c->size - c->pos) / 13) {
		lt_errmsg_set("%s: byte 16: %" PRIu64 " key/values cannot fit in the %" PRIu64
			      " bytes of the file", c->path, nkv, c->size);
		return LT_ERR_FORMAT;
	}
	if (nkv && !(g->kv = calloc((size_t)nkv, sizeof *g->kv))) {
		lt_errmsg_set("%s: cannot allocate %" PRIu64 " key/values", c->path, nkv);
		return LT_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < nkv; i++) {
		struct kv *kv = &g->kv[i];
		g->nkv = (size_t)i + 1;
		if ((st = cur_string(c, &kv->key, NULL, "a key")) != LT_OK ||
		    (st = cur_vtype(c, kv->key, 0, &kv->type)) != LT_OK)
			return st;
		if (kv->type == LT_GGUF_V_STRING) {
			if ((st = cur_string(c, &kv->str, &kv->len, "a string value")) != LT_OK) {
				lt_errmsg_prefix("key '%s': ", kv->key);
				return st;
			}
		} else if (kv->type == LT_GGUF_V_ARRAY) {
			if ((st = read_array(c, kv)) != LT_OK)
				return st;
		} else if ((st = read_scalar(c, kv)) != LT_OK) {
			return st;
		}
	}
	return index_kv(g);
}

/* The alignment from general.alignment: a u32 power of two. */
static enum lt_status read_alignment(lt_gguf *g)
{
	struct kv *kv = find_kv(g, "general.alignment");
	g->alignment = DEFAULT_ALIGNMENT;
	if (!kv)
		return LT_OK;
	if (kv->type != LT_GGUF_V_U32 || kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0) {
		lt_errmsg_set("%s: key 'general.alignment': expected a u32 power of two, found %s%s",
			      g->path, vtype_names[kv->type],
			      kv->type == LT_GGUF_V_U32 ? " that is not a power of two" : "");
		return LT_ERR_FORMAT;
	}
	g->alignment = (uint32_t)kv->v.u;
	return LT_OK;
}

/* The element and byte counts of a tensor from its dimensions and type. */
static enum lt_status tensor_size(const char *path, struct lt_gguf_tensor *t)
{
	uint64_t n = 1;
	uint32_t bv = lt_gguf_block_values(t->type), bb = lt_gguf_block_bytes(t->type);
	for (int i = 0; i < t->ndim; i++) {
		uint64_t d = (uint64_t)t->dims[i];
		if (d != 0 && n > (UINT64_MAX / 8) / d) {
			lt_errmsg_set("%s: tensor '%s': its element count overflows 64 bits", path,
				      t->name);
			return LT_ERR_FORMAT;
		}
		n *= d;
	}
	t->numel = n;
	t->nbytes = 0;
	if (!bv)
		return LT_OK;
	if (t->dims[0] % bv != 0) {
		lt_errmsg_set("%s: tensor '%s': a row of %" PRId64 " values is not a whole number "
			      "of %s blocks of %" PRIu32, path, t->name, t->dims[0],
			      lt_gguf_type_name(t->type), bv);
		return LT_ERR_FORMAT;
	}
	t->nbytes = n / bv * bb;
	return LT_OK;
}

/* One entry of the tensor directory (its offset still relative). */
static enum lt_status read_tensor_info(struct cursor *c, struct lt_gguf_tensor *t)
{
	uint32_t nd;
	uint64_t at;
	enum lt_status st = cur_string(c, (char **)&t->name, NULL, "a tensor name");
	if (st != LT_OK)
		return st;
	at = c->pos;
	if ((st = cur_u32(c, &nd, "a dimension count")) != LT_OK)
		return st;
	if (nd < 1 || nd > LT_GGUF_MAX_DIMS) {
		lt_errmsg_set("%s: byte %" PRIu64 ": tensor '%s': %" PRIu32 " dimensions, expected "
			      "1 to %d", c->path, at, t->name, nd, LT_GGUF_MAX_DIMS);
		return LT_ERR_FORMAT;
	}
	t->ndim = (int)nd;
	for (int i = 0; i < LT_GGUF_MAX_DIMS; i++) {
		uint64_t d = 1;
		at = c->pos;
		if (i < t->ndim && (st = cur_u64(c, &d, "a dimension")) != LT_OK)
			return st;
		if (d > INT64_MAX) {
			lt_errmsg_set("%s: byte %" PRIu64 ": tensor '%s': dimension %d is %" PRIu64
				      ", expected at most 2^63 - 1", c->path, at, t->name, i, d);
			return LT_ERR_FORMAT;
		}
		t->dims[i] = (int64_t)d;
	}
	if ((st = cur_u32(c, &t->type, "a tensor type")) != LT_OK ||
	    (st = cur_u64(c, &t->offset, "a tensor offset")) != LT_OK)
		return st;
	return tensor_size(c->path, t);
}

/* Each tensor aligned, inside the file, and apart from the others. */
static enum lt_status check_extents(lt_gguf *g)
{
	for (size_t i = 0; i < g->nt; i++) {
		struct lt_gguf_tensor *t = &g->t[i];
		uint64_t left = g->size - g->data_offset;
		if (t->offset % g->alignment != 0) {
			lt_errmsg_set("%s: tensor '%s': offset %" PRIu64 " in the data section is not "
				      "a multiple of the alignment %" PRIu32, g->path, t->name,
				      t->offset, g->alignment);
			return LT_ERR_FORMAT;
		}
		if (t->offset > left || t->nbytes > left - t->offset) {
			lt_errmsg_set("%s: tensor '%s': %" PRIu64 " bytes at offset %" PRIu64 " of the "
				      "data section run past the end of the file (the section has %"
				      PRIu64 " bytes)", g->path, t->name, t->nbytes, t->offset, left);
			return LT_ERR_FORMAT;
		}
		t->offset += g->data_offset;
	}
	return LT_OK;
}

static int cmp_offset(const void *a, const void *b)
{
	const struct lt_gguf_tensor *x = *(const struct lt_gguf_tensor *const *)a;
	const struct lt_gguf_tensor *y = *(const struct lt_gguf_tensor *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sorts the tensors by name for lookup, refusing a name given twice, then
 * by offset, refusing two tensors that share bytes. */
static enum lt_status index_tensors(lt_gguf *g)
{
	if (!g->nt)
		return LT_OK;
	if (!(g->t_sorted = malloc(g->nt * sizeof *g->t_sorted))) {
		lt_errmsg_set("%s: cannot allocate the tensor index", g->path);
		return LT_ERR_NOMEM;
	}
	for (size_t i = 0; i < g->nt; i++)
		g->t_sorted[i] = &g->t[i];
	qsort(g->t_sorted, g->nt, sizeof *g->t_sorted, cmp_offset);
	for (size_t i = 1; i < g->nt; i++) {
		const struct lt_gguf_tensor *a = g->t_sorted[i - 1], *b = g->t_sorted[i];
		if (a->nbytes && b->nbytes && a->offset + a->nbytes > b->offset) {
			lt_errmsg_set("%s: tensors '%s' and '%s' share bytes at offset %" PRIu64
				      " (tensors apart expected)", g->path, a->name, b->name, b->offset);
			return LT_ERR_FORMAT;
		}
	}
	qsort(g->t_sorted, g->nt, sizeof *g->t_sorted, cmp_tensor);
	for (size_t i = 1; i < g->nt; i++) {
		if (strcmp(g->t_sorted[i - 1]->name, g->t_sorted[i]->name) == 0) {
			lt_errmsg_set("%s: tensor '%s' appears twice in the directory (each name once "
				      "expected)", g->path, g->t_sorted[i]->name);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* The directory, then the data section's start. */
static enum lt_status read_tensors(struct cursor *c, lt_gguf *g, uint64_t nt)
{
	enum lt_status st;
	uint64_t pad;
	/* an entry takes at least 8 + 4 + 8 + 4 + 8 bytes */
	if (nt > (c->size - c->pos) / 32) {
		lt_errmsg_set("%s: byte 8: %" PRIu64 " tensors cannot be described in the %" PRIu64
			      " bytes left after the metadata", c->path, nt, c->size - c->pos);
		return LT_ERR_FORMAT;
	}
	if (nt && !(g->t = calloc((size_t)nt, sizeof *g->t))) {
		lt_errmsg_set("%s: cannot allocate %" PRIu64 " tensors", c->path, nt);
		return LT_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < nt; i++) {
		g->nt = (size_t)i + 1;
		if ((st = read_tensor_info(c, &g->t[i])) != LT_OK)
			return st;
	}
	pad = (g->alignment - c->pos % g->alignment) % g->alignment;
	g->data_offset = c->pos + pad;
	if (g->data_offset > c->size) {
		lt_errmsg_set("%s: byte %" PRIu64 ": the data section starts at byte %" PRIu64
			      ", past the end of the file", c->path, c->pos, g->data_offset);
		return LT_ERR_FORMAT;
	}
	if ((st = check_extents(g)) != LT_OK)
		return st;
	return index_tensors(g);
}

/* Magic, version and the two counts. */
static enum lt_status read_header(struct cursor *c, lt_gguf *g, uint64_t *nt, uint64_t *nkv)
{
	char magic[4];
	enum lt_status st = cur_read(c, magic, 4, "the magic \"GGUF\"");
	if (st != LT_OK)
		return st;
	if (memcmp(magic, MAGIC, 4) != 0) {
		lt_errmsg_set("%s: byte 0: not a GGUF file (the magic \"GGUF\" expected)", c->path);
		return LT_ERR_FORMAT;
	}
	if ((st = cur_u32(c, &g->version, "the version")) != LT_OK)
		return st;
	if (g->version != 2 && g->version != 3) {
		lt_errmsg_set("%s: byte 4: GGUF version %" PRIu32 ", expected 2 or 3", c->path,
			      g->version);
		return LT_ERR_FORMAT;
	}
	if ((st = cur_u64(c, nt, "the tensor count")) != LT_OK)
		return st;
	return cur_u64(c, nkv, "the key/value count");
}

static enum lt_status parse(lt_gguf *g)
{
	struct cursor c = { .path = g->path, .size = g->size };
	uint64_t nt, nkv;
	enum lt_status st;
	int fd = dup(g->fd);
	if (fd < 0 || !(c.f = fdopen(fd, "rb"))) {
		lt_errmsg_set("%s: cannot read: %s", g->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return LT_ERR_IO;
	}
	if ((st = read_header(&c, g, &nt, &nkv)) == LT_OK &&
	    (st = read_metadata(&c, g, nkv)) == LT_OK && (st = read_alignment(g)) == LT_OK)
		st = read_tensors(&c, g, nt);
	fclose(c.f);
	return st;
}

enum lt_status lt_gguf_open(const char *path, lt_gguf **out)
{
	struct stat sb;
	enum lt_status st;
	lt_gguf *g = calloc(1, sizeof *g);
	*out = NULL;
	if (!g || !(g->path = strdup(path))) {
		free(g);
		lt_errmsg_set("%s: cannot allocate a reader", path);
		return LT_ERR_NOMEM;
	}
	if ((g->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		lt_errmsg_set("%s: cannot open: %s", path, strerror(errno));
		free(g->path);
		free(g);
		return LT_ERR_IO;
	}
	if (fstat(g->fd, &sb) != 0) {
		lt_errmsg_set("%s: cannot stat: %s", path, strerror(errno));
		lt_gguf_close(g);
		return LT_ERR_IO;
	}
	if (!S_ISREG(sb.st_mode)) {
		lt_errmsg_set("%s: not a regular file (a GGUF file expected)", path);
		lt_gguf_close(g);
		return LT_ERR_IO;
	}
	g->size = (uint64_t)sb.st_size;
	if ((st = parse(g)) != LT_OK) {
		lt_gguf_close(g);
		return st;
	}
	*out = g;
	return LT_OK;
}

void lt_gguf_close(lt_gguf *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->nkv; i++) {
		free(g->kv[i].key);
		free(g->kv[i].str);
		free(g->kv[i].raw);
		free(g->kv[i].soff);
	}
	for (size_t i = 0; i < g->nt; i++)
		free((char *)g->t[i].name);
	free(g->kv);
	free(g->kv_sorted);
	free(g->t);
	free(g->t_sorted);
	if (g->fd >= 0)
		close(g->fd);
	free(g->path);
	free(g);
}

const char *lt_gguf_path(const lt_gguf *g) { return g->path; }
uint32_t lt_gguf_version(const lt_gguf *g) { return g->version; }
uint32_t lt_gguf_alignment(const lt_gguf *g) { return g->alignment; }
uint64_t lt_gguf_data_offset(const lt_gguf *g) { return g->data_offset; }
size_t lt_gguf_kv_count(const lt_gguf *g) { return g->nkv; }

const char *lt_gguf_kv_key(const lt_gguf *g, size_t i)
{
	LT_ASSERT(i < g->nkv);
	return g->kv[i].key;
}

enum lt_gguf_vtype lt_gguf_kv_type(const lt_gguf *g, size_t i, enum lt_gguf_vtype *elem)
{
	LT_ASSERT(i < g->nkv);
	if (elem)
		*elem = g->kv[i].type == LT_GGUF_V_ARRAY ? g->kv[i].elem : LT_GGUF_V_COUNT;
	return g->kv[i].type;
}

int lt_gguf_has(const lt_gguf *g, const char *key)
{
	return find_kv(g, key) != NULL;
}

/* ---- metadata getters ---- */

static int is_int_type(enum lt_gguf_vtype t)
{
	return t <= LT_GGUF_V_I32 || t == LT_GGUF_V_U64 || t == LT_GGUF_V_I64;
}

static int is_float_type(enum lt_gguf_vtype t)
{
	return t == LT_GGUF_V_F32 || t == LT_GGUF_V_F64;
}

/* The entry for key if its type passes `ok`, else a message. */
static enum lt_status get_kv(const lt_gguf *g, const char *key, int (*ok)(enum lt_gguf_vtype),
			     const char *expected, const struct kv **out)
{
	const struct kv *kv = find_kv(g, key);
	if (!kv) {
		lt_errmsg_set("%s: no metadata key '%s'", g->path, key);
		return LT_ERR_NOTFOUND;
	}
	if (!ok(kv->type)) {
		lt_errmsg_set("%s: key '%s' is %s %s, expected %s", g->path, key,
			      kv->type == LT_GGUF_V_ARRAY ? "an" : "a", vtype_names[kv->type], expected);
		return LT_ERR_FORMAT;
	}
	*out = kv;
	return LT_OK;
}

static int is_string(enum lt_gguf_vtype t) { return t == LT_GGUF_V_STRING; }
static int is_bool(enum lt_gguf_vtype t) { return t == LT_GGUF_V_BOOL; }
static int is_array(enum lt_gguf_vtype t) { return t == LT_GGUF_V_ARRAY; }

enum lt_status lt_gguf_get_str(const lt_gguf *g, const char *key, const char **s, size_t *len)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_string, "a string", &kv);
	if (st != LT_OK)
		return st;
	*s = kv->str;
	if (len)
		*len = kv->len;
	return LT_OK;
}

/* An integer of type t from its 64-bit pattern (signed types sign-extended). */
static enum lt_status int_value(const lt_gguf *g, const char *key, enum lt_gguf_vtype t,
				uint64_t u, int64_t *v)
{
	if (t == LT_GGUF_V_U64 && u > INT64_MAX) {
		lt_errmsg_set("%s: key '%s': %" PRIu64 " is larger than 2^63 - 1", g->path, key, u);
		return LT_ERR_FORMAT;
	}
	*v = (int64_t)u;
	return LT_OK;
}

enum lt_status lt_gguf_get_int(const lt_gguf *g, const char *key, int64_t *v)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_int_type, "an integer", &kv);
	if (st != LT_OK)
		return st;
	return int_value(g, key, kv->type, kv->v.u, v);
}

enum lt_status lt_gguf_get_float(const lt_gguf *g, const char *key, double *v)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_float_type, "an f32 or f64", &kv);
	if (st == LT_OK)
		*v = kv->v.f;
	return st;
}

enum lt_status lt_gguf_get_bool(const lt_gguf *g, const char *key, int *v)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_bool, "a bool", &kv);
	if (st == LT_OK)
		*v = kv->v.u != 0;
	return st;
}

enum lt_status lt_gguf_get_array(const lt_gguf *g, const char *key, enum lt_gguf_vtype *elem,
				 uint64_t *count)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_array, "an array", &kv);
	if (st != LT_OK)
		return st;
	if (elem)
		*elem = kv->elem;
	if (count)
		*count = kv->count;
	return LT_OK;
}

/* Element i of the array `key` whose element type passes ok. */
static enum lt_status array_elem(const lt_gguf *g, const char *key, uint64_t i,
				 int (*ok)(enum lt_gguf_vtype), const char *expected,
				 const struct kv **out)
{
	const struct kv *kv;
	enum lt_status st = get_kv(g, key, is_array, "an array", &kv);
	if (st != LT_OK)
		return st;
	if (!ok(kv->elem)) {
		lt_errmsg_set("%s: key '%s' is an array of %s, expected an array of %s", g->path, key,
			      vtype_names[kv->elem], expected);
		return LT_ERR_FORMAT;
	}
	if (i >= kv->count) {
		lt_errmsg_set("%s: key '%s': element %" PRIu64 " asked of an array of %" PRIu64,
			      g->path, key, i, kv->count);
		return LT_ERR_ARG;
	}
	*out = kv;
	return LT_OK;
}

enum lt_status lt_gguf_array_str(const lt_gguf *g, const char *key, uint64_t i, const char **s,
				 size_t *len)
{
	const struct kv *kv;
	enum lt_status st = array_elem(g, key, i, is_string, "strings", &kv);
	if (st != LT_OK)
		return st;
	*s = kv->str + kv->soff[i];
	if (len)
		*len = (size_t)(kv->soff[i + 1] - kv->soff[i] - 1);
	return LT_OK;
}

enum lt_status lt_gguf_array_int(const lt_gguf *g, const char *key, uint64_t i, int64_t *v)
{
	const struct kv *kv;
	const unsigned char *p;
	uint64_t u;
	enum lt_status st = array_elem(g, key, i, is_int_type, "integers", &kv);
	if (st != LT_OK)
		return st;
	p = kv->raw + i * vtype_sizes[kv->elem];
	switch (kv->elem) {
	case LT_GGUF_V_U8: u = p[0]; break;
	case LT_GGUF_V_I8: u = (uint64_t)(int64_t)(int8_t)p[0]; break;
	case LT_GGUF_V_U16: u = load_le16(p); break;
	case LT_GGUF_V_I16: u = (uint64_t)(int64_t)(int16_t)load_le16(p); break;
	case LT_GGUF_V_U32: u = load_le32(p); break;
	case LT_GGUF_V_I32: u = (uint64_t)(int64_t)(int32_t)load_le32(p); break;
	default: u = load_le64(p); break;
	}
	return int_value(g, key, kv->elem, u, v);
}

enum lt_status lt_gguf_array_float(const lt_gguf *g, const char *key, uint64_t i, double *v)
{
	const struct kv *kv;
	const unsigned char *p;
	enum lt_status st = array_elem(g, key, i, is_float_type, "f32 or f64", &kv);
	if (st != LT_OK)
		return st;
	p = kv->raw + i * vtype_sizes[kv->elem];
	if (kv->elem == LT_GGUF_V_F32) {
		*v = bits_to_float(load_le32(p));
	} else {
		uint64_t u = load_le64(p);
		memcpy(v, &u, sizeof *v);
	}
	return LT_OK;
}

/* ---- tensors ---- */

size_t lt_gguf_tensor_count(const lt_gguf *g) { return g->nt; }

const struct lt_gguf_tensor *lt_gguf_tensor_at(const lt_gguf *g, size_t i)
{
	LT_ASSERT(i < g->nt);
	return &g->t[i];
}

const struct lt_gguf_tensor *lt_gguf_tensor_lookup(const lt_gguf *g, const char *name)
{
	struct lt_gguf_tensor k = { .name = name }, *kp = &k, **hit;
	if (!g->t_sorted)
		return NULL;
	hit = bsearch(&kp, g->t_sorted, g->nt, sizeof *g->t_sorted, cmp_tensor);
	return hit ? *hit : NULL;
}

enum lt_status lt_gguf_tensor_find(const lt_gguf *g, const char *name,
				   const struct lt_gguf_tensor **out)
{
	if (!(*out = lt_gguf_tensor_lookup(g, name))) {
		lt_errmsg_set("%s: no tensor '%s'", g->path, name);
		return LT_ERR_NOTFOUND;
	}
	return LT_OK;
}

/* Bytes [off, off + n) of the file, all of them. */
static enum lt_status pread_all(const lt_gguf *g, const char *name, uint64_t off, void *dst,
				size_t n)
{
	unsigned char *p = dst;
	while (n) {
		ssize_t r = pread(g->fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			lt_errmsg_set("%s: tensor '%s': cannot read byte %" PRIu64 ": %s", g->path, name,
				      off, r < 0 ? strerror(errno) : "the file is shorter than it was");
			return LT_ERR_IO;
		}
		p += r;
		off += (uint64_t)r;
		n -= (size_t)r;
	}
	return LT_OK;
}

enum lt_status lt_gguf_read_raw(const lt_gguf *g, const struct lt_gguf_tensor *t, void *dst,
				size_t nbytes)
{
	if (!lt_gguf_block_values(t->type) || nbytes != t->nbytes) {
		lt_errmsg_set("%s: tensor '%s': %zu bytes asked, the tensor (%s) has %" PRIu64,
			      g->path, t->name, nbytes, lt_gguf_type_name(t->type), t->nbytes);
		return LT_ERR_ARG;
	}
	return pread_all(g, t->name, t->offset, dst, nbytes);
}

enum lt_status lt_gguf_read_f32(const lt_gguf *g, const struct lt_gguf_tensor *t, float *dst,
				size_t n)
{
	uint32_t bv = lt_gguf_block_values(t->type), bb = lt_gguf_block_bytes(t->type);
	size_t blocks_per_chunk;
	unsigned char *buf;
	enum lt_status st = LT_OK;
	if (!lt_gguf_can_dequantize(t->type)) {
		lt_errmsg_set("%s: tensor '%s' is %s, expected F32, F16, BF16, Q8_0, Q4_0 or Q4_1",
			      g->path, t->name, lt_gguf_type_name(t->type));
		return LT_ERR_FORMAT;
	}
	if (n != t->numel) {
		lt_errmsg_set("%s: tensor '%s': %zu values asked, the tensor has %" PRIu64, g->path,
			      t->name, n, t->numel);
		return LT_ERR_ARG;
	}
	blocks_per_chunk = READ_CHUNK / bb;
	if (!(buf = malloc(blocks_per_chunk * bb))) {
		lt_errmsg_set("%s: tensor '%s': cannot allocate a read buffer", g->path, t->name);
		return LT_ERR_NOMEM;
	}
	for (uint64_t blk = 0, nblk = t->numel / bv; blk < nblk && st == LT_OK;
	     blk += blocks_per_chunk) {
		size_t k = (size_t)(nblk - blk < blocks_per_chunk ? nblk - blk : blocks_per_chunk);
		st = pread_all(g, t->name, t->offset + blk * bb, buf, k * bb);
		if (st == LT_OK)
			st = lt_gguf_dequantize(t->type, buf, k * bb, dst + blk * bv, k * bv);
	}
	free(buf);
	return st;
}
