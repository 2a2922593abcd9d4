/* The GGUF writer (see gguf_write.h): metadata serialized as it is added,
 * the tensor directory with its offsets, then the file in one pass. */
#include "config.h"
#include "io/gguf_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/gguf.h"

#define ALIGNMENT 32
#define GGUF_VERSION 3

struct wtensor {
	char *name;
	int ndim;
	int64_t dims[LT_GGUF_MAX_DIMS];
	uint32_t type;
	uint64_t offset, nbytes;  /* offset from the data section */
};

struct lt_gguf_writer {
	unsigned char *kv;        /* the serialized key/values */
	size_t kv_len, kv_cap, nkv;
	char **keys;
	struct wtensor *t;
	size_t nt, t_cap, next;   /* next: the tensor whose data comes next */
	uint64_t data_end;
	char *path;
	FILE *f;
};

enum lt_status lt_gguf_writer_new(lt_gguf_writer **out)
{
	*out = calloc(1, sizeof **out);
	if (!*out) {
		lt_errmsg_set("cannot allocate a GGUF writer");
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

void lt_gguf_writer_free(lt_gguf_writer *w)
{
	if (!w)
		return;
	if (w->f)
		fclose(w->f);
	for (size_t i = 0; i < w->nkv; i++)
		free(w->keys[i]);
	for (size_t i = 0; i < w->nt; i++)
		free(w->t[i].name);
	free(w->keys);
	free(w->t);
	free(w->kv);
	free(w->path);
	free(w);
}

/* ---- metadata ---- */

static enum lt_status put(lt_gguf_writer *w, const void *p, size_t n)
{
	if (w->kv_len + n > w->kv_cap) {
		size_t cap = w->kv_cap ? w->kv_cap : 4096;
		while (cap < w->kv_len + n)
			cap *= 2;
		unsigned char *kv = realloc(w->kv, cap);
		if (!kv) {
			lt_errmsg_set("cannot allocate %zu bytes of GGUF metadata", cap);
			return LT_ERR_NOMEM;
		}
		w->kv = kv;
		w->kv_cap = cap;
	}
	memcpy(w->kv + w->kv_len, p, n);
	w->kv_len += n;
	return LT_OK;
}

static enum lt_status put_u32(lt_gguf_writer *w, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
			       (unsigned char)(v >> 24) };
	return put(w, b, 4);
}

static enum lt_status put_u64(lt_gguf_writer *w, uint64_t v)
{
	enum lt_status st = put_u32(w, (uint32_t)v);
	return st == LT_OK ? put_u32(w, (uint32_t)(v >> 32)) : st;
}

static enum lt_status put_string(lt_gguf_writer *w, const char *s)
{
	size_t n = strlen(s);
	enum lt_status st = put_u64(w, n);
	return st == LT_OK ? put(w, s, n) : st;
}

static uint32_t float_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

/* The key (refused when already there, or when writing has begun) and
 * its value type. */
static enum lt_status put_key(lt_gguf_writer *w, const char *key, enum lt_gguf_vtype type)
{
	enum lt_status st;
	if (w->f || w->next) {
		lt_errmsg_set("GGUF key '%s': added after the header was written", key);
		return LT_ERR_ARG;
	}
	for (size_t i = 0; i < w->nkv; i++) {
		if (!strcmp(w->keys[i], key)) {
			lt_errmsg_set("GGUF key '%s': added twice", key);
			return LT_ERR_ARG;
		}
	}
	char **keys = realloc(w->keys, (w->nkv + 1) * sizeof *keys);
	if (!keys || !(keys[w->nkv] = strdup(key))) {
		if (keys)
			w->keys = keys;
		lt_errmsg_set("cannot allocate the GGUF key '%s'", key);
		return LT_ERR_NOMEM;
	}
	w->keys = keys;
	w->nkv++;
	if ((st = put_string(w, key)) != LT_OK)
		return st;
	return put_u32(w, (uint32_t)type);
}

enum lt_status lt_gguf_writer_add_str(lt_gguf_writer *w, const char *key, const char *s)
{
	enum lt_status st = put_key(w, key, LT_GGUF_V_STRING);
	return st == LT_OK ? put_string(w, s) : st;
}

enum lt_status lt_gguf_writer_add_u32(lt_gguf_writer *w, const char *key, uint32_t v)
{
	enum lt_status st = put_key(w, key, LT_GGUF_V_U32);
	return st == LT_OK ? put_u32(w, v) : st;
}

enum lt_status lt_gguf_writer_add_i32(lt_gguf_writer *w, const char *key, int32_t v)
{
	enum lt_status st = put_key(w, key, LT_GGUF_V_I32);
	return st == LT_OK ? put_u32(w, (uint32_t)v) : st;
}

enum lt_status lt_gguf_writer_add_f32(lt_gguf_writer *w, const char *key, float v)
{
	enum lt_status st = put_key(w, key, LT_GGUF_V_F32);
	return st == LT_OK ? put_u32(w, float_bits(v)) : st;
}

enum lt_status lt_gguf_writer_add_bool(lt_gguf_writer *w, const char *key, int v)
{
	unsigned char b = v ? 1 : 0;
	enum lt_status st = put_key(w, key, LT_GGUF_V_BOOL);
	return st == LT_OK ? put(w, &b, 1) : st;
}

/* An array's key, its element type and count. */
static enum lt_status put_array(lt_gguf_writer *w, const char *key, enum lt_gguf_vtype elem,
				size_t n)
{
	enum lt_status st = put_key(w, key, LT_GGUF_V_ARRAY);
	if (st == LT_OK)
		st = put_u32(w, (uint32_t)elem);
	return st == LT_OK ? put_u64(w, n) : st;
}

enum lt_status lt_gguf_writer_add_strs(lt_gguf_writer *w, const char *key,
				       const char *const *s, size_t n)
{
	enum lt_status st = put_array(w, key, LT_GGUF_V_STRING, n);
	for (size_t i = 0; i < n && st == LT_OK; i++)
		st = put_string(w, s[i]);
	return st;
}

enum lt_status lt_gguf_writer_add_i32s(lt_gguf_writer *w, const char *key, const int32_t *v,
				       size_t n)
{
	enum lt_status st = put_array(w, key, LT_GGUF_V_I32, n);
	for (size_t i = 0; i < n && st == LT_OK; i++)
		st = put_u32(w, (uint32_t)v[i]);
	return st;
}

enum lt_status lt_gguf_writer_add_f32s(lt_gguf_writer *w, const char *key, const float *v,
				       size_t n)
{
	enum lt_status st = put_array(w, key, LT_GGUF_V_F32, n);
	for (size_t i = 0; i < n && st == LT_OK; i++)
		st = put_u32(w, float_bits(v[i]));
	return st;
}

/* ---- the tensor directory ---- */

static uint64_t align_up(uint64_t x)
{
	return (x + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
}

/* The dims are positive, ndim in range and dims[0] whole blocks of type. */
static enum lt_status check_tensor(const char *name, int ndim, const int64_t *dims,
				   uint32_t type)
{
	uint32_t bv = lt_gguf_block_values(type);
	if (!bv || !lt_gguf_block_bytes(type)) {
		lt_errmsg_set("GGUF tensor '%s': type %s has no known layout", name,
			      lt_gguf_type_name(type));
		return LT_ERR_ARG;
	}
	if (ndim < 1 || ndim > LT_GGUF_MAX_DIMS) {
		lt_errmsg_set("GGUF tensor '%s': %d dimensions, expected 1 to %d", name, ndim,
			      LT_GGUF_MAX_DIMS);
		return LT_ERR_ARG;
	}
	for (int i = 0; i < ndim; i++) {
		if (dims[i] < 1) {
			lt_errmsg_set("GGUF tensor '%s': dimension %d is %" PRId64 ", expected >= 1",
				      name, i, dims[i]);
			return LT_ERR_ARG;
		}
	}
	if (dims[0] % bv != 0) {
		lt_errmsg_set("GGUF tensor '%s': rows of %" PRId64 " values, not whole blocks of "
			      "%" PRIu32 " (%s)", name, dims[0], bv, lt_gguf_type_name(type));
		return LT_ERR_ARG;
	}
	return LT_OK;
}

enum lt_status lt_gguf_writer_add_tensor(lt_gguf_writer *w, const char *name, int ndim,
					 const int64_t *dims, uint32_t type)
{
	enum lt_status st = check_tensor(name, ndim, dims, type);
	if (st != LT_OK)
		return st;
	if (w->nt == w->t_cap) {
		size_t cap = w->t_cap ? 2 * w->t_cap : 64;
		struct wtensor *t = realloc(w->t, cap * sizeof *t);
		if (!t) {
			lt_errmsg_set("cannot allocate %zu GGUF tensor records", cap);
			return LT_ERR_NOMEM;
		}
		w->t = t;
		w->t_cap = cap;
	}
	struct wtensor *t = &w->t[w->nt];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(name))) {
		lt_errmsg_set("cannot allocate the GGUF tensor name '%s'", name);
		return LT_ERR_NOMEM;
	}
	uint64_t numel = 1;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++) {
		t->dims[i] = dims[i];
		numel *= (uint64_t)dims[i];
	}
	t->type = type;
	t->nbytes = numel / lt_gguf_block_values(type) * lt_gguf_block_bytes(type);
	t->offset = w->data_end;
	w->data_end = align_up(t->offset + t->nbytes);
	w->nt++;
	return LT_OK;
}

