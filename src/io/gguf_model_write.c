/* LLaMA models into GGUF files (see gguf_model.h): the llama.* metadata,
 * the tensors under llama.cpp's names, the query and key rows in its RoPE
 * order, each tensor in the type an export of a file type gives it; and
 * the same rounding applied to a model in place. */
#include "config.h"
#include "io/gguf_model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/gguf.h"

#define ARCH "llama"

/* general.file_type's numbers (llama.cpp's llama_ftype). */
static const struct {
	uint32_t type, ftype;
	const char *name;
} file_types[] = {
	{ LT_GGUF_F32, 0, "f32" },   { LT_GGUF_F16, 1, "f16" },   { LT_GGUF_BF16, 32, "bf16" },
	{ LT_GGUF_Q8_0, 7, "q8_0" }, { LT_GGUF_Q4_0, 2, "q4_0" },
};
#define NFILE_TYPES (sizeof file_types / sizeof file_types[0])

enum lt_status lt_gguf_model_file_type(const char *name, uint32_t *type)
{
	for (size_t i = 0; i < NFILE_TYPES; i++) {
		if (!strcmp(name, file_types[i].name)) {
			*type = file_types[i].type;
			return LT_OK;
		}
	}
	lt_errmsg_set("'%s': unknown type (expected f32, f16, bf16, q8_0 or q4_0)", name);
	return LT_ERR_ARG;
}

/* Whether t is the matrix that makes the logits: lm_head, or the
 * embedding where it is tied. */
static int is_output(const struct lt_model_config *c, const struct lt_tensor *t)
{
	return !strcmp(t->name, "lm_head.weight") ||
	       (c->tied && !strcmp(t->name, "model.embed_tokens.weight"));
}

uint32_t lt_gguf_model_tensor_type(const struct lt_model_config *c, const struct lt_tensor *t,
				   uint32_t type)
{
	if (t->ndim == 1)
		return LT_GGUF_F32;  /* norms stay f32 in every type */
	if (type == LT_GGUF_Q4_0 && is_output(c, t))
		type = LT_GGUF_Q8_0;
	if (t->shape[1] % (int)lt_gguf_block_values(type) != 0)
		return LT_GGUF_F16;  /* rows that are no whole number of blocks */
	return type;
}

/* llama.cpp's name of one of the model's tensors, and the heads whose
 * rows its RoPE orders in pairs (0: none). */
static const struct {
	const char *hf, *gguf;
	int heads;  /* 1: the query's heads, 2: the key's */
} block_names[] = {
	{ "input_layernorm", "attn_norm", 0 },       { "self_attn.q_proj", "attn_q", 1 },
	{ "self_attn.k_proj", "attn_k", 2 },         { "self_attn.v_proj", "attn_v", 0 },
	{ "self_attn.o_proj", "attn_output", 0 },    { "post_attention_layernorm", "ffn_norm", 0 },
	{ "mlp.gate_proj", "ffn_gate", 0 },          { "mlp.up_proj", "ffn_up", 0 },
	{ "mlp.down_proj", "ffn_down", 0 },
};

static enum lt_status gguf_name(const struct lt_model_config *c, const char *hf, char *out,
				size_t cap, int *heads)
{
	int layer, used;
	*heads = 0;
	if (!strcmp(hf, "model.embed_tokens.weight"))
		return snprintf(out, cap, "token_embd.weight"), LT_OK;
	if (!strcmp(hf, "model.norm.weight"))
		return snprintf(out, cap, "output_norm.weight"), LT_OK;
	if (!strcmp(hf, "lm_head.weight"))
		return snprintf(out, cap, "output.weight"), LT_OK;
	if (sscanf(hf, "model.layers.%d.%n", &layer, &used) == 1 && used > 0) {
		for (size_t b = 0; b < sizeof block_names / sizeof *block_names; b++) {
			size_t n = strlen(block_names[b].hf);
			if (!strncmp(hf + used, block_names[b].hf, n) && !strcmp(hf + used + n, ".weight")) {
				snprintf(out, cap, "blk.%d.%s.weight", layer, block_names[b].gguf);
				*heads = block_names[b].heads == 1 ? c->n_heads :
					 block_names[b].heads == 2 ? c->n_kv_heads : 0;
				return LT_OK;
			}
		}
	}
	lt_errmsg_set("tensor '%s': no GGUF name for it", hf);
	return LT_ERR_ARG;
}

/* ---- metadata ---- */

