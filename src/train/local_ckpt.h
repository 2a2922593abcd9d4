/* Local SGD's part of a checkpoint (dist.sync = local), beside the usual
 * files, which hold the first node's parameters and AdamW moments:
 *   outer.safetensors          "shared", the parameters the nodes last
 *                              shared, and "momentum", the outer momentum
 *                              (F32 [numel]); metadata nodes, in_round (the
 *                              inner steps since the last exchange) and
 *                              tokens (the node's tokens in them)
 *   node-K-model.safetensors   node K's parameters (K >= 1)
 *   node-K-optimizer...        node K's moments, one file per rank of the
 *                              node as its ranks hold them (or one)
 * so that a checkpoint taken in the middle of a round continues it
 * exactly. Resumed on another number of nodes, every node continues from
 * the first node's parameters and moments, with the outer state.
 *
 * Ownership: lt_local_ckpt_save sets s->extra to a block that
 * lt_ckpt_state_free frees; the rest is borrowed. */
#ifndef LT_LOCAL_CKPT_H
#define LT_LOCAL_CKPT_H

#include <stddef.h>

#include "dist/local_sgd.h"
#include "io/checkpoint.h"
#include "model.h"
#include "optim.h"

/* Every rank, into the checkpoint's temporary directory tmp: node K's
 * files from its ranks (`shards` optimizer files a node, 1 or its ranks),
 * outer.safetensors from rank 0, which also lists them all in s->extra
 * (freeing the list of an earlier save). */
enum lt_status lt_local_ckpt_save(lt_local_sgd *ls, const char *tmp, lt_model *m,
				  const lt_optim *o, int shards, struct lt_ckpt_state *s);
/* Every rank, once the model holds its first parameters (dir's, and its
 * moments, when resuming from checkpoint dir; else NULL):
 * lt_local_sgd_start, then lt_local_ckpt_resume from dir; note[cap] gets
 * lt_local_sgd_describe's line, and on a line of its own resume's. */
enum lt_status lt_local_ckpt_start(lt_local_sgd *ls, const char *dir, lt_model *m, lt_optim *o,
				   char *note, size_t cap);
/* Every rank, after lt_local_sgd_start over the checkpoint dir's model
 * and moments: the outer state from outer.safetensors (none there: the
 * state lt_local_sgd_start made stays), and on as many nodes as saved it,
 * node K's own parameters and moments. note[cap] gets a line for the run's
 * start ("" when there is nothing to say). */
enum lt_status lt_local_ckpt_resume(lt_local_sgd *ls, const char *dir, lt_model *m, lt_optim *o,
				    char *note, size_t cap);

#endif