size_t lt_gguf_writer_tensor_bytes(const lt_gguf_writer *w, size_t i)
{
	return i < w->nt ? (size_t)w->t[i].nbytes : 0;
}

/* ---- the file ---- */

static enum lt_status write_bytes(lt_gguf_writer *w, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, w->f) != n) {
		lt_errmsg_set("%s: cannot write: %s", w->path, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

static enum lt_status write_zeros(lt_gguf_writer *w, size_t n)
{
	static const unsigned char zeros[ALIGNMENT];
	return write_bytes(w, zeros, n);
}

/* The header's fixed part and the directory go through the metadata
 * buffer, after the key/values already there. */
static enum lt_status serialize_directory(lt_gguf_writer *w)
{
	enum lt_status st = LT_OK;
	for (size_t i = 0; i < w->nt && st == LT_OK; i++) {
		const struct wtensor *t = &w->t[i];
		st = put_string(w, t->name);
		if (st == LT_OK)
			st = put_u32(w, (uint32_t)t->ndim);
		for (int d = 0; d < t->ndim && st == LT_OK; d++)
			st = put_u64(w, (uint64_t)t->dims[d]);
		if (st == LT_OK)
			st = put_u32(w, t->type);
		if (st == LT_OK)
			st = put_u64(w, t->offset);
	}
	return st;
}

enum lt_status lt_gguf_writer_begin(lt_gguf_writer *w, const char *path)
{
	unsigned char head[24] = { 'G', 'G', 'U', 'F' };
	uint64_t counts[2] = { w->nt, w->nkv };
	enum lt_status st;

	LT_ASSERT(!w->f && !w->next);
	for (int i = 0; i < 4; i++)
		head[4 + i] = (unsigned char)(GGUF_VERSION >> (8 * i));
	for (int c = 0; c < 2; c++)
		for (int i = 0; i < 8; i++)
			head[8 + 8 * c + i] = (unsigned char)(counts[c] >> (8 * i));
	if ((st = serialize_directory(w)) != LT_OK)
		return st;
	if (!(w->path = strdup(path))) {
		lt_errmsg_set("%s: cannot allocate the path", path);
		return LT_ERR_NOMEM;
	}
	if (!(w->f = fopen(path, "wb"))) {
		lt_errmsg_set("%s: cannot create: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	if ((st = write_bytes(w, head, sizeof head)) != LT_OK ||
	    (st = write_bytes(w, w->kv, w->kv_len)) != LT_OK)
		return st;
	return write_zeros(w, (size_t)(align_up(sizeof head + w->kv_len) -
				       (sizeof head + w->kv_len)));
}

enum lt_status lt_gguf_writer_tensor_data(lt_gguf_writer *w, const void *p, size_t nbytes)
{
	LT_ASSERT(w->f);
	if (w->next >= w->nt || nbytes != w->t[w->next].nbytes) {
		lt_errmsg_set("%s: tensor data of %zu bytes, expected %s", w->path, nbytes,
			      w->next >= w->nt ? "no more tensors" : "the tensor's size");
		return LT_ERR_ARG;
	}
	const struct wtensor *t = &w->t[w->next++];
	enum lt_status st = write_bytes(w, p, nbytes);
	return st == LT_OK ? write_zeros(w, (size_t)(align_up(t->offset + t->nbytes) -
						      (t->offset + t->nbytes))) : st;
}

enum lt_status lt_gguf_writer_finish(lt_gguf_writer *w)
{
	FILE *f = w->f;
	LT_ASSERT(f);
	if (w->next != w->nt) {
		lt_errmsg_set("%s: %zu of %zu tensors written", w->path, w->next, w->nt);
		return LT_ERR_ARG;
	}
	w->f = NULL;
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		lt_errmsg_set("%s: cannot write: %s", w->path, strerror(errno));
		fclose(f);
		return LT_ERR_IO;
	}
	if (fclose(f) != 0) {
		lt_errmsg_set("%s: cannot close: %s", w->path, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}
