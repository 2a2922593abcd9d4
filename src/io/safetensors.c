/* safetensors files: the validating reader, which reads with pread and
 * converts on the way (see safetensors.h for the format and rules; the
 * writer is in safetensors_write.c). */
#include "config.h"
#include "io/safetensors.h"
#include "io/safetensors_impl.h"
#include "backend.h"

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

#include <jansson.h>

static const struct {
	const char *name;
	size_t size;
} dtypes[LT_ST_NDTYPES] = {
	[LT_ST_F64] = { "F64", 8 },
	[LT_ST_F32] = { "F32", 4 },
	[LT_ST_F16] = { "F16", 2 },
	[LT_ST_BF16] = { "BF16", 2 },
	[LT_ST_I64] = { "I64", 8 },
	[LT_ST_I32] = { "I32", 4 },
	[LT_ST_I16] = { "I16", 2 },
	[LT_ST_I8] = { "I8", 1 },
	[LT_ST_U8] = { "U8", 1 },
	[LT_ST_BOOL] = { "BOOL", 1 },
	[LT_ST_U64] = { "U64", 8 },
	[LT_ST_U32] = { "U32", 4 },
	[LT_ST_U16] = { "U16", 2 },
	[LT_ST_F8_E4M3] = { "F8_E4M3", 1 },
	[LT_ST_F8_E5M2] = { "F8_E5M2", 1 },
};

const char *lt_st_dtype_name(enum lt_st_dtype dt)
{
	LT_ASSERT((unsigned)dt < LT_ST_NDTYPES);
	return dtypes[dt].name;
}

size_t lt_st_dtype_size(enum lt_st_dtype dt)
{
	LT_ASSERT((unsigned)dt < LT_ST_NDTYPES);
	return dtypes[dt].size;
}

static int dtype_parse(const char *s, enum lt_st_dtype *out)
{
	for (int i = 0; i < LT_ST_NDTYPES; i++) {
		if (strcmp(s, dtypes[i].name) == 0) {
			*out = (enum lt_st_dtype)i;
			return 1;
		}
	}
	return 0;
}

char *lt_st_copy_string(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	if (!p)
		lt_errmsg_set("cannot allocate %zu bytes for a string", n);
	else
		memcpy(p, s, n);
	return p;
}

/* "[2, 3]" into buf; a long shape is cut, which only shortens a message. */
static const char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
	size_t len = 0;
	buf[0] = '\0';
	len += (size_t)snprintf(buf + len, size - len, "[");
	for (int i = 0; i < ndim && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%" PRId64, i ? ", " : "", shape[i]);
	if (len < size)
		snprintf(buf + len, size - len, "]");
	return buf;
}

