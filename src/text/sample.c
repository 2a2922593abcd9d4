/* Text generation: the token choice (temperature, top-k, top-p) and the
 * KV-cached generation loop over a model. */
#include "config.h"
#include "text/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* A candidate token: its logit (NaN taken as -inf) and its id. */
struct candidate {
	float logit;
	int32_t id;
};

size_t lt_sample_scratch_bytes(int V)
{
	return (size_t)(V > 0 ? V : 0) * (sizeof(struct candidate) + sizeof(double));
}

/* Whether a ranks before b: the larger logit first, the smaller id on a tie,
 * so that the ranking is a total order and every choice deterministic. */
static int ranks_before(const struct candidate *a, const struct candidate *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int compare_ranks(const void *x, const void *y)
{
	return ranks_before(x, y) ? -1 : ranks_before(y, x) ? 1 : 0;
}

static void swap_candidates(struct candidate *a, struct candidate *b)
{
	struct candidate t = *a;
	*a = *b;
	*b = t;
}

/* Reorders c[0..n) so that its k best come first (in no particular order):
 * quickselect with a median-of-three pivot, O(n) on average. */
static void move_best_to_front(struct candidate *c, int n, int k)
{
	int lo = 0, hi = n - 1;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		/* the median of c[lo], c[mid], c[hi] ends in c[hi] as the pivot */
		if (ranks_before(&c[mid], &c[lo]))
			swap_candidates(&c[mid], &c[lo]);
		if (ranks_before(&c[hi], &c[lo]))
			swap_candidates(&c[hi], &c[lo]);
		if (ranks_before(&c[mid], &c[hi]))
			swap_candidates(&c[mid], &c[hi]);
		int store = lo;
		for (int i = lo; i < hi; i++)
			if (ranks_before(&c[i], &c[hi]))
				swap_candidates(&c[i], &c[store++]);
		swap_candidates(&c[store], &c[hi]);
		if (store == k - 1)
			return;
		if (store > k - 1)
			hi = store - 1;
		else
			lo = store + 1;
	}
}

/* The id of the first largest logit, NaNs passed over (0 when all are NaN). */
static int32_t argmax(const float *logits, int V)
{
	int32_t best = 0;
	for (int i = 0; i < V; i++)
		if (logits[i] > logits[best] || (isnan(logits[best]) && !isnan(logits[i])))
			best = i;
	return best;
}

int32_t lt_sample_pick(const float *logits, int V, const struct lt_sample_opts *o,
		       struct lt_rng *r, void *scratch)
{
	LT_ASSERT(V > 0);
	if (!(o->temperature > 0.0f))
		return argmax(logits, V);
	struct candidate *c = scratch;
	double *p = (double *)(c + V);
	for (int i = 0; i < V; i++)
		c[i] = (struct candidate){ isnan(logits[i]) ? -INFINITY : logits[i], i };

	int n = V;
	if (o->top_k > 0 && o->top_k < V) {
		move_best_to_front(c, V, o->top_k);
		n = o->top_k;
	}
	int nucleus = o->top_p < 1.0f;
	if (nucleus)
		qsort(c, (size_t)n, sizeof *c, compare_ranks);

	double mx = -INFINITY, total = 0.0, inv_t = 1.0 / (double)o->temperature;
	for (int i = 0; i < n; i++)
		mx = c[i].logit > mx ? c[i].logit : mx;
	if (mx == -INFINITY)
		return argmax(logits, V);
	for (int i = 0; i < n; i++) {
		p[i] = exp(((double)c[i].logit - mx) * inv_t);
		total += p[i];
	}
	if (nucleus) {
		/* the most likely tokens until they hold top_p of the probability */
		double kept = 0.0, want = (double)o->top_p * total;
		int keep = n;
		for (int i = 0; i < n; i++) {
			kept += p[i];
			if (kept >= want) {
				keep = i + 1;
				break;
			}
		}
		n = keep;
		total = kept;
	}
	double u = lt_rng_uniform(r) * total;
	for (int i = 0; i < n; i++) {
		u -= p[i];
		if (u < 0.0)
			return c[i].id;
	}
	return c[n - 1].id;
}

/* Decodes prompt[start .. n_prompt) at positions start.. (the cache holding
 * prompt[0 .. start) already), then one token per call, into out; *n_fed gets
 * how many of the new tokens went into the cache after the prompt. */
static enum lt_status generate_tokens(lt_model *m, const int32_t *prompt, int n_prompt,
				      int start, int max_new, int32_t stop_id,
				      const struct lt_sample_opts *o, float *logits,
				      void *scratch, int32_t *out, int *n_out, int *n_fed)
{
	int V = lt_model_config_of(lt_model_tp_whole(m))->vocab_size;
	struct lt_rng rng;
	if (o->n_ids > 0 && o->n_ids < V)
		V = o->n_ids;  /* the ids past it are masked out: never drawn */
	lt_rng_seed(&rng, o->seed, 0);
	*n_fed = 0;
	enum lt_status st = lt_model_decode(m, prompt + start, n_prompt - start, start, logits);
	for (int pos = n_prompt; st == LT_OK; pos++) {
		int32_t tok = lt_sample_pick(logits, V, o, &rng, scratch);
		if (stop_id >= 0 && tok == stop_id)
			break;
		out[(*n_out)++] = tok;
		if (*n_out == max_new)
			break;
		st = lt_model_decode(m, &tok, 1, pos, logits);
		if (st == LT_OK)
			(*n_fed)++;
	}
	return st;
}

