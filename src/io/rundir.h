/* The layout of a run directory and of the checkpoints in it: every name
 * lltrain gives a file or directory there, and the functions that build
 * paths from them (through lt_fs_join: an error, never a truncated path)
 * or read them back. A writer or reader of a run spells no name itself.
 *
 *   RUN/config.ini               the resolved config of the run
 *   RUN/metrics.jsonl            one JSON line per logged step
 *   RUN/tb/                      TensorBoard's event files (io/tboard.h)
 *   RUN/data/                    the prepared data (token shards and
 *                                tokenizer.json) when data.dir is unset
 *   RUN/lr_find.jsonl            a learning-rate range test's curve
 *                                (lltrain tune-lr, train.lr = auto)
 *   RUN/checkpoints/step_NNNNNNNN/
 *                                a checkpoint (see checkpoint.h):
 *                                model.safetensors, the optimizer files
 *                                (optimizer.safetensors, or
 *                                optimizer-RRRRR-of-NNNNN.safetensors per
 *                                rank), tokenizer.json (and
 *                                tokenizer_config.json), state.json
 *   RUN/checkpoints/.tmp-step_NNNNNNNN-TAG
 *                                a save under way (TAG: the saving pid)
 *   RUN/checkpoints/.tmp-step_NNNNNNNN-TAG-old
 *                                an older checkpoint of that step, set
 *                                aside while the save replaces it
 *   RUN/checkpoints/step_NNNNNNNN.damaged (or .damaged-K, K >= 2)
 *                                a checkpoint that failed to verify, moved
 *                                aside untouched when a run resumed from
 *                                an older one (no save or prune touches
 *                                it)
 *
 * Ownership: functions borrow their arguments and write names and paths
 * into the caller's buffers. */
#ifndef LT_RUNDIR_H
#define LT_RUNDIR_H

#include <stddef.h>

#include "status.h"

/* Entries of the run directory. */
#define LT_RUNDIR_CONFIG "config.ini"
#define LT_RUNDIR_METRICS "metrics.jsonl"
#define LT_RUNDIR_TBOARD "tb"
#define LT_RUNDIR_DATA "data"
#define LT_RUNDIR_LR_FIND "lr_find.jsonl"
#define LT_RUNDIR_CHECKPOINTS "checkpoints"
/* Files of a checkpoint directory (the tokenizer's also of a data
 * directory). */
#define LT_RUNDIR_MODEL "model.safetensors"
#define LT_RUNDIR_OPTIM "optimizer.safetensors"
#define LT_RUNDIR_TOKENIZER "tokenizer.json"
#define LT_RUNDIR_TOKENIZER_CONFIG "tokenizer_config.json"
#define LT_RUNDIR_STATE "state.json"
/* The most ranks whose optimizer files a checkpoint names (5 digits). */
#define LT_RUNDIR_MAX_SHARDS 99999
/* Room for any name the functions below give, with its NUL. */
#define LT_RUNDIR_NAME_MAX 64

/* out[cap] = run_dir/checkpoints. */
enum lt_status lt_rundir_checkpoints(const char *run_dir, char *out, size_t cap);
/* out[cap] = run_dir/checkpoints/step_NNNNNNNN for step >= 0. */
enum lt_status lt_rundir_checkpoint(const char *run_dir, long step, char *out, size_t cap);
/* out[cap] = the run directory of the checkpoint directory ckpt
 * (RUN/checkpoints/step_N): ckpt less its last two names, or ckpt/../..
 * when it has fewer. */
enum lt_status lt_rundir_of_checkpoint(const char *ckpt, char *out, size_t cap);

/* "step_NNNNNNNN": the name of the checkpoint of step >= 0 (8 digits at
 * least). */
void lt_rundir_step_name(long step, char name[LT_RUNDIR_NAME_MAX]);
/* The step of a checkpoint's name ("step_" and 8 or more digits), or -1
 * when name is not one. */
long lt_rundir_step_of(const char *name);

/* ".tmp-step_NNNNNNNN-TAG": the temporary directory of a save of step,
 * tagged with (say) the saving process's id. */
void lt_rundir_temp_name(long step, long tag, char name[LT_RUNDIR_NAME_MAX]);
/* What every temporary name of step begins with (".tmp-step_NNNNNNNN-"),
 * or, for step < 0, every temporary name of any step (".tmp-step_"). */
void lt_rundir_temp_prefix(long step, char prefix[LT_RUNDIR_NAME_MAX]);
/* 1 when name is a temporary's (a save's, or an aside one's) of any step. */
int lt_rundir_is_temp_name(const char *name);
/* out[cap] = the name an older checkpoint is set aside under while the
 * save with temporary temp_name replaces it ("TEMP_NAME-old": a
 * temporary's name too, so that pruning removes a stale one). */
enum lt_status lt_rundir_aside_name(const char *temp_name, char *out, size_t cap);

/* out[cap] = the path a damaged checkpoint directory ckpt is moved aside
 * to: "CKPT.damaged" for k <= 1, else "CKPT.damaged-K" (the k-th try,
 * where the earlier names are taken). Neither is a checkpoint's name nor
 * a temporary's. */
enum lt_status lt_rundir_damaged_path(const char *ckpt, int k, char *out, size_t cap);

/* The optimizer file of rank of nranks (1 <= nranks <=
 * LT_RUNDIR_MAX_SHARDS): optimizer.safetensors for one rank, else
 * optimizer-RRRRR-of-NNNNN.safetensors (rank 0-based). */
void lt_rundir_optim_name(int rank, int nranks, char name[LT_RUNDIR_NAME_MAX]);
/* 1 when name is one that lt_rundir_optim_name gives. */
int lt_rundir_is_optim_name(const char *name);

#endif
