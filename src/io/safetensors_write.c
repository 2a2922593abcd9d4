/* safetensors files: the streaming writer (see safetensors.h for the
 * format and rules; the reader is in safetensors.c). */
#include "config.h"
#include "io/safetensors.h"
#include "io/safetensors_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

/* A tensor added to the writer: its bytes are at data, or come from
 * fetch(ctx, ...) during finish. */
struct added_tensor {
	char *name;
	enum lt_st_dtype dtype;
	int ndim;
	int64_t shape[LT_ST_MAX_DIMS];
	uint64_t nbytes;
	const void *data;
	lt_st_fetch_fn fetch;
	void *ctx;
};

struct lt_st_writer {
	char *path;
	struct added_tensor *t;
	size_t n, cap;
	char **meta; /* key, value, key, value, ... */
	size_t nmeta, metacap;
	int spent;
};

enum lt_status lt_st_writer_new(const char *path, lt_st_writer **out)
{
	lt_st_writer *w = calloc(1, sizeof *w);
	*out = NULL;
	if (!w || !(w->path = lt_st_copy_string(path))) {
		free(w);
		lt_errmsg_set("%s: cannot allocate a writer", path);
		return LT_ERR_NOMEM;
	}
	*out = w;
	return LT_OK;
}

void lt_st_writer_free(lt_st_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		free(w->t[i].name);
	for (size_t i = 0; i < 2 * w->nmeta; i++)
		free(w->meta[i]);
	free(w->t);
	free(w->meta);
	free(w->path);
	free(w);
}

static int valid_utf8(const char *s)
{
	json_t *j = json_string(s);
	json_decref(j);
	return j != NULL;
}

static enum lt_status add_tensor(lt_st_writer *w, const char *name, enum lt_st_dtype dtype,
                                 int ndim, const int64_t *shape, const void *data,
                                 lt_st_fetch_fn fetch, void *ctx)
{
	struct added_tensor *t;
	uint64_t numel, nbytes;
	if (w->spent) {
		lt_errmsg_set("%s: tensor '%s' added after the writer finished", w->path, name);
		return LT_ERR_ARG;
	}
	if (!name[0] || strcmp(name, "__metadata__") == 0 || !valid_utf8(name)) {
		lt_errmsg_set("%s: tensor name '%s' is empty, reserved or not UTF-8", w->path, name);
		return LT_ERR_ARG;
	}
	if ((unsigned)dtype >= LT_ST_NDTYPES || ndim < 0 || ndim > LT_ST_MAX_DIMS) {
		lt_errmsg_set("%s: tensor '%s': dtype %d or %d dimensions out of range", w->path, name,
		              (int)dtype, ndim);
		return LT_ERR_ARG;
	}
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0) {
			lt_errmsg_set("%s: tensor '%s': shape[%d] = %" PRId64 " is negative", w->path, name,
			              i, shape[i]);
			return LT_ERR_ARG;
		}
	}
	if (!lt_st_shape_size(ndim, shape, lt_st_dtype_size(dtype), &numel, &nbytes) || nbytes > INT64_MAX
	    || (uint64_t)SIZE_MAX < nbytes) {
		lt_errmsg_set("%s: tensor '%s' is too large", w->path, name);
		return LT_ERR_ARG;
	}
	if (!data && !fetch && nbytes > 0) {
		lt_errmsg_set("%s: tensor '%s' has no data", w->path, name);
		return LT_ERR_ARG;
	}
	for (size_t i = 0; i < w->n; i++) {
		if (strcmp(w->t[i].name, name) == 0) {
			lt_errmsg_set("%s: tensor '%s' added twice", w->path, name);
			return LT_ERR_ARG;
		}
	}
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		struct added_tensor *nt = realloc(w->t, cap * sizeof *nt);
		if (!nt) {
			lt_errmsg_set("%s: cannot allocate a table of %zu tensors", w->path, cap);
			return LT_ERR_NOMEM;
		}
		w->t = nt;
		w->cap = cap;
	}
	t = &w->t[w->n];
	*t = (struct added_tensor){ .dtype = dtype, .ndim = ndim, .nbytes = nbytes,
	                            .data = data, .fetch = fetch, .ctx = ctx };
	if (ndim > 0)
		memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
	if (!(t->name = lt_st_copy_string(name))) {
		lt_errmsg_prefix("%s", w->path);
		return LT_ERR_NOMEM;
	}
	w->n++;
	return LT_OK;
}

