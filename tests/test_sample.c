/* Generation tests: KV-cached decoding against the full forward pass, the
 * token choice (temperature, top-k, top-p) against its distribution, and
 * lt_sample_generate's limits and stop token. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "rng.h"
#include "text/sample.h"
#include "tap.h"

#define DECODE_TOL 1e-4   /* decode logits against the full forward, relative L2 per row */
#define CHI2_LIMIT 40.0   /* chi-square bound; p < 1e-5 at 9 degrees of freedom */
#define DRAWS 200000

/* Small, with grouped-query attention (6 query heads over 2 kv heads). */
static const struct lt_model_config cfg = {
	.vocab_size = 37, .dim = 24, .n_layers = 2, .n_heads = 6, .n_kv_heads = 2,
	.ffn_dim = 40, .max_seq = 16, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};
enum { B_ = 2, L_ = 16 };

static _Noreturn void bail_out(const char *what)
{
	printf("Bail out! %s: %s: %s\n", what, "failed", lt_errmsg());
	exit(1);
}

static void *allocate(size_t bytes)
{
	void *p = calloc(1, bytes ? bytes : 1);
	if (!p)
		bail_out("calloc");
	return p;
}

/* Weights large enough that logits spread out (lt_model_init's 0.02 would
 * leave them nearly uniform): uniform in [-0.4, 0.4], norms near 1. */
static void randomise_weights(lt_model *m, uint64_t seed)
{
	size_t n = lt_model_num_params(m);
	float *w = allocate(n * sizeof *w);
	struct lt_rng r;
	lt_rng_seed(&r, seed, 0);
	for (int i = 0; i < lt_model_num_tensors(m); i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		for (size_t j = 0; j < t->numel; j++)
			w[t->off + j] = t->ndim == 1 ? (float)(0.8 + 0.4 * lt_rng_uniform(&r))
						     : (float)(0.8 * lt_rng_uniform(&r) - 0.4);
	}
	lt_backend *be = lt_model_backend(m);
	be->ops->write(be, lt_model_params(m), w, n);
	free(w);
}

/* The full forward's logits[B*L, V] of tokens[B*L] (the training path). */
static float *full_forward_logits(lt_model *m, const int32_t *tokens)
{
	int N = B_ * L_, V = cfg.vocab_size;
	int32_t targets[B_ * L_];
	double loss;
	long count;
	for (int i = 0; i < N; i++)
		targets[i] = -1;
	if (lt_model_plan(m, B_, L_) != LT_OK ||
	    lt_model_forward(m, tokens, targets, 0.0f, &loss, &count) != LT_OK)
		bail_out("full forward");
	float *logits = allocate((size_t)N * V * sizeof *logits);
	if (lt_model_read_logits(m, 0, N, logits) != LT_OK)
		bail_out("reading the full forward's logits");
	return logits;
}

/* Relative L2 distance of one row of V logits from the reference row. */
static double row_error(const float *got, const float *want, int V)
{
	double d = 0, w = 0;
	for (int v = 0; v < V; v++) {
		d += ((double)got[v] - want[v]) * ((double)got[v] - want[v]);
		w += (double)want[v] * want[v];
	}
	return sqrt(d / (w > 1e-300 ? w : 1e-300));
}

/* Gathers tokens[b, pos0 .. pos0+T) of both rows into chunk[B*T]. */
static void take_chunk(int32_t *chunk, const int32_t *tokens, int pos0, int T)
{
	for (int b = 0; b < B_; b++)
		for (int t = 0; t < T; t++)
			chunk[b * T + t] = tokens[b * L_ + pos0 + t];
}

/* Decodes the whole sequence in chunks of the given sizes (summing to L)
 * and returns the largest row error of the logits after each chunk against
 * the full forward's at that position, over both rows. */
