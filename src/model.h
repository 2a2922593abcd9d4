/* The LLaMA model: the flat parameter and gradient buffers with their
 * named views (Hugging Face names and layout), the activation plan for a
 * (batch, seq), the forward and backward passes, and KV-cached decoding;
 * its configuration is model_config.h's.
 *
 * Ownership: lt_model_new gives a model that lt_model_free releases; the
 * model borrows its backend, which must outlive it. */
#ifndef LT_MODEL_H
#define LT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "model_config.h"

/* A named view into the flat parameter buffer (and, at the same offsets,
 * into the gradient and optimizer buffers). */
struct lt_tensor {
	char name[80];       /* Hugging Face name */
	int ndim;
	int shape[2];
	size_t off;          /* elements from the start of the flat buffer */
	size_t numel;
	int decay;           /* 1 if weight decay applies (matrices), 0 for norms */
};

/* Sizes of what training a configuration needs, in bytes. */
struct lt_mem_estimate {
	size_t params, grads, optimizer, activations, workspace, runtime, total;
	size_t gathered;  /* ZeRO stage 3: the slots that blocks, the embedding
			     table and the output range are gathered into
			     (apart from params; in total) */
	size_t exchange;  /* host staging of the tensor-parallel sums (in total) */
};

/* What training keeps of each block's forward for its backward
 * (train.recompute). */
enum lt_recompute {
	LT_RECOMPUTE_NONE,   /* every activation backward reads */
	LT_RECOMPUTE_BLOCK,  /* each block's input only: backward runs the block's
				forward again first, into one block's worth of
				buffers; gradients are bitwise the same */
};

/* The arithmetic of training and inference (train.precision). */
enum lt_precision {
	LT_PRECISION_FP32,  /* weights and activations f32 */
	LT_PRECISION_BF16,  /* a bf16 compute copy of the weights, made from the f32
			       parameters by every forward, and bf16 activations; the
			       parameters, gradients, optimizer state and per-row
			       statistics (norms, log-sum-exps, losses) stay f32 */
};

/* LoRA (train.lora_*): low-rank adapters beside chosen matrices W[out, in]
 * of every block, y = x W^T + (alpha / rank) dropout(x) A^T B^T with
 * A[rank, in] and B[out, rank]. The base weights are frozen and the
 * adapters alone are trained. */
enum lt_lora_target {
	LT_LORA_Q, LT_LORA_K, LT_LORA_V, LT_LORA_O, LT_LORA_GATE, LT_LORA_UP, LT_LORA_DOWN,
	LT_LORA_TARGETS
};
/* The type of the frozen base's block matrices (train.lora_base): the
 * activation type, f32, bf16, or GGUF's q8_0 or q4_0 blocks, which the
 * GEMMs dequantize a panel at a time. The embeddings, the norms and the
 * head stay in the activation type. */
enum lt_lora_base { LT_LORA_BASE_AUTO, LT_LORA_BASE_F32, LT_LORA_BASE_BF16, LT_LORA_BASE_Q8_0,
		    LT_LORA_BASE_Q4_0 };
struct lt_lora {
	int rank;          /* 0: no adapters (full training) */
	float alpha;       /* the adapters' output is scaled by alpha / rank */
	float dropout;     /* the probability of dropping an adapter input, in training */
	unsigned targets;  /* bit (1 << enum lt_lora_target) per adapted matrix */
	enum lt_lora_base base;  /* the type of the base's block matrices */
};
/* The buffer type a base of that kind holds its block matrices in, in a
 * run of that precision. */
enum lt_dtype lt_lora_base_type(enum lt_lora_base base, enum lt_precision p);

/* What lt_model_new + lt_model_plan(B, T) + AdamW state will hold, plus the
 * backend's workspace for `threads` threads and the process's own runtime. */
void lt_model_estimate_memory(const struct lt_model_config *c, int B, int T, int threads,
			      enum lt_recompute recompute, enum lt_precision precision,
			      struct lt_mem_estimate *out);
