/* The table of the run configuration's keys (see conf.h), one row per key
 * with its type, default, range and doc, from which parsing, `info --keys`,
 * the saved config and the man-page check all derive; its sections; and
 * the embedded presets. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* strcasecmp, strncasecmp under -std=c11 */
#endif
#include "conf.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "conf_impl.h"
#include "embed.h"

_Static_assert(LT_SCHED_COSINE == 0 && LT_SCHED_LINEAR == 1 && LT_SCHED_CONSTANT == 2,
	       "schedule names follow enum lt_schedule");
_Static_assert(sizeof(enum lt_schedule) == sizeof(int), "an enum key is stored as an int");
_Static_assert(LT_MATMUL_FP32 == 0 && LT_MATMUL_TF32 == 1 && sizeof(enum lt_matmul) == sizeof(int),
	       "matmul names follow enum lt_matmul");
_Static_assert(LT_RECOMPUTE_NONE == 0 && LT_RECOMPUTE_BLOCK == 1 &&
	       sizeof(enum lt_recompute) == sizeof(int), "recompute names follow enum lt_recompute");
_Static_assert(LT_ROPE_NONE == 0 && LT_ROPE_LLAMA3 == 1, "rope scaling names follow enum lt_rope_scaling");
_Static_assert(LT_PRECISION_FP32 == 0 && LT_PRECISION_BF16 == 1 &&
	       sizeof(enum lt_precision) == sizeof(int), "precision names follow enum lt_precision");
_Static_assert(LT_LORA_BASE_AUTO == 0 && LT_LORA_BASE_Q4_0 == 4 &&
	       sizeof(enum lt_lora_base) == sizeof(int), "lora_base names follow enum lt_lora_base");

/* ------------------------------------------------------------- the table */

#define FIELD(f) .offset = offsetof(struct lt_conf, f), .size = sizeof(((struct lt_conf *)0)->f)

static const char *const schedule_names[] = { "cosine", "linear", "constant", NULL };
static const char *const matmul_names[] = { "fp32", "tf32", NULL };
static const char *const recompute_names[] = { "none", "block", NULL };
static const char *const precision_names[] = { "fp32", "bf16", NULL };
static const char *const lora_base_names[] = { "auto", "f32", "bf16", "q8_0", "q4_0", NULL };
static const char *const rope_scaling_names[] = { "none", "llama3", NULL };
static const char *const balance_names[] = { "even", "auto", NULL };
static const char *const exchange_names[] = { "auto", "mpi", NULL };
static const char *const sync_names[] = { "step", "local", NULL };
static const char *const outer_dtype_names[] = { "fp32", "bf16", NULL };
static const char *const section_names[] = { "model", "train", "data", "run", "dist", "distill", NULL };
static const char *const section_docs[] = {
	"the network: a LLaMA decoder, named as Hugging Face's LlamaConfig",
	"the optimisation: batch shape, run length, AdamW and the learning-rate schedule",
	"the token data: where it is, and how train prepares it from a corpus",
	"the run: its directory, device, and how often it logs, evaluates and saves",
	"training over several ranks (mpiexec): sharding, shares of the batch, faults",
	"distillation: a teacher model whose softened outputs the model also learns",
};

