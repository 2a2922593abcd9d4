/* File-system steps shared by the writers of checkpoints, exports and runs:
 * mkdir -p, whole-file writes and copies that are fsynced and removed
 * again on failure, fsync of a file or directory. Errors name the path and
 * what failed. */
#ifndef LT_FS_H
#define LT_FS_H

#include <stddef.h>

#include "status.h"

/* The longest path lt_fs_make_dirs accepts, with its NUL. */
#define LT_FS_PATH_MAX 4096

/* 1 when path is a directory (following links). */
int lt_fs_is_dir(const char *path);
/* 1 when dir holds nothing, 0 when it holds something, -1 (errno set)
 * when it cannot be read. */
int lt_fs_is_empty_dir(const char *dir);
/* mkdir -p: creates every missing directory of path; a part that exists
 * but is not a directory is LT_ERR_IO naming it. */
enum lt_status lt_fs_make_dirs(const char *path);
/* Flushes a file or a directory to stable storage. */
enum lt_status lt_fs_sync(const char *path);
/* Writes n bytes to a new file path (replacing one), fsyncs and closes it;
 * removes it again on failure. */
enum lt_status lt_fs_write_new(const char *path, const void *p, size_t n);
/* Copies src to a new file dst, fsynced; removes dst on failure. */
enum lt_status lt_fs_copy(const char *src, const char *dst);

#endif