/* The same with adapters (lora NULL or rank 0: full training): the frozen
 * base in its type (bf16 in bf16, f32 otherwise), and the adapters with
 * their gradients and moments. */
void lt_model_estimate_memory_lora(const struct lt_model_config *c, int B, int T, int threads,
				   enum lt_recompute recompute, enum lt_precision precision,
				   const struct lt_lora *lora, struct lt_mem_estimate *out);
/* Elements of the adapters of a configuration. */
size_t lt_lora_params(const struct lt_model_config *c, const struct lt_lora *lora);
/* Elements of the block matrices (q, k, v, o, gate, up, down of every
 * layer): what train.lora_base sets the type of. */
size_t lt_lora_block_matrix_params(const struct lt_model_config *c);

typedef struct lt_model lt_model;

/* Allocates the parameter and gradient buffers (uninitialised). */
enum lt_status lt_model_new(lt_backend *be, const struct lt_model_config *c, lt_model **out);
void lt_model_free(lt_model *m);

const struct lt_model_config *lt_model_config_of(const lt_model *m);
lt_backend *lt_model_backend(const lt_model *m);
size_t lt_model_num_params(const lt_model *m);
int lt_model_num_tensors(const lt_model *m);
const struct lt_tensor *lt_model_tensor(const lt_model *m, int i);
/* The tensor with this Hugging Face name, or NULL. */
const struct lt_tensor *lt_model_find(const lt_model *m, const char *name);
/* The flat buffers: parameters (numel elements) and gradients (numel
 * elements, or as many as a layout gives them). */
lt_ref lt_model_params(const lt_model *m);
lt_ref lt_model_grads(const lt_model *m);
size_t lt_model_grads_numel(const lt_model *m);
/* Where block l's parameters start in the flat buffer, for 0 <= l <=
 * n_layers: block l spans [begin(l), begin(l + 1)). The embedding table
 * lies before block 0; the output range (the final norm, and the head when
 * untied) from begin(n_layers) to the end. */
size_t lt_model_block_begin(const lt_model *m, int l);

/* Where backward puts the gradients. By default the gradient buffer is
 * the mirror of the parameter buffer and backward adds into it. A layout
 * gives the buffer numel elements and puts there the embedding table's
 * gradients at 0, block l's at block[l] and the output range's at
 * `output`. Blocks may share a place; backward then writes its gradients
 * rather than adding them: it zeroes the embedding's and the output
 * range's places at its start and each block's place before that block.
 * So the hook told of block l's range must be done reading any block that
 * shares block l - 1's place when it returns. */
struct lt_grad_layout {
	size_t numel;         /* elements of the gradient buffer */
	size_t output;        /* where the output range's gradients start */
	const size_t *block;  /* [n_layers] where each block's gradients start (copied) */
};
/* Gives the gradient buffer that layout (NULL: the mirror, added into),
 * reallocating it (zeroed; on failure the model has none, and can only be
 * freed). A block's slot may lie over the embedding's range (ZeRO 3, one
 * buffer for the two): backward then reports a tied table's range after
 * the head, before any block writes its slot, and again at its end, the
 * lookup's gradient alone, written once the hook told of block 0's range
 * returned; the hook must be done reading a range it was told of when it
 * returns where a block's slot lies over it. */
enum lt_status lt_model_set_grad_layout(lt_model *m, const struct lt_grad_layout *layout);
/* With such a layout and one activation set: whether a training forward
 * writes the head's weight gradient straight into the gradient buffer
 * (its first row chunk =, the rest +=; backward then leaves that range as
 * it is and adds the lookup's gradient of a tied table in) rather than
 * into a V x C buffer of its own that backward adds in; on, that buffer
 * goes. The caller keeps the head's range of the gradient buffer free of
 * readers by the time a training forward has asked its parameter hook
 * for the output range. */
void lt_model_set_head_grad_direct(lt_model *m, int on);

