/* The LLaMA model's configuration: the check that its sizes can make a
 * model, and the parameter and FLOP counts that follow from them. */
#include "config.h"
#include "model_config.h"

#include <math.h>

int lt_model_config_head_dim(const struct lt_model_config *c)
{
	return c->head_dim > 0 ? c->head_dim : c->dim / c->n_heads;
}

static int head_dim(const struct lt_model_config *c)
{
	return lt_model_config_head_dim(c);
}

enum lt_status lt_model_config_check(const struct lt_model_config *c)
{
	struct { const char *name; int v; } sizes[] = {
		{ "vocab_size", c->vocab_size }, { "dim", c->dim }, { "n_layers", c->n_layers },
		{ "n_heads", c->n_heads }, { "n_kv_heads", c->n_kv_heads },
		{ "ffn_dim", c->ffn_dim }, { "max_seq", c->max_seq },
	};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		if (sizes[i].v <= 0) {
			lt_errmsg_set("model.%s = %d: must be a positive integer", sizes[i].name, sizes[i].v);
			return LT_ERR_CONFIG;
		}
	}
	if (c->head_dim < 0) {
		lt_errmsg_set("model.head_dim = %d: must be 0 (dim / n_heads) or a positive width",
			      c->head_dim);
		return LT_ERR_CONFIG;
	}
	if (!c->head_dim && c->dim % c->n_heads) {
		lt_errmsg_set("model.dim = %d is not divisible by model.n_heads = %d (or set "
			      "model.head_dim)", c->dim, c->n_heads);
		return LT_ERR_CONFIG;
	}
	if (c->n_heads % c->n_kv_heads) {
		lt_errmsg_set("model.n_kv_heads = %d does not divide model.n_heads = %d",
			      c->n_kv_heads, c->n_heads);
		return LT_ERR_CONFIG;
	}
	if (head_dim(c) % 2) {
		lt_errmsg_set("%s = %d: the head size must be even for rotary embeddings",
			      c->head_dim ? "model.head_dim" : "model.dim / model.n_heads", head_dim(c));
		return LT_ERR_CONFIG;
	}
	if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta)) {
		lt_errmsg_set("model.rope_theta = %g: must be a finite number above 1", c->rope_theta);
		return LT_ERR_CONFIG;
	}
	if (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f)) {
		lt_errmsg_set("model.norm_eps = %g: must be in (0, 1)", c->norm_eps);
		return LT_ERR_CONFIG;
	}
	if (c->rope_scaling == LT_ROPE_LLAMA3 &&
	    (!(c->rope_factor >= 1.0f) || !isfinite(c->rope_factor) ||
	     !(c->rope_low_freq_factor > 0.0f) ||
	     !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
	     !isfinite(c->rope_high_freq_factor) || c->rope_original_max_seq <= 0)) {
		lt_errmsg_set("model.rope_scaling = llama3 with rope_factor %g, rope_low_freq_factor %g, "
			      "rope_high_freq_factor %g, rope_original_max_seq %d: expected a factor "
			      ">= 1, 0 < low < high and a positive length", c->rope_factor,
			      c->rope_low_freq_factor, c->rope_high_freq_factor,
			      c->rope_original_max_seq);
		return LT_ERR_CONFIG;
	}
	/* Element offsets must fit the backend's int sizes for GEMM dims. */
	if ((double)c->vocab_size * c->dim > 2147483647.0 || (double)c->ffn_dim * 2 * c->dim > 2147483647.0 ||
	    (double)(c->n_heads + 2 * c->n_kv_heads) * head_dim(c) * c->dim > 2147483647.0) {
		lt_errmsg_set("model: a weight matrix exceeds 2^31 elements");
		return LT_ERR_CONFIG;
	}
	return LT_OK;
}

size_t lt_model_config_block_params(const struct lt_model_config *c)
{
	size_t C = (size_t)c->dim, D = (size_t)head_dim(c), F = (size_t)c->ffn_dim;
	size_t qkv = (size_t)(c->n_heads + 2 * c->n_kv_heads) * D;
	return C + qkv * C + C * (size_t)c->n_heads * D + C + 3 * F * C;
}

size_t lt_model_config_params(const struct lt_model_config *c)
{
	size_t emb = (size_t)c->vocab_size * (size_t)c->dim;
	return emb * (c->tied ? 1 : 2) + (size_t)c->n_layers * lt_model_config_block_params(c) +
	       (size_t)c->dim;
}

double lt_model_config_flops_per_token(const struct lt_model_config *c, int seq)
{
	double emb = (double)c->vocab_size * c->dim;
	double matmul_weights = (double)lt_model_config_params(c) - emb + (c->tied ? emb : 0.0);
	return 6.0 * matmul_weights + 12.0 * c->n_layers * (double)c->n_heads * head_dim(c) * (double)seq;
}

/* Llama 3's scaling of one frequency: long wavelengths slowed by the
 * factor, short ones kept, a linear blend (in original_max / wavelength)
 * between the two bounds. */
static double llama3_scaled(const struct lt_model_config *c, double f)
{
	const double pi = 3.14159265358979323846;
	double orig = c->rope_original_max_seq, factor = c->rope_factor;
	double low = c->rope_low_freq_factor, high = c->rope_high_freq_factor;
	double wavelen = 2.0 * pi / f;
	if (wavelen > orig / low)
		return f / factor;
	if (wavelen < orig / high)
		return f;
	double smooth = (orig / wavelen - low) / (high - low);
	return (1.0 - smooth) * f / factor + smooth * f;
}

void lt_model_config_rope_freqs(const struct lt_model_config *c, double *freq)
{
	int half = head_dim(c) / 2;
	for (int i = 0; i < half; i++) {
		/* rounded to float as Hugging Face keeps theta^(-2i/D) */
		double f = (float)(1.0 / pow((double)c->rope_theta, (2.0 * i) / (2 * half)));
		freq[i] = c->rope_scaling == LT_ROPE_LLAMA3 ? llama3_scaled(c, f) : f;
	}
}
