/* LoRA adapters as a Hugging Face PEFT adapter: adapter_config.json (a
 * LoraConfig for a causal language model) and adapter_model.safetensors
 * (the adapters under PEFT's names), which PEFT's PeftModel.from_pretrained
 * loads onto the base model.
 *
 * Ownership: the functions borrow their arguments and keep nothing. */
#ifndef LT_PEFT_H
#define LT_PEFT_H

#include "backend.h"
#include "model.h"
#include "status.h"

#define LT_PEFT_CONFIG "adapter_config.json"
#define LT_PEFT_WEIGHTS "adapter_model.safetensors"

/* adapter_config.json of m's adapters into the new file path (written by
 * lt_fs_write_new, for a directory published whole later); base_model is
 * its base_model_name_or_path, NULL for null. LT_ERR_ARG naming path when
 * m has no adapters. */
enum lt_status lt_peft_write_config(const char *path, const lt_model *m, const char *base_model);
/* adapter_model.safetensors: every adapter of m as
 * base_model.model.<its name>, in type (LT_F32, or LT_BF16 rounded to
 * nearest even), fsynced; no file is left on failure. */
enum lt_status lt_peft_write_adapters(const char *path, lt_model *m, enum lt_dtype type);

#endif
