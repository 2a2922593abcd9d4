/* GGUF files: the metadata getters over the key/values that gguf.c read
 * (see gguf.h). */
#include "config.h"
#include "io/gguf.h"
#include "io/gguf_impl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
	return lt_gguf_find_kv(g, key) != NULL;
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
	const struct kv *kv = lt_gguf_find_kv(g, key);
	if (!kv) {
		lt_errmsg_set("%s: no metadata key '%s'", g->path, key);
		return LT_ERR_NOTFOUND;
	}
	if (!ok(kv->type)) {
		lt_errmsg_set("%s: key '%s' is %s %s, expected %s", g->path, key,
			      kv->type == LT_GGUF_V_ARRAY ? "an" : "a", lt_gguf_vtype_name(kv->type), expected);
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
			      lt_gguf_vtype_name(kv->elem), expected);
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
	p = kv->raw + i * lt_gguf_vtype_size(kv->elem);
	switch (kv->elem) {
	case LT_GGUF_V_U8: u = p[0]; break;
	case LT_GGUF_V_I8: u = (uint64_t)(int64_t)(int8_t)p[0]; break;
	case LT_GGUF_V_U16: u = lt_gguf_load_le16(p); break;
	case LT_GGUF_V_I16: u = (uint64_t)(int64_t)(int16_t)lt_gguf_load_le16(p); break;
	case LT_GGUF_V_U32: u = lt_gguf_load_le32(p); break;
	case LT_GGUF_V_I32: u = (uint64_t)(int64_t)(int32_t)lt_gguf_load_le32(p); break;
	default: u = lt_gguf_load_le64(p); break;
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
	p = kv->raw + i * lt_gguf_vtype_size(kv->elem);
	if (kv->elem == LT_GGUF_V_F32) {
		*v = lt_gguf_bits_to_float(lt_gguf_load_le32(p));
	} else {
		uint64_t u = lt_gguf_load_le64(p);
		memcpy(v, &u, sizeof *v);
	}
	return LT_OK;
}