/* The checks of a generation's sizes, then its logits and scratch. */
static enum lt_status generation_buffers(const struct lt_model_config *c, int n_prompt,
					 int max_new, float **logits, void **scratch)
{
	*logits = NULL;
	*scratch = NULL;
	if (n_prompt < 1 || max_new < 0) {
		lt_errmsg_set("generation needs a prompt of at least 1 token (got %d) and at least 0 "
			      "new tokens (got %d)", n_prompt, max_new);
		return LT_ERR_ARG;
	}
	if ((long)n_prompt + max_new > c->max_seq) {
		lt_errmsg_set("prompt of %d tokens + %d new exceeds the context of %d tokens", n_prompt,
			      max_new, c->max_seq);
		return LT_ERR_ARG;
	}
	*logits = malloc((size_t)c->vocab_size * sizeof **logits);
	*scratch = malloc(lt_sample_scratch_bytes(c->vocab_size));
	if (!*logits || !*scratch) {
		free(*logits);
		free(*scratch);
		lt_errmsg_set("cannot allocate %zu bytes for sampling over %d tokens",
			      lt_sample_scratch_bytes(c->vocab_size) + (size_t)c->vocab_size * 4,
			      c->vocab_size);
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

enum lt_status lt_sample_generate(lt_model *m, const int32_t *prompt, int n_prompt, int max_new,
				  int32_t stop_id, const struct lt_sample_opts *o,
				  int32_t *out, int *n_out)
{
	float *logits;
	void *scratch;
	int fed;
	*n_out = 0;
	enum lt_status st = generation_buffers(lt_model_config_of(lt_model_tp_whole(m)), n_prompt, max_new, &logits,
					       &scratch);
	if (st != LT_OK || max_new == 0) {
		free(logits);
		free(scratch);
		return st;
	}
	/* the last new token is never fed back, so it needs no cache position */
	st = lt_model_decode_begin(m, 1, n_prompt + max_new - 1);
	if (st == LT_OK)
		st = generate_tokens(m, prompt, n_prompt, 0, max_new, stop_id, o, logits, scratch,
				     out, n_out, &fed);
	lt_model_decode_end(m);
	free(logits);
	free(scratch);
	return st;
}

/* The cache's room for a generation of `need` positions: kept when it has it,
 * else (forgetting what it held) at least twice that, within the context. */
static enum lt_status make_room(lt_model *m, struct lt_sample_session *s, int need)
{
	int max_seq = lt_model_config_of(lt_model_tp_whole(m))->max_seq;
	if (need <= s->room)
		return LT_OK;
	int room = need < max_seq / 2 ? 2 * need : max_seq;
	int32_t *held = realloc(s->held, (size_t)room * sizeof *held);
	if (!held) {
		lt_errmsg_set("cannot allocate %d tokens", room);
		return LT_ERR_NOMEM;
	}
	s->held = held;
	s->n_held = 0;
	s->room = 0;
	enum lt_status st = lt_model_decode_begin(m, 1, room);
	if (st == LT_OK)
		s->room = room;
	return st;
}

enum lt_status lt_sample_continue(lt_model *m, struct lt_sample_session *s,
				  const int32_t *prompt, int n_prompt, int max_new,
				  int32_t stop_id, const struct lt_sample_opts *o,
				  int32_t *out, int *n_out)
{
	float *logits;
	void *scratch;
	int fed = 0, start = 0;
	*n_out = 0;
	enum lt_status st = generation_buffers(lt_model_config_of(lt_model_tp_whole(m)), n_prompt, max_new, &logits,
					       &scratch);
	if (st == LT_OK && max_new > 0)
		st = make_room(m, s, n_prompt + max_new - 1);
	if (st != LT_OK || max_new == 0) {
		free(logits);
		free(scratch);
		return st;
	}
	/* what the cache holds of the prompt already; at least its last token is run,
	 * for the logits */
	while (start < s->n_held && start < n_prompt - 1 && s->held[start] == prompt[start])
		start++;
	s->n_held = 0;  /* until the decoding is through */
	st = generate_tokens(m, prompt, n_prompt, start, max_new, stop_id, o, logits, scratch, out,
			     n_out, &fed);
	if (st == LT_OK) {
		memcpy(s->held, prompt, (size_t)n_prompt * sizeof *prompt);
		memcpy(s->held + n_prompt, out, (size_t)fed * sizeof *out);
		s->n_held = n_prompt + fed;
		s->reused = start;
	}
	free(logits);
	free(scratch);
	return st;
}

void lt_sample_session_end(lt_model *m, struct lt_sample_session *s)
{
	if (s->room > 0)
		lt_model_decode_end(m);
	free(s->held);
	*s = (struct lt_sample_session){ 0 };
}

enum lt_status lt_sample_bench(lt_model *m, int n_tokens, double *tokens_per_s)
{
	int max_seq = lt_model_config_of(lt_model_tp_whole(m))->max_seq;
	*tokens_per_s = 0.0;
	if (n_tokens < 1 || n_tokens >= max_seq) {
		lt_errmsg_set("sampling benchmark of %d tokens: expected 1 to %d (the context of %d "
			      "tokens less the first)", n_tokens, max_seq - 1, max_seq);
		return LT_ERR_ARG;
	}
	int32_t *out = malloc((size_t)n_tokens * sizeof *out), first = 0;
	if (!out) {
		lt_errmsg_set("cannot allocate %d tokens", n_tokens);
		return LT_ERR_NOMEM;
	}
	struct lt_sample_opts greedy = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f };
	int got = 0;
	double t0 = lt_seconds();
	enum lt_status st = lt_sample_generate(m, &first, 1, n_tokens, -1, &greedy, out, &got);
	double dt = lt_seconds() - t0;
	free(out);
	if (st == LT_OK)
		*tokens_per_s = dt > 0.0 ? (double)got / dt : 0.0;
	return st;
}
