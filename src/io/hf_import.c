/* Hugging Face model directories: config.json into an lt_model_config,
 * model.safetensors (or its shards) into a model's parameters. */
#include "config.h"
#include "io/hf_import.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fs.h"
#include "io/safetensors.h"

#define HF_CONFIG "config.json"
#define HF_WEIGHTS "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"
#define HF_MAX_FILES 4096

int lt_hf_is_model_dir(const char *dir)
{
	char path[4096];
	return lt_fs_is_dir(dir) && lt_fs_join(path, sizeof path, dir, HF_CONFIG) == LT_OK &&
	       access(path, F_OK) == 0;
}

/* ------------------------------------------------------------ config.json */

static enum lt_status load_json(const char *path, json_t **out)
{
	json_error_t err;
	*out = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (!*out) {
		lt_errmsg_set("%s:%d: %s", path, err.line, err.text);
		return access(path, R_OK) ? LT_ERR_IO : LT_ERR_FORMAT;
	}
	if (!json_is_object(*out)) {
		lt_errmsg_set("%s: expected a JSON object", path);
		json_decref(*out);
		*out = NULL;
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* j[key] as an int in [1, INT_MAX]; def when absent and def > 0. */
static enum lt_status get_int(const char *path, json_t *j, const char *key, int def, int *out)
{
	json_t *v = json_object_get(j, key);
	if ((!v || json_is_null(v)) && def > 0) {
		*out = def;
		return LT_OK;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX) {
		lt_errmsg_set("%s: \"%s\": expected a positive integer%s", path, key,
			      v ? "" : " (missing)");
		return LT_ERR_FORMAT;
	}
	*out = (int)json_integer_value(v);
	return LT_OK;
}

/* j[key] as a finite positive number; def when absent and def > 0. */
static enum lt_status get_real(const char *path, json_t *j, const char *key, double def,
			       float *out)
{
	json_t *v = json_object_get(j, key);
	if ((!v || json_is_null(v)) && def > 0) {
		*out = (float)def;
		return LT_OK;
	}
	if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v))) {
		lt_errmsg_set("%s: \"%s\": expected a positive number%s", path, key,
			      v ? "" : " (missing)");
		return LT_ERR_FORMAT;
	}
	*out = (float)json_number_value(v);
	return LT_OK;
}

/* LlamaForCausalLM among "architectures", or "model_type": "llama". */
static enum lt_status check_architecture(const char *path, json_t *j)
{
	json_t *arch = json_object_get(j, "architectures"), *type = json_object_get(j, "model_type"), *a;
	size_t i;
	json_array_foreach(arch, i, a)
		if (json_is_string(a) && !strcmp(json_string_value(a), "LlamaForCausalLM"))
			return LT_OK;
	if (json_is_string(type) && !strcmp(json_string_value(type), "llama"))
		return LT_OK;
	json_t *first = json_array_get(arch, 0);
	lt_errmsg_set("%s: architectures %s, model_type %s: expected LlamaForCausalLM or model_type "
		      "llama", path, json_is_string(first) ? json_string_value(first) : "(none)",
		      json_is_string(type) ? json_string_value(type) : "(none)");
	return LT_ERR_FORMAT;
}

