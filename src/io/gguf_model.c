/* LLaMA models from GGUF files: the llama.* metadata into a model
 * configuration, and the tensors (blk.N.attn_q.weight ...) into the model's
 * Hugging Face-named parameters (see gguf_model.h). */
#include "config.h"
#include "io/gguf_model.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/gguf.h"

#define ARCH "llama"

/* An integer key in [1, INT_MAX]. */
static enum lt_status get_size(const lt_gguf *g, const char *key, int *out)
{
	int64_t v;
	enum lt_status st = lt_gguf_get_int(g, key, &v);
	if (st != LT_OK)
		return st;
	if (v < 1 || v > INT_MAX) {
		lt_errmsg_set("%s: key '%s' is %" PRId64 ", expected 1 to %d", lt_gguf_path(g), key,
			      v, INT_MAX);
		return LT_ERR_FORMAT;
	}
	*out = (int)v;
	return LT_OK;
}

/* A size key that may be absent (then *out keeps its default). */
static enum lt_status get_size_or(const lt_gguf *g, const char *key, int *out)
{
	return lt_gguf_has(g, key) ? get_size(g, key, out) : LT_OK;
}

/* A float key, finite and positive; absent keeps the default when `dflt`. */
static enum lt_status get_positive(const lt_gguf *g, const char *key, int dflt, float *out)
{
	double v;
	enum lt_status st;
	if (dflt && !lt_gguf_has(g, key))
		return LT_OK;
	if ((st = lt_gguf_get_float(g, key, &v)) != LT_OK)
		return st;
	if (!isfinite(v) || v <= 0 || v > 3.4e38) {
		lt_errmsg_set("%s: key '%s' is %g, expected a positive finite number",
			      lt_gguf_path(g), key, v);
		return LT_ERR_FORMAT;
	}
	*out = (float)v;
	return LT_OK;
}

