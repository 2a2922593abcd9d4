/* LLaMA models from GGUF files: the configuration from a file's llama.*
 * metadata and its tensors, and the weights dequantized into an lltrain
 * model (Hugging Face names and layout; llama.cpp's row order of the query
 * and key projections undone).
 *
 * Ownership: both functions borrow their arguments; the file is open only
 * during the call. */
#ifndef LT_GGUF_MODEL_H
#define LT_GGUF_MODEL_H

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

#endif
