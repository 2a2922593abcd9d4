/* lltrain export: writes a checkpoint as a Hugging Face model directory
 * (config.json, generation_config.json, model.safetensors and the
 * tokenizer files) that transformers' LlamaForCausalLM and AutoTokenizer
 * load as they are, its LoRA adapters as a PEFT adapter directory, or
 * (--format gguf, export_gguf.c) one GGUF file that llama.cpp runs. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "backend.h"
#include "io/checkpoint.h"
#include "cmd/cmd.h"
#include "conf.h"
#include "io/fs.h"
#include "io/import.h"
#include "io/peft.h"
#include "io/gguf_model.h"
#include "io/rundir.h"
#include "model.h"
#include "text/tokenizer.h"

struct export_args {
	const char *format;
	const char *dtype;
	const char *type;      /* --type, for gguf; NULL when not given */
	const char *out;
	int force;
};

/* What one export holds; freed by free_session. */
struct session {
	struct lt_cmd_checkpoint ck;
	enum lt_dtype dtype;            /* of the weights written: f32 or bf16 */
	int peft;                       /* the adapters alone, as a PEFT adapter */
	const char *const *files;       /* out_files or peft_files */
	char tmp[LT_CMD_PATH_CAP];      /* the temporary directory being filled, or "" */
};

/* The files an export writes, in the order written and printed. */
static const char *const out_files[] = {
	"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
	"tokenizer_config.json", NULL,
};

/* The files of --format peft. */
static const char *const peft_files[] = { LT_PEFT_CONFIG, LT_PEFT_WEIGHTS, NULL };

#define ARG(f) LT_CMD_FIELD(struct export_args, f)

static const struct lt_cmd_option export_options[] = {
	{ .name = "format", .kind = LT_CMD_TEXT, ARG(format), .arg = "FMT",
	  .help = "the output format: hf (a Hugging Face model directory,\n"
		  "the default), peft (the LoRA adapters alone, as a Hugging\n"
		  "Face PEFT adapter) or gguf (one file for llama.cpp)" },
	{ .name = "dtype", .kind = LT_CMD_TEXT, ARG(dtype), .arg = "T",
	  .help = "the weights' type: fp32 (the default) or bf16 (rounded\n"
		  "to nearest even from the checkpoint's fp32)" },
	{ .name = "type", .kind = LT_CMD_TEXT, ARG(type), .arg = "T",
	  .help = "gguf only: the weights' type: f32 (the default), f16,\n"
		  "bf16, q8_0 or q4_0 (norms stay f32)" },
	{ .name = "out", .kind = LT_CMD_TEXT, ARG(out), .arg = "PATH",
	  .help = "the directory to write (default: export), or with gguf\n"
		  "the file (default: export.gguf)" },
	{ .name = "force", .kind = LT_CMD_FLAG, ARG(force),
	  .help = "write into DIR even when it holds files (files of the\n"
		  "same names are replaced, others are left); with gguf,\n"
		  "replace the file" },
	{ .name = NULL },
};

/* The format is hf or gguf, each with its own options, and the output
 * has a name; 0, or 2 after saying what is wrong. */
static int check_export_args(const void *args)
{
	const struct export_args *a = args;
	if (strcmp(a->format, "hf") != 0 && strcmp(a->format, "peft") != 0 &&
	    strcmp(a->format, "gguf") != 0) {
		fprintf(stderr, "lltrain export: --format '%s': unknown (expected hf, peft or gguf)\n",
			a->format);
		return 2;
	}
	if (a->type && strcmp(a->format, "gguf") != 0) {
		fprintf(stderr, "lltrain export: --type is for --format gguf (hf takes --dtype)\n");
		return 2;
	}
	uint32_t type;
	if (a->type && lt_gguf_model_file_type(a->type, &type) != LT_OK) {
		fprintf(stderr, "lltrain export: --type %s\n", lt_errmsg());
		return 2;
	}
	if (strcmp(a->format, "gguf") == 0 && strcmp(a->dtype, "fp32") != 0) {
		fprintf(stderr, "lltrain export: --dtype is for --format hf (gguf takes --type)\n");
		return 2;
	}
	if (strcmp(a->dtype, "fp32") != 0 && strcmp(a->dtype, "bf16") != 0) {
		fprintf(stderr, "lltrain export: --dtype '%s': unknown (expected fp32 or bf16)\n",
			a->dtype);
		return 2;
	}
	if (a->out && !a->out[0]) {
		fprintf(stderr, "lltrain export: --out: expected a name\n");
		return 2;
	}
	return 0;
}

