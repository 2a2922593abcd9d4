/* What the libFuzzer harnesses of tests/fuzz/ share: the list of harnesses,
 * the cap on what one input feeds, and a scratch directory per process
 * where an input becomes a file for a reader that takes a path.
 *
 * A harness defines LT_FUZZ_NAME (its name, as in the list) before
 * including this header and then defines LLVMFuzzerTestOneInput. Built
 * for `make fuzz` it is that symbol, for libFuzzer's main; built into
 * tests/fuzz_replay (LT_FUZZ_REPLAY defined) the entry is renamed
 * lt_fuzz_one_NAME, so that every harness links into the one program that
 * replays the seeds and regressions under `make check`.
 *
 * Ownership: the scratch directory and the paths lt_fuzz_path hands out
 * belong to this module; the directory is removed when the process exits. */
#ifndef LT_FUZZ_H
#define LT_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The harnesses: X(NAME) for each tests/fuzz/fuzz_NAME.c with its seeds
 * and regressions in tests/fuzz/NAME/. */
#define LT_FUZZ_HARNESSES(X) \
	X(safetensors) X(shard) X(tokenizer) X(prepare) X(checkpoint) X(conf) X(corpus) X(gguf) X(chat) \
	X(tboard)

/* The most bytes of one input a harness uses; the rest is ignored, so a
 * huge input costs no more than this. */
#define LT_FUZZ_MAX_INPUT ((size_t)1 << 20)

#define LT_FUZZ_CAT2(a, b) a##b
#define LT_FUZZ_CAT(a, b) LT_FUZZ_CAT2(a, b)

#if defined(LT_FUZZ_REPLAY) && defined(LT_FUZZ_NAME)
#define LLVMFuzzerTestOneInput LT_FUZZ_CAT(lt_fuzz_one_, LT_FUZZ_NAME)
#endif
#ifdef LT_FUZZ_NAME
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif

/* The path of `name` in the directory of `harness` inside this process's
 * scratch directory (both made on first use, the scratch directory under
 * $TMPDIR or /tmp, and removed at exit unless LT_FUZZ_KEEP is set, so that
 * a harness's files can be looked at or taken as seeds); the same name
 * always gives the same path. Aborts when a directory cannot be made: a
 * harness without its files would test nothing. In a harness,
 * lt_fuzz_path(name) is the path of name in its own directory. */
const char *lt_fuzz_path_of(const char *harness, const char *name);
/* lt_fuzz_path_of, and a directory made there (if not yet). */
const char *lt_fuzz_dir_of(const char *harness, const char *name);
#ifdef LT_FUZZ_NAME
#define LT_FUZZ_STR2(a) #a
#define LT_FUZZ_STR(a) LT_FUZZ_STR2(a)
#define lt_fuzz_path(name) lt_fuzz_path_of(LT_FUZZ_STR(LT_FUZZ_NAME), name)
#define lt_fuzz_dir(name) lt_fuzz_dir_of(LT_FUZZ_STR(LT_FUZZ_NAME), name)
#endif
/* Writes n bytes to path (created or truncated; no fsync); aborts on an
 * error, which only a full disk causes. */
void lt_fuzz_write(const char *path, const void *p, size_t n);
/* The input cut to LT_FUZZ_MAX_INPUT bytes. */
static inline size_t lt_fuzz_cap(size_t size)
{
	return size < LT_FUZZ_MAX_INPUT ? size : LT_FUZZ_MAX_INPUT;
}

#endif