enum lt_status lt_st_writer_add(lt_st_writer *w, const char *name, enum lt_st_dtype dtype,
                                int ndim, const int64_t *shape, const void *data)
{
	return add_tensor(w, name, dtype, ndim, shape, data, NULL, NULL);
}

enum lt_status lt_st_writer_add_fetch(lt_st_writer *w, const char *name, enum lt_st_dtype dtype,
                                      int ndim, const int64_t *shape,
                                      lt_st_fetch_fn fetch, void *ctx)
{
	if (!fetch) {
		lt_errmsg_set("%s: tensor '%s' has no fetch function", w->path, name);
		return LT_ERR_ARG;
	}
	return add_tensor(w, name, dtype, ndim, shape, NULL, fetch, ctx);
}

enum lt_status lt_st_writer_set_meta(lt_st_writer *w, const char *key, const char *value)
{
	char *v;
	if (w->spent) {
		lt_errmsg_set("%s: metadata '%s' set after the writer finished", w->path, key);
		return LT_ERR_ARG;
	}
	if (!valid_utf8(key) || !valid_utf8(value)) {
		lt_errmsg_set("%s: metadata '%s' is not UTF-8", w->path, key);
		return LT_ERR_ARG;
	}
	if (!(v = lt_st_copy_string(value))) {
		lt_errmsg_prefix("%s", w->path);
		return LT_ERR_NOMEM;
	}
	for (size_t i = 0; i < w->nmeta; i++) {
		if (strcmp(w->meta[2 * i], key) == 0) {
			free(w->meta[2 * i + 1]);
			w->meta[2 * i + 1] = v;
			return LT_OK;
		}
	}
	if (w->nmeta == w->metacap) {
		size_t cap = w->metacap ? 2 * w->metacap : 16;
		char **nm = realloc(w->meta, 2 * cap * sizeof *nm);
		if (!nm) {
			free(v);
			lt_errmsg_set("%s: cannot allocate a table of %zu metadata entries", w->path, cap);
			return LT_ERR_NOMEM;
		}
		w->meta = nm;
		w->metacap = cap;
	}
	if (!(w->meta[2 * w->nmeta] = lt_st_copy_string(key))) {
		free(v);
		lt_errmsg_prefix("%s", w->path);
		return LT_ERR_NOMEM;
	}
	w->meta[2 * w->nmeta + 1] = v;
	w->nmeta++;
	return LT_OK;
}

/* The header as bytes: the 8-byte length, the compact JSON, then spaces up
 * to a multiple of 8. jansson keeps object keys in insertion order. */
static enum lt_status build_header(const lt_st_writer *w, unsigned char **out, size_t *outlen)
{
	json_t *root = json_object(), *meta = NULL;
	int bad = root == NULL;
	uint64_t off = 0;
	char *text = NULL;
	size_t len, padded;