static uint32_t file_type_number(uint32_t type)
{
	for (size_t i = 0; i < NFILE_TYPES; i++)
		if (file_types[i].type == type)
			return file_types[i].ftype;
	return 0;
}

/* Llama 3's scaled frequencies as llama.cpp takes them: per frequency the
 * factor the unscaled one is divided by, D/2 floats. */
static enum lt_status rope_factors(const struct lt_model_config *c, float **out)
{
	int half = lt_model_config_head_dim(c) / 2;
	struct lt_model_config plain = *c;
	double *f = malloc(2 * (size_t)half * sizeof *f);
	float *r = malloc((size_t)half * sizeof *r);
	if (!f || !r) {
		free(f);
		free(r);
		lt_errmsg_set("cannot allocate %d rope factors", half);
		return LT_ERR_NOMEM;
	}
	plain.rope_scaling = LT_ROPE_NONE;
	lt_model_config_rope_freqs(&plain, f);
	lt_model_config_rope_freqs(c, f + half);
	for (int i = 0; i < half; i++)
		r[i] = (float)(f[i] / f[half + i]);
	free(f);
	*out = r;
	return LT_OK;
}

static enum lt_status add_metadata(lt_gguf_writer *w, const struct lt_model_config *c,
				   uint32_t type, const char *name)
{
	enum lt_status st;
	uint32_t head = (uint32_t)lt_model_config_head_dim(c);
	if ((st = lt_gguf_writer_add_str(w, "general.architecture", ARCH)) != LT_OK ||
	    (st = lt_gguf_writer_add_str(w, "general.name", name)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, "general.file_type", file_type_number(type))) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".vocab_size", (uint32_t)c->vocab_size)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".context_length", (uint32_t)c->max_seq)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".embedding_length", (uint32_t)c->dim)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".block_count", (uint32_t)c->n_layers)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".feed_forward_length", (uint32_t)c->ffn_dim)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".rope.dimension_count", head)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".attention.head_count", (uint32_t)c->n_heads)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".attention.head_count_kv", (uint32_t)c->n_kv_heads)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".attention.key_length", head)) != LT_OK ||
	    (st = lt_gguf_writer_add_u32(w, ARCH ".attention.value_length", head)) != LT_OK ||
	    (st = lt_gguf_writer_add_f32(w, ARCH ".attention.layer_norm_rms_epsilon", c->norm_eps)) != LT_OK ||
	    (st = lt_gguf_writer_add_f32(w, ARCH ".rope.freq_base", c->rope_theta)) != LT_OK)
		return st;
	return LT_OK;
}

/* ---- tensors ---- */

/* Weight t of m (lt_model_weight) into x[t->numel] as f32 (a bf16 base
 * widened; a base of GGUF blocks was made floats by lt_model_merge_lora). */
static enum lt_status read_weight(lt_model *m, const struct lt_tensor *t, float *x)
{
	lt_backend *be = lt_model_backend(m);
	int frozen = lt_model_num_frozen(m) > 0;
	lt_ref r = frozen ? lt_model_frozen_ref(m, t) : lt_ref_at(lt_model_params(m), t->off);
	if (lt_dtype_is_block(lt_buf_type(r.buf))) {
		lt_errmsg_set("%s: held in GGUF blocks (the adapters are merged first)", t->name);
		return LT_ERR_ARG;
	}
	if (lt_buf_type(r.buf) != LT_BF16) {
		be->ops->read(be, x, r, t->numel);
		return LT_OK;
	}
	uint16_t *h = malloc(t->numel * sizeof *h);
	if (!h) {
		lt_errmsg_set("cannot allocate %zu halves for %s", t->numel, t->name);
		return LT_ERR_NOMEM;
	}
	be->ops->read(be, h, r, t->numel);
	for (size_t i = 0; i < t->numel; i++) {
		uint32_t bits = (uint32_t)h[i] << 16;
		memcpy(&x[i], &bits, sizeof bits);
	}
	free(h);
	return LT_OK;
}

static enum lt_status add_directory(lt_gguf_writer *w, const lt_model *m, uint32_t type)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	enum lt_status st;
	char name[96];
	int heads;
	if (c->rope_scaling == LT_ROPE_LLAMA3) {
		int64_t d[1] = { lt_model_config_head_dim(c) / 2 };
		if ((st = lt_gguf_writer_add_tensor(w, "rope_freqs.weight", 1, d, LT_GGUF_F32)) != LT_OK)
			return st;
	}
	for (int i = 0; i < lt_model_num_weights(m); i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		int64_t d[2] = { t->ndim == 1 ? t->shape[0] : t->shape[1], t->shape[0] };
		if ((st = gguf_name(c, t->name, name, sizeof name, &heads)) != LT_OK ||
		    (st = lt_gguf_writer_add_tensor(w, name, t->ndim, d,
						    lt_gguf_model_tensor_type(c, t, type))) != LT_OK)
			return st;
	}
	return LT_OK;
}