static enum lt_status check_architecture(const lt_gguf *g)
{
	const char *arch;
	enum lt_status st = lt_gguf_get_str(g, "general.architecture", &arch, NULL);
	if (st != LT_OK)
		return st;
	if (strcmp(arch, ARCH) != 0) {
		lt_errmsg_set("%s: general.architecture is '%s', only '" ARCH "' models can be read",
			      lt_gguf_path(g), arch);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* The vocabulary from token_embd.weight, dims {dim, vocab}. */
static enum lt_status vocab_from_embedding(const lt_gguf *g, struct lt_model_config *c)
{
	const struct lt_gguf_tensor *t;
	int vocab;
	enum lt_status st = lt_gguf_tensor_find(g, "token_embd.weight", &t);
	if (st != LT_OK)
		return st;
	if (t->ndim != 2 || t->dims[0] != c->dim || t->dims[1] < 1 || t->dims[1] > INT_MAX) {
		lt_errmsg_set("%s: tensor 'token_embd.weight' has dims [%" PRId64 ", %" PRId64
			      "] (%d of them), expected [%d, vocabulary size]", lt_gguf_path(g),
			      t->dims[0], t->dims[1], t->ndim, c->dim);
		return LT_ERR_FORMAT;
	}
	c->vocab_size = vocab = (int)t->dims[1];
	if ((st = get_size_or(g, ARCH ".vocab_size", &vocab)) != LT_OK)
		return st;
	if (vocab != c->vocab_size) {
		lt_errmsg_set("%s: key '" ARCH ".vocab_size' is %d, token_embd.weight has %d rows",
			      lt_gguf_path(g), vocab, c->vocab_size);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* A key that, where present, is the head size c's head_dim gives. */
static enum lt_status check_head_size(const lt_gguf *g, const struct lt_model_config *c,
				      const char *key)
{
	int D = lt_model_config_head_dim(c), v = D;
	enum lt_status st = get_size_or(g, key, &v);
	if (st != LT_OK)
		return st;
	if (v != D) {
		lt_errmsg_set("%s: key '%s' is %d, expected the head size %d (" ARCH
			      ".attention.key_length, else embedding_length / head_count)",
			      lt_gguf_path(g), key, v, D);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* The head size: llama.attention.key_length where present (into head_dim
 * when it is not embedding_length / head_count); the value length and
 * llama.rope.dimension_count, where present, must be the same (lltrain
 * rotates whole heads). */
static enum lt_status read_head_size(const lt_gguf *g, struct lt_model_config *c)
{
	int D = 0;
	enum lt_status st = get_size_or(g, ARCH ".attention.key_length", &D);
	if (st != LT_OK)
		return st;
	c->head_dim = D > 0 && (c->dim % c->n_heads || D != c->dim / c->n_heads) ? D : 0;
	if ((st = check_head_size(g, c, ARCH ".rope.dimension_count")) == LT_OK)
		st = check_head_size(g, c, ARCH ".attention.value_length");
	return st;
}

/* ---- Llama 3's rope scaling, as the factors of rope_freqs.weight ---- */

#define ROPE_FREQS "rope_freqs.weight"
/* How far a factor of the file may be from lltrain's: llama.cpp's converter
 * computes them from float32 frequencies, lltrain from the same frequencies
 * rounded from double, so they may differ in their last bits. */
#define ROPE_FREQS_TOL (1.0 / 65536)

/* Whether the factors x[half] are those of c's scaling (none: all 1): the
 * number that divides each frequency, the plain one over the scaled one. */
static int rope_factors_match(const struct lt_model_config *c, const float *x, int half)
{
	struct lt_model_config none = *c;
	double plain[512], scaled[512];
	if (half > 512)
		return 0;
	none.rope_scaling = LT_ROPE_NONE;
	lt_model_config_rope_freqs(&none, plain);
	lt_model_config_rope_freqs(c, scaled);
	for (int i = 0; i < half; i++) {
		double want = plain[i] / scaled[i];
		if (!(fabs(x[i] - want) <= ROPE_FREQS_TOL * want))
			return 0;
	}
	return 1;
}

/* rope_freqs.weight's factors, checked to be one per frequency of a head,
 * into x[half] (half <= 512). */
static enum lt_status read_rope_factors(const lt_gguf *g, const struct lt_gguf_tensor *t,
					int half, float *x)
{
	if (half > 512) {
		lt_errmsg_set("%s: tensor '" ROPE_FREQS "': heads of %d dimensions, expected at "
			      "most 1024 for rope frequency factors", lt_gguf_path(g), 2 * half);
		return LT_ERR_FORMAT;
	}
	if (t->ndim != 1 || t->dims[0] != half) {
		lt_errmsg_set("%s: tensor '" ROPE_FREQS "' has %" PRId64 " elements in %d "
			      "dimensions, expected one per frequency of a head, [%d]", lt_gguf_path(g),
			      t->ndim ? t->dims[0] : 0, t->ndim, half);
		return LT_ERR_FORMAT;
	}
	if (!lt_gguf_can_dequantize(t->type)) {
		lt_errmsg_set("%s: tensor '" ROPE_FREQS "' is %s, expected F32", lt_gguf_path(g),
			      lt_gguf_type_name(t->type));
		return LT_ERR_FORMAT;
	}
	enum lt_status st = lt_gguf_read_f32(g, t, x, (size_t)half);
	if (st != LT_OK)
		lt_errmsg_prefix("%s: tensor '" ROPE_FREQS "': ", lt_gguf_path(g));
	return st;
}

/* A llama.rope.scaling.* key into *v where the file has it. */
static enum lt_status scaling_key(const lt_gguf *g, const char *key, float *v)
{
	return get_positive(g, key, 1, v);
}

/* The Llama 3 scalings rope_freqs.weight may hold, the file's own first:
 * llama.rope.scaling.* where present (standard values for the keys that
 * are absent), then Llama 3.1's (factor 8, low 1, high 4, original 8192)
 * and Llama 3.2's (factor 32). Returns how many went into cand[3]. */
static enum lt_status scaling_candidates(const lt_gguf *g, const struct lt_model_config *c,
					 struct lt_model_config cand[3], int *n)
{
	struct lt_model_config s = *c;
	enum lt_status st;
	s.rope_scaling = LT_ROPE_LLAMA3;
	s.rope_factor = 8.0f, s.rope_low_freq_factor = 1.0f, s.rope_high_freq_factor = 4.0f;
	s.rope_original_max_seq = 8192;
	cand[1] = s;
	cand[2] = s;
	cand[2].rope_factor = 32.0f;
	*n = 3;
	if ((st = scaling_key(g, ARCH ".rope.scaling.factor", &s.rope_factor)) != LT_OK ||
	    (st = scaling_key(g, ARCH ".rope.scaling.low_freq_factor",
			      &s.rope_low_freq_factor)) != LT_OK ||
	    (st = scaling_key(g, ARCH ".rope.scaling.high_freq_factor",
			      &s.rope_high_freq_factor)) != LT_OK ||
	    (st = get_size_or(g, ARCH ".rope.scaling.original_context_length",
			      &s.rope_original_max_seq)) != LT_OK)
		return st;
	cand[0] = s;
	return LT_OK;
}

/* With a rope_freqs.weight tensor, c's rope scaling is the Llama 3 one
 * whose factors it holds (or none, where every factor is 1); one that
 * lltrain cannot compute is refused naming the tensor. */
static enum lt_status read_rope_scaling(const lt_gguf *g, struct lt_model_config *c)
{
	const struct lt_gguf_tensor *t = lt_gguf_tensor_lookup(g, ROPE_FREQS);
	struct lt_model_config cand[3];
	float x[512];
	int half = lt_model_config_head_dim(c) / 2, n;
	enum lt_status st;
	c->rope_scaling = LT_ROPE_NONE;
	if (!t)
		return LT_OK;
	if ((st = read_rope_factors(g, t, half, x)) != LT_OK ||
	    (st = scaling_candidates(g, c, cand, &n)) != LT_OK)
		return st;
	if (rope_factors_match(c, x, half))
		return LT_OK;
	for (int i = 0; i < n; i++)
		if (lt_model_config_check(&cand[i]) == LT_OK && rope_factors_match(&cand[i], x, half)) {
			*c = cand[i];
			return LT_OK;
		}
	lt_errmsg_set("%s: tensor '" ROPE_FREQS "' holds rope frequency factors (%g ... %g) that "
		      "are not Llama 3's scaling of theta %g with the file's llama.rope.scaling.* "
		      "values nor with factor 8 or 32, low 1, high 4, original context 8192",
		      lt_gguf_path(g), x[0], x[half - 1], c->rope_theta);
	return LT_ERR_FORMAT;
}

static enum lt_status read_config(const lt_gguf *g, struct lt_model_config *c)
{
	enum lt_status st;
	memset(c, 0, sizeof *c);
	c->rope_theta = 10000.0f;
	if ((st = check_architecture(g)) != LT_OK ||
	    (st = get_size(g, ARCH ".block_count", &c->n_layers)) != LT_OK ||
	    (st = get_size(g, ARCH ".embedding_length", &c->dim)) != LT_OK ||
	    (st = get_size(g, ARCH ".feed_forward_length", &c->ffn_dim)) != LT_OK ||
	    (st = get_size(g, ARCH ".attention.head_count", &c->n_heads)) != LT_OK ||
	    (st = get_size(g, ARCH ".context_length", &c->max_seq)) != LT_OK ||
	    (st = get_positive(g, ARCH ".attention.layer_norm_rms_epsilon", 0, &c->norm_eps)) != LT_OK ||
	    (st = get_positive(g, ARCH ".rope.freq_base", 1, &c->rope_theta)) != LT_OK)
		return st;
	c->n_kv_heads = c->n_heads;
	if ((st = get_size_or(g, ARCH ".attention.head_count_kv", &c->n_kv_heads)) != LT_OK ||
	    (st = read_head_size(g, c)) != LT_OK || (st = vocab_from_embedding(g, c)) != LT_OK)
		return st;
	c->tied = lt_gguf_tensor_lookup(g, "output.weight") == NULL;
	if ((st = lt_model_config_check(c)) != LT_OK) {
		lt_errmsg_prefix("%s: ", lt_gguf_path(g));
		return st;
	}
	return read_rope_scaling(g, c);
}

enum lt_status lt_gguf_model_config(const char *path, struct lt_model_config *c)
{
	lt_gguf *g;
	enum lt_status st = lt_gguf_open(path, &g);
	if (st != LT_OK)
		return st;
	st = read_config(g, c);
	lt_gguf_close(g);
	return st;
}

/* ---- weights ---- */

/* How a GGUF tensor maps onto the model's: the file's name, lltrain's
 * name, and the heads whose rows llama.cpp reordered (0: none). */
struct mapping {
	char gguf[64];
	char hf[80];
	int heads;
};

static const struct {
	const char *gguf, *hf;
} block_names[] = {
	{ "attn_norm", "input_layernorm" },       { "attn_q", "self_attn.q_proj" },
	{ "attn_k", "self_attn.k_proj" },         { "attn_v", "self_attn.v_proj" },
	{ "attn_output", "self_attn.o_proj" },    { "ffn_norm", "post_attention_layernorm" },
	{ "ffn_gate", "mlp.gate_proj" },          { "ffn_up", "mlp.up_proj" },
	{ "ffn_down", "mlp.down_proj" },
};
#define BLOCK_TENSORS (sizeof block_names / sizeof block_names[0])

/* The mapping for each of the model's tensors, in the file's names. */
static enum lt_status make_mappings(const struct lt_model_config *c, struct mapping **out,
				    size_t *n)
{
	size_t k = 0, total = 3 + (size_t)c->n_layers * BLOCK_TENSORS;
	struct mapping *map = calloc(total, sizeof *map);
	if (!map) {
		lt_errmsg_set("cannot allocate %zu tensor names", total);
		return LT_ERR_NOMEM;
	}
	snprintf(map[k].gguf, sizeof map[k].gguf, "token_embd.weight");
	snprintf(map[k++].hf, sizeof map[0].hf, "model.embed_tokens.weight");
	for (int l = 0; l < c->n_layers; l++) {
		for (size_t b = 0; b < BLOCK_TENSORS; b++, k++) {
			snprintf(map[k].gguf, sizeof map[k].gguf, "blk.%d.%s.weight", l,
				 block_names[b].gguf);
			snprintf(map[k].hf, sizeof map[k].hf, "model.layers.%d.%s.weight", l,
				 block_names[b].hf);
			if (b == 1)
				map[k].heads = c->n_heads;
			else if (b == 2)
				map[k].heads = c->n_kv_heads;
		}
	}
	snprintf(map[k].gguf, sizeof map[k].gguf, "output_norm.weight");
	snprintf(map[k++].hf, sizeof map[0].hf, "model.norm.weight");
	if (!c->tied) {
		snprintf(map[k].gguf, sizeof map[k].gguf, "output.weight");
		snprintf(map[k++].hf, sizeof map[0].hf, "lm_head.weight");
	}
	*out = map;
	*n = k;
	return LT_OK;
}

/* "[rows, cols]" or "[n]" of a model tensor, and the same order (outermost
 * first) of a GGUF tensor's dims. */
static const char *model_shape(char *buf, size_t size, const struct lt_tensor *t)
{
	if (t->ndim == 1)
		snprintf(buf, size, "[%d]", t->shape[0]);
	else
		snprintf(buf, size, "[%d, %d]", t->shape[0], t->shape[1]);
	return buf;
}

static const char *file_shape(char *buf, size_t size, const struct lt_gguf_tensor *t)
{
	size_t len = (size_t)snprintf(buf, size, "[");
	for (int i = t->ndim - 1; i >= 0 && len < size; i--)
		len += (size_t)snprintf(buf + len, size - len, "%" PRId64 "%s", t->dims[i],
					i ? ", " : "]");
	return buf;
}

static int same_shape(const struct lt_tensor *m, const struct lt_gguf_tensor *f)
{
	if (m->ndim == 1)
		return f->ndim == 1 && f->dims[0] == m->shape[0];
	return f->ndim == 2 && f->dims[1] == m->shape[0] && f->dims[0] == m->shape[1];
}

/* The file's tensor for one mapping, present and of the model's shape and
 * a type that dequantizes. */
static enum lt_status check_tensor(const lt_gguf *g, const lt_model *m, const struct mapping *mp)
{
	const struct lt_tensor *t = lt_model_find_weight(m, mp->hf);
	const struct lt_gguf_tensor *f;
	char a[64], b[64];
	enum lt_status st = lt_gguf_tensor_find(g, mp->gguf, &f);
	LT_ASSERT(t);
	if (st != LT_OK)
		return st;
	if (!same_shape(t, f)) {
		lt_errmsg_set("%s: tensor '%s' has shape %s, the model's %s is %s", lt_gguf_path(g),
			      mp->gguf, file_shape(a, sizeof a, f), mp->hf, model_shape(b, sizeof b, t));
		return LT_ERR_FORMAT;
	}
	if (!lt_gguf_can_dequantize(f->type)) {
		lt_errmsg_set("%s: tensor '%s' is %s, expected F32, F16, BF16, Q8_0, Q4_0 or Q4_1",
			      lt_gguf_path(g), mp->gguf, lt_gguf_type_name(f->type));
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

static int cmp_gguf_name(const void *a, const void *b)
{
	return strcmp(((const struct mapping *)a)->gguf, ((const struct mapping *)b)->gguf);
}

/* The file's rope_freqs.weight holds the factors of the model's rope scaling. */
static enum lt_status check_rope_freqs(const lt_gguf *g, const lt_model *m,
				       const struct lt_gguf_tensor *t)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	int half = lt_model_config_head_dim(c) / 2;
	float x[512];
	enum lt_status st = read_rope_factors(g, t, half, x);
	if (st == LT_OK && !rope_factors_match(c, x, half)) {
		lt_errmsg_set("%s: tensor '" ROPE_FREQS "' holds rope frequency factors (%g ... %g) "
			      "other than those of the model's rope scaling (%s)", lt_gguf_path(g),
			      x[0], x[half - 1],
			      c->rope_scaling == LT_ROPE_LLAMA3 ? "llama3" : "none");
		st = LT_ERR_FORMAT;
	}
	return st;
}

/* Every tensor of the file has a place in the model (rope_freqs.weight
 * that of its rope scaling). */
static enum lt_status check_no_extra(const lt_gguf *g, const lt_model *m, struct mapping *map,
				     size_t n)
{
	qsort(map, n, sizeof *map, cmp_gguf_name);
	for (size_t i = 0; i < lt_gguf_tensor_count(g); i++) {
		const struct lt_gguf_tensor *f = lt_gguf_tensor_at(g, i);
		struct mapping key;
		if (!strcmp(f->name, ROPE_FREQS)) {
			enum lt_status st = check_rope_freqs(g, m, f);
			if (st != LT_OK)
				return st;
			continue;
		}
		snprintf(key.gguf, sizeof key.gguf, "%s", f->name);
		if (strlen(f->name) >= sizeof key.gguf ||
		    !bsearch(&key, map, n, sizeof *map, cmp_gguf_name)) {
			lt_errmsg_set("%s: tensor '%s' has no place in a LLaMA model of %d layers "
				      "(%s tied)", lt_gguf_path(g), f->name,
				      lt_model_config_of(m)->n_layers,
				      lt_model_config_of(m)->tied ? "embeddings" : "no embeddings");
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

enum lt_status lt_gguf_reorder_heads(float *w, int rows, int cols, int heads, int to_file)
{
	int D = rows / heads, half = D / 2;
	size_t head = (size_t)D * (size_t)cols, row = (size_t)cols * sizeof *w;
	float *tmp = malloc(head * sizeof *tmp);
	if (!tmp) {
		lt_errmsg_set("cannot allocate %zu floats to reorder a head", head);
		return LT_ERR_NOMEM;
	}
	for (int h = 0; h < heads; h++) {
		float *base = w + (size_t)h * head;
		memcpy(tmp, base, head * sizeof *tmp);
		for (int i = 0; i < half; i++)
			for (int j = 0; j < 2; j++) {
				size_t ours = (size_t)(j * half + i), file = (size_t)(2 * i + j);
				memcpy(base + (to_file ? file : ours) * (size_t)cols,
				       tmp + (to_file ? ours : file) * (size_t)cols, row);
			}
	}
	free(tmp);
	return LT_OK;
}

/* One tensor into a model with adapters: through a host copy into its frozen base. */
static enum lt_status load_frozen_tensor(const lt_gguf *g, lt_model *m, const struct mapping *mp)
{
	const struct lt_tensor *t = lt_model_find_weight(m, mp->hf);
	const struct lt_gguf_tensor *f = lt_gguf_tensor_lookup(g, mp->gguf);
	float *host = malloc(t->numel * sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu floats for %s", t->numel, t->name);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_gguf_read_f32(g, f, host, t->numel);
	if (st == LT_OK && mp->heads)
		st = lt_gguf_reorder_heads(host, t->shape[0], t->shape[1], mp->heads, 0);
	if (st != LT_OK)
		lt_errmsg_prefix("%s: tensor '%s': ", lt_gguf_path(g), mp->gguf);
	else
		st = lt_model_write_weight(m, t, host);
	free(host);
	return st;
}

/* One tensor into the model's parameters (or, with adapters, its frozen base). */
static enum lt_status load_tensor(const lt_gguf *g, lt_model *m, const struct mapping *mp,
				  struct lt_host_view *view)
{
	if (lt_model_num_frozen(m) > 0)
		return load_frozen_tensor(g, m, mp);
	const struct lt_tensor *t = lt_model_find_weight(m, mp->hf);
	const struct lt_gguf_tensor *f = lt_gguf_tensor_lookup(g, mp->gguf);
	lt_ref dst = lt_ref_at(lt_model_params(m), t->off);
	enum lt_status st = lt_host_view_map(view, lt_model_backend(m), dst, t->numel);
	if (st != LT_OK ||
	    (st = lt_gguf_read_f32(g, f, view->p, t->numel)) != LT_OK ||
	    (mp->heads && (st = lt_gguf_reorder_heads(view->p, t->shape[0], t->shape[1], mp->heads, 0)) != LT_OK)) {
		lt_errmsg_prefix("%s: tensor '%s': ", lt_gguf_path(g), mp->gguf);
		return st;
	}
	lt_host_view_write(view);
	return LT_OK;
}

static enum lt_status load_all(const lt_gguf *g, lt_model *m)
{
	struct mapping *map;
	struct lt_host_view view = { 0 };
	size_t n;
	enum lt_status st = make_mappings(lt_model_config_of(m), &map, &n);
	if (st != LT_OK)
		return st;
	for (size_t i = 0; i < n && st == LT_OK; i++)
		st = check_tensor(g, m, &map[i]);
	if (st == LT_OK)
		st = check_no_extra(g, m, map, n);
	for (size_t i = 0; i < n && st == LT_OK; i++)
		st = load_tensor(g, m, &map[i], &view);
	lt_host_view_free(&view);
	free(map);
	return st;
}

enum lt_status lt_gguf_model_load(const char *path, lt_model *m)
{
	lt_gguf *g;
	enum lt_status st = lt_gguf_open(path, &g);
	if (st != LT_OK)
		return st;
	if ((st = check_architecture(g)) == LT_OK)
		st = load_all(g, m);
	lt_gguf_close(g);
	return st;
}