static const struct lt_cmd_usage export_usage = {
	.cmd = "export",
	.head = "usage: lltrain export [--format hf|peft] [--dtype fp32|bf16] [--out DIR] [--force]\n"
		"                      CHECKPOINT_OR_RUN_DIR\n"
		"       lltrain export --format gguf [--type f32|f16|bf16|q8_0|q4_0]\n"
		"                      [--out FILE] [--force] CHECKPOINT_OR_RUN_DIR\n\n"
		"Writes a checkpoint (or the newest valid one of a run directory) as a\n"
		"Hugging Face model directory: config.json (LlamaForCausalLM),\n"
		"generation_config.json, model.safetensors, tokenizer.json and\n"
		"tokenizer_config.json, which transformers' from_pretrained loads; with\n"
		"--format peft, a LoRA run's adapters alone as adapter_config.json and\n"
		"adapter_model.safetensors, which PEFT's PeftModel.from_pretrained loads\n"
		"onto the base model; or with --format gguf as one GGUF file that\n"
		"llama.cpp loads.\n\n",
	.options = export_options,
	.column = 17,
	.check = check_export_args,
	.operands = &lt_cmd_checkpoint_operand,
};

/* ------------------------------------------------------------- reading */

/* The checkpoint, its config, tokenizer (no larger than the model's
 * vocabulary) and weights on the CPU. */
static enum lt_status load_checkpoint(struct session *s, const char *path)
{
	struct lt_cmd_checkpoint *c = &s->ck;
	char file[LT_CMD_PATH_CAP + 32];
	enum lt_status st = lt_cmd_checkpoint_open(c, path, 1, "export");
	if (st != LT_OK)
		return st;
	if (lt_tokenizer_vocab_size(c->tok) > c->conf.model.vocab_size) {
		lt_fs_join(file, sizeof file, c->dir, LT_RUNDIR_TOKENIZER);
		lt_errmsg_set("%s: %d tokens, more than the model's vocab_size %d", file,
			      (int)lt_tokenizer_vocab_size(c->tok), c->conf.model.vocab_size);
		return LT_ERR_FORMAT;
	}
	if (s->peft && c->conf.train.lora_rank <= 0) {
		lt_errmsg_set("%s: --format peft: the run has no LoRA adapters (train.lora_rank is "
			      "0; --format hf exports the whole model)", c->dir);
		return LT_ERR_ARG;
	}
	st = lt_cmd_checkpoint_model(c, "export", "cpu", 0);
	/* adapters are exported folded into the base, or alone for peft */
	return st == LT_OK && !s->peft ? lt_model_merge_lora(c->model) : st;
}

/* ------------------------------------------------------------- writing */

/* Writes j (consumed) as indented JSON; reals with the 9 digits that
 * give each float back. */
static enum lt_status write_json(const char *path, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
	enum lt_status st;
	json_decref(j);
	if (!text) {
		lt_errmsg_set("%s: out of memory building the JSON", path);
		return LT_ERR_NOMEM;
	}
	size_t n = strlen(text);
	text[n] = '\n'; /* the NUL becomes the final newline */
	st = lt_fs_write_new(path, text, n + 1);
	free(text);
	return st;
}

/* A float as the shortest decimal that reads back as the same float (so
 * 1e-5f is written 1e-05, not 9.99999975e-06). */
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

/* The end-of-text id as JSON, null where the tokenizer has none. */
static json_t *eot_json(const lt_tokenizer *tok)
{
	int32_t id = lt_tokenizer_eot_id(tok);
	return id >= 0 ? json_integer(id) : json_null();
}

/* config.json: a LlamaConfig with the model's shape. */
/* Llama 3's rope_scaling into config.json j, when the model has it; NULL
 * (j freed) when memory runs out. */