static double decode_in_chunks(lt_model *m, const int32_t *tokens, const float *want,
			       const int *sizes, int n_sizes)
{
	int V = cfg.vocab_size, pos = 0;
	int32_t chunk[B_ * L_];
	float logits[B_ * 64];
	double worst = 0;
	if (lt_model_decode_begin(m, B_, L_) != LT_OK)
		bail_out("decode_begin");
	for (int i = 0; i < n_sizes; i++) {
		take_chunk(chunk, tokens, pos, sizes[i]);
		if (lt_model_decode(m, chunk, sizes[i], pos, logits) != LT_OK)
			bail_out("decode");
		pos += sizes[i];
		for (int b = 0; b < B_; b++) {
			double e = row_error(logits + b * V, want + ((size_t)b * L_ + pos - 1) * V, V);
			worst = tap_worst(worst, e);
		}
	}
	return worst;
}

static void test_decode(lt_model *m)
{
	int V = cfg.vocab_size;
	int32_t tokens[B_ * L_];
	struct lt_rng r;
	lt_rng_seed(&r, 7, 0);
	for (int i = 0; i < B_ * L_; i++)
		tokens[i] = (int32_t)lt_rng_below(&r, (uint64_t)V);
	float *want = full_forward_logits(m, tokens);

	/* prefill of the first p tokens in one call, for every p */
	double worst = 0;
	for (int p = 1; p <= L_; p++) {
		int sizes[1] = { p };
		double e = decode_in_chunks(m, tokens, want, sizes, 1);
		worst = tap_worst(worst, e);
	}
	tap_ok(worst <= DECODE_TOL, "decode: prefill of p tokens in one call, every p in 1..%d, B=%d, "
	       "GQA 6/2 heads: logits of position p-1 match the full forward: worst rel L2 %.3g <= %.0e",
	       L_, B_, worst, DECODE_TOL);

	int ones[L_];
	for (int i = 0; i < L_; i++)
		ones[i] = 1;
	worst = decode_in_chunks(m, tokens, want, ones, L_);
	tap_ok(worst <= DECODE_TOL, "decode: one token per call over %d positions matches the full "
	       "forward at every position: worst rel L2 %.3g", L_, worst);

	int mixed[] = { 5, 1, 3, 1, 1, 4, 1 };
	worst = decode_in_chunks(m, tokens, want, mixed, (int)(sizeof mixed / sizeof mixed[0]));
	tap_ok(worst <= DECODE_TOL, "decode: prefill of 5, then chunks of 1, 3, 1, 1, 4, 1 match the "
	       "full forward after each chunk: worst rel L2 %.3g", worst);

	/* Row 0's logits do not depend on row 1's tokens. */
	float a[B_ * 64], b[B_ * 64];
	int32_t other[B_ * L_];
	memcpy(other, tokens, sizeof other);
	for (int t = 0; t < L_; t++)
		other[L_ + t] = (tokens[L_ + t] + 1 + t) % V;
	int ok = lt_model_decode_begin(m, B_, L_) == LT_OK;
	int32_t chunk[B_ * L_];
	take_chunk(chunk, tokens, 0, 9);
	ok = ok && lt_model_decode(m, chunk, 9, 0, a) == LT_OK;
	take_chunk(chunk, other, 0, 9);
	ok = ok && lt_model_decode(m, chunk, 9, 0, b) == LT_OK;
	tap_ok(ok && !memcmp(a, b, (size_t)V * sizeof *a) && memcmp(a + V, b + V, (size_t)V * sizeof *a),
	       "decode: B=2 rows are independent (new tokens in row 1 change its logits, row 0's "
	       "stay bitwise the same)");

	/* Out of range calls are refused with the reason. */
	lt_errmsg_clear();
	enum lt_status st = lt_model_decode(m, chunk, 2, L_ - 1, a);
	tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "2 tokens at position 15") &&
	       strstr(lt_errmsg(), "0..15"), "decode past the cache is LT_ERR_ARG naming the "
	       "position and the cache (%s)", lt_errmsg());
	chunk[1] = V;
	lt_errmsg_clear();
	st = lt_model_decode(m, chunk, 1, 0, a);
	tap_ok(st == LT_ERR_ARG && strstr(lt_errmsg(), "token 37") &&
	       strstr(lt_errmsg(), "sequence 1") && strstr(lt_errmsg(), "[0, 37)"),
	       "decode of a token outside the vocabulary is LT_ERR_ARG naming it (%s)", lt_errmsg());
	lt_model_decode_end(m);

	/* Decoding leaves the training plan and its results as they were. */
	float *again = full_forward_logits(m, tokens);
	tap_ok(!memcmp(again, want, (size_t)B_ * L_ * V * sizeof *want),
	       "the full forward after decoding gives bitwise the same logits as before");
	free(again);
	free(want);
}