/* Where the parameters lie. By default the parameter buffer holds every
 * element in place (lt_model_params, numel elements). A layout makes it
 * hold numel elements, each block's parameters at block[l] (blocks may
 * share a place), and the embedding table and the output range where
 * lt_model_place_ranges last put them, with a hook that brings each
 * before it is read: the ZeRO stage 3 model, which holds the parameters
 * of a few blocks (or of its embedding, or of its output range) at a
 * time. Setting one, or going back to none, reallocates the buffer (and
 * the bf16 compute copy), whose values are then undefined (on failure
 * the model has none, and can only be freed). With such a layout only
 * training and evaluation passes run (not decoding, nor anything that
 * reads or writes lt_model_params by the flat offsets). */
struct lt_param_layout {
	size_t numel;         /* elements of the parameter buffer */
	const size_t *block;  /* [n_layers] where each block's parameters start (copied) */
};
enum lt_status lt_model_set_param_layout(lt_model *m, const struct lt_param_layout *layout);
/* With a layout: the embedding table now lies at `embed` and the output
 * range at `output` of the parameter buffer (each must fit in it). */
void lt_model_place_ranges(lt_model *m, size_t embed, size_t output);
/* Where flat element off lies in the parameter buffer, and its size. */
size_t lt_model_param_index(const lt_model *m, size_t off);
size_t lt_model_params_numel(const lt_model *m);
/* Whether the parameter buffer holds every element in place (no layout,
 * and not a model of lt_model_new_sliced that has had none yet). */
int lt_model_holds_params(const lt_model *m);
/* Where the model's writes of its parameters go while a layout holds
 * none in place (ZeRO stage 3): flat elements [lo, hi) into range (its
 * element 0 is flat lo; the caller keeps it), the rest dropped.
 * lt_model_init, lt_model_write_weight, the tensor-parallel writes and
 * the checkpoint loads then write that range alone, tensor by tensor, as
 * they would write it whole. range NULL: back to the buffer.
 * lt_model_sink_range: whether there is a sink, and its [lo, hi). */
void lt_model_set_param_sink(lt_model *m, lt_buf *range, size_t lo, size_t hi);
/* n host values of flat element off into the parameters: the buffer in
 * place, or with a sink the part of them it keeps (unsynced). */
void lt_model_put_params(lt_model *m, size_t off, const float *x, size_t n);
int lt_model_sink_range(const lt_model *m, size_t *lo, size_t *hi);

/* ------------------------------------------------ tensor parallelism */

/* A model split over the `size` ranks of a tensor-parallel group (Megatron's
 * split): rank t holds heads [t H/size, (t+1) H/size) of q and their
 * kv-heads of k and v (column-parallel) and the same columns of o_proj
 * (row-parallel), F/size rows of gate and up and those columns of down,
 * and rows [t V', (t+1) V') of the embedding and the LM head, V' = V/size
 * rounded up (the last rank's part may end in padding rows of zeros); the
 * norms are whole on every rank. The model then sums over the group,
 * through `allreduce`: the row-parallel outputs and the embedding in the
 * forward, the input gradients of the column-parallel pairs and of the
 * head in the backward, and the cross-entropy's row statistics, so that
 * no rank holds a [N, V] row of logits. */
struct lt_tp {
	int size, rank;
	/* buf[n] (host) = the sum (max = 0) or the max (1) over the group */
	enum lt_status (*allreduce)(void *ctx, void *buf, size_t n, int f64, int max);
	/* all[size * bytes]: rank r's `bytes` of mine at all + r * bytes */
	enum lt_status (*allgather)(void *ctx, const void *mine, void *all, size_t bytes);
	void *ctx;
};
/* Whether config c splits over tp ranks: one line naming the constraint
 * and the numbers when it does not. */
enum lt_status lt_model_tp_check(const struct lt_model_config *c, int tp);
/* The config of one rank's part (heads, kv-heads, ffn and vocabulary
 * divided, head_dim kept). */
void lt_model_tp_part_config(const struct lt_model_config *c, int tp,
			     struct lt_model_config *part);
/* Rank tp->rank's part of the model of config c (the whole model's);
 * the model keeps a copy of tp. lt_model_config_of gives the part's
 * config, lt_model_tp_whole the whole model's tensors (no buffers). */
