/* Reading and writing safetensors files: an 8-byte little-endian header
 * length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__": {key: value}}, then the tensors' bytes.
 *
 * The reader validates the whole header on open (sizes, JSON, dtypes,
 * shape against byte counts, offsets inside the data and not overlapping)
 * and reads tensors with pread, converting to float, double or int32. The
 * writer streams each tensor from the caller's memory or from a fetch
 * callback, so a model is never copied whole; it writes `path` directly,
 * fsyncs it, and removes it again if anything fails. Tensor data are in the
 * host's byte order, which must be little-endian (checked at build time).
 *
 * Ownership: an lt_st owns every name, info and metadata string it hands
 * out until lt_st_close, and a writer copies names, shapes and metadata but
 * borrows tensor data (and fetch contexts) until lt_st_writer_finish
 * returns; lt_st_close and lt_st_writer_free accept NULL. */
#ifndef LT_SAFETENSORS_H
#define LT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* The dtypes of the format; the first ten are the ones lltrain reads. */
enum lt_st_dtype {
	LT_ST_F64,
	LT_ST_F32,
	LT_ST_F16,
	LT_ST_BF16,
	LT_ST_I64,
	LT_ST_I32,
	LT_ST_I16,
	LT_ST_I8,
	LT_ST_U8,
	LT_ST_BOOL,
	LT_ST_U64,
	LT_ST_U32,
	LT_ST_U16,
	LT_ST_F8_E4M3,
	LT_ST_F8_E5M2,
	LT_ST_NDTYPES
};

/* Tensors of more dimensions are rejected on open and on add. */
#define LT_ST_MAX_DIMS 8

/* The header's name for a dtype ("F32"), and its size in bytes. */
const char *lt_st_dtype_name(enum lt_st_dtype dt);
size_t lt_st_dtype_size(enum lt_st_dtype dt);

/* One tensor of an open file. A 0-dimensional tensor holds one element. */
struct lt_st_info {
	const char *name;
	enum lt_st_dtype dtype;
	int ndim;
	int64_t shape[LT_ST_MAX_DIMS];
	uint64_t numel;
	uint64_t nbytes;
	uint64_t offset;        /* where its bytes start, from the file's start */
};

typedef struct lt_st lt_st;

/* Opens and validates `path`. Fails with LT_ERR_IO (cannot open or read),
 * LT_ERR_FORMAT (any inconsistency, with the file and tensor or byte named)
 * or LT_ERR_NOMEM. */
enum lt_status lt_st_open(const char *path, lt_st **out);
void lt_st_close(lt_st *st);

const char *lt_st_path(const lt_st *st);

/* The tensors in the order the header lists them: i < lt_st_count. */
size_t lt_st_count(const lt_st *st);
const struct lt_st_info *lt_st_at(const lt_st *st, size_t i);

/* lt_st_lookup returns NULL for an absent name and sets no message;
 * lt_st_find fails with LT_ERR_NOTFOUND and names the file and tensor. */
const struct lt_st_info *lt_st_lookup(const lt_st *st, const char *name);
enum lt_status lt_st_find(const lt_st *st, const char *name, const struct lt_st_info **out);

/* Reads tensor `name` into dst, which holds exactly n elements (n must equal
 * the tensor's element count, else LT_ERR_FORMAT names both). f32 and f64
 * convert from F64, F32, F16 and BF16 (F64 to float rounds); i32 converts
 * from any integer dtype or BOOL, failing on a value outside int32. */
enum lt_status lt_st_read_f32(const lt_st *st, const char *name, float *dst, size_t n);
enum lt_status lt_st_read_f64(const lt_st *st, const char *name, double *dst, size_t n);
enum lt_status lt_st_read_i32(const lt_st *st, const char *name, int32_t *dst, size_t n);
/* Elements [first, first + count) of tensor `name` (in row-major order,
 * whatever its shape) into dst, converting as lt_st_read_f32; only those
 * bytes are read. A range past the tensor's end is LT_ERR_FORMAT naming
 * the file, the tensor, the range and its element count. */
enum lt_status lt_st_read_f32_range(const lt_st *st, const char *name, uint64_t first,
                                    size_t count, float *dst);
/* The tensor's bytes as stored; nbytes must equal its size. */
enum lt_status lt_st_read_raw(const lt_st *st, const char *name, void *dst, size_t nbytes);

/* The "__metadata__" entries, in header order; lt_st_meta gives NULL for
 * an absent key. */
size_t lt_st_meta_count(const lt_st *st);
void lt_st_meta_at(const lt_st *st, size_t i, const char **key, const char **value);
const char *lt_st_meta(const lt_st *st, const char *key);

/* Writing. Tensors are written in the order added, each right after the
 * previous one (the format allows no gaps); the header comes first with
 * "__metadata__" (keys in the order first set), then the tensors in the
 * order added, and is padded with spaces so the data start at a multiple of
 * 8 bytes. A tensor's own offset is therefore aligned to its element size
 * when tensors are added widest dtype first. Same calls, same bytes. */
typedef struct lt_st_writer lt_st_writer;

/* Produces bytes [off, off + len) of a tensor into buf (len <= 1 MiB) at
 * write time; a failure status (with a message) aborts the write. */
typedef enum lt_status (*lt_st_fetch_fn)(void *ctx, uint64_t off, void *buf, size_t len);

/* Nothing touches the disk before lt_st_writer_finish, which replaces any
 * file at path: to keep an old file safe, write a temporary name and rename. */
enum lt_status lt_st_writer_new(const char *path, lt_st_writer **out);
/* data holds the tensor's bytes and must stay valid until finish returns.
 * Fails with LT_ERR_ARG for a duplicate, empty or non-UTF-8 name, a bad
 * shape or dtype, or a call after finish. */
enum lt_status lt_st_writer_add(lt_st_writer *w, const char *name, enum lt_st_dtype dtype,
                                int ndim, const int64_t *shape, const void *data);
/* As lt_st_writer_add, but the bytes come from fetch(ctx, ...) during finish. */
enum lt_status lt_st_writer_add_fetch(lt_st_writer *w, const char *name, enum lt_st_dtype dtype,
                                      int ndim, const int64_t *shape,
                                      lt_st_fetch_fn fetch, void *ctx);
/* Sets (or replaces) one metadata entry; both strings are copied. */
enum lt_status lt_st_writer_set_meta(lt_st_writer *w, const char *key, const char *value);
/* Writes, fsyncs and closes the file. On any failure (LT_ERR_IO with the
 * path and what failed, or the fetch callback's status) the partial file is
 * removed. Call once; the writer is spent afterwards either way. */
enum lt_status lt_st_writer_finish(lt_st_writer *w);
void lt_st_writer_free(lt_st_writer *w);

#endif
