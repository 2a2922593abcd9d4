/* Structured pruning of a LLaMA model: the importance of each attention
 * head, MLP channel and block measured from the activations of forward
 * passes over calibration data, the choice of what to keep, and the
 * smaller model that holds the kept weights.
 *
 * Importance, from activations (no gradients), after the width and
 * depth pruning of NVIDIA's Minitron (2024), each head and channel
 * measured by what it writes into the residual stream:
 *   head h of block l:   sum over tokens of ||att_h wo_h^T||_2, the head's
 *                        attention output through its columns of the
 *                        output projection; a kv head's group sums its
 *                        query heads;
 *   channel i of block l: sum over tokens of |g_i| ||down_i||_2, the
 *                        SwiGLU output times its column of the down
 *                        projection;
 *   block l:             sum over tokens of 1 - cos(x_l, x_{l+1}), how
 *                        much the block turns the residual stream (block
 *                        importance: a block near the identity matters
 *                        least).
 * (Minitron measures the activations before the projections; through
 * them, a head or channel that the projection shrinks counts for as
 * little as it adds, which ranks closer to the loss its removal costs.)
 * A kv head is kept or removed with its query heads, so the pruned model
 * keeps grouped-query attention's shape; every kept block keeps as many
 * groups and channels, each block its own best.
 *
 * Ownership: lt_prune_scores_new allocates what lt_prune_scores_free
 * releases; lt_prune_plan_new likewise with lt_prune_plan_free. Both
 * borrow the model. */
#ifndef LT_PRUNE_H
#define LT_PRUNE_H

#include <stdint.h>

#include "model.h"

struct lt_prune_scores {
	int n_layers, n_heads, n_kv_heads, ffn_dim;
	double *head;     /* [n_layers * n_heads] */
	double *channel;  /* [n_layers * ffn_dim] */
	double *block;    /* [n_layers] */
	long tokens;      /* measured so far */
};

/* The fractions of each kind to keep, in (0, 1]. */
struct lt_prune_keep {
	double heads, ffn, layers;
};

/* What a pruned model keeps of the original, in the original's indices,
 * each list ascending. */
struct lt_prune_plan {
	struct lt_model_config shape;  /* the pruned model's */
	int *layers;                   /* [shape.n_layers] */
	int *groups;                   /* [shape.n_layers * shape.n_kv_heads] kv heads per kept block */
	int *channels;                 /* [shape.n_layers * shape.ffn_dim] MLP channels per kept block */
};

enum lt_status lt_prune_scores_new(const struct lt_model_config *c, struct lt_prune_scores *s);
void lt_prune_scores_free(struct lt_prune_scores *s);

/* Adds to s the importance measured on the activations of m's last
 * forward pass (lt_model_forward of B x T tokens, without recompute): its
 * rows with a target (targets[i] >= 0; NULL: every row). */
enum lt_status lt_prune_measure(lt_model *m, const int32_t *targets, struct lt_prune_scores *s);

/* A kv head's group importance in block l: its query heads' sum. */
double lt_prune_group_score(const struct lt_prune_scores *s, int l, int kv);

/* The counts a keep gives: round(fraction x count), halves up, at least
 * one; *out is c with fewer blocks, kv heads (and their query heads) and
 * channels, and head_dim set where dim / n_heads no longer is the heads'
 * width. LT_ERR_ARG for a fraction outside (0, 1]. */
enum lt_status lt_prune_shape(const struct lt_model_config *c, const struct lt_prune_keep *k,
			      struct lt_model_config *out);

/* The plan that keeps, of c's model, the most important blocks, groups
 * and channels by s in the counts of keep. */
enum lt_status lt_prune_plan_new(const struct lt_model_config *c, const struct lt_prune_scores *s,
				 const struct lt_prune_keep *keep, struct lt_prune_plan *plan);
void lt_prune_plan_free(struct lt_prune_plan *plan);

/* Writes into p (a plain model of plan->shape) the weights of m (plain,
 * or with adapters folded in) that the plan keeps. */
enum lt_status lt_prune_copy(lt_model *m, const struct lt_prune_plan *plan, lt_model *p);

#endif
