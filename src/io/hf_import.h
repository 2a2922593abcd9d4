/* Hugging Face model directories: config.json of a LlamaForCausalLM read
 * into an lt_model_config, and the weights of model.safetensors (or of the
 * shards that model.safetensors.index.json lists) put into a model.
 *
 * Ownership: the functions borrow their arguments and keep nothing. */
#ifndef LT_HF_IMPORT_H
#define LT_HF_IMPORT_H

#include "model.h"
#include "model_config.h"
#include "status.h"

/* 1 when dir is a directory holding config.json. */
int lt_hf_is_model_dir(const char *dir);

/* Reads dir/config.json into *c: hidden_size, num_hidden_layers,
 * num_attention_heads, num_key_value_heads (default: the heads),
 * intermediate_size, vocab_size, max_position_embeddings, rope_theta,
 * rms_norm_eps, tie_word_embeddings, head_dim (each head's width, which
 * need not be hidden_size / heads) and rope_scaling of type llama3. A
 * model of another architecture, another rope_scaling, a hidden_act other
 * than silu or biases are refused (LT_ERR_FORMAT, one line naming the file, the key and what was
 * expected). */
enum lt_status lt_hf_config(const char *dir, struct lt_model_config *c);

/* Puts the weights of dir into m, whose config must be dir's: every tensor
 * of the model present once, in F32, BF16 or F16 and of the model's shape,
 * and no other (a tied model's lm_head.weight only if it equals the
 * embedding). Everything is checked before the model is touched; on a
 * failure (LT_ERR_FORMAT naming the file, the tensor and what was
 * expected, LT_ERR_IO) the model's weights are as they were unless the
 * failure came while reading. */
enum lt_status lt_hf_load(const char *dir, lt_model *m);
/* lt_hf_load's checks (files, names, shapes, dtypes, and a tied model's
 * lm_head.weight against the embedding, the only weights read), leaving m
 * as it was. */
enum lt_status lt_hf_check(const char *dir, const lt_model *m);

#endif