enum lt_status lt_gguf_model_add(lt_gguf_writer *w, const lt_model *m, uint32_t type,
				 const char *name)
{
	enum lt_status st = add_metadata(w, lt_model_config_of(m), type, name);
	return st == LT_OK ? add_directory(w, m, type) : st;
}

/* n floats of x in `type` into a buffer of the writer's next tensor. */
static enum lt_status write_as(lt_gguf_writer *w, size_t index, uint32_t type, const float *x,
			       size_t n)
{
	size_t nbytes = lt_gguf_writer_tensor_bytes(w, index);
	void *q = malloc(nbytes ? nbytes : 1);
	enum lt_status st;
	if (!q) {
		lt_errmsg_set("cannot allocate %zu bytes for a tensor", nbytes);
		return LT_ERR_NOMEM;
	}
	if ((st = lt_gguf_quantize(type, x, n, q, nbytes)) == LT_OK)
		st = lt_gguf_writer_tensor_data(w, q, nbytes);
	free(q);
	return st;
}

static enum lt_status write_rope_factors(lt_gguf_writer *w, const struct lt_model_config *c)
{
	float *r;
	enum lt_status st = rope_factors(c, &r);
	if (st == LT_OK) {
		st = write_as(w, 0, LT_GGUF_F32, r, (size_t)(lt_model_config_head_dim(c) / 2));
		free(r);
	}
	return st;
}

enum lt_status lt_gguf_model_write_tensors(lt_gguf_writer *w, lt_model *m, uint32_t type)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	size_t index = 0;
	enum lt_status st = LT_OK;
	if (c->rope_scaling == LT_ROPE_LLAMA3 && (st = write_rope_factors(w, c)) == LT_OK)
		index++;
	for (int i = 0; i < lt_model_num_weights(m) && st == LT_OK; i++, index++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		char name[96];
		int heads;
		float *x = malloc(t->numel * sizeof *x);
		if (!x) {
			lt_errmsg_set("cannot allocate %zu floats for %s", t->numel, t->name);
			return LT_ERR_NOMEM;
		}
		if ((st = read_weight(m, t, x)) == LT_OK &&
		    (st = gguf_name(c, t->name, name, sizeof name, &heads)) == LT_OK &&
		    (!heads || (st = lt_gguf_reorder_heads(x, t->shape[0], t->shape[1], heads, 1)) == LT_OK))
			st = write_as(w, index, lt_gguf_model_tensor_type(c, t, type), x, t->numel);
		if (st != LT_OK)
			lt_errmsg_prefix("tensor '%s'", name);
		free(x);
	}
	return st;
}

/* ---- rounding in place ---- */

/* x[n] through `type`'s blocks and back. */
static enum lt_status round_through(uint32_t type, float *x, size_t n)
{
	size_t nbytes = n / lt_gguf_block_values(type) * lt_gguf_block_bytes(type);
	void *q = malloc(nbytes ? nbytes : 1);
	enum lt_status st;
	if (!q) {
		lt_errmsg_set("cannot allocate %zu bytes to round a tensor", nbytes);
		return LT_ERR_NOMEM;
	}
	if ((st = lt_gguf_quantize(type, x, n, q, nbytes)) == LT_OK)
		st = lt_gguf_dequantize(type, q, nbytes, x, n);
	free(q);
	return st;
}

enum lt_status lt_gguf_model_round(lt_model *m, uint32_t type)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_weights(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		uint32_t tt = lt_gguf_model_tensor_type(c, t, type);
		if (tt == LT_GGUF_F32)
			continue;
		float *x = malloc(t->numel * sizeof *x);
		if (!x) {
			lt_errmsg_set("cannot allocate %zu floats for %s", t->numel, t->name);
			return LT_ERR_NOMEM;
		}
		if ((st = read_weight(m, t, x)) == LT_OK &&
		    (st = round_through(tt, x, t->numel)) == LT_OK)
			st = lt_model_write_weight(m, t, x);
		else
			lt_errmsg_prefix("%s", t->name);
		free(x);
	}
	return st;
}
