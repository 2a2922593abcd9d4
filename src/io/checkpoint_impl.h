/* What checkpoint.c (saving) and checkpoint_load.c (reading) share, and
 * nothing else includes: state.json's format version, the optimizer files
 * as a list of ranges, and the checks both sides run on them.
 *
 * Ownership: functions borrow their arguments; a shard list's open files
 * are closed, and the list freed, by lt_ckpt_close_shards. */
#ifndef LT_CHECKPOINT_IMPL_H
#define LT_CHECKPOINT_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "io/rundir.h"
#include "io/safetensors.h"
#include "model.h"
#include "status.h"

/* The longest path a checkpoint builds, with its NUL. */
#define CKPT_PATH_MAX 4096
/* The state.json format written, and the newest one read. */
#define STATE_FORMAT_VERSION 1

/* One optimizer file of a checkpoint: its name, its range of the flat
 * parameter buffer, and the open file while its moments are to be read. */
struct lt_ckpt_shard {
	char name[LT_RUNDIR_NAME_MAX];
	size_t begin, end;
	lt_st *sf;
};

/* Opens and checks the header of each of the n shards of dir (sh[i].name
 * set): numel equal to the model's, a range inside it, both moments F32
 * of its length; then sorts them by range and checks that they tile the
 * model's flat buffer (a gap is named with `where`, an overlap with both
 * files). Files whose range misses [lo, hi) are closed again; the others
 * stay open for reading. */
enum lt_status lt_ckpt_open_shards(const char *dir, const char *where, struct lt_ckpt_shard *sh,
				   size_t n, const lt_model *m, size_t lo, size_t hi);
/* Closes every open file of the n shards of sh and frees the array (NULL
 * is allowed). */
void lt_ckpt_close_shards(struct lt_ckpt_shard *sh, size_t n);

/* The size and CRC-32 of a whole file, read back from the disk. */
enum lt_status lt_ckpt_checksum_file(const char *path, uint64_t *bytes, uint32_t *crc);
/* Fails, naming path, when the backend has failed since creation: what it
 * would hand out, or what it was handed, could be anything. */
enum lt_status lt_ckpt_check_backend(lt_backend *be, const char *path);

#endif