/* ------------------------------------------------------------------ */
/* The token choice. */

static void random_logits(struct lt_rng *r, float *x, int V, double spread)
{
	for (int i = 0; i < V; i++)
		x[i] = (float)(spread * (2 * lt_rng_uniform(r) - 1));
}

/* softmax(x / temperature) in double. */
static void softmax(const float *x, int V, double temperature, double *p)
{
	double mx = -INFINITY, sum = 0;
	for (int i = 0; i < V; i++)
		mx = fmax(mx, x[i] / temperature);
	for (int i = 0; i < V; i++)
		sum += (p[i] = exp(x[i] / temperature - mx));
	for (int i = 0; i < V; i++)
		p[i] /= sum;
}

/* Pearson's chi-square of counts[V] from DRAWS draws against p[V], over the
 * tokens with p > 0; a count where p == 0 makes it infinite. */
static double chi_square(const long *counts, const double *p, int V)
{
	double x = 0;
	for (int i = 0; i < V; i++) {
		if (p[i] == 0) {
			if (counts[i])
				return INFINITY;
			continue;
		}
		double e = p[i] * DRAWS;
		x += (counts[i] - e) * (counts[i] - e) / e;
	}
	return x;
}

static void draw_counts(const float *logits, int V, const struct lt_sample_opts *o, uint64_t seed,
			long *counts)
{
	struct lt_rng r;
	void *scratch = allocate(lt_sample_scratch_bytes(V));
	lt_rng_seed(&r, seed, 0);
	memset(counts, 0, (size_t)V * sizeof *counts);
	for (int i = 0; i < DRAWS; i++) {
		int32_t t = lt_sample_pick(logits, V, o, &r, scratch);
		if (t < 0 || t >= V)
			bail_out("lt_sample_pick returned an id outside the vocabulary");
		counts[t]++;
	}
	free(scratch);
}

/* The ids of the n largest of x[V], largest first. */
static void ranked(const float *x, int V, int *ids)
{
	for (int i = 0; i < V; i++)
		ids[i] = i;
	for (int i = 0; i < V; i++)
		for (int j = i + 1; j < V; j++)
			if (x[ids[j]] > x[ids[i]]) {
				int t = ids[i];
				ids[i] = ids[j];
				ids[j] = t;
			}
}

