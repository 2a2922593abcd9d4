/* GGUF files: the checking reader of the header, metadata and tensor
 * directory, and the tensors read with pread and dequantized (see gguf.h
 * for the format and the rules). */
#include "config.h"
#include "io/gguf.h"
#include "io/gguf_impl.h"

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

size_t lt_gguf_vtype_size(enum lt_gguf_vtype t)
{
	return (unsigned)t < LT_GGUF_V_COUNT ? vtype_sizes[t] : 0;
}

const char *lt_gguf_vtype_name(enum lt_gguf_vtype t)
{
	return (unsigned)t < LT_GGUF_V_COUNT ? vtype_names[t] : "unknown";
}

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
		*v = lt_gguf_load_le32(b);
	return st;
}

static enum lt_status cur_u64(struct cursor *c, uint64_t *v, const char *what)
{
	unsigned char b[8];
	enum lt_status st = cur_read(c, b, 8, what);
	if (st == LT_OK)
		*v = lt_gguf_load_le64(b);
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
	uint64_t u = lt_gguf_load_le64(b);
	if (st != LT_OK)
		return st;
	switch (kv->type) {
	case LT_GGUF_V_I8: kv->v.u = (uint64_t)(int64_t)(int8_t)b[0]; break;
	case LT_GGUF_V_I16: kv->v.u = (uint64_t)(int64_t)(int16_t)lt_gguf_load_le16(b); break;
	case LT_GGUF_V_I32: kv->v.u = (uint64_t)(int64_t)(int32_t)lt_gguf_load_le32(b); break;
	case LT_GGUF_V_F32: kv->v.f = lt_gguf_bits_to_float(lt_gguf_load_le32(b)); break;
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

struct kv *lt_gguf_find_kv(const lt_gguf *g, const char *key)
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
	struct kv *kv = lt_gguf_find_kv(g, "general.alignment");
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
