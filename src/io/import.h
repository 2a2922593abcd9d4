/* Starting from a pretrained model: one entry point over what a path can
 * be, a Hugging Face model directory (config.json, safetensors), a GGUF
 * file, or an lltrain checkpoint or run directory (its newest checkpoint).
 *
 * Ownership: the functions borrow their arguments and keep nothing. */
#ifndef LT_IMPORT_H
#define LT_IMPORT_H

#include <stddef.h>

#include "model.h"
#include "model_config.h"
#include "status.h"

enum lt_import_kind { LT_IMPORT_HF, LT_IMPORT_GGUF, LT_IMPORT_LLTRAIN };

/* What path is: a directory with config.json (HF), a file starting with
 * the GGUF magic, else a checkpoint or run directory (which the other
 * calls then verify). LT_ERR_NOTFOUND naming path when it does not exist. */
enum lt_status lt_import_kind_of(const char *path, enum lt_import_kind *kind);
/* The model configuration of path (c unchanged on failure). */
enum lt_status lt_import_config(const char *path, struct lt_model_config *c);
/* Puts path's weights into m, made with lt_import_config's config. */
enum lt_status lt_import_weights(const char *path, lt_model *m);
/* What lt_import_weights would refuse, found reading at most the
 * embedding and a tied model's lm_head.weight. m is
 * left as it was: a model of lt_import_config's config whose buffers need
 * not be touched. */
enum lt_status lt_import_check(const char *path, const lt_model *m);
/* The tokenizer that comes with path into buf[cap] ("" when it has none):
 * the tokenizer.json of a Hugging Face directory or checkpoint, or the GGUF
 * file itself, whose vocabulary lt_tokenizer_load reads. */
enum lt_status lt_import_tokenizer(const char *path, char *buf, size_t cap);

#endif
