/* The run directory's files as training writes them: RUN/config.ini (the
 * resolved config), RUN/metrics.jsonl and RUN/tb/ (TensorBoard's event
 * files), RUN/data (the data directory unless data.dir names one), and the
 * checkpoints a new run must not start over.
 *
 * Ownership: the functions borrow their arguments; an lt_metrics opened
 * here is the caller's to close (lt_metrics_close). */
#ifndef LT_RUN_FILES_H
#define LT_RUN_FILES_H

#include <stddef.h>

#include "conf.h"
#include "io/metrics.h"
#include "status.h"

/* Room for a configured path plus the names lltrain adds to it. */
#define LT_RUN_PATH_CAP (LT_CONF_PATH_MAX + 128)

/* Where the prepared data lives, in buf[cap]: data.dir, else RUN/data
 * (LT_ERR_ARG naming the path when it does not fit). */
enum lt_status lt_run_files_data_dir(const struct lt_conf *c, char *buf, size_t cap);
/* Refuses to start over a run that has checkpoints (LT_ERR_ARG, saying
 * that --resume auto continues it), damaged ones too (a new run's saves
 * would replace them): LT_ERR_ARG naming the newest and its damage. */
enum lt_status lt_run_files_check_fresh(const struct lt_conf *c);
/* Publishes RUN/config.ini (see lt_fs_publish_file). */
enum lt_status lt_run_files_save_config(const struct lt_conf *c);
/* Job rank 0: prepares the corpus (corpus[n_corpus], or data.corpus when
 * n_corpus is 0) into data_dir unless it holds prepared data -- with
 * train.init's tokenizer in a fresh run (step 0) that starts from one --
 * and refuses corpus arguments where it does. */
enum lt_status lt_run_files_prepare_data(const struct lt_conf *c, const char *data_dir,
					 long step, const char *const *corpus, int n_corpus);
/* Whether this rank sees the RUN/config.ini rank 0 wrote (LT_ERR_IO naming
 * the rank and its host when not: the run directory must be shared). */
enum lt_status lt_run_files_check_shared(const struct lt_conf *c, int rank, const char *host);
/* Opens RUN/metrics.jsonl for appending, first keeping only its lines of
 * steps up to `step` (a resumed run logs the later ones again), and RUN/tb/'s
 * event files likewise (lt_tboard_open with run.tensorboard, the config
 * written there as text; else lt_tboard_trim): what they passed over is
 * said on stdout. */
enum lt_status lt_run_files_open_metrics(const struct lt_conf *c, long step, lt_metrics **out);

#endif