int lt_st_shape_size(int ndim, const int64_t *shape, size_t esize, uint64_t *numel, uint64_t *nbytes)
{
	uint64_t n = 1;
	for (int i = 0; i < ndim; i++) {
		uint64_t d = (uint64_t)shape[i];
		if (d != 0 && n > UINT64_MAX / d)
			return 0;
		n *= d;
	}
	if (n > UINT64_MAX / esize)
		return 0;
	*numel = n;
	*nbytes = n * esize;
	return 1;
}

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static float bf16_to_float(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

struct tensor {
	struct lt_st_info info;
	uint64_t begin, end; /* data_offsets, relative to the data section */
};

struct lt_st {
	char *path;
	int fd;
	uint64_t data_start, data_size;
	size_t n;
	struct tensor *t;      /* header order */
	struct tensor **by_name;
	size_t nmeta;
	char **meta;           /* key, value, key, value, ... */
};

static int cmp_name(const void *a, const void *b)
{
	const struct tensor *x = *(const struct tensor *const *)a;
	const struct tensor *y = *(const struct tensor *const *)b;
	return strcmp(x->info.name, y->info.name);
}

static int cmp_offsets(const void *a, const void *b)
{
	const struct tensor *x = *(const struct tensor *const *)a;
	const struct tensor *y = *(const struct tensor *const *)b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

/* A JSON integer in [0, INT64_MAX], or -1. */
static int64_t json_count(const json_t *v)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	return (int64_t)json_integer_value(v);
}

/* The tensor's "shape": an array of at most LT_ST_MAX_DIMS counts. */
static enum lt_status parse_shape(const lt_st *st, const char *name, const json_t *shape,
                                  struct tensor *t)
{
	if (!json_is_array(shape)) {
		lt_errmsg_set("%s: tensor '%s': no \"shape\" array", st->path, name);
		return LT_ERR_FORMAT;
	}
	if (json_array_size(shape) > LT_ST_MAX_DIMS) {
		lt_errmsg_set("%s: tensor '%s': shape has %zu dimensions, more than the %d supported",
		              st->path, name, json_array_size(shape), LT_ST_MAX_DIMS);
		return LT_ERR_FORMAT;
	}
	t->info.ndim = (int)json_array_size(shape);
	for (int i = 0; i < t->info.ndim; i++) {
		t->info.shape[i] = json_count(json_array_get(shape, (size_t)i));
		if (t->info.shape[i] < 0) {
			lt_errmsg_set("%s: tensor '%s': shape[%d] is not a non-negative integer",
			              st->path, name, i);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

static enum lt_status parse_tensor(lt_st *st, const char *name, json_t *v, struct tensor *t)
{
	char sbuf[200];
	json_t *dt, *shape, *offs;
	enum lt_status rc;
	size_t esize;
	int64_t b, e;

	if (!json_is_object(v)) {
		lt_errmsg_set("%s: tensor '%s': entry is not a JSON object", st->path, name);
		return LT_ERR_FORMAT;
	}
	dt = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offs = json_object_get(v, "data_offsets");
	if (!json_is_string(dt)) {
		lt_errmsg_set("%s: tensor '%s': no \"dtype\" string", st->path, name);
		return LT_ERR_FORMAT;
	}
	if (!dtype_parse(json_string_value(dt), &t->info.dtype)) {
		lt_errmsg_set("%s: tensor '%s': unknown dtype '%s'", st->path, name, json_string_value(dt));
		return LT_ERR_FORMAT;
	}
	esize = dtypes[t->info.dtype].size;
	if ((rc = parse_shape(st, name, shape, t)) != LT_OK)
		return rc;
	if (!json_is_array(offs) || json_array_size(offs) != 2
	    || (b = json_count(json_array_get(offs, 0))) < 0
	    || (e = json_count(json_array_get(offs, 1))) < 0) {
		lt_errmsg_set("%s: tensor '%s': \"data_offsets\" is not [begin, end] of non-negative integers",
		              st->path, name);
		return LT_ERR_FORMAT;
	}
	t->begin = (uint64_t)b;
	t->end = (uint64_t)e;
	if (t->begin > t->end) {
		lt_errmsg_set("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
		              st->path, name, t->begin, t->end);
		return LT_ERR_FORMAT;
	}
	if (!lt_st_shape_size(t->info.ndim, t->info.shape, esize, &t->info.numel, &t->info.nbytes)) {
		lt_errmsg_set("%s: tensor '%s': shape %s of %s is too large", st->path, name,
		              shape_str(sbuf, sizeof sbuf, t->info.ndim, t->info.shape),
		              dtypes[t->info.dtype].name);
		return LT_ERR_FORMAT;
	}
	if (t->info.nbytes != t->end - t->begin) {
		lt_errmsg_set("%s: tensor '%s': shape %s of %s is %" PRIu64 " bytes but data_offsets [%"
		              PRIu64 ", %" PRIu64 "] span %" PRIu64, st->path, name,
		              shape_str(sbuf, sizeof sbuf, t->info.ndim, t->info.shape),
		              dtypes[t->info.dtype].name, t->info.nbytes, t->begin, t->end,
		              t->end - t->begin);
		return LT_ERR_FORMAT;
	}
	if (t->end > st->data_size) {
		lt_errmsg_set("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end past the data (%"
		              PRIu64 " bytes; file truncated?)", st->path, name, t->begin, t->end,
		              st->data_size);
		return LT_ERR_FORMAT;
	}
	t->info.offset = st->data_start + t->begin;
	if (!(t->info.name = lt_st_copy_string(name))) {
		lt_errmsg_prefix("%s", st->path);
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

static enum lt_status parse_meta(lt_st *st, json_t *m)
{
	const char *key;
	json_t *v;
	if (!json_is_object(m)) {
		lt_errmsg_set("%s: \"__metadata__\" is not a JSON object", st->path);
		return LT_ERR_FORMAT;
	}
	st->meta = calloc(2 * json_object_size(m) + 1, sizeof *st->meta);
	if (!st->meta) {
		lt_errmsg_set("%s: cannot allocate the metadata table", st->path);
		return LT_ERR_NOMEM;
	}
	json_object_foreach(m, key, v) {
		if (!json_is_string(v)) {
			lt_errmsg_set("%s: \"__metadata__\" value of '%s' is not a string", st->path, key);
			return LT_ERR_FORMAT;
		}
		st->meta[2 * st->nmeta] = lt_st_copy_string(key);
		st->meta[2 * st->nmeta + 1] = lt_st_copy_string(json_string_value(v));
		st->nmeta++;
		if (!st->meta[2 * st->nmeta - 2] || !st->meta[2 * st->nmeta - 1]) {
			lt_errmsg_prefix("%s", st->path);
			return LT_ERR_NOMEM;
		}
	}
	return LT_OK;
}

static enum lt_status parse_header(lt_st *st, const char *text, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	enum lt_status rc = LT_OK;
	struct tensor **by_off = NULL;
	const char *key;
	json_t *v;
	size_t i = 0;

	if (!root) {
		lt_errmsg_set("%s: header is not valid JSON: line %d, column %d: %s",
		              st->path, jerr.line, jerr.column, jerr.text);
		return LT_ERR_FORMAT;
	}
	if (!json_is_object(root)) {
		lt_errmsg_set("%s: header is not a JSON object", st->path);
		rc = LT_ERR_FORMAT;
		goto out;
	}
	st->n = json_object_size(root) - (json_object_get(root, "__metadata__") != NULL);
	st->t = calloc(st->n + 1, sizeof *st->t);
	st->by_name = calloc(st->n + 1, sizeof *st->by_name);
	by_off = calloc(st->n + 1, sizeof *by_off);
	if (!st->t || !st->by_name || !by_off) {
		lt_errmsg_set("%s: cannot allocate the table of %zu tensors", st->path, st->n);
		rc = LT_ERR_NOMEM;
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			rc = parse_meta(st, v);
		} else {
			LT_ASSERT(i < st->n);
			rc = parse_tensor(st, key, v, &st->t[i]);
			st->by_name[i] = by_off[i] = &st->t[i];
			i++;
		}
		if (rc != LT_OK)
			goto out;
	}
	LT_ASSERT(i == st->n);

	/* Non-empty tensors must not share a byte: sorted by offset, each must
	 * begin at or after the furthest end seen so far. */
	qsort(by_off, st->n, sizeof *by_off, cmp_offsets);
	const struct tensor *prev = NULL;
	for (i = 0; i < st->n; i++) {
		const struct tensor *t = by_off[i];
		if (t->begin == t->end)
			continue;
		if (prev && t->begin < prev->end) {
			lt_errmsg_set("%s: tensors '%s' [%" PRIu64 ", %" PRIu64 "] and '%s' [%" PRIu64 ", %"
			              PRIu64 "] overlap", st->path, prev->info.name, prev->begin, prev->end,
			              t->info.name, t->begin, t->end);
			rc = LT_ERR_FORMAT;
			goto out;
		}
		if (!prev || t->end > prev->end)
			prev = t;
	}
	qsort(st->by_name, st->n, sizeof *st->by_name, cmp_name);
out:
	free(by_off);
	json_decref(root);
	return rc;
}

static enum lt_status pread_all(int fd, void *dst, size_t len, uint64_t pos, int *err)
{
	unsigned char *p = dst;
	while (len > 0) {
		ssize_t r = pread(fd, p, len, (off_t)pos);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*err = r < 0 ? errno : 0;
			return LT_ERR_IO;
		}
		p += r;
		pos += (uint64_t)r;
		len -= (size_t)r;
	}
	return LT_OK;
}

/* Reads the header length and the header of the open file of size bytes,
 * and parses them into st. */
static enum lt_status read_header(lt_st *st, uint64_t size)
{
	unsigned char lenbuf[8];
	uint64_t hlen;
	char *text;
	enum lt_status rc;
	int err = 0;

	if (size < 8) {
		lt_errmsg_set("%s: truncated: %" PRIu64 " bytes, too short for the 8-byte header length",
		              st->path, size);
		return LT_ERR_FORMAT;
	}
	if (pread_all(st->fd, lenbuf, 8, 0, &err) != LT_OK) {
		lt_errmsg_set("%s: reading the header length: %s", st->path,
		              err ? strerror(err) : "end of file");
		return LT_ERR_IO;
	}
	hlen = load_le64(lenbuf);
	if (hlen > LT_ST_MAX_HEADER) {
		lt_errmsg_set("%s: header length %" PRIu64 " is over the %" PRIu64
		              "-byte limit (not a safetensors file?)", st->path, hlen, LT_ST_MAX_HEADER);
		return LT_ERR_FORMAT;
	}
	if (hlen > size - 8) {
		lt_errmsg_set("%s: truncated: header says %" PRIu64 " bytes but the file has %" PRIu64
		              " after the 8-byte length", st->path, hlen, size - 8);
		return LT_ERR_FORMAT;
	}
	if (hlen < 2) {
		lt_errmsg_set("%s: header length %" PRIu64 " is too small for a JSON object", st->path,
		              hlen);
		return LT_ERR_FORMAT;
	}
	st->data_start = 8 + hlen;
	st->data_size = size - st->data_start;
	if (!(text = malloc((size_t)hlen))) {
		lt_errmsg_set("%s: cannot allocate %" PRIu64 " bytes for the header", st->path, hlen);
		return LT_ERR_NOMEM;
	}
	if (pread_all(st->fd, text, (size_t)hlen, 8, &err) != LT_OK) {
		lt_errmsg_set("%s: reading the header: %s", st->path, err ? strerror(err) : "end of file");
		rc = LT_ERR_IO;
	} else {
		rc = parse_header(st, text, (size_t)hlen);
	}
	free(text);
	return rc;
}

enum lt_status lt_st_open(const char *path, lt_st **out)
{
	struct stat sb;
	enum lt_status rc;
	lt_st *st;

	*out = NULL;
	if (!(st = calloc(1, sizeof *st))) {
		lt_errmsg_set("%s: cannot allocate a reader", path);
		return LT_ERR_NOMEM;
	}
	st->fd = -1;
	if (!(st->path = lt_st_copy_string(path))) {
		rc = LT_ERR_NOMEM;
		goto fail;
	}
	if ((st->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		lt_errmsg_set("%s: cannot open: %s", path, strerror(errno));
		rc = LT_ERR_IO;
		goto fail;
	}
	if (fstat(st->fd, &sb) != 0) {
		lt_errmsg_set("%s: fstat: %s", path, strerror(errno));
		rc = LT_ERR_IO;
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		lt_errmsg_set("%s: not a regular file", path);
		rc = LT_ERR_IO;
		goto fail;
	}
	if ((rc = read_header(st, (uint64_t)sb.st_size)) != LT_OK)
		goto fail;
	*out = st;
	return LT_OK;
fail:
	lt_st_close(st);
	return rc;
}

void lt_st_close(lt_st *st)
{
	if (!st)
		return;
	if (st->fd >= 0)
		close(st->fd);
	for (size_t i = 0; st->t && i < st->n; i++)
		free((char *)st->t[i].info.name);
	for (size_t i = 0; i < 2 * st->nmeta; i++)
		free(st->meta[i]);
	free(st->meta);
	free(st->t);
	free(st->by_name);
	free(st->path);
	free(st);
}

const char *lt_st_path(const lt_st *st)
{
	return st->path;
}

size_t lt_st_count(const lt_st *st)
{
	return st->n;
}

const struct lt_st_info *lt_st_at(const lt_st *st, size_t i)
{
	LT_ASSERT(i < st->n);
	return &st->t[i].info;
}

const struct lt_st_info *lt_st_lookup(const lt_st *st, const char *name)
{
	struct tensor key = { .info = { .name = name } }, *kp = &key, **hit;
	hit = bsearch(&kp, st->by_name, st->n, sizeof *st->by_name, cmp_name);
	return hit ? &(*hit)->info : NULL;
}

enum lt_status lt_st_find(const lt_st *st, const char *name, const struct lt_st_info **out)
{
	*out = lt_st_lookup(st, name);
	if (!*out) {
		lt_errmsg_set("%s: no tensor '%s'", st->path, name);
		return LT_ERR_NOTFOUND;
	}
	return LT_OK;
}

/* Finds `name` and checks that the caller's n elements fit it exactly. */
static enum lt_status prepare(const lt_st *st, const char *name, uint64_t n,
                              const struct lt_st_info **out)
{
	enum lt_status rc = lt_st_find(st, name, out);
	if (rc == LT_OK && (*out)->numel != n) {
		char sbuf[200];
		lt_errmsg_set("%s: tensor '%s': shape %s holds %" PRIu64 " elements but %" PRIu64
		              " were expected", st->path, name,
		              shape_str(sbuf, sizeof sbuf, (*out)->ndim, (*out)->shape), (*out)->numel, n);
		rc = LT_ERR_FORMAT;
	}
	return rc;
}

static enum lt_status read_at(const lt_st *st, const struct lt_st_info *ti, uint64_t off,
                              void *dst, size_t len)
{
	int err = 0;
	if (pread_all(st->fd, dst, len, ti->offset + off, &err) != LT_OK) {
		lt_errmsg_set("%s: tensor '%s': reading %zu bytes at byte %" PRIu64 ": %s", st->path,
		              ti->name, len, ti->offset + off,
		              err ? strerror(err) : "end of file (did it shrink?)");
		return LT_ERR_IO;
	}
	return LT_OK;
}

enum lt_status lt_st_read_raw(const lt_st *st, const char *name, void *dst, size_t nbytes)
{
	const struct lt_st_info *ti;
	enum lt_status rc = lt_st_find(st, name, &ti);
	if (rc != LT_OK)
		return rc;
	if (ti->nbytes != nbytes) {
		lt_errmsg_set("%s: tensor '%s' is %" PRIu64 " bytes but %zu were expected", st->path,
		              name, ti->nbytes, nbytes);
		return LT_ERR_FORMAT;
	}
	return read_at(st, ti, 0, dst, nbytes);
}

/* Converts elements [first, first + k) of a tensor, whose bytes are at
 * src, into out (elements of out_size bytes). */
typedef enum lt_status (*conv_fn)(const lt_st *st, const struct lt_st_info *ti,
                                  const unsigned char *src, uint64_t first, size_t k, void *out,
                                  size_t out_size);

/* Reads elements [from, from + count) of a tensor chunk by chunk into a
 * staging buffer and hands each chunk to conv, which writes them to dst
 * (elements of out_size bytes) from its start on. */
static enum lt_status read_converted(const lt_st *st, const struct lt_st_info *ti, uint64_t from,
                                     uint64_t count, void *dst, size_t out_size, conv_fn conv)
{
	size_t esize = dtypes[ti->dtype].size, per = LT_ST_CHUNK / esize;
	uint64_t bytes = count * esize;
	size_t bufsize = bytes < LT_ST_CHUNK ? (size_t)bytes : LT_ST_CHUNK;
	unsigned char *buf = malloc(bufsize ? bufsize : 1);
	enum lt_status rc = LT_OK;
	if (!buf) {
		lt_errmsg_set("%s: tensor '%s': cannot allocate a %zu-byte staging buffer", st->path,
		              ti->name, bufsize);
		return LT_ERR_NOMEM;
	}
	for (uint64_t i = from; i < from + count && rc == LT_OK; i += per) {
		size_t k = from + count - i < per ? (size_t)(from + count - i) : per;
		rc = read_at(st, ti, i * esize, buf, k * esize);
		if (rc == LT_OK)
			rc = conv(st, ti, buf, i, k, (char *)dst + (i - from) * out_size, out_size);
	}
	free(buf);
	return rc;
}

/* Loads element j of a float tensor as double (exact for every source). */
static double load_real(enum lt_st_dtype dt, const unsigned char *src, size_t j)
{
	uint16_t h;
	float f;
	double d;
	switch (dt) {
	case LT_ST_F64:
		memcpy(&d, src + 8 * j, 8);
		return d;
	case LT_ST_F32:
		memcpy(&f, src + 4 * j, 4);
		return (double)f;
	case LT_ST_F16:
		memcpy(&h, src + 2 * j, 2);
		return (double)lt_half_to_f32(h);
	case LT_ST_BF16:
		memcpy(&h, src + 2 * j, 2);
		return (double)bf16_to_float(h);
	default:
		LT_ASSERT(0);
		return 0;
	}
}

/* Real elements as float (out_size 4) or double (8). */
static enum lt_status conv_real(const lt_st *st, const struct lt_st_info *ti,
                                const unsigned char *src, uint64_t first, size_t k, void *out,
                                size_t out_size)
{
	(void)st, (void)first;
	for (size_t j = 0; j < k; j++) {
		double v = load_real(ti->dtype, src, j);
		if (out_size == sizeof(float))
			((float *)out)[j] = (float)v;
		else
			((double *)out)[j] = v;
	}
	return LT_OK;
}

static enum lt_status conv_i32(const lt_st *st, const struct lt_st_info *ti,
                               const unsigned char *src, uint64_t first, size_t k, void *dst,
                               size_t out_size)
{
	int32_t *out = dst;
	(void)out_size;
	for (size_t j = 0; j < k; j++) {
		int64_t v = 0;
		uint64_t u = 0;
		int is_unsigned = 0;
		switch (ti->dtype) {
		case LT_ST_I64: { int64_t x; memcpy(&x, src + 8 * j, 8); v = x; break; }
		case LT_ST_I32: { int32_t x; memcpy(&x, src + 4 * j, 4); v = x; break; }
		case LT_ST_I16: { int16_t x; memcpy(&x, src + 2 * j, 2); v = x; break; }
		case LT_ST_I8: v = (int8_t)src[j]; break;
		case LT_ST_U64: memcpy(&u, src + 8 * j, 8); is_unsigned = 1; break;
		case LT_ST_U32: { uint32_t x; memcpy(&x, src + 4 * j, 4); v = x; break; }
		case LT_ST_U16: { uint16_t x; memcpy(&x, src + 2 * j, 2); v = x; break; }
		case LT_ST_U8: v = src[j]; break;
		case LT_ST_BOOL: v = src[j] != 0; break;
		default: LT_ASSERT(0);
		}
		if (is_unsigned ? u > INT32_MAX : (v < INT32_MIN || v > INT32_MAX)) {
			if (is_unsigned)
				lt_errmsg_set("%s: tensor '%s': element %" PRIu64 " = %" PRIu64
				              " does not fit in int32", st->path, ti->name, first + j, u);
			else
				lt_errmsg_set("%s: tensor '%s': element %" PRIu64 " = %" PRId64
				              " does not fit in int32", st->path, ti->name, first + j, v);
			return LT_ERR_FORMAT;
		}
		out[j] = is_unsigned ? (int32_t)u : (int32_t)v;
	}
	return LT_OK;
}

static enum lt_status wrong_dtype(const lt_st *st, const struct lt_st_info *ti, const char *to)
{
	lt_errmsg_set("%s: tensor '%s': cannot read %s as %s", st->path, ti->name,
	              dtypes[ti->dtype].name, to);
	return LT_ERR_FORMAT;
}

static int is_real(enum lt_st_dtype dt)
{
	return dt == LT_ST_F64 || dt == LT_ST_F32 || dt == LT_ST_F16 || dt == LT_ST_BF16;
}

static int is_integer(enum lt_st_dtype dt)
{
	return !is_real(dt) && dt != LT_ST_F8_E4M3 && dt != LT_ST_F8_E5M2;
}

/* An element type a tensor is read as: the dtype read as it is (elements
 * of size bytes), its name in messages, which dtypes convert to it, and
 * how. */
struct read_as {
	enum lt_st_dtype same;
	size_t size;
	const char *name;
	int (*converts)(enum lt_st_dtype dt);
	conv_fn conv;
};

static const struct read_as as_f32 = { LT_ST_F32, 4, "float", is_real, conv_real };
static const struct read_as as_f64 = { LT_ST_F64, 8, "double", is_real, conv_real };
static const struct read_as as_i32 = { LT_ST_I32, 4, "int32", is_integer, conv_i32 };

/* Elements [first, first + count) of ti as elements of type as into dst. */
static enum lt_status read_elements(const lt_st *st, const struct lt_st_info *ti, uint64_t first,
                                    size_t count, void *dst, const struct read_as *as)
{
	if (ti->dtype == as->same)
		return read_at(st, ti, first * as->size, dst, count * as->size);
	if (!as->converts(ti->dtype))
		return wrong_dtype(st, ti, as->name);
	return read_converted(st, ti, first, count, dst, as->size, as->conv);
}

/* The whole of tensor `name`, of n elements, as elements of type as. */
static enum lt_status read_whole(const lt_st *st, const char *name, void *dst, size_t n,
                                 const struct read_as *as)
{
	const struct lt_st_info *ti;
	enum lt_status rc = prepare(st, name, n, &ti);
	return rc == LT_OK ? read_elements(st, ti, 0, n, dst, as) : rc;
}

enum lt_status lt_st_read_f32(const lt_st *st, const char *name, float *dst, size_t n)
{
	return read_whole(st, name, dst, n, &as_f32);
}

/* Finds `name` and checks that elements [first, first + count) lie inside it. */
static enum lt_status prepare_range(const lt_st *st, const char *name, uint64_t first,
                                    size_t count, const struct lt_st_info **out)
{
	enum lt_status rc = lt_st_find(st, name, out);
	if (rc == LT_OK && (first > (*out)->numel || count > (*out)->numel - first)) {
		lt_errmsg_set("%s: tensor '%s': elements [%" PRIu64 ", %" PRIu64 ") were asked for, "
		              "it holds %" PRIu64, st->path, name, first, first + (uint64_t)count,
		              (*out)->numel);
		rc = LT_ERR_FORMAT;
	}
	return rc;
}

enum lt_status lt_st_read_f32_range(const lt_st *st, const char *name, uint64_t first,
                                    size_t count, float *dst)
{
	const struct lt_st_info *ti;
	enum lt_status rc = prepare_range(st, name, first, count, &ti);
	return rc == LT_OK ? read_elements(st, ti, first, count, dst, &as_f32) : rc;
}

enum lt_status lt_st_read_f64(const lt_st *st, const char *name, double *dst, size_t n)
{
	return read_whole(st, name, dst, n, &as_f64);
}

enum lt_status lt_st_read_i32(const lt_st *st, const char *name, int32_t *dst, size_t n)
{
	return read_whole(st, name, dst, n, &as_i32);
}

size_t lt_st_meta_count(const lt_st *st)
{
	return st->nmeta;
}

void lt_st_meta_at(const lt_st *st, size_t i, const char **key, const char **value)
{
	LT_ASSERT(i < st->nmeta);
	*key = st->meta[2 * i];
	*value = st->meta[2 * i + 1];
}

const char *lt_st_meta(const lt_st *st, const char *key)
{
	for (size_t i = 0; i < st->nmeta; i++)
		if (strcmp(st->meta[2 * i], key) == 0)
			return st->meta[2 * i + 1];
	return NULL;
}