	if (w->nmeta > 0) {
		bad |= (meta = json_object()) == NULL;
		for (size_t i = 0; i < w->nmeta && !bad; i++)
			bad |= json_object_set_new(meta, w->meta[2 * i], json_string(w->meta[2 * i + 1]));
		bad |= json_object_set_new(root, "__metadata__", meta);
	}
	for (size_t i = 0; i < w->n && !bad; i++) {
		const struct added_tensor *t = &w->t[i];
		json_t *e = json_object(), *shape = json_array(), *offs = json_array();
		for (int d = 0; d < t->ndim; d++)
			bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
		bad |= json_array_append_new(offs, json_integer((json_int_t)off));
		bad |= json_array_append_new(offs, json_integer((json_int_t)(off + t->nbytes)));
		bad |= json_object_set_new(e, "dtype", json_string(lt_st_dtype_name(t->dtype)));
		bad |= json_object_set_new(e, "shape", shape);
		bad |= json_object_set_new(e, "data_offsets", offs);
		bad |= json_object_set_new(root, t->name, e);
		off += t->nbytes;
	}
	if (!bad)
		bad = (text = json_dumps(root, JSON_COMPACT)) == NULL;
	json_decref(root);
	if (bad) {
		free(text);
		lt_errmsg_set("%s: cannot build the header of %zu tensors (out of memory)", w->path, w->n);
		return LT_ERR_NOMEM;
	}
	len = strlen(text);
	padded = (len + 7) / 8 * 8;
	if (padded > LT_ST_MAX_HEADER) {
		free(text);
		lt_errmsg_set("%s: header of %zu bytes is over the %" PRIu64 "-byte limit", w->path,
		              padded, LT_ST_MAX_HEADER);
		return LT_ERR_ARG;
	}
	if (!(*out = malloc(8 + padded))) {
		free(text);
		lt_errmsg_set("%s: cannot allocate %zu bytes for the header", w->path, 8 + padded);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < 8; i++)
		(*out)[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	memcpy(*out + 8, text, len);
	memset(*out + 8 + len, ' ', padded - len);
	*outlen = 8 + padded;
	free(text);
	return LT_OK;
}

/* Writes all of buf at the file position; 0, or the errno that stopped it
 * with *done set to the bytes that did get written. */
static int write_all(int fd, const void *buf, size_t len, size_t *done)
{
	const unsigned char *p = buf;
	*done = 0;
	while (*done < len) {
		size_t want = len - *done < ((size_t)1 << 30) ? len - *done : (size_t)1 << 30;
		ssize_t r = write(fd, p + *done, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno;
		if (r == 0)
			return ENOSPC; /* a write that makes no progress */
		*done += (size_t)r;
	}
	return 0;
}

static enum lt_status write_tensor(const lt_st_writer *w, int fd, const struct added_tensor *t,
                                   uint64_t pos, unsigned char *chunk)
{
	uint64_t off = 0;
	size_t done;
	int err;
	while (off < t->nbytes) {
		size_t len = t->nbytes - off < LT_ST_CHUNK ? (size_t)(t->nbytes - off) : LT_ST_CHUNK;
		const void *src;
		if (t->fetch) {
			enum lt_status rc = t->fetch(t->ctx, off, chunk, len);
			if (rc != LT_OK) {
				lt_errmsg_prefix("%s: tensor '%s': fetching bytes %" PRIu64 "..%" PRIu64,
				                 w->path, t->name, off, off + len);
				return rc;
			}
			src = chunk;
		} else {
			len = (size_t)(t->nbytes - off); /* write_all splits it */
			src = (const unsigned char *)t->data + off;
		}
		if ((err = write_all(fd, src, len, &done)) != 0) {
			lt_errmsg_set("%s: writing tensor '%s' (%" PRIu64 " bytes) at byte %" PRIu64 ": %s",
			              w->path, t->name, t->nbytes, pos + off + done, strerror(err));
			return LT_ERR_IO;
		}
		off += len;
	}
	return LT_OK;
}

enum lt_status lt_st_writer_finish(lt_st_writer *w)
{
	unsigned char *head = NULL, *chunk = NULL;
	size_t headlen = 0, done;
	enum lt_status rc;
	uint64_t pos;
	int fd = -1, err, need_chunk = 0, created = 0;

	if (w->spent) {
		lt_errmsg_set("%s: writer finished twice", w->path);
		return LT_ERR_ARG;
	}
	w->spent = 1;
	if ((rc = build_header(w, &head, &headlen)) != LT_OK)
		return rc;
	for (size_t i = 0; i < w->n; i++)
		need_chunk |= w->t[i].fetch != NULL;
	if (need_chunk && !(chunk = malloc(LT_ST_CHUNK))) {
		free(head);
		lt_errmsg_set("%s: cannot allocate a %zu-byte staging buffer", w->path, LT_ST_CHUNK);
		return LT_ERR_NOMEM;
	}
	if ((fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		lt_errmsg_set("%s: cannot create: %s", w->path, strerror(errno));
		rc = LT_ERR_IO;
		goto out;
	}
	created = 1;
	if ((err = write_all(fd, head, headlen, &done)) != 0) {
		lt_errmsg_set("%s: writing the %zu-byte header: %s", w->path, headlen, strerror(err));
		rc = LT_ERR_IO;
		goto out;
	}
	pos = headlen;
	for (size_t i = 0; i < w->n; i++) {
		if ((rc = write_tensor(w, fd, &w->t[i], pos, chunk)) != LT_OK)
			goto out;
		pos += w->t[i].nbytes;
	}
	if (fsync(fd) != 0) {
		lt_errmsg_set("%s: fsync: %s", w->path, strerror(errno));
		rc = LT_ERR_IO;
		goto out;
	}
	err = close(fd);
	fd = -1;
	if (err != 0) {
		lt_errmsg_set("%s: close: %s", w->path, strerror(errno));
		rc = LT_ERR_IO;
	}
out:
	if (fd >= 0)
		close(fd);
	if (rc != LT_OK && created)
		unlink(w->path); /* no partial file may pass for a complete one */
	free(chunk);
	free(head);
	return rc;
}
