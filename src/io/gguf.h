/* Reading GGUF files (versions 2 and 3): the header, the metadata
 * key/values, the tensor directory and the tensors' data, dequantized to
 * float on request.
 *
 * A file is: "GGUF", u32 version, u64 tensor count, u64 key/value count;
 * each key/value a string key (u64 length + bytes), a u32 value type and
 * the value (an array: u32 element type, u64 count, the elements); each
 * tensor a string name, u32 dimension count, u64 dimensions (innermost
 * first), u32 type and u64 offset from the data section; then padding to
 * general.alignment (32 unless set) and the data section. Everything is
 * little-endian.
 *
 * lt_gguf_open reads and checks the header and the metadata (every count,
 * length and offset against the file's size) and keeps them in memory;
 * tensor data are read with pread only when asked for, so a file of many
 * GB costs its header's size. Every failure is one line naming the file,
 * the place (byte offset, key or tensor) and what was expected.
 *
 * Ownership: an lt_gguf owns every string, array and tensor record it hands
 * out until lt_gguf_close, which accepts NULL. */
#ifndef LT_GGUF_H
#define LT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Metadata value types, numbered as in the file. */
enum lt_gguf_vtype {
	LT_GGUF_V_U8 = 0,
	LT_GGUF_V_I8 = 1,
	LT_GGUF_V_U16 = 2,
	LT_GGUF_V_I16 = 3,
	LT_GGUF_V_U32 = 4,
	LT_GGUF_V_I32 = 5,
	LT_GGUF_V_F32 = 6,
	LT_GGUF_V_BOOL = 7,
	LT_GGUF_V_STRING = 8,
	LT_GGUF_V_ARRAY = 9,
	LT_GGUF_V_U64 = 10,
	LT_GGUF_V_I64 = 11,
	LT_GGUF_V_F64 = 12,
	LT_GGUF_V_COUNT
};

/* Tensor types, numbered as in the file (those lltrain names; others are
 * listed in the directory by number and refused when read). */
enum lt_gguf_type {
	LT_GGUF_F32 = 0,
	LT_GGUF_F16 = 1,
	LT_GGUF_Q4_0 = 2,
	LT_GGUF_Q4_1 = 3,
	LT_GGUF_Q5_0 = 6,
	LT_GGUF_Q5_1 = 7,
	LT_GGUF_Q8_0 = 8,
	LT_GGUF_Q8_1 = 9,
	LT_GGUF_Q2_K = 10,
	LT_GGUF_Q3_K = 11,
	LT_GGUF_Q4_K = 12,
	LT_GGUF_Q5_K = 13,
	LT_GGUF_Q6_K = 14,
	LT_GGUF_Q8_K = 15,
	LT_GGUF_I8 = 24,
	LT_GGUF_I16 = 25,
	LT_GGUF_I32 = 26,
	LT_GGUF_I64 = 27,
	LT_GGUF_F64 = 28,
	LT_GGUF_BF16 = 30,
};

/* Dimensions a tensor may have. */
#define LT_GGUF_MAX_DIMS 4

/* The name of a value type ("u32", "string") or tensor type ("Q4_1"; "type
 * N" for one not listed above: the pointer is to a per-thread buffer). */
const char *lt_gguf_vtype_name(enum lt_gguf_vtype t);
const char *lt_gguf_type_name(uint32_t type);
/* Values per block and bytes per block of a tensor type; 0 for a type
 * whose layout lltrain does not know. */
uint32_t lt_gguf_block_values(uint32_t type);
uint32_t lt_gguf_block_bytes(uint32_t type);
/* Whether lt_gguf_dequantize (and lt_gguf_read_f32) converts this type:
 * F32, F16, BF16, Q8_0, Q4_0 and Q4_1. */
int lt_gguf_can_dequantize(uint32_t type);

/* One tensor of the directory. dims[0] is the innermost (contiguous)
 * dimension: a matrix of `rows` rows of `cols` values is dims {cols, rows}. */
struct lt_gguf_tensor {
	const char *name;
	int ndim;
	int64_t dims[LT_GGUF_MAX_DIMS];  /* dims[i] = 1 for i >= ndim */
	uint32_t type;
	uint64_t numel;
	uint64_t nbytes;                 /* 0 when the type's layout is unknown */
	uint64_t offset;                 /* from the file's start */
};

typedef struct lt_gguf lt_gguf;

/* Opens and checks `path`. LT_ERR_IO when it cannot be opened or read,
 * LT_ERR_FORMAT for anything else wrong (with the byte offset, key or
 * tensor), LT_ERR_NOMEM. */
