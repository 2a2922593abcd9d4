/* Writing GGUF files (version 3): metadata key/values and a tensor
 * directory gathered in memory, then the header and the tensors' data
 * streamed to the file one tensor at a time, in directory order.
 *
 * The layout is the one gguf.h describes; every tensor's data starts at
 * a multiple of the alignment (32) from the data section, padded with
 * zeros. The writer writes the file it is given, as it is: publishing it
 * (a temporary name, then a rename) is the caller's.
 *
 * Ownership: an lt_gguf_writer copies every key, string and name it is
 * given; lt_gguf_writer_free (which accepts NULL) releases it and closes
 * a file still open, leaving what was written for the caller to remove. */
#ifndef LT_GGUF_WRITE_H
#define LT_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct lt_gguf_writer lt_gguf_writer;

enum lt_status lt_gguf_writer_new(lt_gguf_writer **out);
void lt_gguf_writer_free(lt_gguf_writer *w);

/* Metadata, in the order added; a key added twice is LT_ERR_ARG. */
enum lt_status lt_gguf_writer_add_str(lt_gguf_writer *w, const char *key, const char *s);
enum lt_status lt_gguf_writer_add_u32(lt_gguf_writer *w, const char *key, uint32_t v);
enum lt_status lt_gguf_writer_add_i32(lt_gguf_writer *w, const char *key, int32_t v);
enum lt_status lt_gguf_writer_add_f32(lt_gguf_writer *w, const char *key, float v);
enum lt_status lt_gguf_writer_add_bool(lt_gguf_writer *w, const char *key, int v);
/* Arrays: n strings (each NUL-terminated), n i32 or n f32. */
enum lt_status lt_gguf_writer_add_strs(lt_gguf_writer *w, const char *key,
				       const char *const *s, size_t n);
enum lt_status lt_gguf_writer_add_i32s(lt_gguf_writer *w, const char *key, const int32_t *v,
				       size_t n);
enum lt_status lt_gguf_writer_add_f32s(lt_gguf_writer *w, const char *key, const float *v,
				       size_t n);

/* A tensor of the directory: ndim dims, innermost first (a matrix of rows
 * of cols values is {cols, rows}), of a GGUF type whose layout gguf.h
 * knows, dims[0] a whole number of its blocks. LT_ERR_ARG otherwise. */
enum lt_status lt_gguf_writer_add_tensor(lt_gguf_writer *w, const char *name, int ndim,
					 const int64_t *dims, uint32_t type);
/* The bytes tensor i holds in the file. */
size_t lt_gguf_writer_tensor_bytes(const lt_gguf_writer *w, size_t i);

/* Creates path (replacing a file there) and writes the header, the
 * metadata and the directory; after it nothing more may be added. */
enum lt_status lt_gguf_writer_begin(lt_gguf_writer *w, const char *path);
/* The data of the next tensor of the directory: exactly its bytes. */
enum lt_status lt_gguf_writer_tensor_data(lt_gguf_writer *w, const void *p, size_t nbytes);
/* After the last tensor: fsyncs and closes the file. LT_ERR_ARG when a
 * tensor's data is missing. */
enum lt_status lt_gguf_writer_finish(lt_gguf_writer *w);

#endif