static void test_pick(void)
{
	enum { V = 10, VK = 50, K = 5 };
	struct lt_rng r;
	float x[VK];
	double p[VK];
	long counts[VK];
	int ids[VK];
	lt_rng_seed(&r, 99, 0);
	void *scratch = allocate(lt_sample_scratch_bytes(VK));

	/* temperature 0: the first largest, whatever top-k/top-p say */
	int ok = 1;
	struct lt_sample_opts greedy = { .temperature = 0.0f, .top_k = 3, .top_p = 0.5f };
	for (int trial = 0; trial < 100; trial++) {
		random_logits(&r, x, VK, 3.0);
		ranked(x, VK, ids);
		ok &= lt_sample_pick(x, VK, &greedy, &r, scratch) == ids[0];
	}
	x[7] = x[31] = 100.0f;
	ok &= lt_sample_pick(x, VK, &greedy, &r, scratch) == 7;
	tap_ok(ok, "pick: temperature 0 gives the argmax (100 random rows, and the first of a tie)");

	/* top-k 1 at temperature 1: always the argmax */
	random_logits(&r, x, VK, 1.0);
	ranked(x, VK, ids);
	struct lt_sample_opts k1 = { .temperature = 1.0f, .top_k = 1, .top_p = 1.0f };
	ok = 1;
	for (int i = 0; i < 10000; i++)
		ok &= lt_sample_pick(x, VK, &k1, &r, scratch) == ids[0];
	tap_ok(ok, "pick: top-k 1 at temperature 1 gives the argmax in 10000 draws");

	/* top-k 5 of 50: the support is exactly the 5 largest, in softmax proportion */
	struct lt_sample_opts k5 = { .temperature = 1.0f, .top_k = K, .top_p = 1.0f };
	draw_counts(x, VK, &k5, 3, counts);
	softmax(x, VK, 1.0, p);
	double kept = 0;
	for (int i = 0; i < K; i++)
		kept += p[ids[i]];
	for (int i = 0; i < VK; i++)
		p[ids[i]] = i < K ? p[ids[i]] / kept : 0;
	double chi = chi_square(counts, p, VK);
	int seen = 1;
	for (int i = 0; i < K; i++)
		seen &= counts[ids[i]] > 0;
	tap_ok(seen && chi <= CHI2_LIMIT, "pick: top-k %d of %d draws only the %d largest, in their "
	       "renormalised softmax proportion (%d draws, chi-square %.1f <= %.0f)", K, VK, K, DRAWS,
	       chi, CHI2_LIMIT);

	/* top-p: probabilities 0.4, 0.25, 0.15, 0.1, ... ; top_p 0.7 keeps the
	 * three most likely (0.4 + 0.25 < 0.7 <= 0.8) */
	double probs[V] = { 0.05, 0.25, 0.02, 0.4, 0.1, 0.03, 0.15, 0, 0, 0 };
	for (int i = 0; i < V; i++)
		x[i] = probs[i] > 0 ? (float)log(probs[i]) : -30.0f;
	struct lt_sample_opts nucleus = { .temperature = 1.0f, .top_k = 0, .top_p = 0.7f };
	draw_counts(x, V, &nucleus, 4, counts);
	for (int i = 0; i < V; i++)
		p[i] = i == 3 ? 0.4 / 0.8 : i == 1 ? 0.25 / 0.8 : i == 6 ? 0.15 / 0.8 : 0;
	chi = chi_square(counts, p, V);
	tap_ok(chi <= CHI2_LIMIT && counts[3] && counts[1] && counts[6],
	       "pick: top-p 0.7 draws only the nucleus {0.4, 0.25, 0.15}, renormalised (chi-square "
	       "%.1f)", chi);

	/* temperature 1 and 0.5, all tokens: frequencies follow softmax(x / T) */
	random_logits(&r, x, V, 2.0);
	float temps[2] = { 1.0f, 0.5f };
	for (int i = 0; i < 2; i++) {
		struct lt_sample_opts all = { .temperature = temps[i], .top_k = 0, .top_p = 1.0f };
		draw_counts(x, V, &all, 5 + (uint64_t)i, counts);
		softmax(x, V, temps[i], p);
		chi = chi_square(counts, p, V);
		/* the same counts against the softmax at the other temperature */
		double wrong_p[V];
		softmax(x, V, temps[1 - i], wrong_p);
		double wrong = chi_square(counts, wrong_p, V);
		tap_ok(chi <= CHI2_LIMIT && wrong > 10 * CHI2_LIMIT,
		       "pick: temperature %.1f frequencies match softmax(logits / %.1f) over %d tokens "
		       "(%d draws, chi-square %.1f <= %.0f; against temperature %.1f: %.0f)", temps[i],
		       temps[i], V, DRAWS, chi, CHI2_LIMIT, temps[1 - i], wrong);
	}

	/* one seed, one sequence of draws; another seed, another */
	struct lt_sample_opts o = { .temperature = 1.0f, .top_k = 20, .top_p = 0.9f };
	struct lt_rng r1, r2, r3;
	lt_rng_seed(&r1, 42, 0);
	lt_rng_seed(&r2, 42, 0);
	lt_rng_seed(&r3, 43, 0);
	random_logits(&r, x, VK, 2.0);
	int same = 1, differ = 0;
	for (int i = 0; i < 1000; i++) {
		int32_t a = lt_sample_pick(x, VK, &o, &r1, scratch);
		same &= a == lt_sample_pick(x, VK, &o, &r2, scratch);
		differ |= a != lt_sample_pick(x, VK, &o, &r3, scratch);
	}
	tap_ok(same && differ, "pick: the same seed gives the same 1000 draws, another seed others");
	free(scratch);
}

