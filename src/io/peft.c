/* LoRA adapters written as a Hugging Face PEFT adapter (see peft.h). */
#include "config.h"
#include "io/peft.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "io/fs.h"
#include "io/safetensors.h"

/* PEFT's module names of the adapted matrices, in enum lt_lora_target's order. */
static const char *const target_modules[LT_LORA_TARGETS] = {
	"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

/* PEFT's saved state dict prefixes the model's own names with this. */
#define PEFT_PREFIX "base_model.model."

/* A float as the shortest decimal that reads back as the same float. */
static json_t *float_json(float f)
{
	char buf[32];
	for (int prec = 1; prec < 9; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
		if ((float)strtod(buf, NULL) == f)
			return json_real(strtod(buf, NULL));
	}
	return json_real(f);
}

/* The target_modules list of lora's targets; NULL when memory runs out. */
static json_t *targets_json(const struct lt_lora *lora)
{
	json_t *a = json_array();
	for (int t = 0; a && t < LT_LORA_TARGETS; t++)
		if ((lora->targets >> t & 1u) &&
		    json_array_append_new(a, json_string(target_modules[t]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* The LoraConfig's fields that say what the adapters are. */
static int set_lora_fields(json_t *j, const struct lt_lora *lora, const char *base_model)
{
	json_t *targets = targets_json(lora);
	if (!targets)
		return -1;
	return json_object_set_new(j, "peft_type", json_string("LORA")) ||
	       json_object_set_new(j, "task_type", json_string("CAUSAL_LM")) ||
	       json_object_set_new(j, "base_model_name_or_path",
				   base_model ? json_string(base_model) : json_null()) ||
	       json_object_set_new(j, "r", json_integer(lora->rank)) ||
	       json_object_set_new(j, "lora_alpha", float_json(lora->alpha)) ||
	       json_object_set_new(j, "lora_dropout", float_json(lora->dropout)) ||
	       json_object_set_new(j, "target_modules", targets) ||
	       json_object_set_new(j, "bias", json_string("none"));
}

/* The fields that say how PEFT is to apply them: as lltrain does, plain
 * LoRA (no rsLoRA or DoRA scaling, weights not transposed), every layer. */
static int set_plain_fields(json_t *j)
{
	return json_object_set_new(j, "fan_in_fan_out", json_false()) ||
	       json_object_set_new(j, "use_rslora", json_false()) ||
	       json_object_set_new(j, "use_dora", json_false()) ||
	       json_object_set_new(j, "init_lora_weights", json_true()) ||
	       json_object_set_new(j, "inference_mode", json_true()) ||
	       json_object_set_new(j, "modules_to_save", json_null()) ||
	       json_object_set_new(j, "layers_to_transform", json_null()) ||
	       json_object_set_new(j, "layers_pattern", json_null()) ||
	       json_object_set_new(j, "rank_pattern", json_object()) ||
	       json_object_set_new(j, "alpha_pattern", json_object()) ||
	       json_object_set_new(j, "revision", json_null());
}

enum lt_status lt_peft_write_config(const char *path, const lt_model *m, const char *base_model)
{
	const struct lt_lora *lora = lt_model_lora(m);
	if (lora->rank <= 0) {
		lt_errmsg_set("%s: the model has no LoRA adapters to write", path);
		return LT_ERR_ARG;
	}
	json_t *j = json_object();
	if (j && (set_lora_fields(j, lora, base_model) || set_plain_fields(j))) {
		json_decref(j);
		j = NULL;
	}
	enum lt_status st = lt_fs_write_json_new(path, j);
	json_decref(j);
	return st;
}

/* The adapters' values (the whole flat parameter buffer, which with
 * adapters holds them alone) in host memory: f32, or rounded to bf16 in
 * place, two bytes an element from the start. NULL when memory runs out. */
static void *read_adapters(lt_model *m, enum lt_dtype type, const char *path)
{
	lt_backend *be = lt_model_backend(m);
	size_t n = lt_model_num_params(m);
	float *x = malloc(n * sizeof *x + 1);
	if (!x) {
		lt_errmsg_set("%s: cannot allocate %zu bytes for the adapters", path, n * sizeof *x);
		return NULL;
	}
	be->ops->read(be, x, lt_model_params(m), n);
	if (type == LT_BF16) {
		uint16_t *h = (uint16_t *)x;
		for (size_t i = 0; i < n; i++)  /* h[i] overlaps only x[i / 2], already read */
			h[i] = lt_bf16_from_f32(x[i]);
	}
	return x;
}

/* Adds every adapter tensor of m to w, its data in x (of type). */
static enum lt_status add_adapters(lt_st_writer *w, const lt_model *m, const void *x,
				   enum lt_dtype type)
{
	size_t esize = type == LT_BF16 ? 2 : 4;
	char name[160];
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_tensors(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		int64_t shape[2] = { t->shape[0], t->shape[1] };
		snprintf(name, sizeof name, PEFT_PREFIX "%s", t->name);
		st = lt_st_writer_add(w, name, type == LT_BF16 ? LT_ST_BF16 : LT_ST_F32, t->ndim,
				      shape, (const char *)x + t->off * esize);
	}
	return st;
}

enum lt_status lt_peft_write_adapters(const char *path, lt_model *m, enum lt_dtype type)
{
	lt_backend *be = lt_model_backend(m);
	lt_st_writer *w = NULL;
	void *x = NULL;
	enum lt_status st;

	LT_ASSERT(type == LT_F32 || type == LT_BF16);
	if (lt_model_lora(m)->rank <= 0) {
		lt_errmsg_set("%s: the model has no LoRA adapters to write", path);
		return LT_ERR_ARG;
	}
	if ((st = be->ops->sync(be)) != LT_OK) {
		lt_errmsg_prefix("%s: the backend failed", path);
		return st;
	}
	if (!(x = read_adapters(m, type, path)))
		return LT_ERR_NOMEM;
	if ((st = be->ops->sync(be)) != LT_OK)
		lt_errmsg_prefix("%s: the backend failed", path);
	else if ((st = lt_st_writer_new(path, &w)) == LT_OK &&
		 (st = lt_st_writer_set_meta(w, "format", "pt")) == LT_OK &&
		 (st = add_adapters(w, m, x, type)) == LT_OK)
		st = lt_st_writer_finish(w);
	lt_st_writer_free(w);
	free(x);
	return st;
}