static json_t *add_rope_scaling(json_t *j, const struct lt_model_config *c)
{
	if (c->rope_scaling != LT_ROPE_LLAMA3)
		return j;
	json_t *rs = json_object();
	if (!rs || json_object_set_new(rs, "rope_type", json_string("llama3")) ||
	    json_object_set_new(rs, "factor", float_json(c->rope_factor)) ||
	    json_object_set_new(rs, "low_freq_factor", float_json(c->rope_low_freq_factor)) ||
	    json_object_set_new(rs, "high_freq_factor", float_json(c->rope_high_freq_factor)) ||
	    json_object_set_new(rs, "original_max_position_embeddings",
				json_integer(c->rope_original_max_seq)) ||
	    json_object_set_new(j, "rope_scaling", rs)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static json_t *model_config_json(const struct lt_model_config *c, const lt_tokenizer *tok,
				 enum lt_dtype dtype)
{
	json_t *j = json_object(), *arch = json_array();
	if (!j || !arch || json_array_append_new(arch, json_string("LlamaForCausalLM")) ||
	    json_object_set_new(j, "architectures", arch)) {
		json_decref(arch);
		json_decref(j);
		return NULL;
	}
	if (json_object_set_new(j, "model_type", json_string("llama")) ||
	    json_object_set_new(j, "hidden_size", json_integer(c->dim)) ||
	    json_object_set_new(j, "intermediate_size", json_integer(c->ffn_dim)) ||
	    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads)) ||
	    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers)) ||
	    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads)) ||
	    json_object_set_new(j, "head_dim", json_integer(lt_model_config_head_dim(c))) ||
	    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq)) ||
	    json_object_set_new(j, "rms_norm_eps", float_json(c->norm_eps)) ||
	    json_object_set_new(j, "rope_theta", float_json(c->rope_theta)) ||
	    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size)) ||
	    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied)) ||
	    json_object_set_new(j, "hidden_act", json_string("silu")) ||
	    json_object_set_new(j, "attention_bias", json_false()) ||
	    json_object_set_new(j, "mlp_bias", json_false()) ||
	    json_object_set_new(j, "torch_dtype",
				json_string(dtype == LT_BF16 ? "bfloat16" : "float32")) ||
	    json_object_set_new(j, "bos_token_id", eot_json(tok)) ||
	    json_object_set_new(j, "eos_token_id", eot_json(tok)) ||
	    json_object_set_new(j, "initializer_range", json_real(0.02)) ||
	    json_object_set_new(j, "use_cache", json_true())) {
		json_decref(j);
		return NULL;
	}
	return add_rope_scaling(j, c);
}