/* What lltrain's block does not do: another activation, biases. */
static enum lt_status check_block(const char *path, json_t *j)
{
	json_t *act = json_object_get(j, "hidden_act");
	if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
		lt_errmsg_set("%s: \"hidden_act\": %s, expected silu", path,
			      json_is_string(act) ? json_string_value(act) : "not a string");
		return LT_ERR_FORMAT;
	}
	const char *biases[] = { "attention_bias", "mlp_bias" };
	for (int i = 0; i < 2; i++) {
		if (json_is_true(json_object_get(j, biases[i]))) {
			lt_errmsg_set("%s: \"%s\": true, expected false (lltrain's blocks have no "
				      "biases)", path, biases[i]);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* head_dim, when given and not hidden_size / heads, is the model's. */
static enum lt_status read_head_dim(const char *path, json_t *j, struct lt_model_config *c)
{
	json_t *v = json_object_get(j, "head_dim");
	if (!v || json_is_null(v))
		return LT_OK;
	if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 65536) {
		lt_errmsg_set("%s: \"head_dim\": expected a positive integer up to 65536", path);
		return LT_ERR_FORMAT;
	}
	int D = (int)json_integer_value(v);
	c->head_dim = c->n_heads > 0 && c->dim % c->n_heads == 0 && D == c->dim / c->n_heads ? 0 : D;
	return LT_OK;
}

/* rope_scaling: null, or {"rope_type" (or "type"): "llama3", factor,
 * low_freq_factor, high_freq_factor, original_max_position_embeddings}. */
static enum lt_status read_rope_scaling(const char *path, json_t *j, struct lt_model_config *c)
{
	json_t *rs = json_object_get(j, "rope_scaling");
	c->rope_scaling = LT_ROPE_NONE;
	if (!rs || json_is_null(rs))
		return LT_OK;
	json_t *type = json_object_get(rs, "rope_type");
	if (!type)
		type = json_object_get(rs, "type");
	if (json_is_string(type) && !strcmp(json_string_value(type), "default"))
		return LT_OK;  /* what newer configs write for none */
	if (!json_is_object(rs) || !json_is_string(type) || strcmp(json_string_value(type), "llama3")) {
		lt_errmsg_set("%s: \"rope_scaling\" of type %s: expected null, default or llama3", path,
			      json_is_string(type) ? json_string_value(type) : "(none)");
		return LT_ERR_FORMAT;
	}
	enum lt_status st;
	c->rope_scaling = LT_ROPE_LLAMA3;
	if ((st = get_real(path, rs, "factor", 0, &c->rope_factor)) != LT_OK ||
	    (st = get_real(path, rs, "low_freq_factor", 0, &c->rope_low_freq_factor)) != LT_OK ||
	    (st = get_real(path, rs, "high_freq_factor", 0, &c->rope_high_freq_factor)) != LT_OK ||
	    (st = get_int(path, rs, "original_max_position_embeddings", 0,
			  &c->rope_original_max_seq)) != LT_OK)
		lt_errmsg_prefix("rope_scaling");
	return st;
}

static enum lt_status read_config(const char *path, json_t *j, struct lt_model_config *c)
{
	enum lt_status st;
	json_t *tied = json_object_get(j, "tie_word_embeddings");
	if ((st = check_architecture(path, j)) != LT_OK || (st = check_block(path, j)) != LT_OK ||
	    (st = get_int(path, j, "hidden_size", 0, &c->dim)) != LT_OK ||
	    (st = get_int(path, j, "num_hidden_layers", 0, &c->n_layers)) != LT_OK ||
	    (st = get_int(path, j, "num_attention_heads", 0, &c->n_heads)) != LT_OK ||
	    (st = get_int(path, j, "num_key_value_heads", c->n_heads, &c->n_kv_heads)) != LT_OK ||
	    (st = get_int(path, j, "intermediate_size", 0, &c->ffn_dim)) != LT_OK ||
	    (st = get_int(path, j, "vocab_size", 0, &c->vocab_size)) != LT_OK ||
	    (st = get_int(path, j, "max_position_embeddings", 0, &c->max_seq)) != LT_OK ||
	    (st = get_real(path, j, "rope_theta", 10000.0, &c->rope_theta)) != LT_OK ||
	    (st = get_real(path, j, "rms_norm_eps", 1e-6, &c->norm_eps)) != LT_OK ||
	    (st = read_head_dim(path, j, c)) != LT_OK ||
	    (st = read_rope_scaling(path, j, c)) != LT_OK)
		return st;
	if (tied && !json_is_boolean(tied)) {
		lt_errmsg_set("%s: \"tie_word_embeddings\": expected true or false", path);
		return LT_ERR_FORMAT;
	}
	/* LlamaConfig's default is untied */
	c->tied = json_is_true(tied);
	if ((st = lt_model_config_check(c)) != LT_OK)
		lt_errmsg_prefix("%s", path);
	return st;
}

enum lt_status lt_hf_config(const char *dir, struct lt_model_config *c)
{
	char path[4096];
	json_t *j;
	enum lt_status st = lt_fs_join(path, sizeof path, dir, HF_CONFIG);
	if (st != LT_OK || (st = load_json(path, &j)) != LT_OK)
		return st;
	struct lt_model_config got = *c;
	st = read_config(path, j, &got);
	json_decref(j);
	if (st == LT_OK)
		*c = got;
	return st;
}

/* ------------------------------------------------------------ the weights */

/* The open safetensors files of a model directory. */
struct hf_files {
	lt_st *f[HF_MAX_FILES];
	size_t n;
	char index[4096];     /* the index's path, "" when one file */
};

static void close_files(struct hf_files *h)
{
	for (size_t i = 0; i < h->n; i++)
		lt_st_close(h->f[i]);
	h->n = 0;
}

/* Opens dir/name unless open already; *k gets its place in h. */
static enum lt_status open_file(struct hf_files *h, const char *dir, const char *name, size_t *k)
{
	char path[4096];
	enum lt_status st = lt_fs_join(path, sizeof path, dir, name);
	for (*k = 0; st == LT_OK && *k < h->n; (*k)++)
		if (!strcmp(lt_st_path(h->f[*k]), path))
			return LT_OK;
	if (st == LT_OK && h->n == HF_MAX_FILES) {
		lt_errmsg_set("%s: more than %d files", h->index, HF_MAX_FILES);
		return LT_ERR_FORMAT;
	}
	if (st == LT_OK && strchr(name, '/')) {
		lt_errmsg_set("%s: file \"%s\": expected a file name of the directory", h->index, name);
		return LT_ERR_FORMAT;
	}
	if (st == LT_OK && (st = lt_st_open(path, &h->f[h->n])) == LT_OK)
		h->n++;
	else if (h->index[0])
		lt_errmsg_prefix("%s", h->index);
	return st;
}

/* Each weight_map entry's tensor must be in the file it names. */
static enum lt_status open_index(struct hf_files *h, const char *dir, json_t *j)
{
	json_t *map = json_object_get(j, "weight_map"), *file;
	const char *name;
	enum lt_status st;
	if (!json_is_object(map) || !json_object_size(map)) {
		lt_errmsg_set("%s: \"weight_map\": expected an object of tensor: file", h->index);
		return LT_ERR_FORMAT;
	}
	json_object_foreach(map, name, file) {
		if (!json_is_string(file)) {
			lt_errmsg_set("%s: weight_map \"%s\": expected a file name", h->index, name);
			return LT_ERR_FORMAT;
		}
		size_t k;
		if ((st = open_file(h, dir, json_string_value(file), &k)) != LT_OK)
			return st;
		if (!lt_st_lookup(h->f[k], name)) {
			lt_errmsg_set("%s: weight_map puts %s in %s, which does not hold it", h->index,
				      name, lt_st_path(h->f[k]));
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* model.safetensors.index.json's files when it exists, else model.safetensors. */
static enum lt_status open_files(struct hf_files *h, const char *dir)
{
	enum lt_status st = lt_fs_join(h->index, sizeof h->index, dir, HF_INDEX);
	if (st != LT_OK)
		return st;
	if (access(h->index, F_OK)) {
		size_t k;
		h->index[0] = 0;
		return open_file(h, dir, HF_WEIGHTS, &k);
	}
	json_t *j;
	if ((st = load_json(h->index, &j)) != LT_OK)
		return st;
	st = open_index(h, dir, j);
	json_decref(j);
	return st;
}

/* The file holding name, or NULL; a name held twice is refused. */
static enum lt_status find_tensor(const struct hf_files *h, const char *name,
				  const lt_st **file, const struct lt_st_info **info)
{
	*file = NULL;
	*info = NULL;
	for (size_t i = 0; i < h->n; i++) {
		const struct lt_st_info *ti = lt_st_lookup(h->f[i], name);
		if (ti && *file) {
			lt_errmsg_set("%s: %s is also in %s: expected once", lt_st_path(h->f[i]), name,
				      lt_st_path(*file));
			return LT_ERR_FORMAT;
		}
		if (ti) {
			*file = h->f[i];
			*info = ti;
		}
	}
	return LT_OK;
}

static enum lt_status check_tensor(const lt_st *f, const struct lt_st_info *ti,
				   const struct lt_tensor *t)
{
	if (ti->dtype != LT_ST_F32 && ti->dtype != LT_ST_BF16 && ti->dtype != LT_ST_F16) {
		lt_errmsg_set("%s: %s: dtype %s, expected F32, BF16 or F16", lt_st_path(f), t->name,
			      lt_st_dtype_name(ti->dtype));
		return LT_ERR_FORMAT;
	}
	int same = ti->ndim == t->ndim;
	for (int d = 0; same && d < t->ndim; d++)
		same = ti->shape[d] == t->shape[d];
	if (!same) {
		char got[96] = "", *p = got;
		for (int d = 0; d < ti->ndim && p < got + sizeof got - 24; d++)
			p += sprintf(p, "%s%lld", d ? ", " : "", (long long)ti->shape[d]);
		if (t->ndim == 2)
			lt_errmsg_set("%s: %s: shape [%s], expected [%d, %d]", lt_st_path(f), t->name,
				      got, t->shape[0], t->shape[1]);
		else
			lt_errmsg_set("%s: %s: shape [%s], expected [%d]", lt_st_path(f), t->name, got,
				      t->shape[0]);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* Every model tensor present once and right; no tensor the model lacks
 * (bar a tied model's lm_head.weight, checked when read). */
static enum lt_status check_files(const struct hf_files *h, const char *dir, const lt_model *m)
{
	const lt_st *f;
	const struct lt_st_info *ti;
	enum lt_status st;
	for (int i = 0; i < lt_model_num_weights(m); i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		if ((st = find_tensor(h, t->name, &f, &ti)) != LT_OK)
			return st;
		if (!f) {
			lt_errmsg_set("%s: tensor %s is missing (expected [%d%s%.0d] in %s)", dir,
				      t->name, t->shape[0], t->ndim == 2 ? ", " : "",
				      t->ndim == 2 ? t->shape[1] : 0, h->index[0] ? h->index : HF_WEIGHTS);
			return LT_ERR_FORMAT;
		}
		if ((st = check_tensor(f, ti, t)) != LT_OK)
			return st;
	}
	for (size_t k = 0; k < h->n; k++) {
		for (size_t i = 0; i < lt_st_count(h->f[k]); i++) {
			const char *name = lt_st_at(h->f[k], i)->name;
			if (!lt_model_find_weight(m, name) &&
			    !(lt_model_config_of(m)->tied && !strcmp(name, "lm_head.weight"))) {
				lt_errmsg_set("%s: tensor %s: not a tensor of this model (expected only "
					      "LlamaForCausalLM's)", lt_st_path(h->f[k]), name);
				return LT_ERR_FORMAT;
			}
		}
	}
	return LT_OK;
}

/* A tied model's lm_head.weight, when there, must equal the embedding. */
static enum lt_status check_tied_head(const struct hf_files *h, const lt_model *m,
				      const float *embedding)
{
	const lt_st *f;
	const struct lt_st_info *ti;
	const struct lt_tensor *emb = lt_model_find_weight(m, "model.embed_tokens.weight");
	enum lt_status st = find_tensor(h, "lm_head.weight", &f, &ti);
	if (st != LT_OK || !f)
		return st;
	if ((st = check_tensor(f, ti, emb)) != LT_OK)
		return st;
	float *head = malloc(emb->numel * sizeof *head);
	if (!head) {
		lt_errmsg_set("cannot allocate %zu floats for lm_head.weight", emb->numel);
		return LT_ERR_NOMEM;
	}
	if ((st = lt_st_read_f32(f, "lm_head.weight", head, emb->numel)) == LT_OK &&
	    memcmp(head, embedding, emb->numel * sizeof *head)) {
		lt_errmsg_set("%s: lm_head.weight differs from model.embed_tokens.weight: expected "
			      "them equal, as tie_word_embeddings is true", lt_st_path(f));
		st = LT_ERR_FORMAT;
	}
	free(head);
	return st;
}

/* Reads every weight (as f32) into the model (its parameters, or with adapters its
 * frozen base). */
static enum lt_status read_weights(const struct hf_files *h, lt_model *m)
{
	enum lt_status st = LT_OK;
	for (int i = 0; st == LT_OK && i < lt_model_num_weights(m); i++) {
		const struct lt_tensor *t = lt_model_weight(m, i);
		const lt_st *f;
		const struct lt_st_info *ti;
		float *host = malloc(t->numel * sizeof *host);
		if (!host) {
			lt_errmsg_set("cannot allocate %zu floats for %s", t->numel, t->name);
			return LT_ERR_NOMEM;
		}
		if ((st = find_tensor(h, t->name, &f, &ti)) == LT_OK &&
		    (st = lt_st_read_f32(f, t->name, host, t->numel)) == LT_OK) {
			if (lt_model_config_of(m)->tied && !strcmp(t->name, "model.embed_tokens.weight"))
				st = check_tied_head(h, m, host);
			if (st == LT_OK)
				st = lt_model_write_weight(m, t, host);
		}
		free(host);
	}
	return st;
}

enum lt_status lt_hf_load(const char *dir, lt_model *m)
{
	struct hf_files *h = calloc(1, sizeof *h);
	if (!h) {
		lt_errmsg_set("cannot allocate the file list of %s", dir);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = open_files(h, dir);
	if (st == LT_OK)
		st = check_files(h, dir, m);
	if (st == LT_OK)
		st = read_weights(h, m);
	close_files(h);
	free(h);
	return st;
}

/* A tied model's lm_head.weight against the embedding, both read. */
static enum lt_status check_tied_file(const struct hf_files *h, const lt_model *m)
{
	const lt_st *f;
	const struct lt_st_info *ti;
	const struct lt_tensor *emb = lt_model_find_weight(m, "model.embed_tokens.weight");
	enum lt_status st = find_tensor(h, "lm_head.weight", &f, &ti);
	if (st != LT_OK || !f)
		return st;
	float *host = malloc(emb->numel * sizeof *host);
	if (!host) {
		lt_errmsg_set("cannot allocate %zu floats for %s", emb->numel, emb->name);
		return LT_ERR_NOMEM;
	}
	if ((st = find_tensor(h, emb->name, &f, &ti)) == LT_OK &&
	    (st = lt_st_read_f32(f, emb->name, host, emb->numel)) == LT_OK)
		st = check_tied_head(h, m, host);
	free(host);
	return st;
}

enum lt_status lt_hf_check(const char *dir, const lt_model *m)
{
	struct hf_files *h = calloc(1, sizeof *h);
	if (!h) {
		lt_errmsg_set("cannot allocate the file list of %s", dir);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = open_files(h, dir);
	if (st == LT_OK)
		st = check_files(h, dir, m);
	if (st == LT_OK && lt_model_config_of(m)->tied)
		st = check_tied_file(h, m);
	close_files(h);
	free(h);
	return st;
}