enum lt_status lt_model_new_tp(lt_backend *be, const struct lt_model_config *c,
			       const struct lt_tp *tp, lt_model **out);
/* A model (tp NULL or of one rank) or rank tp->rank's part of it, in
 * precision p, made without its whole parameter and gradient buffers:
 * the caller gives it a parameter layout (lt_model_set_param_layout)
 * and a gradient buffer (lt_model_set_grad_layout) before anything
 * reads them, and writes its parameters through a sink
 * (lt_model_set_param_sink). ZeRO stage 3's model, so that no rank ever
 * holds the whole parameters. */
enum lt_status lt_model_new_sliced(lt_backend *be, const struct lt_model_config *c,
				   const struct lt_tp *tp, enum lt_precision p, lt_model **out);
/* ------------------------------------------------ pipeline stages */

/* A pipeline stage's share of a whole model: blocks [layer0, layer0 +
 * layers); the first stage (layer0 0) also holds the embedding, the last
 * the final norm and the LM head. */
struct lt_stage {
	int layer0, layers;
};
/* Whether config c splits into pp stages (layers >= pp, the embedding
 * untied): one line naming the constraint and the numbers when not. */
enum lt_status lt_model_pp_check(const struct lt_model_config *c, int pp);
/* The stage's model: its tensors under the whole model's names, drawn by
 * lt_model_init as the whole model draws them. Its forward on a stage
 * before the last stops at x_final (loss 0 over 0 targets) and its
 * backward then starts from lt_model_stage_write_output_grad's gradient;
 * a stage after the first reads its input from lt_model_stage_write_input
 * and ends its backward with dL/dx_0 for lt_model_stage_read_input_grad. */
enum lt_status lt_model_new_stage(lt_backend *be, const struct lt_model_config *c,
				  const struct lt_stage *stage, lt_model **out);
/* The whole model's tensors (no buffers; m itself when not a stage), and
 * the index in them of the stage's tensor i. */
const lt_model *lt_model_stage_whole(const lt_model *m);
int lt_model_stage_index(const lt_model *m, int i);
int lt_model_stage_first(const lt_model *m);
int lt_model_stage_last(const lt_model *m);
/* The stage's boundary tensors, [B*T, dim] of the current plan as floats
 * on the host, each through the activation set in use (x is overwritten):
 * the input before forward, the output after it, the output's gradient
 * before backward, the input's gradient after it. */
enum lt_status lt_model_stage_write_input(lt_model *m, float *x);
enum lt_status lt_model_stage_read_output(lt_model *m, float *x);
enum lt_status lt_model_stage_write_output_grad(lt_model *m, float *dx);
enum lt_status lt_model_stage_read_input_grad(lt_model *m, float *dx);
/* lt_model_estimate_memory of stage s of model c, keeping `sets`
 * micro-batches' activations. */
void lt_model_estimate_stage(const struct lt_model_config *c, const struct lt_stage *s, int B,
			     int T, int threads, enum lt_recompute recompute,
			     enum lt_precision precision, int sets, struct lt_mem_estimate *out);
/* Before the first lt_model_plan: the micro-batches whose activations the
 * model keeps at once (1 by default), each plan's buffers n times over
 * (and on the last stage each set's own [V, dim] f32 head weight gradient,
 * made by its first training forward); lt_model_use_acts picks the set the
 * next forward and backward use (a micro-batch's backward runs in the set
 * its forward did, whatever ran in other sets between them). */
enum lt_status lt_model_set_act_sets(lt_model *m, int n);
int lt_model_act_sets(const lt_model *m);
void lt_model_use_acts(lt_model *m, int k);

/* lt_model_new_tp of a pipeline stage: this rank's part of the stage. */
enum lt_status lt_model_new_stage_tp(lt_backend *be, const struct lt_model_config *c,
				     const struct lt_stage *stage, const struct lt_tp *tp,
				     lt_model **out);
/* The group's size (1 for a whole model) and this rank's place in it. */
int lt_model_tp_size(const lt_model *m);
int lt_model_tp_rank(const lt_model *m);
/* The whole model's tensors (names, shapes, offsets), tensor i of which
 * is tensor i of the part: m itself when not split. */