/* ------------------------------------------------------------------ */
/* Generation. */

/* One turn of a session: its tokens equal lt_sample_generate's of the same
 * prompt on twin (a model of the same weights: the session holds m's
 * decoding buffers), and the cache gave the first `reused` of the prompt. */
static void check_turn(lt_model *m, lt_model *twin, struct lt_sample_session *s,
		       const int32_t *prompt, int n, int max_new, int reused, int32_t *out,
		       int *n_out, const char *what)
{
	struct lt_sample_opts greedy = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f };
	int32_t want[L_];
	int n_want = -1;
	enum lt_status st = lt_sample_continue(m, s, prompt, n, max_new, -1, &greedy, out, n_out);
	enum lt_status st2 = lt_sample_generate(twin, prompt, n, max_new, -1, &greedy, want, &n_want);
	tap_ok(st == LT_OK && st2 == LT_OK && *n_out == n_want &&
	       !memcmp(out, want, (size_t)n_want * sizeof *out) && s->reused == reused,
	       "session, %s: %d tokens as generate's after a prompt of %d, %d of it from the "
	       "cache (want %d)", what, *n_out, n, s->reused, reused);
}

/* Turns whose prompts extend the last one's run only their new tokens. */
static void test_session(lt_model *m, const int32_t *prompt)
{
	struct lt_sample_session s = { 0 };
	lt_model *twin = NULL;
	if (lt_model_new(lt_model_backend(m), &cfg, &twin) != LT_OK)
		bail_out("model");
	randomise_weights(twin, 11);
	int32_t p[L_], out[L_];
	int n1, n2, n;
	check_turn(m, twin, &s, prompt, 4, 3, 0, out, &n1, "the first turn");
	/* the conversation goes on: the answer (whose last token the cache lacks) and two more */
	memcpy(p, prompt, 4 * sizeof *p);
	memcpy(p + 4, out, (size_t)n1 * sizeof *p);
	p[4 + n1] = 7;
	p[5 + n1] = 8;
	check_turn(m, twin, &s, p, 6 + n1, 4, 4 + n1 - 1, out, &n2, "a turn that extends it");
	/* an earlier message changed: the cache serves up to there */
	p[2] = (p[2] + 1) % cfg.vocab_size;
	check_turn(m, twin, &s, p, 6 + n1, 4, 2, out, &n, "a turn that differs from its third token");
	/* more room than the cache has: it is made anew */
	check_turn(m, twin, &s, prompt, 10, 6, 0, out, &n, "a turn that needs a larger cache");
	lt_sample_session_end(m, &s);
	lt_model_free(twin);
}