static const struct lt_conf_key keys[] = {
	{ .section = "model", .name = "vocab_size", .type = LT_CONF_INT, FIELD(model.vocab_size),
	  .min = 1, .max = 16777216, .def = "4096",
	  .doc = "tokens in the vocabulary: rows of the embedding table and of the output head" },
	{ .section = "model", .name = "dim", .type = LT_CONF_INT, FIELD(model.dim),
	  .min = 1, .max = 65536, .def = "192",
	  .doc = "width of the residual stream (hidden_size)" },
	{ .section = "model", .name = "n_layers", .type = LT_CONF_INT, FIELD(model.n_layers),
	  .min = 1, .max = 1024, .def = "4",
	  .doc = "transformer blocks" },
	{ .section = "model", .name = "n_heads", .type = LT_CONF_INT, FIELD(model.n_heads),
	  .min = 1, .max = 1024, .def = "6",
	  .doc = "attention heads; dim / n_heads, the head size, must be whole and even unless "
		 "head_dim is set" },
	{ .section = "model", .name = "head_dim", .type = LT_CONF_INT, FIELD(model.head_dim),
	  .min = 0, .max = 65536, .def = "0",
	  .doc = "width of one attention head; 0: dim / n_heads (a pruned or imported model may "
		 "have another, n_heads * head_dim then differing from dim)" },
	{ .section = "model", .name = "n_kv_heads", .type = LT_CONF_INT, FIELD(model.n_kv_heads),
	  .min = 1, .max = 1024, .def = "6",
	  .doc = "key/value heads (grouped-query attention when fewer); divides n_heads" },
	{ .section = "model", .name = "ffn_dim", .type = LT_CONF_INT, FIELD(model.ffn_dim),
	  .min = 1, .max = 1048576, .def = "512",
	  .doc = "hidden width of the SwiGLU feed-forward block (intermediate_size)" },
	{ .section = "model", .name = "max_seq", .type = LT_CONF_INT, FIELD(model.max_seq),
	  .min = 1, .max = 1048576, .def = "128",
	  .doc = "the longest sequence the model is made for (max_position_embeddings)" },
	{ .section = "model", .name = "rope_theta", .type = LT_CONF_FLOAT, FIELD(model.rope_theta),
	  .min = 1, .max = 1e9, .open_min = 1, .def = "10000",
	  .doc = "base of the rotary position embedding's frequencies" },
	{ .section = "model", .name = "norm_eps", .type = LT_CONF_FLOAT, FIELD(model.norm_eps),
	  .min = 0, .max = 1, .open_min = 1, .open_max = 1, .def = "1e-5",
	  .doc = "epsilon added to the mean square in RMSNorm" },
	{ .section = "model", .name = "tied", .type = LT_CONF_BOOL, FIELD(model.tied),
	  .def = "true",
	  .doc = "the output head shares the embedding table" },
	{ .section = "model", .name = "rope_scaling", .type = LT_CONF_ENUM, FIELD(model.rope_scaling),
	  .choices = rope_scaling_names, .def = "none",
	  .doc = "none, or llama3: Llama 3's frequency-dependent scaling of the rotary frequencies "
		 "(rope_scaling of config.json)" },
	{ .section = "model", .name = "rope_factor", .type = LT_CONF_FLOAT, FIELD(model.rope_factor),
	  .min = 1, .max = 1e6, .def = "8",
	  .doc = "llama3 scaling: what the lowest frequencies are divided by (factor)" },
	{ .section = "model", .name = "rope_low_freq_factor", .type = LT_CONF_FLOAT,
	  FIELD(model.rope_low_freq_factor), .min = 0, .max = 1e6, .open_min = 1, .def = "1",
	  .doc = "llama3 scaling: wavelengths above rope_original_max_seq / this are scaled "
		 "(low_freq_factor)" },
	{ .section = "model", .name = "rope_high_freq_factor", .type = LT_CONF_FLOAT,
	  FIELD(model.rope_high_freq_factor), .min = 0, .max = 1e6, .open_min = 1, .def = "4",
	  .doc = "llama3 scaling: wavelengths below rope_original_max_seq / this are kept "
		 "(high_freq_factor)" },
	{ .section = "model", .name = "rope_original_max_seq", .type = LT_CONF_INT,
	  FIELD(model.rope_original_max_seq), .min = 1, .max = 16777216, .def = "8192",
	  .doc = "llama3 scaling: the context the model was first trained for "
		 "(original_max_position_embeddings)" },

	{ .section = "train", .name = "batch", .type = LT_CONF_INT, FIELD(train.batch),
	  .min = 1, .max = 65536, .def = "16",
	  .doc = "sequences per micro-batch" },
	{ .section = "train", .name = "seq", .type = LT_CONF_INT, FIELD(train.seq),
	  .min = 1, .max = 1048576, .def = "128",
	  .doc = "tokens per sequence; at most model.max_seq" },
	{ .section = "train", .name = "grad_accum", .type = LT_CONF_INT, FIELD(train.grad_accum),
	  .min = 1, .max = 65536, .def = "1",
	  .doc = "micro-batches whose gradients make one optimizer step" },
	{ .section = "train", .name = "micro_batch", .type = LT_CONF_INT, FIELD(train.micro_batch),
	  .min = 0, .max = 65536, .takes_auto = 1, .def = "0",
	  .doc = "the step's batch x grad_accum sequences split into micro-batches of N "
		 "(0 = batch as given; auto = the largest that fits run.mem_limit)" },
	{ .section = "train", .name = "steps", .type = LT_CONF_INT, FIELD(train.steps),
	  .min = 1, .max = 1000000000, .def = "600",
	  .doc = "optimizer steps of the whole run; the schedule decays over them" },
	{ .section = "train", .name = "max_minutes", .type = LT_CONF_DOUBLE,
	  FIELD(train.max_minutes), .min = 0, .max = 1e7, .def = "5",
	  .doc = "wall-clock budget in minutes, after which the run saves and stops; 0 = none" },
	{ .section = "train", .name = "lr", .type = LT_CONF_FLOAT, FIELD(train.optim.lr),
	  .min = 0, .max = 10, .open_min = 1, .takes_auto = 1, .def = "2e-3",
	  .doc = "peak learning rate, reached at the end of the warmup; auto: a range test "
		 "(lltrain tune-lr) chooses it before a new run" },
	{ .section = "train", .name = "min_lr", .type = LT_CONF_FLOAT, FIELD(train.optim.min_lr),
	  .min = 0, .max = 10, .def = "2e-4",
	  .doc = "the learning rate that the decay ends at; at most lr" },
	{ .section = "train", .name = "warmup_steps", .type = LT_CONF_INT,
	  FIELD(train.optim.warmup_steps), .min = 0, .max = 1000000000, .def = "50",
	  .doc = "steps of linear warmup from lr / warmup_steps up to lr" },
	{ .section = "train", .name = "schedule", .type = LT_CONF_ENUM, FIELD(train.optim.schedule),
	  .choices = schedule_names, .def = "cosine",
	  .doc = "after the warmup: cosine or linear decay to min_lr, or constant at lr" },
	{ .section = "train", .name = "beta1", .type = LT_CONF_FLOAT, FIELD(train.optim.beta1),
	  .min = 0, .max = 1, .open_max = 1, .def = "0.9",
	  .doc = "AdamW's decay of the gradient's running mean" },
	{ .section = "train", .name = "beta2", .type = LT_CONF_FLOAT, FIELD(train.optim.beta2),
	  .min = 0, .max = 1, .open_max = 1, .def = "0.95",
	  .doc = "AdamW's decay of the squared gradient's running mean" },
	{ .section = "train", .name = "eps", .type = LT_CONF_FLOAT, FIELD(train.optim.eps),
	  .min = 0, .max = 1, .open_min = 1, .def = "1e-8",
	  .doc = "AdamW's epsilon, added to the root of the second moment" },
	{ .section = "train", .name = "weight_decay", .type = LT_CONF_FLOAT,
	  FIELD(train.optim.weight_decay), .min = 0, .max = 10, .def = "0.1",
	  .doc = "decoupled weight decay of the matrices (never of the norm weights)" },
	{ .section = "train", .name = "grad_clip", .type = LT_CONF_FLOAT,
	  FIELD(train.optim.grad_clip), .min = 0, .max = 1e6, .def = "1.0",
	  .doc = "bound on the global L2 norm of the gradient; 0 turns clipping off" },
	{ .section = "train", .name = "seed", .type = LT_CONF_INT64, FIELD(train.seed),
	  .min = 0, .max = LT_CONF_SEED_MAX, .def = "1",
	  .doc = "seeds the initial weights, the order of the batches and the samples" },
	{ .section = "train", .name = "max_bad_steps", .type = LT_CONF_INT,
	  FIELD(train.max_bad_steps), .min = 1, .max = 1000000, .def = "10",
	  .doc = "steps in a row with a NaN or infinite loss (each skipped) before the run stops" },
	{ .section = "train", .name = "matmul", .type = LT_CONF_ENUM, FIELD(train.matmul),
	  .choices = matmul_names, .def = "fp32",
	  .doc = "fp32, or tf32: matrix products round their inputs to TF32 where the device "
		 "has TF32 tensor cores (NVIDIA, compute capability 8.0 and later)" },
	{ .section = "train", .name = "recompute", .type = LT_CONF_ENUM, FIELD(train.recompute),
	  .choices = recompute_names, .def = "none",
	  .doc = "none, or block: keep only each block's input and run the block's forward "
		 "again in backward (less memory, about a third more compute, same gradients)" },
	{ .section = "train", .name = "precision", .type = LT_CONF_ENUM, FIELD(train.precision),
	  .choices = precision_names, .def = "fp32",
	  .doc = "fp32, or bf16: weights are copied to bf16 for each step and activations are "
		 "bf16; parameters, gradients and optimizer state stay fp32" },
	{ .section = "train", .name = "init", .type = LT_CONF_STRING, FIELD(train.init),
	  .min = 0, .def = "",
	  .doc = "a new run starts from this model (a Hugging Face model directory, a GGUF file or "
		 "an lltrain checkpoint or run), its shape and weights; empty = random weights" },
	{ .section = "train", .name = "lora_rank", .type = LT_CONF_INT, FIELD(train.lora_rank),
	  .min = 0, .max = 65536, .def = "0",
	  .doc = "rank of the LoRA adapters beside lora_targets; the base weights are frozen "
		 "and only the adapters train; 0 trains every weight" },
	{ .section = "train", .name = "lora_alpha", .type = LT_CONF_FLOAT, FIELD(train.lora_alpha),
	  .min = 0, .max = 1e6, .open_min = 1, .def = "16",
	  .doc = "the adapters' output is scaled by lora_alpha / lora_rank" },
	{ .section = "train", .name = "lora_dropout", .type = LT_CONF_FLOAT,
	  FIELD(train.lora_dropout), .min = 0, .max = 1, .open_max = 1, .def = "0",
	  .doc = "probability of dropping each element of an adapter's input in training" },
	{ .section = "train", .name = "lora_targets", .type = LT_CONF_STRING,
	  FIELD(train.lora_targets), .min = 1, .def = "q,k,v,o,gate,up,down",
	  .doc = "the matrices that get adapters: a comma list of q, k, v, o, gate, up, down" },
	{ .section = "train", .name = "lora_base", .type = LT_CONF_ENUM, FIELD(train.lora_base),
	  .choices = lora_base_names, .def = "auto",
	  .doc = "the frozen base's block matrices with adapters: auto (the activation type), "
		 "f32, bf16, or GGUF's q8_0 or q4_0 blocks dequantized inside the GEMMs" },

	{ .section = "data", .name = "dir", .type = LT_CONF_STRING, FIELD(data.dir),
	  .min = 0, .def = "",
	  .doc = "prepared data: tokenizer.json, train_*.bin, val_*.bin; empty = RUN_DIR/data" },
	{ .section = "data", .name = "corpus", .type = LT_CONF_STRING, FIELD(data.corpus),
	  .min = 0, .def = "/usr/share/games/fortunes",
	  .doc = "text file or directory that train prepares when data.dir holds no data" },
	{ .section = "data", .name = "doc_separator", .type = LT_CONF_STRING,
	  FIELD(data.doc_separator), .min = 0, .def = "%",
	  .doc = "a line equal to this ends a document; empty = each file is one document" },
	{ .section = "data", .name = "vocab_size", .type = LT_CONF_INT, FIELD(data.vocab_size),
	  .min = 0, .max = 16777216, .def = "0",
	  .doc = "size of the tokenizer that train prepares; 0 = model.vocab_size" },
	{ .section = "data", .name = "val_fraction", .type = LT_CONF_DOUBLE,
	  FIELD(data.val_fraction), .min = 0, .max = 0.5, .def = "0.05",
	  .doc = "share of the documents held out for validation" },
	{ .section = "data", .name = "shard_tokens", .type = LT_CONF_INT, FIELD(data.shard_tokens),
	  .min = 1, .max = 1e12, .def = "100000000",
	  .doc = "tokens per shard file" },

	{ .section = "run", .name = "dir", .type = LT_CONF_STRING, FIELD(run.dir),
	  .min = 1, .def = "runs/default",
	  .doc = "the run directory: config.ini, metrics.jsonl, tb/ and checkpoints/" },
	{ .section = "run", .name = "device", .type = LT_CONF_STRING, FIELD(run.device),
	  .min = 1, .def = "cpu",
	  .doc = "the device: cpu, opencl[:P.D] (OpenCL platform P, device D) or auto" },
	{ .section = "run", .name = "threads", .type = LT_CONF_INT, FIELD(run.threads),
	  .min = 0, .max = 4096, .def = "0",
	  .doc = "CPU threads; 0 = OpenMP's choice" },
	{ .section = "run", .name = "mem_limit", .type = LT_CONF_DOUBLE, FIELD(run.mem_limit),
	  .min = 0, .max = 1048576, .def = "0",
	  .doc = "GiB of memory a rank may train in, for train.micro_batch = auto and "
		 "--plan auto; 0 = what its device has free" },
	{ .section = "run", .name = "log_every", .type = LT_CONF_INT, FIELD(run.log_every),
	  .min = 1, .max = 1000000000, .def = "50",
	  .doc = "a plain log line every N steps when the output is not a terminal" },
	{ .section = "run", .name = "eval_every", .type = LT_CONF_INT, FIELD(run.eval_every),
	  .min = 0, .max = 1000000000, .def = "200",
	  .doc = "validation loss every N steps; 0 = at the end only" },
	{ .section = "run", .name = "eval_batches", .type = LT_CONF_INT, FIELD(run.eval_batches),
	  .min = 1, .max = 1000000, .def = "16",
	  .doc = "validation batches per evaluation" },
	{ .section = "run", .name = "sample_every", .type = LT_CONF_INT, FIELD(run.sample_every),
	  .min = 0, .max = 1000000000, .def = "0",
	  .doc = "print a sample of the model's text every N steps; 0 = never" },
	{ .section = "run", .name = "sample_tokens", .type = LT_CONF_INT, FIELD(run.sample_tokens),
	  .min = 1, .max = 1000000, .def = "200",
	  .doc = "tokens in those samples and in the one at the end" },
	{ .section = "run", .name = "checkpoint_every", .type = LT_CONF_INT,
	  FIELD(run.checkpoint_every), .min = 0, .max = 1000000000, .def = "200",
	  .doc = "save a checkpoint every N steps; 0 = at the end only" },
	{ .section = "run", .name = "keep_checkpoints", .type = LT_CONF_INT,
	  FIELD(run.keep_checkpoints), .min = 1, .max = 1000000, .def = "3",
	  .doc = "the newest N checkpoints are kept, older ones removed" },
	{ .section = "run", .name = "tensorboard", .type = LT_CONF_BOOL, FIELD(run.tensorboard),
	  .def = "true",
	  .doc = "write TensorBoard event files into RUN/tb (tensorboard --logdir RUN/tb)" },

	{ .section = "dist", .name = "zero", .type = LT_CONF_INT, FIELD(dist.zero),
	  .min = 0, .max = 3, .def = "0",
	  .doc = "ZeRO stage: 0 all-reduces gradients, 1 shards the AdamW moments, "
		 "2 also reduce-scatters gradients during backward, 3 also shards the "
		 "parameters, gathering each block as it computes" },
	{ .section = "dist", .name = "tp", .type = LT_CONF_INT, FIELD(dist.tp),
	  .min = 1, .max = 4096, .def = "1",
	  .doc = "tensor parallelism: each N consecutive ranks split every block's matrices, "
		 "the embedding and the LM head between them (heads, kv-heads and ffn_dim must "
		 "divide by N); data parallelism and ZeRO run over the groups" },
	{ .section = "dist", .name = "pp", .type = LT_CONF_INT, FIELD(dist.pp),
	  .min = 1, .max = 4096, .def = "1",
	  .doc = "pipeline parallelism: the blocks split into N stages of consecutive ranks' "
		 "groups, each optimizer step's micro-batches (train.grad_accum, at least N) "
		 "flowing through them in a one-forward-one-backward schedule" },
	{ .section = "dist", .name = "pp_layers", .type = LT_CONF_STRING, FIELD(dist.pp_layers),
	  .def = "",
	  .doc = "each pipeline stage's blocks, first to last, as a comma list that sums to "
		 "model.n_layers (e.g. 3,5); empty: stages of even work, the head counted" },
	{ .section = "dist", .name = "pp_ahead", .type = LT_CONF_INT, FIELD(dist.pp_ahead),
	  .min = 0, .max = 64, .def = "0",
	  .doc = "forwards each pipeline stage but the last runs beyond the 1F1B warm-up: 1 "
		 "lets the boundary transfers travel behind compute, for one more "
		 "micro-batch's activations a stage" },
	{ .section = "dist", .name = "balance", .type = LT_CONF_ENUM, FIELD(dist.balance),
	  .choices = balance_names, .def = "even",
	  .doc = "the ranks' shares of each step: even, or auto (in proportion to their "
		 "measured speed)" },
	{ .section = "dist", .name = "balance_every", .type = LT_CONF_INT,
	  FIELD(dist.balance_every), .min = 0, .max = 1000000, .def = "20",
	  .doc = "with balance auto, steps between the ranks' comparisons of their speeds "
		 "(0 = only the first two, after the second and third steps)" },
	{ .section = "dist", .name = "exchange", .type = LT_CONF_ENUM, FIELD(dist.exchange),
	  .choices = exchange_names, .def = "auto",
	  .doc = "how gradients and parameters travel: auto (through shared memory when "
		 "every rank runs on one node, else MPI's collectives) or mpi" },
	{ .section = "dist", .name = "deterministic", .type = LT_CONF_BOOL,
	  FIELD(dist.deterministic), .def = "false",
	  .doc = "sum gradients exactly, so results are bitwise the same for any number of "
		 "ranks (slower)" },
	{ .section = "dist", .name = "comm_timeout", .type = LT_CONF_DOUBLE,
	  FIELD(dist.comm_timeout), .min = 0, .max = 86400, .open_min = 1, .def = "30",
	  .doc = "seconds a collective may make no progress before the job ends" },
	{ .section = "dist", .name = "sync", .type = LT_CONF_ENUM, FIELD(dist.sync),
	  .choices = sync_names, .def = "step",
	  .doc = "step: every rank exchanges gradients every step; local: ranks of a node do, "
		 "and the nodes average their parameters' moves every dist.local_steps steps "
		 "through an outer Nesterov step (local SGD; two nodes or more)" },
	{ .section = "dist", .name = "local_steps", .type = LT_CONF_INT, FIELD(dist.local_steps),
	  .min = 1, .max = 1000000, .def = "20",
	  .doc = "with sync local, the inner steps each node takes between exchanges" },
	{ .section = "dist", .name = "round_seconds", .type = LT_CONF_DOUBLE,
	  FIELD(dist.round_seconds), .min = 0, .max = 86400, .def = "0",
	  .doc = "with sync local, > 0: a round lasts this many seconds of wall time, each node "
		 "taking as many steps of train.batch / nodes sequences as it can (0 = rounds of "
		 "dist.local_steps steps; not with dist.deterministic)" },
	{ .section = "dist", .name = "outer_lr", .type = LT_CONF_DOUBLE, FIELD(dist.outer_lr),
	  .min = 0, .max = 10, .open_min = 1, .def = "0.7",
	  .doc = "with sync local, the outer step's learning rate on the nodes' mean move" },
	{ .section = "dist", .name = "outer_momentum", .type = LT_CONF_DOUBLE,
	  FIELD(dist.outer_momentum), .min = 0, .max = 1, .open_max = 1, .def = "0.9",
	  .doc = "with sync local, the outer step's Nesterov momentum (0 = none)" },
	{ .section = "dist", .name = "outer_overlap", .type = LT_CONF_BOOL,
	  FIELD(dist.outer_overlap), .def = "false",
	  .doc = "with sync local, exchange a round's move during the next round and apply "
		 "the outer step one round late" },
	{ .section = "dist", .name = "outer_dtype", .type = LT_CONF_ENUM, FIELD(dist.outer_dtype),
	  .choices = outer_dtype_names, .def = "fp32",
	  .doc = "with sync local, the type the moves cross between nodes in: fp32, or bf16 "
		 "(half the bytes; summed in fp32 on arrival)" },
	{ .section = "distill", .name = "teacher", .type = LT_CONF_STRING,
	  FIELD(distill.teacher), .min = 0, .def = "",
	  .doc = "train against this teacher too (an lltrain run or checkpoint, a Hugging Face "
		 "model directory or a GGUF file of the same tokenizer), frozen; empty = none" },
	{ .section = "distill", .name = "alpha", .type = LT_CONF_FLOAT, FIELD(distill.alpha),
	  .min = 0, .max = 1, .def = "0.5",
	  .doc = "the loss is alpha * cross-entropy + (1 - alpha) * T^2 * KL(teacher || model), "
		 "both at temperature T" },
	{ .section = "distill", .name = "temperature", .type = LT_CONF_FLOAT,
	  FIELD(distill.temperature), .min = 0, .max = 100, .open_min = 1, .def = "2",
	  .doc = "T: both softmaxes of the KL term divide the logits by it" },

	{ .name = NULL },
};