const lt_model *lt_model_tp_whole(const lt_model *m);
/* Tensor i's part on group rank `rank` in the whole tensor: whole[] (the
 * whole tensor's numel) to part[] (the part's), or back with to_whole
 * (padding rows are not copied back; replicated tensors are copied
 * whole). */
void lt_model_tp_copy(const lt_model *m, int i, int rank, float *whole, float *part,
		      int to_whole);
/* The training memory of one rank's part at tp ranks a group
 * (lt_model_estimate_memory of the part's config, with the staging of the
 * group's sums). */
void lt_model_tp_estimate(const struct lt_model_config *c, int tp, int B, int T, int threads,
			  enum lt_recompute recompute, enum lt_precision precision,
			  struct lt_mem_estimate *out);
/* Whether tensor i is whole on every rank of the group (a norm). */
int lt_model_tp_replicated(const lt_model *m, int i);

/* Asked before parameters are read: `block` -1 before the embedding's
 * lookup (in a forward), 0 to n_layers - 1 before that block computes (in
 * a forward, backward = 0; in a backward, 1, before its recompute or its
 * backward), and n_layers before the final norm and the head (the tied
 * head reads the embedding table) in a forward, and before the final
 * norm's backward. On return what it names must be at its place (the
 * embedding's and the output range's set by lt_model_place_ranges); a
 * failure ends the pass with that status. */
struct lt_param_hook {
	void *ctx;
	enum lt_status (*need)(void *ctx, int block, int backward);
};
/* Sets (NULL: clears) the hook; the model keeps a copy of it. */
void lt_model_set_param_hook(lt_model *m, const struct lt_param_hook *hook);

/* Draws the initial weights: normal(0, 0.02) for every matrix, scaled by
 * 1/sqrt(2 * layers) for the residual output projections (o_proj,
 * down_proj); norm weights 1. Depends only on the seed. */
enum lt_status lt_model_init(lt_model *m, uint64_t seed);

/* Plans (and allocates once) the activations for batch B and sequence T;
 * nothing is allocated inside a step after this. A later plan of no more
 * tokens (B * T) reuses the buffers, so switching between batch sizes
 * costs nothing; a larger one allocates them anew. */
enum lt_status lt_model_plan(lt_model *m, int B, int T);

/* Forward pass over tokens[B*T] predicting targets[B*T] (int32 host
 * arrays; a target < 0 is ignored). Writes the summed loss and the number
 * of predicted targets. The LM head and the loss run over row chunks, so
 * no [B*T, V] logits buffer exists. When grad_scale != 0 the head's
 * gradients (of grad_scale * loss_sum) are made here, chunk by chunk,
 * ready for lt_model_backward. */
enum lt_status lt_model_forward(lt_model *m, const int32_t *tokens, const int32_t *targets,
				float grad_scale, double *loss_sum, long *n_targets);
/* Backward pass after a forward with grad_scale != 0: adds the gradient of
 * grad_scale * loss_sum into the gradient buffer. */
enum lt_status lt_model_backward(lt_model *m);
/* What lt_model_backward tells its caller as it goes, each function
 * called with ctx. A failure ends the backward with that status. */
