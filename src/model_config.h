/* The LLaMA model's configuration: its sizes, the check that they can
 * make a model, and what follows from them alone (parameter counts,
 * FLOPs per token), before any model exists.
 *
 * Ownership: a configuration is a plain value; the functions borrow it. */
#ifndef LT_MODEL_CONFIG_H
#define LT_MODEL_CONFIG_H

#include <stddef.h>

#include "status.h"

struct lt_model_config {
	int vocab_size;
	int dim;          /* C, the residual width */
	int n_layers;
	int n_heads;      /* H */
	int n_kv_heads;   /* K; divides H */
	int ffn_dim;      /* F, the SwiGLU hidden width */
	int max_seq;      /* the longest sequence the model is made for */
	float rope_theta;
	float norm_eps;
	int tied;         /* lm_head shares the embedding table */
};

/* Checks that a configuration can exist: every size positive, dim divisible
 * by n_heads, n_kv_heads dividing n_heads, an even head size, finite theta
 * and eps > 0. On failure lt_errmsg names the value and why. */
enum lt_status lt_model_config_check(const struct lt_model_config *c);

/* Parameter count (each tied tensor once). */
size_t lt_model_config_params(const struct lt_model_config *c);
/* Parameters of one block (every block has as many). */
size_t lt_model_config_block_params(const struct lt_model_config *c);
/* Model FLOPs per trained token: 6 per weight that multiplies an activation
 * (every matrix, the lm_head once even when tied; not the embedding gather)
 * plus 12 * layers * dim * seq for attention, forward and backward. */
double lt_model_config_flops_per_token(const struct lt_model_config *c, int seq);

#endif
