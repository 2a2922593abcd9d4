/* LLaMA models from and into GGUF files: the configuration from a file's
 * llama.* metadata and its tensors, and the weights dequantized into an
 * lltrain model (Hugging Face names and layout; llama.cpp's row order of
 * the query and key projections undone); and the other way, a model's
 * llama.* metadata and tensors for a GGUF writer, in the types of an
 * export (gguf_model_write.c).
 *
 * Ownership: every function borrows its arguments; a file is open only
 * during the call. */
#ifndef LT_GGUF_MODEL_H
#define LT_GGUF_MODEL_H

#include <stdint.h>

#include "io/gguf_write.h"
#include "model.h"
#include "model_config.h"
#include "status.h"

/* The configuration of the model in the GGUF file at path: sizes from the
 * llama.* keys (general.architecture must be "llama"), the vocabulary from
 * token_embd.weight's shape, tied when the file has no output.weight.
 * LT_ERR_FORMAT names the file and the key or tensor at fault. */
enum lt_status lt_gguf_model_config(const char *path, struct lt_model_config *c);

/* Every tensor of the file, dequantized to f32, into m's parameters (a
 * model made with the configuration above). Every shape is checked before
 * any weight is written, so a mismatch (one line naming the tensor and
 * both shapes) leaves m as it was; a tensor the model has no place for is
 * refused the same way. */
enum lt_status lt_gguf_model_load(const char *path, lt_model *m);

/* The tensor type of an export's file type from its name: f32, f16,
 * bf16, q8_0 or q4_0 (LT_ERR_ARG naming the name otherwise). */
enum lt_status lt_gguf_model_file_type(const char *name, uint32_t *type);
/* The type tensor t takes in an export of file type `type`: norms F32;
 * matrices `type`, except in Q4_0 the output matrix (lm_head, or the
 * embedding where tied) Q8_0; a matrix whose rows are no whole number of
 * the type's blocks F16. */
uint32_t lt_gguf_model_tensor_type(const struct lt_model_config *c, const struct lt_tensor *t,
				   uint32_t type);
/* Adds to w the llama.* metadata (general.name `name`) and the directory
 * of m's weights under llama.cpp's names (token_embd.weight,
 * blk.N.attn_q.weight, ..., output.weight), with rope_freqs.weight (the
 * per-frequency divisors, F32) first for a Llama 3-scaled model. */
enum lt_status lt_gguf_model_add(lt_gguf_writer *w, const lt_model *m, uint32_t type,
				 const char *name);
/* After lt_gguf_writer_begin: the data of the tensors lt_gguf_model_add
 * listed, the query and key rows in llama.cpp's order, quantized. */
enum lt_status lt_gguf_model_write_tensors(lt_gguf_writer *w, lt_model *m, uint32_t type);
/* Every weight of m through the quantization an export of `type` gives
 * it and back, in place: the model then computes what the file holds. */
enum lt_status lt_gguf_model_round(lt_model *m, uint32_t type);

/* llama.cpp's converter orders the rows of each head of the query and key
 * projections w[rows, cols] (heads of rows / heads rows) as interleaved
 * pairs (2i, 2i + 1) for its RoPE, where lltrain pairs (i, i + D/2): file
 * row h*D + 2i + j holds row h*D + j*D/2 + i of lltrain's. Reorders w in
 * place into the file's order (to_file) or back, one head at a time. */
enum lt_status lt_gguf_reorder_heads(float *w, int rows, int cols, int heads, int to_file);

#endif