const struct lt_conf_key *lt_conf_keys(void)
{
	return keys;
}

int lt_conf_is_section(const char *name, size_t len)
{
	for (int i = 0; section_names[i]; i++)
		if (strlen(section_names[i]) == len && !strncmp(section_names[i], name, len))
			return 1;
	return 0;
}

const struct lt_conf_key *lt_conf_find(const char *section, const char *name)
{
	for (const struct lt_conf_key *k = keys; k->name; k++)
		if (!strcmp(k->section, section) && !strcmp(k->name, name))
			return k;
	return NULL;
}

void lt_conf_describe_unknown(const char *section, char *buf, size_t cap)
{
	size_t n;
	if (!lt_conf_is_section(section, strlen(section))) {
		snprintf(buf, cap, "unknown section (expected model, train, data, run, dist or distill)");
		return;
	}
	n = (size_t)snprintf(buf, cap, "unknown key (expected");
	for (const struct lt_conf_key *k = keys, *first = NULL; k->name && n < cap; k++) {
		if (strcmp(k->section, section))
			continue;
		n += (size_t)snprintf(buf + n, cap - n, "%s %s", first ? "," : "", k->name);
		if (!first)
			first = k;
	}
	if (n < cap)
		snprintf(buf + n, cap - n, ")");
}

