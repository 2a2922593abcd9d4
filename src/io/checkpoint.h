/* Checkpoints: a directory RUN/checkpoints/step_NNNNNNNN (its names are
 * rundir.h's) holding
 *   model.safetensors      the parameters under Hugging Face names
 *                          (__metadata__ {"format": "pt"})
 *   optimizer-RRRRR-of-NNNNN.safetensors
 *                          the AdamW moments, sharded: one file per rank
 *                          (5 digits, rank 0-based, of N ranks), or a single
 *                          optimizer.safetensors when one process trained.
 *                          Each holds "exp_avg" and "exp_avg_sq" as flat F32
 *                          ranges [begin, end) of the flat parameter buffer,
 *                          metadata begin/end/numel/rank/ranks (begin/end/
 *                          numel alone in older files); the ranges tile
 *                          [0, numel), so a load on any number of ranks
 *                          reads each rank's range from the parts of the
 *                          files that overlap it
 *   tokenizer.json         the run's tokenizer (+ tokenizer_config.json)
 *   state.json             format_version, lltrain_version, step, data
 *                          cursor (samples), seed, elapsed seconds, tokens,
 *                          bad_steps, the resolved config (INI text), and
 *                          "files": {name: {bytes, crc32}} for each file above
 * written atomically: a temporary directory RUN/checkpoints/.tmp-step_N-PID,
 * every file fsynced (and read back for its checksum), rename, fsync of the
 * parent; a checkpoint of the same step is renamed aside first and removed
 * after. A failed save removes its temporary directory and leaves every
 * earlier checkpoint as it was. Writes past a file-size limit fail with
 * EFBIG and are reported only where the caller ignores SIGXFSZ. Several
 * ranks save together (the run directory on a file system all of them see):
 * rank 0 begins and hands the temporary directory to every rank, each
 * writes its shard, and after a barrier rank 0 commits (or abandons, when
 * any rank failed).
 *
 * Loading verifies sizes and checksums before reading anything and fails
 * with one line naming the file and the tensor (or byte) that is wrong, the
 * shape that differs from the model's, or the range of moments that no
 * optimizer file (or two of them) holds.
 *
 * Ownership: functions borrow their arguments; a struct lt_ckpt_state that
 * read_state or load filled owns its config, released by lt_ckpt_state_free;
 * a struct lt_ckpt_skips owns its records, released by lt_ckpt_skips_free. */
#ifndef LT_CHECKPOINT_H
#define LT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "model.h"
#include "optim.h"
#include "status.h"

struct lt_ckpt_state {
	long step;              /* optimizer steps done */
	uint64_t samples;       /* training samples consumed (the data cursor) */
	uint64_t seed;
	double elapsed;         /* training seconds so far */
	long tokens;            /* training tokens so far */
	int bad_steps;          /* NaN/Inf steps in a row at save time */
	char *config;           /* resolved config as INI text; malloc'd, NULL allowed on save */
	const char *tokenizer;  /* save: a tokenizer.json copied in (with the
				 * tokenizer_config.json beside it, if present), so
				 * a checkpoint stands alone; NULL = none. Load and
				 * read_state set it to NULL. */
	/* save: the names of n_extra more files the ranks wrote into the
	 * temporary directory (local SGD's outer state), listed in
	 * state.json with the others; NULL = none. One malloc'd block (the
	 * names may lie in it), which lt_ckpt_state_free frees. */
	const char *const *extra;
	int n_extra;
};

void lt_ckpt_state_free(struct lt_ckpt_state *s);  /* frees config and extra */

/* Saves into run_dir/checkpoints/step_<step, 8 digits>; *path (optional,
 * cap bytes) gets the directory written. One process: begin, then
 * model.safetensors, write_shard (rank 0 of 1, when o != NULL) and the
 * rest of commit, and abandon on a failure. */
enum lt_status lt_checkpoint_save(const char *run_dir, lt_model *m, const lt_optim *o,
				  const struct lt_ckpt_state *s, char *path, size_t cap);

/* A save by several ranks, in steps. Rank 0: makes run_dir/checkpoints and
 * an empty temporary directory for step `step` in it, named from step and
 * tag (rank 0's pid; a stale one of the same name is removed first), and
 * puts its path into tmp (cap bytes), to be handed to every rank. */
enum lt_status lt_checkpoint_begin(const char *run_dir, long step, long tag, char *tmp,
				   size_t cap);
/* Every rank: writes the moments of its optimizer's range into tmp as
 * optimizer.safetensors when nranks == 1, else as
 * optimizer-RRRRR-of-NNNNN.safetensors (rank, nranks; 0 <= rank < nranks
 * <= 99999), metadata begin, end, numel, rank and ranks; fsynced, and the
 * directory too. */