enum lt_status lt_gguf_open(const char *path, lt_gguf **out);
void lt_gguf_close(lt_gguf *g);

const char *lt_gguf_path(const lt_gguf *g);
uint32_t lt_gguf_version(const lt_gguf *g);
uint32_t lt_gguf_alignment(const lt_gguf *g);
/* Where the data section starts, from the file's start. */
uint64_t lt_gguf_data_offset(const lt_gguf *g);

/* Metadata, in file order: the key and the type of entry i < count (and
 * of its elements when an array, else LT_GGUF_V_COUNT). */
size_t lt_gguf_kv_count(const lt_gguf *g);
const char *lt_gguf_kv_key(const lt_gguf *g, size_t i);
enum lt_gguf_vtype lt_gguf_kv_type(const lt_gguf *g, size_t i, enum lt_gguf_vtype *elem);
/* Whether the key is present (no message either way). */
int lt_gguf_has(const lt_gguf *g, const char *key);

/* The getters fail with LT_ERR_NOTFOUND naming the file and key when it is
 * absent, and with LT_ERR_FORMAT naming the key, its type and the one
 * expected when the type does not fit.
 * A string: NUL-terminated, and *len (may be NULL) its length in bytes. */
enum lt_status lt_gguf_get_str(const lt_gguf *g, const char *key, const char **s, size_t *len);
/* An integer of any width and signedness (a u64 above INT64_MAX fails). */
enum lt_status lt_gguf_get_int(const lt_gguf *g, const char *key, int64_t *v);
/* An f32 or f64. */
enum lt_status lt_gguf_get_float(const lt_gguf *g, const char *key, double *v);
enum lt_status lt_gguf_get_bool(const lt_gguf *g, const char *key, int *v);
/* An array: its element type and count. */
enum lt_status lt_gguf_get_array(const lt_gguf *g, const char *key, enum lt_gguf_vtype *elem,
				 uint64_t *count);
/* Element i of an array of strings / integers (any width) / floats (f32 or
 * f64). An index past the end, or another element type, fails naming the
 * key. */
enum lt_status lt_gguf_array_str(const lt_gguf *g, const char *key, uint64_t i, const char **s,
				 size_t *len);
enum lt_status lt_gguf_array_int(const lt_gguf *g, const char *key, uint64_t i, int64_t *v);
enum lt_status lt_gguf_array_float(const lt_gguf *g, const char *key, uint64_t i, double *v);

/* The tensors in directory order: i < lt_gguf_tensor_count. */
size_t lt_gguf_tensor_count(const lt_gguf *g);
const struct lt_gguf_tensor *lt_gguf_tensor_at(const lt_gguf *g, size_t i);
/* NULL for an absent name (no message); _find fails with LT_ERR_NOTFOUND
 * naming the file and tensor. */
const struct lt_gguf_tensor *lt_gguf_tensor_lookup(const lt_gguf *g, const char *name);
enum lt_status lt_gguf_tensor_find(const lt_gguf *g, const char *name,
				   const struct lt_gguf_tensor **out);

/* The tensor's bytes as stored; nbytes must equal t->nbytes. */
enum lt_status lt_gguf_read_raw(const lt_gguf *g, const struct lt_gguf_tensor *t, void *dst,
				size_t nbytes);
/* The tensor dequantized into dst, which holds n = t->numel floats, in the
 * file's order (innermost dimension fastest). Reads a block of the file at
 * a time. */
enum lt_status lt_gguf_read_f32(const lt_gguf *g, const struct lt_gguf_tensor *t, float *dst,
				size_t n);
/* Dequantizes n values (a whole number of blocks) of `type` from the
 * nbytes at src (exactly n / block_values * block_bytes). LT_ERR_ARG for a
 * type it does not convert or sizes that disagree. */
enum lt_status lt_gguf_dequantize(uint32_t type, const void *src, size_t nbytes, float *dst,
				  size_t n);
/* Whether lt_gguf_quantize writes this type: F32, F16, BF16, Q8_0, Q4_0. */
int lt_gguf_can_quantize(uint32_t type);
/* Quantizes n floats (a whole number of blocks) into nbytes at dst of
 * `type` (exactly n / block_values * block_bytes), block by block as
 * llama.cpp's reference quantizers do: halves and bf16 rounded to nearest
 * even, Q8_0's scale max |x| / 127 and Q4_0's the signed value of largest
 * magnitude over -8. LT_ERR_ARG for another type or sizes that disagree. */
enum lt_status lt_gguf_quantize(uint32_t type, const float *src, size_t n, void *dst,
				size_t nbytes);

#endif