/* generation_config.json: the sampling defaults of lltrain sample. */
static json_t *generation_config_json(const struct lt_model_config *c, const lt_tokenizer *tok)
{
	json_t *j = json_object();
	if (!j || json_object_set_new(j, "bos_token_id", eot_json(tok)) ||
	    json_object_set_new(j, "eos_token_id", eot_json(tok)) ||
	    json_object_set_new(j, "do_sample", json_true()) ||
	    json_object_set_new(j, "temperature", json_real(0.8)) ||
	    json_object_set_new(j, "top_k", json_integer(40)) ||
	    json_object_set_new(j, "top_p", json_real(0.95)) ||
	    json_object_set_new(j, "max_length", json_integer(c->max_seq))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* tokenizer_config.json for a checkpoint that lacks one. */
static json_t *tokenizer_config_json(const struct lt_model_config *c, const lt_tokenizer *tok)
{
	json_t *j = json_object();
	if (!j ||
	    json_object_set_new(j, "tokenizer_class", json_string("PreTrainedTokenizerFast")) ||
	    json_object_set_new(j, "model_max_length", json_integer(c->max_seq)) ||
	    json_object_set_new(j, "clean_up_tokenization_spaces", json_false())) {
		json_decref(j);
		return NULL;
	}
	if (lt_tokenizer_eot_id(tok) >= 0 &&
	    (json_object_set_new(j, "bos_token", json_string(LT_TOKENIZER_EOT)) ||
	     json_object_set_new(j, "eos_token", json_string(LT_TOKENIZER_EOT)) ||
	     json_object_set_new(j, "unk_token", json_string(LT_TOKENIZER_EOT)))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* base_model_name_or_path of a PEFT adapter: the run's train.init where
 * that is a Hugging Face model directory, else NULL. */
static const char *peft_base_model(const struct session *s)
{
	const char *init = s->ck.conf.train.init;
	enum lt_import_kind kind;
	if (!init[0] || lt_import_kind_of(init, &kind) != LT_OK || kind != LT_IMPORT_HF)
		return NULL;
	return init;
}

/* Writes s->files[i] into the directory dir. */
static enum lt_status write_one(struct session *s, const char *dir, int i)
{
	const struct lt_model_config *c = &s->ck.conf.model;
	char path[LT_CMD_PATH_CAP + 32], src[LT_CMD_PATH_CAP + 32];
	enum lt_status st = lt_fs_join(path, sizeof path, dir, s->files[i]);
	if (st != LT_OK)
		return st;
	if (s->peft)
		return i == 0 ? lt_peft_write_config(path, s->ck.model, peft_base_model(s))
			      : lt_peft_write_adapters(path, s->ck.model, s->dtype);
	switch (i) {
	case 0: return write_json(path, model_config_json(c, s->ck.tok, s->dtype));
	case 1: return write_json(path, generation_config_json(c, s->ck.tok));
	case 2: return lt_checkpoint_write_base_as(path, s->ck.model, s->dtype);
	case 3:
	case 4:
		/* the checkpoint's tokenizer files, under the names they have there */
		st = lt_fs_join(src, sizeof src, s->ck.dir,
				i == 3 ? LT_RUNDIR_TOKENIZER : LT_RUNDIR_TOKENIZER_CONFIG);
		if (st != LT_OK)
			return st;
		if (i == 4 && access(src, F_OK) != 0)
			return write_json(path, tokenizer_config_json(c, s->ck.tok));
		return lt_fs_copy(src, path);
	}
	return LT_ERR_ARG;
}

/* Removes the temporary directory and the files an export puts there. */
static void remove_temporary(struct session *s)
{
	char path[LT_CMD_PATH_CAP + 32];
	if (!s->tmp[0])
		return;
	for (int i = 0; s->files[i]; i++)
		if (lt_fs_join(path, sizeof path, s->tmp, s->files[i]) == LT_OK)
			unlink(path);
	rmdir(s->tmp);
	s->tmp[0] = '\0';
}

/* Splits out into its parent directory and last name (see lt_fs_split),
 * refusing a name that is none ("", ".", ".."). */
static enum lt_status split_path(const char *out, char *parent, char *name, size_t cap)
{
	enum lt_status st = lt_fs_split(out, parent, name, cap);
	if (st == LT_OK && (!name[0] || !strcmp(name, ".") || !strcmp(name, ".."))) {
		lt_errmsg_set("%s: not a usable output directory name", out);
		return LT_ERR_ARG;
	}
	return st;
}

/* Whether out may be written: absent, an empty directory, or (with
 * --force) any directory. *fill is set when out exists with files. */
static enum lt_status check_destination(const char *out, int force, int *fill)
{
	enum lt_status st = lt_fs_output_dir(out, 1, fill);
	if (st == LT_OK && *fill && !force) {
		lt_errmsg_set("%s: exists and is not empty (--force writes into it)", out);
		return LT_ERR_ARG;
	}
	return st;
}

/* Publishes the finished files of the temporary directory as out: the
 * directory in one rename when out is absent or empty, else file by file
 * into out. */
static enum lt_status move_into_place(struct session *s, const char *out, int fill)
{
	char from[LT_CMD_PATH_CAP + 32], to[LT_CMD_PATH_CAP + 32];
	enum lt_status st;
	if (!fill) {
		if ((st = lt_fs_publish(s->tmp, out)) != LT_OK)
			return st;
		s->tmp[0] = '\0';
		return LT_OK;
	}
	for (int i = 0; s->files[i]; i++) {
		if ((st = lt_fs_join(from, sizeof from, s->tmp, s->files[i])) != LT_OK ||
		    (st = lt_fs_join(to, sizeof to, out, s->files[i])) != LT_OK ||
		    (st = lt_fs_publish(from, to)) != LT_OK)
			return st;
	}
	remove_temporary(s);
	return LT_OK;
}

/* Writes every file into a temporary directory beside out, then moves
 * them into place. */
static enum lt_status write_export(struct session *s, const char *out, int force)
{
	char parent[LT_CMD_PATH_CAP], name[LT_CMD_PATH_CAP];
	enum lt_status st;
	int fill;

	_Static_assert(sizeof name == sizeof s->tmp, "name holds the temporary's path");

	if ((st = split_path(out, parent, name, sizeof parent)) != LT_OK ||
	    (st = check_destination(out, force, &fill)) != LT_OK ||
	    (st = lt_fs_make_dirs(parent)) != LT_OK)
		return st;
	if ((size_t)snprintf(s->tmp, sizeof s->tmp, "%s/.%s.tmp-%ld", parent, name,
			     (long)getpid()) >= sizeof s->tmp) {
		lt_errmsg_set("%s: path too long", out);
		s->tmp[0] = '\0';
		return LT_ERR_ARG;
	}
	memcpy(name, s->tmp, sizeof s->tmp);
	remove_temporary(s); /* a stale one of an earlier process with our id */
	memcpy(s->tmp, name, sizeof s->tmp);
	if (mkdir(s->tmp, 0755) != 0) {
		lt_errmsg_set("%s: cannot create the directory: %s", s->tmp, strerror(errno));
		s->tmp[0] = '\0';
		return LT_ERR_IO;
	}
	for (int i = 0; s->files[i]; i++)
		if ((st = write_one(s, s->tmp, i)) != LT_OK)
			return st;
	if ((st = lt_fs_sync(s->tmp)) != LT_OK)
		return st;
	return move_into_place(s, out, fill);
}

enum lt_status lt_cmd_export_hf(const struct lt_cmd_checkpoint *c, const char *out, int force)
{
	struct session s;
	memset(&s, 0, sizeof s);
	s.ck = *c;  /* borrowed: free_session is not called on it */
	s.dtype = LT_F32;
	s.files = out_files;
	enum lt_status st = write_export(&s, out, force);
	remove_temporary(&s);
	return st;
}

static void print_written(const struct session *s, const char *out, int gguf)
{
	char path[LT_CMD_PATH_CAP + 32];
	struct stat sb;
	if (s->peft)  /* the flat parameters of a model with adapters are the adapters */
		printf("exported the adapters of %s (step %ld, %zu parameters) to %s:\n", s->ck.dir,
		       s->ck.state.step, lt_model_num_params(s->ck.model), out);
	else
		printf("exported %s (step %ld, %zu parameters) to %s%s", s->ck.dir, s->ck.state.step,
		       lt_model_config_params(&s->ck.conf.model), out, gguf ? "" : ":\n");
	if (gguf) {
		printf(" (%lld bytes)\n", stat(out, &sb) == 0 ? (long long)sb.st_size : -1LL);
		return;
	}
	for (int i = 0; s->files[i]; i++) {
		int known = lt_fs_join(path, sizeof path, out, s->files[i]) == LT_OK &&
			    stat(path, &sb) == 0;
		printf("  %-26s %lld bytes\n", s->files[i], known ? (long long)sb.st_size : -1LL);
	}
}

static void free_session(struct session *s)
{
	remove_temporary(s);
	lt_cmd_checkpoint_free(&s->ck);
}

int lt_cmd_export(int argc, char **argv)
{
	struct export_args a = { .format = "hf", .dtype = "fp32", .out = NULL };
	struct session s;
	int rc = lt_cmd_parse(argc, argv, &export_usage, &a, NULL);
	if (rc >= 0)
		return rc;
	memset(&s, 0, sizeof s);
	s.dtype = strcmp(a.dtype, "bf16") == 0 ? LT_BF16 : LT_F32;
	s.peft = strcmp(a.format, "peft") == 0;
	s.files = s.peft ? peft_files : out_files;
	int gguf = strcmp(a.format, "gguf") == 0;
	if (!a.out)
		a.out = gguf ? "export.gguf" : "export";
	enum lt_status st = load_checkpoint(&s, argv[optind]);
	if (st == LT_OK)
		st = gguf ? lt_cmd_export_gguf(&s.ck, a.out, a.type ? a.type : "f32", a.force) :
			    write_export(&s, a.out, a.force);
	if (st != LT_OK) {
		lt_report("export", st);
		rc = 1;
	} else {
		print_written(&s, a.out, gguf);
		rc = 0;
	}
	free_session(&s);
	return rc;
}