enum lt_status lt_checkpoint_write_shard(const char *tmp, lt_model *m, const lt_optim *o,
					 int rank, int nranks);
/* Writes the moments of o's range to the file path as an optimizer shard
 * (rank of nranks in its metadata), for files a caller names itself. */
enum lt_status lt_checkpoint_write_moments(const char *path, lt_model *m, const lt_optim *o,
					   int rank, int nranks);
/* Rank 0, once every rank's shard is written: checks that the nshards
 * shards are all there (a missing one is LT_ERR_NOTFOUND naming it) and
 * that their ranges tile the model's flat buffer, writes model.safetensors,
 * the tokenizer files and state.json (listing every file), fsyncs, and
 * publishes tmp as run_dir/checkpoints/step_<s->step> as lt_checkpoint_save
 * does; nshards == 0 saves no optimizer state. *path (optional, cap bytes)
 * gets the directory. On failure tmp is left for lt_checkpoint_abandon. */
enum lt_status lt_checkpoint_commit(const char *run_dir, const char *tmp, lt_model *m,
				    int nshards, const struct lt_ckpt_state *s, char *path,
				    size_t cap);
/* For a model split over ranks, whose tensors no rank holds whole: the
 * model file and one optimizer file over all of `whole`'s flat buffer
 * (the model as one process holds it; lt_model_tp_whole) written from
 * fetch(ctx, k, i, off, buf, len) -- bytes [off, off + len) of tensor i
 * of the parameters (k = 0), of exp_avg (1) or exp_avg_sq (2) -- asked for
 * tensor by tensor in order, parameters first. */
typedef enum lt_status (*lt_ckpt_fetch_fn)(void *ctx, int k, int i, uint64_t off, void *buf,
					   size_t len);
enum lt_status lt_checkpoint_write_fetched(const char *tmp, const lt_model *whole,
					   lt_ckpt_fetch_fn fetch, void *ctx);
/* Rank 0 of such a save: lt_checkpoint_commit, with the files already in
 * tmp (their model, `whole`, gives the shapes and the flat buffer's size). */
enum lt_status lt_checkpoint_commit_fetched(const char *run_dir, const char *tmp,
					    const lt_model *whole, const struct lt_ckpt_state *s,
					    char *path, size_t cap);
/* The reverse, for a model split over ranks: every header checked against
 * `whole` first, then each tensor i of the checkpoint read whole, in
 * order, and handed to put(ctx, k, i, data): the parameters (k = 0) and,
 * with moments, exp_avg (1) and exp_avg_sq (2) of its flat range. */
typedef enum lt_status (*lt_ckpt_put_fn)(void *ctx, int k, int i, const float *data);
enum lt_status lt_checkpoint_load_whole(const char *dir, const lt_model *whole, int moments,
					lt_ckpt_put_fn put, void *ctx);

/* Rank 0, after a failure on any rank: removes tmp and what it holds,
 * keeping the error message already set. */
void lt_checkpoint_abandon(const char *tmp);

/* Reads state.json of a checkpoint directory and verifies the size and
 * checksum of every file it lists (no tensors read). s->config is malloc'd
 * (NULL when none was saved), s->tokenizer NULL; on failure s is left
 * zeroed and lt_errmsg names the file and what is wrong with it. */
enum lt_status lt_checkpoint_read_state(const char *dir, struct lt_ckpt_state *s);
/* read_state, then the parameters (and, when o != NULL, the moments of the
 * optimizer's range [lt_optim_begin, lt_optim_end), read from the parts of
 * the optimizer files state.json lists that overlap it, however many ranks
 * saved them) into a model of the same shape. Every header is checked
 * first: the tensors' shapes, each optimizer file's numel against the
 * model's, and that the files' ranges tile [0, numel) (a gap names the
 * missing range, an overlap both files); a mismatch leaves the model and
 * the optimizer as they were. s may be NULL; else it is filled as by
 * read_state (and zeroed on failure). */
/* The tensors alone, for a checkpoint whose state the caller has just
 * read and verified (as read_state, latest or resolve with a state do). */
enum lt_status lt_checkpoint_load_tensors(const char *dir, lt_model *m, lt_optim *o);
/* The same from the files whose names have a prefix: PREFIXmodel.safetensors
 * and the optimizer files PREFIXoptimizer... that state.json lists. */
enum lt_status lt_checkpoint_load_tensors_as(const char *dir, const char *prefix, lt_model *m,
					     lt_optim *o);
/* The moments alone (of the optimizer's range, as above), for an
 * optimizer made after the parameters were loaded with o NULL (ZeRO stage
 * 3 slices the parameters first): the model's flat buffer is not read,
 * only its shape. */
