/* Private to safetensors: what the reader (safetensors.c) and the writer
 * (safetensors_write.c) share. safetensors.h is the public contract.
 *
 * Ownership: lt_st_copy_string returns memory the caller frees. */
#ifndef LT_SAFETENSORS_IMPL_H
#define LT_SAFETENSORS_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "io/safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lltrain keeps safetensors data in host byte order, which must be little-endian"
#endif
_Static_assert(sizeof(off_t) >= 8, "lltrain needs a 64-bit off_t for files over 2 GiB");

/* The reference implementation refuses larger headers; so do we, which also
 * catches files that are not safetensors at all. */
#define LT_ST_MAX_HEADER ((uint64_t)100000000)
/* Conversions and fetch callbacks go through a staging buffer this big. */
#define LT_ST_CHUNK ((size_t)1 << 20)

/* A copy of s in new memory; NULL, with the error set, when memory runs out. */
char *lt_st_copy_string(const char *s);
/* Element count and byte size of a shape; 0 when either overflows. */
int lt_st_shape_size(int ndim, const int64_t *shape, size_t esize, uint64_t *numel, uint64_t *nbytes);

#endif
