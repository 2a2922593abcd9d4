/* Text generation: a KV-cached decoder over a model (each new token costs
 * O(context)) and the token choice with temperature, top-k and top-p.
 *
 * Ownership: every function borrows its arguments; generation allocates
 * the model's decoding buffers and frees them before returning, but for a
 * session's, which lt_sample_session_end frees. */
#ifndef LT_SAMPLE_H
#define LT_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rng.h"
#include "text/tokenizer.h"

struct lt_sample_opts {
	float temperature;   /* 0 = greedy (argmax) */
	int top_k;           /* keep the k most likely tokens; 0 = all */
	float top_p;         /* then the smallest most-likely set holding this much
			      * probability (the nucleus); 1 = all */
	uint64_t seed;       /* lt_sample_generate's random stream */
};

/* Bytes of scratch that lt_sample_pick needs for a vocabulary of V. */
size_t lt_sample_scratch_bytes(int V);

/* Picks the next token from logits[V]: at temperature 0 the first largest
 * logit; otherwise a draw from softmax(logits / temperature) restricted to
 * the top_k largest, then to the nucleus of top_p, renormalised (all in
 * double). NaN logits count as -inf. scratch holds
 * lt_sample_scratch_bytes(V) bytes. */
int32_t lt_sample_pick(const float *logits, int V, const struct lt_sample_opts *o,
		       struct lt_rng *r, void *scratch);

/* Generates up to max_new tokens after prompt[n_prompt] (n_prompt >= 1;
 * n_prompt + max_new <= model max_seq, else LT_ERR_ARG "prompt of N tokens
 * + M new exceeds the context of S tokens"): the prompt is run in one
 * decoding call, then one call per new token. out receives the new tokens
 * (*n_out of them); generation stops early after drawing stop_id (when
 * >= 0), which is not stored. The model's training plan is left as it was. */
enum lt_status lt_sample_generate(lt_model *m, const int32_t *prompt, int n_prompt, int max_new,
				  int32_t stop_id, const struct lt_sample_opts *o,
				  int32_t *out, int *n_out);

/* A conversation's generations over one KV cache: what the cache holds
 * between calls (zeroed to start; lt_sample_session_end frees it). */
struct lt_sample_session {
	int32_t *held;   /* the tokens in the cache, positions 0 .. n_held - 1 */
	int n_held, room;
	int reused;      /* of the last call's prompt, the tokens the cache had */
};
/* lt_sample_generate within a session: the prompt's tokens that the
 * cache holds from the previous call (its prompt and the tokens it fed
 * back) are not run again, so a conversation's turns cost their new tokens
 * only. The cache's buffers are the model's decoding buffers, kept between
 * calls (and made anew, forgetting the cache, when a call needs more room);
 * nothing else may decode with the model during the session. */
enum lt_status lt_sample_continue(lt_model *m, struct lt_sample_session *s,
				  const int32_t *prompt, int n_prompt, int max_new,
				  int32_t stop_id, const struct lt_sample_opts *o,
				  int32_t *out, int *n_out);
/* Frees the session's cache and the model's decoding buffers. */
void lt_sample_session_end(lt_model *m, struct lt_sample_session *s);

/* Sampling speed: greedy generation of n_tokens tokens (1 <= n_tokens <
 * max_seq) after the single token 0, with the weights the model holds
 * (the caller builds and initialises it); *tokens_per_s = n_tokens over
 * the wall-clock seconds of the whole generation, prompt included. */
enum lt_status lt_sample_bench(lt_model *m, int n_tokens, double *tokens_per_s);

#endif