const char *lt_conf_section_doc(const char *section)
{
	for (int i = 0; section_names[i]; i++)
		if (!strcmp(section_names[i], section))
			return section_docs[i];
	return "";
}

/* -------------------------------------------------------------- presets */

static const char *const preset_names[] = { "tiny", "15M", "110M", "1B", "7B", NULL };

const char *const *lt_conf_preset_names(void)
{
	return preset_names;
}

void lt_conf_list_presets(char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = '\0';
	for (int i = 0; preset_names[i] && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", i == 0 ? "" :
				      preset_names[i + 1] ? ", " : " or ", preset_names[i]);
}

/* The embedded data/presets/NAME.conf, or NULL. */
static const struct lt_embedded *embedded_preset(const char *name)
{
	size_t len = strlen(name);
	for (const struct lt_embedded *e = lt_embedded_presets; e->name; e++)
		if (!strncasecmp(e->name, name, len) && !strcmp(e->name + len, ".conf"))
			return e;
	return NULL;
}

enum lt_status lt_conf_apply_preset(struct lt_conf *c, const char *name)
{
	char origin[96], names[96];
	const struct lt_embedded *e = NULL;
	for (int i = 0; preset_names[i] && !e; i++)
		if (!strcasecmp(preset_names[i], name))
			e = embedded_preset(preset_names[i]);
	if (!e) {
		lt_conf_list_presets(names, sizeof names);
		lt_errmsg_set("preset '%s': unknown (expected %s)", name, names);
		return LT_ERR_NOTFOUND;
	}
	snprintf(origin, sizeof origin, "preset %.*s", (int)(strlen(e->name) - 5), e->name);
	return lt_conf_apply_string(c, e->text, origin);
}

/* The same value of every [model] key. */
static int same_model(const struct lt_conf *a, const struct lt_conf *b)
{
	char va[LT_CONF_VALUE_CAP], vb[LT_CONF_VALUE_CAP];
	for (const struct lt_conf_key *k = keys; k->name; k++) {
		if (strcmp(k->section, "model"))
			continue;
		lt_conf_format(a, k, va, sizeof va);
		lt_conf_format(b, k, vb, sizeof vb);
		if (strcmp(va, vb))
			return 0;
	}
	return 1;
}

const char *lt_conf_preset_of(const struct lt_conf *c)
{
	struct lt_conf p;
	for (int i = 0; preset_names[i]; i++) {
		lt_conf_defaults(&p);
		if (lt_conf_apply_preset(&p, preset_names[i]) == LT_OK && same_model(&p, c))
			return preset_names[i];
	}
	return NULL;
}
