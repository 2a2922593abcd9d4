/* What the GGUF reader's files share (gguf.c reads the file, gguf_meta.c
 * answers the metadata getters, gguf_quant.c dequantizes): the open
 * file's records and the little-endian loads. Not for other modules. */
#ifndef LT_GGUF_IMPL_H
#define LT_GGUF_IMPL_H

#include <stdint.h>
#include <string.h>

#include "io/gguf.h"

static inline uint16_t lt_gguf_load_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t lt_gguf_load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t lt_gguf_load_le64(const unsigned char *p)
{
	return (uint64_t)lt_gguf_load_le32(p) | (uint64_t)lt_gguf_load_le32(p + 4) << 32;
}

static inline float lt_gguf_bits_to_float(uint32_t bits)
{
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

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

/* The entry of key, or NULL. */
struct kv *lt_gguf_find_kv(const lt_gguf *g, const char *key);
/* Bytes of one value of a fixed-size type (0 for string and array). */
size_t lt_gguf_vtype_size(enum lt_gguf_vtype t);

#endif
