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
	int head_dim;     /* D, each head's width; 0: dim / n_heads */
	int ffn_dim;      /* F, the SwiGLU hidden width */
	int max_seq;      /* the longest sequence the model is made for */
	float rope_theta;
	float norm_eps;
	int tied;         /* lm_head shares the embedding table */
	/* Rotary frequency scaling (Llama 3's rope_scaling): with rope_scaling
	 * = LT_ROPE_LLAMA3, a frequency whose wavelength exceeds
	 * rope_original_max_seq / rope_low_freq_factor is divided by
	 * rope_factor, one below rope_original_max_seq / rope_high_freq_factor
	 * kept, and those between interpolated smoothly. */
	int rope_scaling;          /* enum lt_rope_scaling */
	float rope_factor;
	float rope_low_freq_factor;
	float rope_high_freq_factor;
	int rope_original_max_seq;
};

enum lt_rope_scaling { LT_ROPE_NONE, LT_ROPE_LLAMA3 };

/* D, the width of one head: head_dim, or dim / n_heads when that is 0. */
int lt_model_config_head_dim(const struct lt_model_config *c);

/* The rotary frequencies of a head of D: freq[i] =
 * theta^(-2i/D) for i < D/2, scaled as rope_scaling says, in double. */
void lt_model_config_rope_freqs(const struct lt_model_config *c, double *freq);

/* Checks that a configuration can exist: every size positive, dim divisible
 * by n_heads unless head_dim is given, n_kv_heads dividing n_heads, an even
 * head size, finite theta
 * and eps > 0, and with llama3 scaling factors that make sense
 * (rope_factor >= 1, rope_high_freq_factor > rope_low_freq_factor > 0,
 * rope_original_max_seq > 0). On failure lt_errmsg names the value and why. */
enum lt_status lt_model_config_check(const struct lt_model_config *c);

/* Parameter count (each tied tensor once). */
size_t lt_model_config_params(const struct lt_model_config *c);
/* Parameters of one block (every block has as many). */
size_t lt_model_config_block_params(const struct lt_model_config *c);
/* Model FLOPs per trained token: 6 per weight that multiplies an activation
 * (every matrix, the lm_head once even when tied; not the embedding gather)
 * plus 12 * layers * n_heads * D * seq for attention, forward and backward. */
double lt_model_config_flops_per_token(const struct lt_model_config *c, int seq);

#endif