static void test_generate(lt_model *m)
{
	int32_t prompt[10] = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3 }, out[L_], out2[L_];
	struct lt_sample_opts greedy = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f };
	int n = -1;

	lt_errmsg_clear();
	enum lt_status st = lt_sample_generate(m, prompt, 10, 7, -1, &greedy, out, &n);
	tap_ok(st == LT_ERR_ARG && !strcmp(lt_errmsg(), "prompt of 10 tokens + 7 new exceeds the "
	       "context of 16 tokens") && n == 0, "generate refuses 10 + 7 > 16 tokens: '%s'",
	       lt_errmsg());

	/* greedy generation equals the argmax of the full forward, step by step */
	st = lt_sample_generate(m, prompt, 10, 6, -1, &greedy, out, &n);
	int32_t seq[B_ * L_] = { 0 };
	int ok = st == LT_OK && n == 6;
	for (int i = 0; ok && i < 6; i++) {
		for (int b = 0; b < B_; b++) {
			memcpy(seq + b * L_, prompt, sizeof prompt);
			memcpy(seq + b * L_ + 10, out, (size_t)i * sizeof *out);
		}
		float *logits = full_forward_logits(m, seq);
		const float *row = logits + (size_t)(10 + i - 1) * cfg.vocab_size;
		int32_t best = 0;
		for (int v = 1; v < cfg.vocab_size; v++)
			best = row[v] > row[best] ? v : best;
		ok &= best == out[i];
		free(logits);
	}
	tap_ok(ok, "greedy generate of 6 tokens after 10 (fills the context) picks the full "
	       "forward's argmax at each step");

	/* a stop id ends generation before that token */
	int n2 = -1;
	st = lt_sample_generate(m, prompt, 10, 6, out[3], &greedy, out2, &n2);
	int first = 0;
	while (out[first] != out[3])
		first++;
	tap_ok(st == LT_OK && n2 == first && !memcmp(out, out2, (size_t)first * sizeof *out),
	       "generate with stop id %d stops before it: %d tokens (want %d)", out[3], n2, first);

	struct lt_sample_opts warm = { .temperature = 1.0f, .top_k = 10, .top_p = 0.95f, .seed = 5 };
	int32_t a[6], b[6];
	int na, nb;
	int same = lt_sample_generate(m, prompt, 10, 6, -1, &warm, a, &na) == LT_OK &&
		   lt_sample_generate(m, prompt, 10, 6, -1, &warm, b, &nb) == LT_OK && na == 6 &&
		   nb == 6 && !memcmp(a, b, sizeof a);
	tap_ok(same, "generate at temperature 1 with one seed twice gives the same tokens");

	test_session(m, prompt);

	double rate = 0;
	st = lt_sample_bench(m, L_ - 1, &rate);
	lt_errmsg_clear();
	enum lt_status too_long = lt_sample_bench(m, L_, &rate);
	tap_ok(st == LT_OK && too_long == LT_ERR_ARG && strstr(lt_errmsg(), "16 tokens"),
	       "sample_bench runs %d tokens and refuses %d in a context of %d (%s)", L_ - 1, L_, L_,
	       lt_errmsg());
}

int main(void)
{
	lt_backend *be = NULL;
	lt_model *m = NULL;
	tap_plan(1 + 7 + 7 + 5 + 4);
	tap_ok(isnan(tap_worst(tap_worst(tap_worst(0, 1e-3), NAN), 2.0)) &&
	       tap_worst(tap_worst(0, 1e-3), 2e-4) == 1e-3,
	       "the worst of errors 1e-3, NaN, 2 is NaN, and of 1e-3, 2e-4 is 1e-3: a NaN fails a bound");
	if (lt_backend_new("cpu", 0, &be) != LT_OK)
		bail_out("cpu backend");
	if (lt_model_new(be, &cfg, &m) != LT_OK)
		bail_out("model");
	randomise_weights(m, 11);
	test_decode(m);
	test_pick();
	test_generate(m);
	lt_model_free(m);
	lt_backend_free(be);
	return tap_done();
}