struct lt_grad_hook {
	void *ctx;
	/* The gradients of elements [begin, end) of the flat buffer are
	 * complete for this backward: after the output layer (the final norm,
	 * and the head when untied), after each block (last first) and after
	 * the embedding. The ranges cover the buffer once. The backend's
	 * queued work may still be running: read through the backend. */
	enum lt_status (*ready)(void *ctx, size_t begin, size_t end);
	/* (optional, NULL: none) Between two ops of a block: a moment to
	 * advance exchanges that ready started. */
	enum lt_status (*between_ops)(void *ctx);
	/* (optional, NULL: the lookup's gradient goes into the buffer) With
	 * it, backward keeps the gradient of the embedding lookup apart: it
	 * reports the embedding's range right after the output layer's
	 * (holding only the tied head's gradient, and what earlier backwards
	 * added), and once the blocks are done it calls lookup_ready with the
	 * lookup's gradient, which the caller must add in: rows[count] are the
	 * distinct tokens of the batch in ascending order, grads[count, dim]
	 * the gradient of their rows of the table whose row 0 is flat element
	 * `table` (a view of the backend's scratch, valid until the next
	 * forward). Exchanging the head's gradient early, and the lookup's as a
	 * few rows, spares an exchange a whole table at backward's end. */
	enum lt_status (*lookup_ready)(void *ctx, size_t table, const int32_t *rows, int count,
				       lt_ref grads);
};
/* Sets (NULL: clears) the hook; the model keeps a copy of it. */
void lt_model_set_grad_hook(lt_model *m, const struct lt_grad_hook *hook);
/* Zeroes the gradient buffer. */
void lt_model_zero_grads(lt_model *m);
/* out[rows, V] = the logits of rows row0 .. row0+rows-1 (of the B*T) of
 * the last forward, computed again from its final activations: no [B*T, V]
 * buffer is kept. In bf16 they are the bf16 logits the loss saw, widened. */
enum lt_status lt_model_read_logits(lt_model *m, int row0, int rows, float *out);
/* Before the first lt_model_plan: the head runs over at most `rows` rows
 * at a time (rows <= 0: as many as 64 MiB of logits hold, the default). */
void lt_model_set_head_rows(lt_model *m, int rows);

/* A loss in place of the cross-entropy in training forwards (grad_scale
 * != 0; evaluation keeps the cross-entropy): distillation's. Each
 * function is called with ctx; a failure ends the forward with it. */
struct lt_head_loss {
	void *ctx;
	/* After the final norm, before the head: the forward's tokens[B*T]. */
	enum lt_status (*begin)(void *ctx, const int32_t *tokens, int B, int T);
	/* In place of xent over rows [r0, r0 + R): logits[R, V] (the
	 * activation type) to be overwritten with the gradient of grad_scale
	 * times the loss, losses[R] (f32) the cross-entropy of each row, which
	 * the forward sums, targets[R] (i32). */
	void (*chunk)(void *ctx, lt_ref losses, lt_ref logits, lt_ref targets, int r0, int R,
		      float grad_scale);
	/* After the last chunk. */
	enum lt_status (*end)(void *ctx);
};
/* Sets (NULL: clears) the loss; the model keeps a copy of it. */
void lt_model_set_head_loss(lt_model *m, const struct lt_head_loss *loss);
/* A model that only runs forward (a teacher): its gradient buffer is
 * released, and backward, zero_grads and an optimizer are bugs then. */
void lt_model_freeze(lt_model *m);
/* The forward of tokens[B*T] (B, T of the plan) up to the final norm, the
 * head left out, queued on the backend: for lt_model_head_logits. */
enum lt_status lt_model_forward_hidden(lt_model *m, const int32_t *tokens);
/* The logits[R, V] of rows [r0, r0 + R) of the last forward (R at most
 * lt_model_head_rows), into the model's chunk of logits, which is valid
 * until the model's next op: queued, not waited for. */
lt_ref lt_model_head_logits(lt_model *m, int r0, int R);
/* The rows of logits the head computes at a time in the current plan. */
int lt_model_head_rows(const lt_model *m);
/* Before the first lt_model_plan: what forward keeps for backward (the
 * default LT_RECOMPUTE_NONE). */
void lt_model_set_recompute(lt_model *m, enum lt_recompute r);
/* Before the first lt_model_plan and lt_model_decode_begin: the precision
 * (the default LT_PRECISION_FP32); bf16 allocates the compute copy of the
 * weights. */
enum lt_status lt_model_set_precision(lt_model *m, enum lt_precision p);
enum lt_precision lt_model_precision(const lt_model *m);

/* Right after lt_model_new, before any other setting: with lora->rank > 0
 * the flat parameter buffer (and so the tensor list, the gradients, the
 * optimizer and checkpoints' optimizer state) holds only the adapters,
 * block by block (no embedding or output range), while the base weights
 * move to a frozen buffer without gradients (bf16 once the precision is
 * bf16, f32 otherwise). The embedding, the norms and the head are frozen.
 * lt_model_init draws the base as it would without adapters, A
 * uniform(-1/sqrt(in), 1/sqrt(in)) and B zero. */
