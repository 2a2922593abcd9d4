/* File-system steps shared by every writer of lltrain: publishing a file
 * or a directory atomically, mkdir -p, rm -rf, whole-file writes (of bytes
 * or of a JSON value) and copies that are fsynced and removed again on
 * failure, fsync, and joining paths without truncating them. Errors name
 * the path and what failed.
 *
 * Publishing: a writer puts a file or a directory under a temporary name
 * beside its final one, flushes it to stable storage, renames it into
 * place and flushes the parent directory, so that a reader (or a restart
 * after a crash) finds the old version or the whole new one, never part
 * of it. lt_fs_publish is that last step for every writer; the others
 * wrap whole files and whole directories around it.
 *
 * Ownership: every function borrows its arguments; lt_fs_join_new and
 * lt_fs_tmp_new return memory the caller frees. */
#ifndef LT_FS_H
#define LT_FS_H

#include <stddef.h>

#include "status.h"

struct json_t;  /* jansson's */

/* The longest path lt_fs_make_dirs accepts, with its NUL. */
#define LT_FS_PATH_MAX 4096

/* 1 when path is a directory (following links). */
int lt_fs_is_dir(const char *path);
/* 1 when dir holds nothing, 0 when it holds something, -1 (errno set)
 * when it cannot be read. */
int lt_fs_is_empty_dir(const char *dir);
/* Where a writer may put a directory: path absent (*has_files 0), or a
 * directory (*has_files 1 when it holds anything; with follow, a link to
 * one counts). Anything else at path is LT_ERR_ARG, "exists and is not a
 * directory". */
enum lt_status lt_fs_output_dir(const char *path, int follow, int *has_files);
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

/* The last step of publishing: renames the finished, fsynced tmp to path
 * (replacing what is there) and fsyncs path's parent directory. */
enum lt_status lt_fs_publish(const char *tmp, const char *path);
/* Publishes n bytes as the file path: writes them to path.PID.tmp, fsyncs
 * it and lt_fs_publish-es it. On failure path is as it was and the
 * temporary file is gone. */
enum lt_status lt_fs_publish_file(const char *path, const void *p, size_t n);
/* j as a JSON file: its text indented by two and ending in a newline,
 * written by lt_fs_write_new (into a directory published whole later) or
 * published by lt_fs_publish_file. A NULL j, or text that cannot be made,
 * is LT_ERR_NOMEM naming path. */
enum lt_status lt_fs_write_json_new(const char *path, const struct json_t *j);
enum lt_status lt_fs_publish_json(const char *path, const struct json_t *j);
/* Publishes the finished (fsynced) directory tmp as final: a directory
 * already at final is first renamed to aside (a path in the same
 * directory, where nothing but an empty directory may be), then tmp
 * renamed to final and the parent fsynced; the old one is removed last.
 * When the rename of tmp fails the old one is put back. Once final is in
 * place the publish has succeeded: an old copy that resists removal stays
 * at aside for the caller to clean up. */
enum lt_status lt_fs_publish_dir(const char *tmp, const char *final, const char *aside);

/* rm -rf path: removes a file, or a directory with what it holds (at most
 * 8 directories deep); links are removed, never followed. A missing path
 * is no error; a path that ends in no name ("/", ".", "..") is LT_ERR_ARG. */
enum lt_status lt_fs_remove_tree(const char *path);
/* lt_fs_remove_tree for what a failed writer leaves behind (a temporary
 * file or directory): lt_errmsg keeps the failure that made the writer
 * give up, which is the one to report, and a failure to remove is quiet. */
void lt_fs_discard(const char *path);

/* Splits path into the directory that holds its last name, in dir[cap]
 * ("." when path has no slash), and that name, in name[cap] (empty for
 * "/" or ""); trailing slashes belong to neither ("a/b/" is "a" and
 * "b"). LT_ERR_ARG naming the path when either does not fit. */
enum lt_status lt_fs_split(const char *path, char *dir, char *name, size_t cap);
/* out[cap] = dir/name; LT_ERR_ARG naming the path when it does not fit
 * (never a truncated path). */
enum lt_status lt_fs_join(char *out, size_t cap, const char *dir, const char *name);
/* dir/name in new memory (the caller frees it); NULL, with lt_errmsg set,
 * when memory runs out. */
char *lt_fs_join_new(const char *dir, const char *name);
/* path.tmp in new memory (the caller frees it): the temporary that a
 * writer streaming a file fills, fsyncs and lt_fs_publish-es as path (one
 * writer per path at a time; lt_fs_publish_file's own is path.PID.tmp).
 * NULL, with lt_errmsg set, when memory runs out. */
char *lt_fs_tmp_new(const char *path);

#endif