enum lt_status lt_checkpoint_load_moments(const char *dir, lt_model *m, lt_optim *o);
enum lt_status lt_checkpoint_load(const char *dir, lt_model *m, lt_optim *o,
				  struct lt_ckpt_state *s);
/* Only the parameters, from model.safetensors (a checkpoint dir or the file);
 * no checksums are verified here (lt_checkpoint_read_state does that). */
enum lt_status lt_checkpoint_load_model(const char *path, lt_model *m);
/* The weights alone (lt_model_weight: with adapters, the frozen base) of a checkpoint
 * without adapters, for a new run that starts from it; one with adapters is refused
 * (export it, which folds them in, and start from that). */
enum lt_status lt_checkpoint_load_weights(const char *path, lt_model *m);
/* Writes the parameters to the safetensors file path as a checkpoint holds
 * them (Hugging Face names, F32, __metadata__ {"format": "pt"}, no
 * lm_head.weight when tied), fsynced; no file is left on failure. */
enum lt_status lt_checkpoint_write_model(const char *path, lt_model *m);
/* The same in `type`: LT_F32, or LT_BF16 (each parameter rounded to
 * nearest, ties to even), for an export. */
enum lt_status lt_checkpoint_write_model_as(const char *path, lt_model *m, enum lt_dtype type);
/* As lt_checkpoint_write_model_as, but of a model with adapters only the
 * base (the model of an export, once lt_model_merge_lora folded them in). */
enum lt_status lt_checkpoint_write_base_as(const char *path, lt_model *m, enum lt_dtype type);

/* A checkpoint passed over while looking for the newest valid one: its
 * step, its directory, and what is wrong with it as read_state says it,
 * less the directory: the file and its damage ("model.safetensors is 5000
 * bytes, state.json says 7871024 (truncated)", "model.safetensors has
 * CRC-32 ..., state.json says ...", "tokenizer.json is missing (state.json
 * lists it)", "state.json:3: <the parser's words>"). */
struct lt_ckpt_skip {
	long step;
	char *dir;
	char *why;
};

/* The checkpoints a search passed over, newest first. The caller zeroes
 * it and frees it with lt_ckpt_skips_free; latest, resolve and open fill
 * it (emptying it first), on failure too, and print nothing: reporting
 * them is the caller's. */
struct lt_ckpt_skips {
	struct lt_ckpt_skip *v;
	size_t n;
};

void lt_ckpt_skips_free(struct lt_ckpt_skips *k);  /* and zeroes it; NULL allowed */

/* The newest checkpoint of run_dir whose state and checksums verify; the
 * newer ones that do not (a file truncated, changed or missing, a
 * state.json that does not parse) are passed over, each one recorded in
 * skipped (NULL: not recorded). LT_ERR_NOTFOUND naming run_dir when it
 * holds no checkpoint; LT_ERR_FORMAT naming run_dir and the newest's
 * damage when none verifies. When s != NULL it receives the state that
 * was verified, so the files need not be read again. Temporaries of
 * interrupted saves are no checkpoints, and are neither tried nor
 * recorded. */
enum lt_status lt_checkpoint_latest(const char *run_dir, char *path, size_t cap,
				    struct lt_ckpt_state *s, struct lt_ckpt_skips *skipped);
/* PATH as given when it is a checkpoint (holds state.json), else the
 * newest valid checkpoint of the run directory PATH (recording what it
 * passes over in skipped, as latest does; skipped is emptied either way).
 * When s != NULL the checkpoint's state is read and verified into it. */
enum lt_status lt_checkpoint_resolve(const char *path, char *out, size_t cap,
				     struct lt_ckpt_state *s, struct lt_ckpt_skips *skipped);
/* What sample, eval and export start from: resolves PATH (a checkpoint
 * or a run directory, recording in skipped what it passes over) into dir,
 * reads and verifies its state, and sets conf to the defaults with the
 * checkpoint's config over them. Errors name PATH or the file that is
 * wrong; the caller frees s with lt_ckpt_state_free. */
enum lt_status lt_checkpoint_open(const char *path, char *dir, size_t cap,
				  struct lt_ckpt_state *s, struct lt_conf *conf,
				  struct lt_ckpt_skips *skipped);
/* Moves the checkpoint directory dir, one that latest passed over, aside
 * to lt_rundir_damaged_path's first free name (DIR.damaged, else
 * DIR.damaged-2 and on), which no save replaces and no prune removes;
 * nothing in it is changed. out[cap] gets the new path. */
enum lt_status lt_checkpoint_set_aside(const char *dir, char *out, size_t cap);
/* Removes all but the newest keep checkpoints by step (keep < 1 keeps them
 * all) and the temporaries of interrupted saves; nothing else is touched. */
enum lt_status lt_checkpoint_prune(const char *run_dir, int keep);

#endif