enum lt_status lt_model_set_lora(lt_model *m, const struct lt_lora *lora);
/* lt_model_new, lt_model_set_lora and lt_model_set_precision at once,
 * without ever holding the base in f32 where it is to be bf16, nor its
 * gradients: what a fine-tune of a large model must do to fit. */
enum lt_status lt_model_new_adapted(lt_backend *be, const struct lt_model_config *c,
				    const struct lt_lora *lora, enum lt_precision p,
				    lt_model **out);
/* The adapters' settings (rank 0 without). */
const struct lt_lora *lt_model_lora(const lt_model *m);
/* The frozen base tensors (none without adapters), each at the place
 * lt_model_frozen_ref gives: the block matrices (q, k, v, o, gate, up and
 * down projections) in one buffer of lt_lora_base_type, the rest in
 * another of the activation type. */
int lt_model_num_frozen(const lt_model *m);
const struct lt_tensor *lt_model_frozen(const lt_model *m, int i);
lt_ref lt_model_frozen_ref(const lt_model *m, const struct lt_tensor *t);
/* The frozen tensor with this name, or NULL. */
const struct lt_tensor *lt_model_find_frozen(const lt_model *m, const char *name);
/* The model's own weights, those a pretrained model's file holds: every tensor, or with
 * adapters the frozen base (adapters are never among them). */
int lt_model_num_weights(const lt_model *m);
const struct lt_tensor *lt_model_weight(const lt_model *m, int i);
/* The adapters' first values (A drawn from seed as lt_model_init draws them, B zero),
 * for a model whose base came from elsewhere (a pretrained model's file). */
enum lt_status lt_model_init_adapters(lt_model *m, uint64_t seed);
/* The weight with this name, or NULL. */
const struct lt_tensor *lt_model_find_weight(const lt_model *m, const char *name);
/* Weight t (of lt_model_weight) = x[t->numel]: into the f32 parameters, or into the
 * frozen base, rounded to nearest even where that is bf16, quantized where it is q8_0
 * or q4_0 (in x's own bytes: x is used up). */
enum lt_status lt_model_write_weight(lt_model *m, const struct lt_tensor *t, float *x);
/* Before each training forward with dropout: the key its masks are drawn
 * from (the same key gives the same masks). */
void lt_model_set_dropout_key(lt_model *m, uint64_t key);
/* W += (alpha / rank) B A for every adapted matrix, then B = 0: the model
 * computes what it did, with the adapters folded into the base (in bf16
 * the merged base is rounded to bf16). For export. */
enum lt_status lt_model_merge_lora(lt_model *m);

/* KV-cached decoding, for generation: each new token costs O(context), not
 * O(context^2). Its buffers are separate from the training plan's, which
 * stays as it was.
 *
 * lt_model_decode_begin allocates, for B sequences of up to S <= max_seq
 * tokens, a key/value cache for every layer and inference activations for
 * up to S new tokens per sequence per call (calling it again with the same
 * B and S keeps them; another shape replaces them). */
enum lt_status lt_model_decode_begin(lt_model *m, int B, int S);
/* Runs the forward pass of T new tokens per sequence, tokens[B*T] (int32
 * host array, ordered (b, t)), at positions pos0 .. pos0+T-1, attending to
 * the cached positions 0 .. pos0-1 that earlier calls filled; pos0 + T <= S.
 * Writes logits[B*V] (host) for the last new token of each sequence only.
 * Calling with pos0 = 0 starts new sequences. A split model decodes with
 * every rank of its group, each calling with the same tokens, and V is
 * the whole model's vocabulary (every rank gets every logit). */
enum lt_status lt_model_decode(lt_model *m, const int32_t *tokens, int T, int pos0,
			       float *logits);
/* Frees the cache and the decoding activations (safe to call twice). */
void lt_model_decode_end(lt_model *m);

#endif
