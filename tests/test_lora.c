/* LoRA tests: the adapted forward against a float64 reference, the
 * adapters' gradients against finite differences of that reference (every
 * target, with and without dropout, tied and untied, fp32 and bf16), the
 * frozen base unchanged by steps, merging equal to the adapted logits, and
 * the count of trainable parameters; with a base of GGUF q8_0 / q4_0 blocks
 * (and of f32 or bf16 under the other precision) the same against the
 * reference over the dequantized base, the logits of the model holding the
 * dequantized base, and the memory estimate. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "tap.h"

/* The same with widths of whole blocks, for a base of q8_0 or q4_0. */
static const struct lt_model_config blocks = {
	.vocab_size = 32, .dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 64, .max_seq = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

#define NB 2  /* sequences */
#define NT 5  /* tokens each */
#define NN (NB * NT)

static const struct lt_model_config small = {
	.vocab_size = 32, .dim = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 24, .max_seq = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

static const char *const target_names[LT_LORA_TARGETS] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
};

/* What the reference reads: the base and the adapters as doubles, at the
 * model's offsets. */
struct ref {
	const struct lt_model_config *c;
	const lt_model *m;
	double *base, *ad;
	double p;           /* dropout, with the masks of key */
	uint64_t key;
};

/* The frozen tensor of this name in r->base, which holds them one after
 * another in the model's order. */
static const double *base_of(const struct ref *r, const char *name)
{
	size_t at = 0;
	for (int i = 0; i < lt_model_num_frozen(r->m); i++) {
		const struct lt_tensor *t = lt_model_frozen(r->m, i);
		if (!strcmp(t->name, name))
			return r->base + at;
		at += t->numel;
	}
	return NULL;
}

/* y[N, out] = x[N, in] W^T */
static void ref_linear(double *y, const double *x, const double *w, int n, int out, int in)
{
	for (int i = 0; i < n; i++)
		for (int o = 0; o < out; o++) {
			double acc = 0;
			for (int k = 0; k < in; k++)
				acc += x[(size_t)i * in + k] * w[(size_t)o * in + k];
			y[(size_t)i * out + o] = acc;
		}
}

static void ref_rmsnorm(double *y, const double *x, const double *w, int n, int C, double eps)
{
	for (int i = 0; i < n; i++) {
		double ss = 0;
		for (int k = 0; k < C; k++)
			ss += x[i * C + k] * x[i * C + k];
		double rs = 1.0 / sqrt(ss / C + eps);
		for (int k = 0; k < C; k++)
			y[i * C + k] = x[i * C + k] * rs * w[k];
	}
}

/* The adapter of target t in layer l added: y += s (u A^T) B^T, u = x
 * through dropout's mask of (key, l, input) as the model draws it. */
static void ref_adapter(const struct ref *r, const struct lt_lora *lo, int l, int t, int input,
			double *y, const double *x, int in, int out)
{
	char name[96];
	if (!(lo->targets >> t & 1u))
		return;
	snprintf(name, sizeof name, "model.layers.%d.%s.lora_A.weight", l, target_names[t]);
	const double *a = r->ad + lt_model_find(r->m, name)->off;
	snprintf(name, sizeof name, "model.layers.%d.%s.lora_B.weight", l, target_names[t]);
	const double *b = r->ad + lt_model_find(r->m, name)->off;
	double u[NN * 64], tmp[NN * 8], s = (double)lo->alpha / lo->rank;
	struct lt_rng rng;
	lt_rng_seed(&rng, r->key, (uint64_t)l * 4 + (uint64_t)input);
	for (int i = 0; i < NN * in; i++)
		u[i] = r->p > 0 && lt_rng_uniform(&rng) < r->p ? 0.0 : x[i] / (1.0 - r->p);
	ref_linear(tmp, u, a, NN, lo->rank, in);
	for (int i = 0; i < NN; i++)
		for (int o = 0; o < out; o++) {
			double acc = 0;
			for (int k = 0; k < lo->rank; k++)
				acc += tmp[i * lo->rank + k] * b[(size_t)o * lo->rank + k];
			y[i * out + o] += s * acc;
		}
}

/* Rotates the heads[N, heads, D] of x by position n % NT, pairs (i, i + D/2). */
static void ref_rope(double *x, int heads, int D, double theta)
{
	for (int n = 0; n < NN * heads; n++)
		for (int i = 0; i < D / 2; i++) {
			double f = (float)(1.0 / pow(theta, (2.0 * i) / D));
			double ang = (n / heads % NT) * f, c = cos(ang), s = sin(ang);
			double x1 = x[n * D + i], x2 = x[n * D + i + D / 2];
			x[n * D + i] = x1 * c - x2 * s;
			x[n * D + i + D / 2] = x2 * c + x1 * s;
		}
}

/* Causal attention over q[N, H*D], k, v[N, K*D] into o[N, H*D]. */
static void ref_attention(double *o, const double *q, const double *k, const double *v, int H,
			  int K, int D)
{
	for (int b = 0; b < NB; b++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < NT; i++) {
				int j0 = b * NT, kh = h / (H / K);
				double sc[NT], mx = -1e300, sum = 0;
				for (int j = 0; j <= i; j++) {
					double d = 0;
					for (int e = 0; e < D; e++)
						d += q[(j0 + i) * H * D + h * D + e] *
						     k[(j0 + j) * K * D + kh * D + e];
					sc[j] = d / sqrt((double)D);
					mx = sc[j] > mx ? sc[j] : mx;
				}
				for (int j = 0; j <= i; j++)
					sum += (sc[j] = exp(sc[j] - mx));
				for (int e = 0; e < D; e++) {
					double acc = 0;
					for (int j = 0; j <= i; j++)
						acc += sc[j] * v[(j0 + j) * K * D + kh * D + e];
					o[(j0 + i) * H * D + h * D + e] = acc / sum;
				}
			}
}

#define W(name) base_of(r, name)

/* The reference's loss sum over tokens predicting targets; logits[N, V] if given. */
static double ref_loss(const struct ref *r, const struct lt_lora *lo, const int32_t *tok,
		       const int32_t *tgt, double *logits_out)
{
	const struct lt_model_config *c = r->c;
	int C = c->dim, H = c->n_heads, K = c->n_kv_heads, D = lt_model_config_head_dim(c);
	int F = c->ffn_dim, V = c->vocab_size;
	static double x[NN * 64], ln[NN * 64], q[NN * 64], k[NN * 64], v[NN * 64], att[NN * 64],
		tmp[NN * 64], gate[NN * 64], up[NN * 64], g[NN * 64], logits[NN * 64];
	char name[96];
	const double *emb = W("model.embed_tokens.weight");
	for (int n = 0; n < NN; n++)
		memcpy(x + n * C, emb + (size_t)tok[n] * C, (size_t)C * sizeof *x);
	for (int l = 0; l < c->n_layers; l++) {
#define LW(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), W(name))
		ref_rmsnorm(ln, x, LW("input_layernorm.weight"), NN, C, c->norm_eps);
		ref_linear(q, ln, LW("self_attn.q_proj.weight"), NN, H * D, C);
		ref_linear(k, ln, LW("self_attn.k_proj.weight"), NN, K * D, C);
		ref_linear(v, ln, LW("self_attn.v_proj.weight"), NN, K * D, C);
		ref_adapter(r, lo, l, LT_LORA_Q, 0, q, ln, C, H * D);
		ref_adapter(r, lo, l, LT_LORA_K, 0, k, ln, C, K * D);
		ref_adapter(r, lo, l, LT_LORA_V, 0, v, ln, C, K * D);
		ref_rope(q, H, D, c->rope_theta);
		ref_rope(k, K, D, c->rope_theta);
		ref_attention(att, q, k, v, H, K, D);
		ref_linear(tmp, att, LW("self_attn.o_proj.weight"), NN, C, H * D);
		ref_adapter(r, lo, l, LT_LORA_O, 1, tmp, att, H * D, C);
		for (int i = 0; i < NN * C; i++)
			x[i] += tmp[i];
		ref_rmsnorm(ln, x, LW("post_attention_layernorm.weight"), NN, C, c->norm_eps);
		ref_linear(gate, ln, LW("mlp.gate_proj.weight"), NN, F, C);
		ref_linear(up, ln, LW("mlp.up_proj.weight"), NN, F, C);
		ref_adapter(r, lo, l, LT_LORA_GATE, 2, gate, ln, C, F);
		ref_adapter(r, lo, l, LT_LORA_UP, 2, up, ln, C, F);
		for (int i = 0; i < NN * F; i++)
			g[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
		ref_linear(tmp, g, LW("mlp.down_proj.weight"), NN, C, F);
		ref_adapter(r, lo, l, LT_LORA_DOWN, 3, tmp, g, F, C);
		for (int i = 0; i < NN * C; i++)
			x[i] += tmp[i];
#undef LW
	}
	ref_rmsnorm(ln, x, W("model.norm.weight"), NN, C, c->norm_eps);
	ref_linear(logits, ln, c->tied ? emb : W("lm_head.weight"), NN, V, C);
	double loss = 0;
	for (int n = 0; n < NN; n++) {
		double mx = -1e300, sum = 0;
		for (int j = 0; j < V; j++)
			mx = logits[n * V + j] > mx ? logits[n * V + j] : mx;
		for (int j = 0; j < V; j++)
			sum += exp(logits[n * V + j] - mx);
		loss += log(sum) + mx - logits[n * V + tgt[n]];
	}
	if (logits_out)
		memcpy(logits_out, logits, (size_t)NN * V * sizeof *logits);
	return loss;
}

#undef W

/* n elements of an f32, bf16 or block buffer as doubles, into out. */
static void read_doubles_into(lt_backend *be, double *out, lt_ref r, size_t n)
{
	float *f = malloc(n * sizeof *f + 4), *q = malloc(n * sizeof *q + 4);
	enum lt_dtype type = lt_buf_type(r.buf);
	be->ops->read(be, f, r, n);
	be->ops->sync(be);
	if (lt_dtype_is_block(type)) {
		lt_dtype_dequantize(type, f, q, n);
		memcpy(f, q, n * sizeof *f);
	}
	uint16_t *h = (uint16_t *)f;
	for (size_t i = 0; i < n; i++)
		out[i] = type == LT_BF16 ? lt_bf16_to_f32(h[i]) : f[i];
	free(f);
	free(q);
}

static double *read_doubles(lt_backend *be, lt_ref r, size_t n)
{
	double *out = malloc(n * sizeof *out);
	read_doubles_into(be, out, r, n);
	return out;
}

static size_t frozen_numel(const lt_model *m)
{
	size_t n = 0;
	for (int i = 0; i < lt_model_num_frozen(m); i++)
		n += lt_model_frozen(m, i)->numel;
	return n;
}

/* The frozen base as doubles, its tensors one after another (dequantized
 * where the model holds blocks). */
static double *read_base(lt_backend *be, const lt_model *m)
{
	double *out = malloc(frozen_numel(m) * sizeof *out), *at = out;
	for (int i = 0; i < lt_model_num_frozen(m); i++) {
		const struct lt_tensor *t = lt_model_frozen(m, i);
		read_doubles_into(be, at, lt_model_frozen_ref(m, t), t->numel);
		at += t->numel;
	}
	return out;
}

static lt_model *make_model(lt_backend *be, const struct lt_model_config *c,
			    const struct lt_lora *lo, enum lt_precision p, uint64_t seed)
{
	lt_model *m = NULL;
	if (lt_model_new(be, c, &m) != LT_OK || lt_model_set_lora(m, lo) != LT_OK ||
	    lt_model_set_precision(m, p) != LT_OK || lt_model_init(m, seed) != LT_OK ||
	    lt_model_plan(m, NB, NT) != LT_OK) {
		tap_diag("model: %s", lt_errmsg());
		lt_model_free(m);
		return NULL;
	}
	/* B starts at zero: give it values so that gradients reach A */
	size_t n = lt_model_num_params(m);
	float *host = malloc(n * sizeof *host);
	be->ops->read(be, host, lt_model_params(m), n);
	for (int i = 0; i < lt_model_num_tensors(m); i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		if (strstr(t->name, "lora_B"))
			lt_rng_fill_normal(host + t->off, t->numel, 0.3f, seed, 777 + (uint64_t)i);
	}
	be->ops->write(be, lt_model_params(m), host, n);
	be->ops->sync(be);
	free(host);
	return m;
}

static void draw_tokens(const struct lt_model_config *c, int32_t *tok, int32_t *tgt)
{
	struct lt_rng r;
	lt_rng_seed(&r, 5, 1);
	for (int i = 0; i < NN; i++) {
		tok[i] = (int32_t)lt_rng_below(&r, (uint64_t)c->vocab_size);
		tgt[i] = (int32_t)lt_rng_below(&r, (uint64_t)c->vocab_size);
	}
}

/* Forward (and backward) of the model and the reference: the loss, the
 * logits and the adapters' gradients against the reference's, and a few
 * of those against central differences of the reference. */
static void check_against_shape(lt_backend *be, struct lt_model_config c, enum lt_precision p,
				float dropout, unsigned targets, enum lt_lora_base base)
{
	int tied = c.tied;
	struct lt_lora lo = { .rank = 3, .alpha = 6.0f, .dropout = dropout, .targets = targets,
			      .base = base };
	char what[32];
	snprintf(what, sizeof what, "%s%s%s%s", p == LT_PRECISION_BF16 ? "bf16" : "fp32",
		 base ? " base " : "", base ? lt_dtype_name(lt_lora_base_type(base, p)) : "",
		 c.head_dim ? " head_dim" : "");
	lt_model *m = make_model(be, &c, &lo, p, 11);
	if (!tap_ok(m != NULL, "%s model with adapters (tied %d, dropout %.2f)", what, tied, dropout))
		return;
	int32_t tok[NN], tgt[NN];
	draw_tokens(&c, tok, tgt);
	size_t P = lt_model_num_params(m);
	struct ref r = { .c = &c, .m = m, .p = dropout, .key = 99 };
	r.base = read_base(be, m);
	r.ad = read_doubles(be, lt_model_params(m), P);
	if (p == LT_PRECISION_BF16)  /* the model computes with the adapters rounded */
		for (size_t i = 0; i < P; i++)
			r.ad[i] = lt_bf16_to_f32(lt_bf16_from_f32((float)r.ad[i]));

	double loss, want_logits[NN * 64];
	long count;
	lt_model_zero_grads(m);
	lt_model_set_dropout_key(m, r.key);
	enum lt_status st = lt_model_forward(m, tok, tgt, 1.0f, &loss, &count);
	if (st == LT_OK)
		st = lt_model_backward(m);
	double want = ref_loss(&r, &lo, tok, tgt, want_logits);
	double *grad = read_doubles(be, lt_model_grads(m), P);
	double tol_loss = p == LT_PRECISION_BF16 ? 3e-2 : 1e-5;
	tap_ok(st == LT_OK && fabs(loss - want) <= tol_loss * fabs(want),
	       "%s tied %d dropout %.2f targets %#x: loss %.8f, float64 reference %.8f", what, tied,
	       dropout, targets, loss, want);

	/* gradients: the reference's by central differences, every element */
	double *fd = malloc(P * sizeof *fd);
	for (size_t i = 0; i < P; i++) {
		double keep = r.ad[i], h = 1e-5;
		r.ad[i] = keep + h;
		double up = ref_loss(&r, &lo, tok, tgt, NULL);
		r.ad[i] = keep - h;
		double down = ref_loss(&r, &lo, tok, tgt, NULL);
		r.ad[i] = keep;
		fd[i] = (up - down) / (2 * h);
	}
	double rel = tap_rel_l2_d(grad, fd, (long)P);
	/* bf16: every activation on the way is rounded to 8 bits (2^-8 each), two
	 * layers of them, and the gradients are small against their roundings */
	double tol = p == LT_PRECISION_BF16 ? 0.1 : 1e-4;
	tap_ok(rel <= tol, "%s tied %d dropout %.2f: adapter gradients (%zu) against central "
	       "differences of the float64 reference: relative L2 error %.2e (<= %.0e)",
	       what, tied, dropout, P, rel, tol);
	free(fd);
	free(grad);
	free(r.base);
	free(r.ad);
	lt_model_free(m);
}

static void check_against_base(lt_backend *be, int tied, enum lt_precision p, float dropout,
			       unsigned targets, enum lt_lora_base base)
{
	struct lt_model_config c = base == LT_LORA_BASE_AUTO ? small : blocks;
	c.tied = tied;
	check_against_shape(be, c, p, dropout, targets, base);
}

static void check_against_reference(lt_backend *be, int tied, enum lt_precision p, float dropout,
				    unsigned targets)
{
	check_against_base(be, tied, p, dropout, targets, LT_LORA_BASE_AUTO);
}

/* A model whose base is held in GGUF blocks computes the logits of the
 * same model holding the dequantized base in the activation type, with
 * the same adapters. */
static void check_dequantized_twin(lt_backend *be, enum lt_lora_base base, enum lt_precision p)
{
	struct lt_lora lo = { .rank = 3, .alpha = 6.0f, .targets = 0x7f, .base = base }, twin = lo;
	twin.base = LT_LORA_BASE_AUTO;
	lt_model *q = make_model(be, &blocks, &lo, p, 31), *f = make_model(be, &blocks, &twin, p, 32);
	enum lt_status st = q && f ? LT_OK : LT_ERR_ARG;
	for (int i = 0; st == LT_OK && i < lt_model_num_frozen(q); i++) {
		const struct lt_tensor *t = lt_model_frozen(q, i);
		double *d = read_doubles(be, lt_model_frozen_ref(q, t), t->numel);
		float *x = malloc(t->numel * sizeof *x);
		for (size_t j = 0; j < t->numel; j++)
			x[j] = (float)d[j];
		st = lt_model_write_weight(f, lt_model_find_frozen(f, t->name), x);
		free(x);
		free(d);
	}
	size_t P = q ? lt_model_num_params(q) : 0;
	float *ad = malloc(P * sizeof *ad + 4);
	if (st == LT_OK) {
		be->ops->read(be, ad, lt_model_params(q), P);
		be->ops->write(be, lt_model_params(f), ad, P);
	}
	int32_t tok[NN], tgt[NN];
	draw_tokens(&blocks, tok, tgt);
	static float lq[NN * 32], lf[NN * 32];
	double loss;
	long count;
	if (st == LT_OK && (st = lt_model_forward(q, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
		st = lt_model_read_logits(q, 0, NN, lq);
	if (st == LT_OK && (st = lt_model_forward(f, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
		st = lt_model_read_logits(f, 0, NN, lf);
	double worst = 0, scale = 0;
	for (int i = 0; i < NN * blocks.vocab_size; i++) {
		worst = tap_worst(worst, fabs((double)lq[i] - lf[i]));
		scale = tap_worst(scale, fabs((double)lf[i]));
	}
	/* the same operands in the same type: only the order of the sums differs */
	double tol = (p == LT_PRECISION_BF16 ? 1e-2 : 1e-6) * (scale > 1 ? scale : 1);
	tap_ok(st == LT_OK && worst <= tol,
	       "%s base %s: logits equal those of the model holding the dequantized base in %s: "
	       "worst %.2e (<= %.0e), logits up to %.2f", p == LT_PRECISION_BF16 ? "bf16" : "fp32",
	       lt_dtype_name(lt_lora_base_type(base, p)), p == LT_PRECISION_BF16 ? "bf16" : "f32",
	       worst, tol, scale);
	free(ad);
	lt_model_free(q);
	lt_model_free(f);
}

/* AdamW steps move the adapters and leave the base bitwise as it was. */
static void check_base_frozen(lt_backend *be, enum lt_precision p)
{
	struct lt_lora lo = { .rank = 2, .alpha = 4.0f, .dropout = 0.1f, .targets = 0x7f };
	lt_model *m = make_model(be, &small, &lo, p, 3);
	lt_optim *o = NULL;
	if (!m || lt_optim_new(m, 0, lt_model_num_params(m), &o) != LT_OK) {
		tap_ok(0, "model and optimizer: %s", lt_errmsg());
		lt_model_free(m);
		return;
	}
	size_t nb = frozen_numel(m), P = lt_model_num_params(m);
	double *before = read_base(be, m);
	double *ad0 = read_doubles(be, lt_model_params(m), P);
	struct lt_optim_config oc = { .lr = 1e-2f, .min_lr = 1e-2f, .warmup_steps = 0,
				      .total_steps = 10, .schedule = LT_SCHED_CONSTANT,
				      .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
				      .weight_decay = 0.1f, .grad_clip = 1.0f };
	int32_t tok[NN], tgt[NN];
	draw_tokens(&small, tok, tgt);
	double first = 0, loss = 0, norm;
	long count;
	enum lt_status st = LT_OK;
	for (int s = 1; s <= 10 && st == LT_OK; s++) {
		lt_model_zero_grads(m);
		lt_model_set_dropout_key(m, (uint64_t)s);
		st = lt_model_forward(m, tok, tgt, 1.0f / NN, &loss, &count);
		if (st == LT_OK)
			st = lt_model_backward(m);
		if (st == LT_OK)
			st = lt_optim_step(o, &oc, s, &norm);
		if (s == 1)
			first = loss;
	}
	double *after = read_base(be, m);
	double *ad1 = read_doubles(be, lt_model_params(m), P);
	tap_ok(st == LT_OK && !memcmp(before, after, nb * sizeof *after),
	       "%s: 10 AdamW steps leave the %zu frozen base weights bitwise as they were",
	       p == LT_PRECISION_BF16 ? "bf16" : "fp32", nb);
	tap_ok(memcmp(ad0, ad1, P * sizeof *ad1) && loss < first,
	       "... and move the adapters: loss %.4f -> %.4f", first / NN, loss / NN);
	free(before);
	free(after);
	free(ad0);
	free(ad1);
	lt_optim_free(o);
	lt_model_free(m);
}

/* The merged model (no adapters) gives the adapted model's logits. */
static void check_merge(lt_backend *be, int tied, int head_dim)
{
	struct lt_model_config c = small;
	c.tied = tied;
	c.head_dim = head_dim;
	struct lt_lora lo = { .rank = 4, .alpha = 8.0f, .targets = 0x7f }, none = { 0 };
	lt_model *m = make_model(be, &c, &lo, LT_PRECISION_FP32, 21);
	lt_model *plain = make_model(be, &c, &none, LT_PRECISION_FP32, 1);
	int32_t tok[NN], tgt[NN];
	draw_tokens(&c, tok, tgt);
	static float adapted[NN * 64], merged[NN * 64], again[NN * 64];
	double loss;
	long count;
	enum lt_status st = m && plain ? LT_OK : LT_ERR_ARG;
	if (st == LT_OK && (st = lt_model_forward(m, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
		st = lt_model_read_logits(m, 0, NN, adapted);
	if (st == LT_OK)
		st = lt_model_merge_lora(m);
	if (st == LT_OK && (st = lt_model_forward(m, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
		st = lt_model_read_logits(m, 0, NN, again);
	/* the merged base into a model without adapters */
	for (int i = 0; st == LT_OK && i < lt_model_num_frozen(m); i++) {
		const struct lt_tensor *t = lt_model_frozen(m, i);
		float *host = malloc(t->numel * sizeof *host);
		be->ops->read(be, host, lt_model_frozen_ref(m, t), t->numel);
		be->ops->write(be, lt_ref_at(lt_model_params(plain), lt_model_find(plain, t->name)->off),
			       host, t->numel);
		free(host);
	}
	if (st == LT_OK) {
		if ((st = lt_model_forward(plain, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
			st = lt_model_read_logits(plain, 0, NN, merged);
	}
	double worst = 0, worst2 = 0, scale = 0;
	for (int i = 0; i < NN * c.vocab_size; i++) {
		worst = tap_worst(worst, fabs((double)merged[i] - adapted[i]));
		worst2 = tap_worst(worst2, fabs((double)again[i] - adapted[i]));
		scale = tap_worst(scale, fabs((double)adapted[i]));
	}
	tap_ok(st == LT_OK && worst <= 1e-5 * (scale > 1 ? scale : 1) && worst2 <= 1e-5 * scale,
	       "tied %d head_dim %d: merged model's logits equal the adapted model's: worst %.2e "
	       "(without adapters), %.2e (B zeroed), logits up to %.2f", tied, head_dim, worst, worst2,
	       scale);
	lt_model_free(m);
	lt_model_free(plain);
}

/* The adapters' gradients of one backward with train.recompute r. */
static double *recompute_grads(lt_backend *be, enum lt_recompute r, size_t *P)
{
	struct lt_lora lo = { .rank = 2, .alpha = 2.0f, .dropout = 0.3f, .targets = 0x7f };
	lt_model *m = NULL;
	int32_t tok[NN], tgt[NN];
	double loss, *g = NULL;
	long count;
	draw_tokens(&small, tok, tgt);
	if (lt_model_new(be, &small, &m) == LT_OK && lt_model_set_lora(m, &lo) == LT_OK &&
	    (lt_model_set_recompute(m, r), lt_model_init(m, 4)) == LT_OK &&
	    lt_model_plan(m, NB, NT) == LT_OK) {
		lt_model_set_dropout_key(m, 5);
		lt_model_zero_grads(m);
		if (lt_model_forward(m, tok, tgt, 1.0f, &loss, &count) == LT_OK &&
		    lt_model_backward(m) == LT_OK) {
			*P = lt_model_num_params(m);
			g = read_doubles(be, lt_model_grads(m), *P);
		}
	}
	lt_model_free(m);
	return g;
}

/* train.recompute = block gives bitwise the same adapter gradients, the
 * dropout masks drawn again alike. */
static void check_recompute(lt_backend *be)
{
	size_t P = 0, Q = 0;
	double *a = recompute_grads(be, LT_RECOMPUTE_NONE, &P);
	double *b = recompute_grads(be, LT_RECOMPUTE_BLOCK, &Q);
	int nonzero = 0;
	for (size_t i = 0; a && i < P; i++)
		nonzero += a[i] != 0;
	tap_ok(a && b && P == Q && nonzero > 0 && !memcmp(a, b, P * sizeof *a),
	       "recompute block: the %zu adapter gradients (%d non-zero) bitwise as without, with "
	       "dropout", P, nonzero);
	free(a);
	free(b);
}

/* What the backend allocated for two LoRA steps against the estimate of
 * the parameters (the frozen base in its type), gradients, moments and
 * activations. */
static void check_estimate(enum lt_precision p, enum lt_recompute rc, enum lt_lora_base base)
{
	struct lt_model_config c = { .vocab_size = 320, .dim = 64, .n_layers = 3, .n_heads = 4,
				     .n_kv_heads = 2, .ffn_dim = 160, .max_seq = 32,
				     .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0 };
	/* rank 1: the adapters' state is small beside the base, so a base held
	 * in f32 for a while (4 bytes where bf16 takes 2) would show in the peak */
	struct lt_lora lo = { .rank = 1, .alpha = 16.0f, .dropout = 0.1f, .targets = 0x7f,
			      .base = base };
	struct lt_optim_config oc = { .lr = 1e-3f, .min_lr = 1e-3f, .total_steps = 2,
				      .schedule = LT_SCHED_CONSTANT, .beta1 = 0.9f, .beta2 = 0.95f,
				      .eps = 1e-8f, .grad_clip = 1.0f };
	enum { B = 4, T = 32 };
	lt_backend *be = NULL;
	lt_model *m = NULL;
	lt_optim *o = NULL;
	int32_t tok[B * T];
	for (int i = 0; i < B * T; i++)
		tok[i] = (i * 37) % c.vocab_size;
	enum lt_status st = lt_backend_new("cpu", 2, &be);
	if (st == LT_OK && !be->ops->mem_usage)
		st = LT_ERR_NOTFOUND;
	if (st == LT_OK && (st = lt_model_new_adapted(be, &c, &lo, p, &m)) == LT_OK) {
		lt_model_set_recompute(m, rc);
		if ((st = lt_model_init(m, 1)) == LT_OK && (st = lt_model_plan(m, B, T)) == LT_OK)
			st = lt_optim_new(m, 0, lt_model_num_params(m), &o);
	}
	for (int s = 1; s <= 2 && st == LT_OK; s++) {
		double loss, norm;
		long n;
		lt_model_zero_grads(m);
		st = lt_model_forward(m, tok, tok, 1.0f / (B * T), &loss, &n);
		if (st == LT_OK && (st = lt_model_backward(m)) == LT_OK)
			st = lt_optim_step(o, &oc, s, &norm);
	}
	size_t now = 0, peak = 0;
	if (st == LT_OK)
		be->ops->mem_usage(be, &now, &peak);
	struct lt_mem_estimate e;
	lt_model_estimate_memory_lora(&c, B, T, 2, rc, p, &lo, &e);
	size_t want = e.params + e.grads + e.optimizer + e.activations;
	double ratio = peak ? (double)want / (double)peak : 0;
	tap_ok(st == LT_OK && ratio > 0.97 && ratio < 1.03,
	       "%s%s, base %s: the estimate of parameters, gradients, moments and activations %zu "
	       "bytes, the backend's peak %zu (ratio %.3f)", p == LT_PRECISION_BF16 ? "bf16" : "fp32",
	       rc ? ", recompute block" : "", lt_dtype_name(lt_lora_base_type(base, p)), want, peak,
	       ratio);
	lt_optim_free(o);
	lt_model_free(m);
	lt_backend_free(be);
}

/* KV-cached decoding adds the adapters as the forward does: the logits of
 * each sequence's last token agree. */
static void check_decode(lt_backend *be, int head_dim)
{
	struct lt_model_config c = small;
	c.head_dim = head_dim;
	struct lt_lora lo = { .rank = 2, .alpha = 2.0f, .dropout = 0.5f, .targets = 0x7f };
	lt_model *m = make_model(be, &c, &lo, LT_PRECISION_FP32, 8);
	int32_t tok[NN], tgt[NN];
	draw_tokens(&c, tok, tgt);
	static float full[NN * 64], last[NB * 64];
	double loss;
	long count;
	enum lt_status st = m ? LT_OK : LT_ERR_ARG;
	if (st == LT_OK && (st = lt_model_forward(m, tok, tgt, 0.0f, &loss, &count)) == LT_OK)
		st = lt_model_read_logits(m, 0, NN, full);
	if (st == LT_OK && (st = lt_model_decode_begin(m, NB, NT)) == LT_OK)
		st = lt_model_decode(m, tok, NT, 0, last);
	double worst = 0;
	for (int b = 0; b < NB; b++)
		for (int v = 0; v < c.vocab_size; v++)
			worst = tap_worst(worst, fabs((double)last[b * c.vocab_size + v] -
						      full[(b * NT + NT - 1) * c.vocab_size + v]));
	tap_ok(st == LT_OK && worst <= 1e-5, "decoding with adapters gives the forward's logits "
	       "(no dropout outside training; head_dim %d): worst difference %.2e", head_dim, worst);
	lt_model_free(m);
}

/* Trainable parameters: sum over targets of rank * (in + out), per layer;
 * tensor names in PEFT's form. */
static void check_count(lt_backend *be)
{
	struct lt_lora lo = { .rank = 3, .alpha = 3.0f, .targets = (1u << LT_LORA_Q) |
								  (1u << LT_LORA_V) |
								  (1u << LT_LORA_DOWN) };
	lt_model *m = make_model(be, &small, &lo, LT_PRECISION_FP32, 1);
	int C = small.dim, KD = small.n_kv_heads * (small.dim / small.n_heads), F = small.ffn_dim;
	size_t want = (size_t)small.n_layers * 3 * ((C + C) + (C + KD) + (F + C));
	size_t got = m ? lt_model_num_params(m) : 0;
	tap_ok(got == want && got == lt_lora_params(&small, &lo),
	       "q, v, down at rank 3: %zu trainable parameters, sum of r (in + out) per layer %zu",
	       got, want);
	const struct lt_tensor *t = m ? lt_model_find(m, "model.layers.1.self_attn.v_proj.lora_B.weight")
				      : NULL;
	tap_ok(t && t->shape[0] == KD && t->shape[1] == 3 && !lt_model_find(m, "model.norm.weight") &&
	       lt_model_find_frozen(m, "model.norm.weight") && lt_model_num_tensors(m) == 12,
	       "adapters are named as PEFT's (lora_A / lora_B); the base is frozen apart");
	lt_model_free(m);
}

int main(void)
{
	lt_backend *be = NULL;
	tap_plan(89);
	if (lt_backend_new("cpu", 2, &be) != LT_OK) {
		tap_skip("no cpu backend: %s", lt_errmsg());
		return tap_done();
	}
	check_count(be);
	unsigned all = (1u << LT_LORA_TARGETS) - 1;
	for (int tied = 0; tied < 2; tied++) {
		check_against_reference(be, tied, LT_PRECISION_FP32, 0.0f, all);
		check_against_reference(be, tied, LT_PRECISION_FP32, 0.25f, all);
	}
	for (int t = 0; t < LT_LORA_TARGETS; t++)
		check_against_reference(be, 0, LT_PRECISION_FP32, 0.0f, 1u << t);
	check_against_reference(be, 0, LT_PRECISION_BF16, 0.0f, all);
	check_against_reference(be, 1, LT_PRECISION_BF16, 0.25f, all);
	/* a base of another type, GGUF blocks among them (train.lora_base) */
	check_against_base(be, 0, LT_PRECISION_FP32, 0.25f, all, LT_LORA_BASE_Q8_0);
	check_against_base(be, 1, LT_PRECISION_FP32, 0.0f, all, LT_LORA_BASE_Q4_0);
	check_against_base(be, 0, LT_PRECISION_BF16, 0.0f, all, LT_LORA_BASE_Q4_0);
	check_against_base(be, 0, LT_PRECISION_FP32, 0.0f, all, LT_LORA_BASE_BF16);
	check_against_base(be, 1, LT_PRECISION_BF16, 0.0f, all, LT_LORA_BASE_F32);
	check_dequantized_twin(be, LT_LORA_BASE_Q8_0, LT_PRECISION_FP32);
	check_dequantized_twin(be, LT_LORA_BASE_Q4_0, LT_PRECISION_FP32);
	check_dequantized_twin(be, LT_LORA_BASE_Q4_0, LT_PRECISION_BF16);
	check_base_frozen(be, LT_PRECISION_FP32);
	check_base_frozen(be, LT_PRECISION_BF16);
	check_merge(be, 0, 0);
	check_merge(be, 1, 0);
	/* heads wider than dim / n_heads: 4 x 6 = 24 against a width of 16 */
	struct lt_model_config wide = small;
	wide.head_dim = 6;
	check_against_shape(be, wide, LT_PRECISION_FP32, 0.25f, all, LT_LORA_BASE_AUTO);
	check_merge(be, 0, 6);
	check_decode(be, 0);
	check_decode(be, 6);
	check_recompute(be);
	lt_backend_free(be);
	check_estimate(LT_PRECISION_FP32, LT_RECOMPUTE_NONE, LT_LORA_BASE_AUTO);
	check_estimate(LT_PRECISION_BF16, LT_RECOMPUTE_BLOCK, LT_LORA_BASE_AUTO);
	check_estimate(LT_PRECISION_BF16, LT_RECOMPUTE_BLOCK, LT_LORA_BASE_Q4_0);
	check_estimate(LT_PRECISION_FP32, LT_RECOMPUTE_NONE, LT_LORA_BASE_Q8_0);

	/* the same on the OpenCL backend (PoCL on a CPU in CI): its GEMMs over
	 * column slices, and the dropout's round trip through the host */
	if (lt_backend_new("opencl", 2, &be) != LT_OK) {
		char why[300];
		snprintf(why, sizeof why, "%s", lt_errmsg());
		for (int i = 0; i < 13; i++)
			tap_skip("no OpenCL backend: %s", why);
		return tap_done();
	}
	tap_diag("the OpenCL backend");
	check_against_reference(be, 0, LT_PRECISION_FP32, 0.25f, all);
	check_against_reference(be, 1, LT_PRECISION_BF16, 0.0f, all);
	check_against_base(be, 0, LT_PRECISION_FP32, 0.25f, all, LT_LORA_BASE_Q4_0);
	check_against_base(be, 1, LT_PRECISION_BF16, 0.0f, all, LT_LORA_BASE_Q8_0);
	check_dequantized_twin(be, LT_LORA_BASE_Q8_0, LT_PRECISION_FP32);
	lt_backend_free(be);
	return tap_done();
}
