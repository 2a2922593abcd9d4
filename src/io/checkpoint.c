/* Checkpoints (see checkpoint.h), the writing side: atomic saves through
 * a temporary directory with state.json listing sizes and CRC-32s, and
 * finding, opening and pruning the checkpoints of a run. Reading state.json
 * and loading are in checkpoint_load.c. */
#include "config.h"
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "io/checkpoint_impl.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "io/safetensors.h"

void lt_ckpt_state_free(struct lt_ckpt_state *s)
{
	if (!s)
		return;
	free(s->config);
	s->config = NULL;
	free((void *)s->extra);
	s->extra = NULL;
	s->n_extra = 0;
}

/* ------------------------------------------------------------- saving */

/* At commit: the nshards optimizer shards that the ranks wrote into tmp
 * are all there, and their headers and ranges fit together and the model. */
static enum lt_status check_saved_shards(const char *tmp, const lt_model *m, int nshards)
{
	struct lt_ckpt_shard *sh = calloc(nshards ? (size_t)nshards : 1, sizeof *sh);
	char path[CKPT_PATH_MAX];
	enum lt_status st = LT_OK;

	if (!sh) {
		lt_errmsg_set("%s: cannot allocate the list of %d optimizer shards", tmp, nshards);
		return LT_ERR_NOMEM;
	}
	for (int r = 0; r < nshards && st == LT_OK; r++) {
		lt_rundir_optim_name(r, nshards, sh[r].name);
		if ((st = lt_fs_join(path, sizeof path, tmp, sh[r].name)) != LT_OK ||
		    access(path, F_OK) == 0)
			continue;
		int err = errno;
		if (err == ENOENT)
			lt_errmsg_set("%s: missing (rank %d of %d wrote no optimizer shard)", path, r,
				      nshards);
		else
			lt_errmsg_set("%s: %s", path, strerror(err));
		st = err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	if (st == LT_OK && nshards > 0)
		st = lt_ckpt_open_shards(tmp, tmp, sh, (size_t)nshards, m, 0, 0);
	lt_ckpt_close_shards(sh, (size_t)nshards);
	return st;
}

/* Where a tensor's bytes come from while the writer streams it. */
struct fetch_src {
	lt_backend *be;
	lt_ref ref;  /* f32, bf16 or block elements */
};

/* Bytes [off, off + len) of a float tensor on the backend (the writer
 * asks in whole elements: F32 tensors, chunks of 1 MiB). */
static enum lt_status fetch_floats(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetch_src *f = ctx;
	LT_ASSERT(off % 4 == 0 && len % 4 == 0);
	f->be->ops->read(f->be, buf, lt_ref_at(f->ref, (size_t)(off / 4)), len / 4);
	return LT_OK;
}

/* Bytes [off, off + len) of a float tensor on the backend, rounded to
 * bf16 (to nearest, ties to even) as they are fetched. */
static enum lt_status fetch_bf16(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetch_src *f = ctx;
	LT_ASSERT(off % 2 == 0 && len % 2 == 0);
	size_t n = len / 2;
	float *wide = malloc(n * sizeof *wide + 1);
	if (!wide) {
		lt_errmsg_set("cannot allocate %zu bytes to round a tensor to bf16", n * sizeof *wide);
		return LT_ERR_NOMEM;
	}
	f->be->ops->read(f->be, wide, lt_ref_at(f->ref, (size_t)(off / 2)), n);
	uint16_t *out = buf;
	for (size_t i = 0; i < n; i++)
		out[i] = lt_bf16_from_f32(wide[i]);
	free(wide);
	return LT_OK;
}

/* Bytes [off, off + len) of a bf16 tensor on the backend, as they are. */
static enum lt_status fetch_halves(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetch_src *f = ctx;
	LT_ASSERT(off % 2 == 0 && len % 2 == 0);
	f->be->ops->read(f->be, buf, lt_ref_at(f->ref, (size_t)(off / 2)), len / 2);
	return LT_OK;
}

/* Bytes [off, off + len) of a tensor of GGUF blocks on the backend, as
 * they are: the whole blocks that cover them read, the range copied. */
static enum lt_status fetch_blocks(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetch_src *f = ctx;
	enum lt_dtype type = lt_buf_type(f->ref.buf);
	size_t bb = lt_dtype_bytes(type, LT_QBLOCK), first = (size_t)off / bb;
	size_t blocks = ((size_t)off + len + bb - 1) / bb - first;
	unsigned char *raw = malloc(blocks * bb + 1);
	if (!raw) {
		lt_errmsg_set("cannot allocate %zu bytes to fetch a tensor's blocks", blocks * bb);
		return LT_ERR_NOMEM;
	}
	f->be->ops->read(f->be, raw, lt_ref_at(f->ref, first * LT_QBLOCK), blocks * LT_QBLOCK);
	enum lt_status st = f->be->ops->sync(f->be);
	if (st == LT_OK)
		memcpy(buf, raw + ((size_t)off - first * bb), len);
	free(raw);
	return st;
}

/* A frozen tensor of GGUF blocks, as the run holds it: U8 [rows, bytes of
 * a row's blocks], exact (a resume holds bitwise the same base). */
static enum lt_status add_blocks(lt_st_writer *w, const struct lt_tensor *t,
				 struct fetch_src *src)
{
	enum lt_dtype type = lt_buf_type(src->ref.buf);
	int64_t shape[2] = { t->shape[0], (int64_t)lt_dtype_bytes(type, (size_t)t->shape[1]) };
	return lt_st_writer_add_fetch(w, t->name, LT_ST_U8, 2, shape, fetch_blocks, src);
}

/* A float range of a backend buffer added to the writer as `type` (f32 or
 * bf16): f32 straight from the host when the backend maps it, else fetched
 * through src piece by piece as the writer streams it (a whole host copy
 * of the model is never made). */
static enum lt_status add_floats(lt_st_writer *w, const char *name, int ndim,
				 const int64_t *shape, struct fetch_src *src, enum lt_dtype type)
{
	if (lt_buf_type(src->ref.buf) == LT_BF16)  /* a frozen bf16 base: as it is */
		return lt_st_writer_add_fetch(w, name, LT_ST_BF16, ndim, shape, fetch_halves, src);
	if (type == LT_BF16)
		return lt_st_writer_add_fetch(w, name, LT_ST_BF16, ndim, shape, fetch_bf16, src);
	float *host = lt_backend_host_ptr(src->be, src->ref);
	if (host)
		return lt_st_writer_add(w, name, LT_ST_F32, ndim, shape, host);
	return lt_st_writer_add_fetch(w, name, LT_ST_F32, ndim, shape, fetch_floats, src);
}

enum lt_status lt_ckpt_check_backend(lt_backend *be, const char *path)
{
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK)
		lt_errmsg_prefix("%s: the backend failed", path);
	return st;
}

/* Every parameter tensor under its Hugging Face name, shape [rows, cols]
 * or [n], F32; with adapters, the frozen base's tensors too (in its type:
 * a bf16 base as BF16), so that a run resumes from its checkpoint alone. */
enum lt_status lt_checkpoint_write_model(const char *path, lt_model *m)
{
	return lt_checkpoint_write_model_as(path, m, LT_F32);
}

/* The model's tensors into path in `type`: the trainable ones unless
 * base_only (with adapters), then the frozen ones. */
static enum lt_status write_tensors(const char *path, lt_model *m, enum lt_dtype type,
				    int base_only)
{
	lt_backend *be = lt_model_backend(m);
	int nf = lt_model_num_frozen(m), n = base_only && nf ? 0 : lt_model_num_tensors(m);
	struct fetch_src *src = calloc((size_t)(n + nf), sizeof *src);
	lt_st_writer *w = NULL;
	enum lt_status st;

	if (!src) {
		lt_errmsg_set("%s: cannot allocate the tensor list", path);
		return LT_ERR_NOMEM;
	}
	if ((st = lt_ckpt_check_backend(be, path)) != LT_OK ||
	    (st = lt_st_writer_new(path, &w)) != LT_OK ||
	    (st = lt_st_writer_set_meta(w, "format", "pt")) != LT_OK)
		goto out;
	for (int i = 0; i < n; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		int64_t shape[2] = { t->shape[0], t->shape[1] };
		src[i] = (struct fetch_src){ be, lt_ref_at(lt_model_params(m), t->off) };
		if ((st = add_floats(w, t->name, t->ndim, shape, &src[i], type)) != LT_OK)
			goto out;
	}
	for (int i = 0; i < nf; i++) {
		const struct lt_tensor *t = lt_model_frozen(m, i);
		int64_t shape[2] = { t->shape[0], t->shape[1] };
		src[n + i] = (struct fetch_src){ be, lt_model_frozen_ref(m, t) };
		int block = lt_dtype_is_block(lt_buf_type(src[n + i].ref.buf));
		if (block && (st = lt_st_writer_set_meta(w, "lora_base", lt_dtype_name(lt_buf_type(
					  src[n + i].ref.buf)))) != LT_OK)
			goto out;
		st = block ? add_blocks(w, t, &src[n + i])
			   : add_floats(w, t->name, t->ndim, shape, &src[n + i], type);
		if (st != LT_OK)
			goto out;
	}
	if ((st = lt_st_writer_finish(w)) != LT_OK)
		goto out;
	if ((st = lt_ckpt_check_backend(be, path)) != LT_OK)
		unlink(path);
out:
	lt_st_writer_free(w);
	free(src);
	return st;
}

enum lt_status lt_checkpoint_write_model_as(const char *path, lt_model *m, enum lt_dtype type)
{
	return write_tensors(path, m, type, 0);
}

enum lt_status lt_checkpoint_write_base_as(const char *path, lt_model *m, enum lt_dtype type)
{
	return write_tensors(path, m, type, 1);
}

/* An optimizer shard: the moments of the optimizer's range [begin, end),
 * with the range, the model's size, the rank and the ranks as metadata. */
static enum lt_status write_optimizer_file(const char *path, lt_model *m, const lt_optim *o,
					   int rank, int nranks)
{
	lt_backend *be = lt_model_backend(m);
	size_t begin = lt_optim_begin(o), end = lt_optim_end(o);
	int64_t shape[1] = { (int64_t)(end - begin) };
	struct fetch_src src[2] = { { be, lt_optim_m(o) }, { be, lt_optim_v(o) } };
	char num[5][24];
	lt_st_writer *w = NULL;
	enum lt_status st;

	snprintf(num[0], sizeof num[0], "%zu", begin);
	snprintf(num[1], sizeof num[1], "%zu", end);
	snprintf(num[2], sizeof num[2], "%zu", lt_model_num_params(m));
	snprintf(num[3], sizeof num[3], "%d", rank);
	snprintf(num[4], sizeof num[4], "%d", nranks);
	if ((st = lt_ckpt_check_backend(be, path)) == LT_OK &&
	    (st = lt_st_writer_new(path, &w)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "format", "pt")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "begin", num[0])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "end", num[1])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "numel", num[2])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "rank", num[3])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "ranks", num[4])) == LT_OK &&
	    (st = add_floats(w, "exp_avg", 1, shape, &src[0], LT_F32)) == LT_OK &&
	    (st = add_floats(w, "exp_avg_sq", 1, shape, &src[1], LT_F32)) == LT_OK &&
	    (st = lt_st_writer_finish(w)) == LT_OK &&
	    (st = lt_ckpt_check_backend(be, path)) != LT_OK)
		unlink(path);
	lt_st_writer_free(w);
	return st;
}

/* A file written into the checkpoint, for state.json's "files". */
struct saved_file {
	char name[LT_RUNDIR_NAME_MAX];
	uint64_t bytes;
	uint32_t crc;
};

/* An unsigned 64-bit value as a JSON integer, or as a decimal string where
 * it is beyond json_int_t. */
static json_t *json_u64(uint64_t v)
{
	char buf[24];
	if (v <= (uint64_t)INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(buf, sizeof buf, "%" PRIu64, v);
	return json_string(buf);
}

/* state.json's "files": {name: {bytes, crc32}} for the n files of f. */
static json_t *files_object(const struct saved_file *f, int n)
{
	json_t *files = json_object();
	for (int i = 0; files && i < n; i++) {
		char hex[9];
		json_t *o = json_object();
		snprintf(hex, sizeof hex, "%08" PRIx32, f[i].crc);
		if (!o || json_object_set_new(o, "bytes", json_u64(f[i].bytes)) ||
		    json_object_set_new(o, "crc32", json_string(hex)) ||
		    json_object_set_new(files, f[i].name, o)) {
			json_decref(files);
			return NULL;
		}
	}
	return files;
}

/* The text of state.json, malloc'd. */
static char *state_text(const struct lt_ckpt_state *s, const struct saved_file *f, int n)
{
	json_t *j = json_object(), *files = files_object(f, n);
	char *text = NULL;

	if (j && files &&
	    !json_object_set_new(j, "format_version", json_integer(STATE_FORMAT_VERSION)) &&
	    !json_object_set_new(j, "lltrain_version", json_string(PACKAGE_VERSION)) &&
	    !json_object_set_new(j, "step", json_integer(s->step)) &&
	    !json_object_set_new(j, "samples", json_u64(s->samples)) &&
	    !json_object_set_new(j, "seed", json_u64(s->seed)) &&
	    !json_object_set_new(j, "elapsed", json_real(s->elapsed)) &&
	    !json_object_set_new(j, "tokens", json_integer(s->tokens)) &&
	    !json_object_set_new(j, "bad_steps", json_integer(s->bad_steps)) &&
	    !json_object_set_new(j, "config", s->config ? json_string(s->config) : json_null())) {
		if (!json_object_set_new(j, "files", files))
			text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
		files = NULL;
	}
	json_decref(files);
	json_decref(j);
	return text;
}

/* Writes state.json into dir after checksumming the n files named in f. */
static enum lt_status write_state_file(const char *dir, const struct lt_ckpt_state *s,
				       struct saved_file *f, int n)
{
	char path[CKPT_PATH_MAX], *text;
	enum lt_status st;

	for (int i = 0; i < n; i++) {
		if ((st = lt_fs_join(path, sizeof path, dir, f[i].name)) != LT_OK ||
		    (st = lt_ckpt_checksum_file(path, &f[i].bytes, &f[i].crc)) != LT_OK)
			return st;
	}
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_STATE)) != LT_OK)
		return st;
	if (!(text = state_text(s, f, n))) {
		lt_errmsg_set("%s: out of memory building the JSON (is the config valid UTF-8?)",
			      path);
		return LT_ERR_NOMEM;
	}
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves no final newline; the NUL becomes one */
	st = lt_fs_write_new(path, text, len + 1);
	free(text);
	return st;
}

/* The directory tokenizer.json lives in, to find tokenizer_config.json. */
static enum lt_status sibling_path(char *out, size_t cap, const char *file, const char *name)
{
	const char *slash = strrchr(file, '/');
	int n = slash ? snprintf(out, cap, "%.*s/%s", (int)(slash - file), file, name)
		      : snprintf(out, cap, "%s", name);
	if (n < 0 || (size_t)n >= cap) {
		lt_errmsg_set("%s: path too long", file);
		return LT_ERR_ARG;
	}
	return LT_OK;
}

/* Appends name to the n files of f, for state.json. */
static void add_file(struct saved_file *f, int *n, const char *name)
{
	snprintf(f[*n].name, sizeof f[*n].name, "%s", name);
	(*n)++;
}

/* Copies the tokenizer named in s (and the tokenizer_config.json beside
 * it, if there is one) into tmp, adding them to f. */
static enum lt_status copy_tokenizer(const char *tmp, const struct lt_ckpt_state *s,
				     struct saved_file *f, int *n)
{
	char path[CKPT_PATH_MAX], src[CKPT_PATH_MAX];
	enum lt_status st;

	if ((st = lt_fs_join(path, sizeof path, tmp, LT_RUNDIR_TOKENIZER)) != LT_OK ||
	    (st = lt_fs_copy(s->tokenizer, path)) != LT_OK)
		return st;
	add_file(f, n, LT_RUNDIR_TOKENIZER);
	if ((st = sibling_path(src, sizeof src, s->tokenizer, LT_RUNDIR_TOKENIZER_CONFIG)))
		return st;
	if (access(src, F_OK) != 0)
		return LT_OK;
	if ((st = lt_fs_join(path, sizeof path, tmp, LT_RUNDIR_TOKENIZER_CONFIG)) != LT_OK ||
	    (st = lt_fs_copy(src, path)) != LT_OK)
		return st;
	add_file(f, n, LT_RUNDIR_TOKENIZER_CONFIG);
	return LT_OK;
}

/* Writes the model (unless with_model is 0: it is there already), the
 * tokenizer and state.json into tmp, which holds the nshards optimizer
 * shards already (checked first), and syncs it. */
static enum lt_status write_checkpoint_files(const char *tmp, lt_model *m, int nshards,
					     const struct lt_ckpt_state *s, int with_model)
{
	struct saved_file *f = calloc((size_t)nshards + 3 + (size_t)s->n_extra, sizeof *f);
	char path[CKPT_PATH_MAX];
	enum lt_status st;
	int n = 0;

	if (!f) {
		lt_errmsg_set("%s: cannot allocate the list of %d files", tmp, nshards + 3);
		return LT_ERR_NOMEM;
	}
	if ((st = check_saved_shards(tmp, m, nshards)) != LT_OK ||
	    (st = lt_fs_join(path, sizeof path, tmp, LT_RUNDIR_MODEL)) != LT_OK ||
	    (with_model && (st = lt_checkpoint_write_model(path, m)) != LT_OK))
		goto out;
	add_file(f, &n, LT_RUNDIR_MODEL);
	for (int r = 0; r < nshards; r++) {
		lt_rundir_optim_name(r, nshards, f[n].name);
		n++;
	}
	for (int i = 0; i < s->n_extra; i++)
		add_file(f, &n, s->extra[i]);
	if ((s->tokenizer && (st = copy_tokenizer(tmp, s, f, &n)) != LT_OK) ||
	    (st = write_state_file(tmp, s, f, n)) != LT_OK)
		goto out;
	st = lt_fs_sync(tmp);
out:
	free(f);
	return st;
}

/* Renames the finished temporary directory to its final name; an existing
 * checkpoint of that name is moved aside first and removed after, so a
 * valid one exists under the final name, or the old one is put back. An
 * old copy that resists removal is left for lt_checkpoint_prune (its name
 * is a temporary's). */
static enum lt_status publish(const char *ckdir, const char *tmp, const char *final,
			      const char *aside_name)
{
	char aside[CKPT_PATH_MAX];
	enum lt_status st = lt_fs_join(aside, sizeof aside, ckdir, aside_name);
	return st != LT_OK ? st : lt_fs_publish_dir(tmp, final, aside);
}

enum lt_status lt_checkpoint_begin(const char *run_dir, long step, long tag, char *tmp,
				   size_t cap)
{
	char ckdir[CKPT_PATH_MAX], aside[CKPT_PATH_MAX], tmp_name[LT_RUNDIR_NAME_MAX];
	char aside_name[LT_RUNDIR_NAME_MAX];
	enum lt_status st;

	if (step < 0) {
		lt_errmsg_set("checkpoint step %ld: must not be negative", step);
		return LT_ERR_ARG;
	}
	lt_rundir_temp_name(step, tag, tmp_name);
	if ((st = lt_rundir_aside_name(tmp_name, aside_name, sizeof aside_name)) != LT_OK ||
	    (st = lt_rundir_checkpoints(run_dir, ckdir, sizeof ckdir)) != LT_OK ||
	    (st = lt_fs_join(tmp, cap, ckdir, tmp_name)) != LT_OK ||
	    (st = lt_fs_join(aside, sizeof aside, ckdir, aside_name)) != LT_OK ||
	    (st = lt_fs_make_dirs(ckdir)) != LT_OK || (st = lt_fs_remove_tree(tmp)) != LT_OK ||
	    (st = lt_fs_remove_tree(aside)) != LT_OK)
		return st;
	if (mkdir(tmp, 0755) != 0) {
		lt_errmsg_set("%s: cannot create the directory: %s", tmp, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

enum lt_status lt_checkpoint_write_shard(const char *tmp, lt_model *m, const lt_optim *o,
					 int rank, int nranks)
{
	char name[LT_RUNDIR_NAME_MAX], path[CKPT_PATH_MAX];
	enum lt_status st;

	if (nranks < 1 || nranks > LT_RUNDIR_MAX_SHARDS || rank < 0 || rank >= nranks) {
		lt_errmsg_set("%s: optimizer shard of rank %d of %d ranks: expected 0 <= rank < "
			      "ranks <= %d", tmp, rank, nranks, LT_RUNDIR_MAX_SHARDS);
		return LT_ERR_ARG;
	}
	lt_rundir_optim_name(rank, nranks, name);
	if ((st = lt_fs_join(path, sizeof path, tmp, name)) != LT_OK ||
	    (st = write_optimizer_file(path, m, o, rank, nranks)) != LT_OK)
		return st;
	return lt_fs_sync(tmp);
}

enum lt_status lt_checkpoint_write_moments(const char *path, lt_model *m, const lt_optim *o,
					   int rank, int nranks)
{
	return write_optimizer_file(path, m, o, rank, nranks);
}

/* A tensor of a fetched save: its fetch, which (k) and which tensor (i). */
struct fetched {
	lt_ckpt_fetch_fn fetch;
	void *ctx;
	int k, i;
	const lt_model *whole;  /* for a flat moment: the tensors it crosses */
};

static enum lt_status fetch_tensor(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetched *f = ctx;
	return f->fetch(f->ctx, f->k, f->i, off, buf, len);
}

/* A flat moment crosses the tensors: each piece asked of its tensor. */
static enum lt_status fetch_flat(void *ctx, uint64_t off, void *buf, size_t len)
{
	const struct fetched *f = ctx;
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_tensors(f->whole) && len > 0 && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(f->whole, i);
		uint64_t lo = (uint64_t)t->off * 4, hi = lo + (uint64_t)t->numel * 4;
		if (off >= hi || off < lo)
			continue;
		size_t n = hi - off < len ? (size_t)(hi - off) : len;
		st = f->fetch(f->ctx, f->k, i, off - lo, buf, n);
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return st;
}

enum lt_status lt_checkpoint_write_fetched(const char *tmp, const lt_model *whole,
					   lt_ckpt_fetch_fn fetch, void *ctx)
{
	int n = lt_model_num_tensors(whole);
	size_t numel = lt_model_num_params(whole);
	struct fetched *f = calloc((size_t)n + 2, sizeof *f);
	char path[CKPT_PATH_MAX], name[LT_RUNDIR_NAME_MAX], num[24];
	lt_st_writer *w = NULL;
	enum lt_status st;
	if (!f) {
		lt_errmsg_set("%s: cannot allocate the tensor list", tmp);
		return LT_ERR_NOMEM;
	}
	if ((st = lt_fs_join(path, sizeof path, tmp, LT_RUNDIR_MODEL)) != LT_OK ||
	    (st = lt_st_writer_new(path, &w)) != LT_OK ||
	    (st = lt_st_writer_set_meta(w, "format", "pt")) != LT_OK)
		goto out;
	for (int i = 0; i < n && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(whole, i);
		int64_t shape[2] = { t->shape[0], t->shape[1] };
		f[i] = (struct fetched){ fetch, ctx, 0, i, whole };
		st = lt_st_writer_add_fetch(w, t->name, LT_ST_F32, t->ndim, shape, fetch_tensor,
					    &f[i]);
	}
	if (st != LT_OK || (st = lt_st_writer_finish(w)) != LT_OK)
		goto out;
	lt_st_writer_free(w);
	w = NULL;
	lt_rundir_optim_name(0, 1, name);
	snprintf(num, sizeof num, "%zu", numel);
	int64_t flat[1] = { (int64_t)numel };
	f[n] = (struct fetched){ fetch, ctx, 1, 0, whole };
	f[n + 1] = (struct fetched){ fetch, ctx, 2, 0, whole };
	if ((st = lt_fs_join(path, sizeof path, tmp, name)) == LT_OK &&
	    (st = lt_st_writer_new(path, &w)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "format", "pt")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "begin", "0")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "end", num)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "numel", num)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "rank", "0")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "ranks", "1")) == LT_OK &&
	    (st = lt_st_writer_add_fetch(w, "exp_avg", LT_ST_F32, 1, flat, fetch_flat,
					 &f[n])) == LT_OK &&
	    (st = lt_st_writer_add_fetch(w, "exp_avg_sq", LT_ST_F32, 1, flat, fetch_flat,
					 &f[n + 1])) == LT_OK)
		st = lt_st_writer_finish(w);
	if (st == LT_OK)
		st = lt_fs_sync(tmp);
out:
	lt_st_writer_free(w);
	free(f);
	return st;
}

/* The last part of a path (all of it when it has no slash). */
static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* Checks that tmp is a temporary directory that lt_checkpoint_begin made
 * for step (its name has lt_rundir_temp_prefix) and gives the name an
 * older checkpoint of that step is moved aside to. */
static enum lt_status check_temporary(const char *tmp, long step, char *aside, size_t cap)
{
	const char *base = base_name(tmp);
	char prefix[LT_RUNDIR_NAME_MAX];

	lt_rundir_temp_prefix(step, prefix);
	if (strncmp(base, prefix, strlen(prefix)) != 0) {
		lt_errmsg_set("%s: not a temporary directory of step %ld (expected %s... from "
			      "lt_checkpoint_begin)", tmp, step, prefix);
		return LT_ERR_ARG;
	}
	return lt_rundir_aside_name(base, aside, cap);
}

/* lt_checkpoint_commit, where with_model == 0 says that tmp holds
 * model.safetensors already. */
static enum lt_status commit(const char *run_dir, const char *tmp, lt_model *m, int nshards,
			     const struct lt_ckpt_state *s, char *path, size_t cap, int with_model)
{
	char ckdir[CKPT_PATH_MAX], final[CKPT_PATH_MAX], aside_name[CKPT_PATH_MAX];
	enum lt_status st;

	if (s->step < 0) {
		lt_errmsg_set("checkpoint step %ld: must not be negative", s->step);
		return LT_ERR_ARG;
	}
	if (nshards < 0 || nshards > LT_RUNDIR_MAX_SHARDS) {
		lt_errmsg_set("%s: %d optimizer shards, expected 0 to %d", tmp, nshards,
			      LT_RUNDIR_MAX_SHARDS);
		return LT_ERR_ARG;
	}
	if ((st = check_temporary(tmp, s->step, aside_name, sizeof aside_name)) != LT_OK ||
	    (st = lt_rundir_checkpoints(run_dir, ckdir, sizeof ckdir)) != LT_OK ||
	    (st = lt_rundir_checkpoint(run_dir, s->step, final, sizeof final)) != LT_OK)
		return st;
	if (path && cap > 0 && strlen(final) >= cap) {
		lt_errmsg_set("%s: path too long for the caller's %zu bytes", final, cap);
		return LT_ERR_ARG;
	}
	if ((st = write_checkpoint_files(tmp, m, nshards, s, with_model)) != LT_OK ||
	    (st = publish(ckdir, tmp, final, aside_name)) != LT_OK)
		return st;
	if (path && cap > 0)
		snprintf(path, cap, "%s", final);
	return LT_OK;
}

enum lt_status lt_checkpoint_commit(const char *run_dir, const char *tmp, lt_model *m,
				    int nshards, const struct lt_ckpt_state *s, char *path,
				    size_t cap)
{
	return commit(run_dir, tmp, m, nshards, s, path, cap, 1);
}

enum lt_status lt_checkpoint_commit_fetched(const char *run_dir, const char *tmp,
					    const lt_model *whole, const struct lt_ckpt_state *s,
					    char *path, size_t cap)
{
	return commit(run_dir, tmp, (lt_model *)whole, 1, s, path, cap, 0);
}

void lt_checkpoint_abandon(const char *tmp)
{
	lt_fs_discard(tmp);
}

enum lt_status lt_checkpoint_save(const char *run_dir, lt_model *m, const lt_optim *o,
				  const struct lt_ckpt_state *s, char *path, size_t cap)
{
	char tmp[CKPT_PATH_MAX], model[CKPT_PATH_MAX];
	enum lt_status st = lt_checkpoint_begin(run_dir, s->step, (long)getpid(), tmp, sizeof tmp);

	if (st != LT_OK)
		return st;
	/* the model first, as always: one process has no other rank to wait
	 * for, and a failure names the files in the order they are written */
	if ((st = lt_fs_join(model, sizeof model, tmp, LT_RUNDIR_MODEL)) == LT_OK &&
	    (st = lt_checkpoint_write_model(model, m)) == LT_OK &&
	    (!o || (st = lt_checkpoint_write_shard(tmp, m, o, 0, 1)) == LT_OK) &&
	    (st = commit(run_dir, tmp, m, o ? 1 : 0, s, path, cap, 0)) == LT_OK)
		return LT_OK;
	lt_checkpoint_abandon(tmp);
	return st;
}

/* ------------------------------------------------------------- finding */

/* The names a damaged checkpoint may be moved aside to: .damaged, then
 * .damaged-2 up to this. */
#define DAMAGED_TRIES 99

struct step_list {
	long *steps;
	size_t n;
};

static int newest_first(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* The steps of the step_* directories in ckdir, newest first. A missing
 * ckdir gives an empty list. */
static enum lt_status list_steps(const char *ckdir, struct step_list *out)
{
	DIR *d = opendir(ckdir);
	struct dirent *e;
	size_t cap = 0;

	out->steps = NULL;
	out->n = 0;
	if (!d) {
		if (errno == ENOENT)
			return LT_OK;
		lt_errmsg_set("%s: cannot list: %s", ckdir, strerror(errno));
		return LT_ERR_IO;
	}
	while ((e = readdir(d)) != NULL) {
		long step = lt_rundir_step_of(e->d_name);
		if (step < 0)
			continue;
		if (out->n == cap) {
			size_t ncap = cap ? 2 * cap : 16;
			long *p = realloc(out->steps, ncap * sizeof *p);
			if (!p) {
				closedir(d);
				free(out->steps);
				out->steps = NULL;
				lt_errmsg_set("%s: out of memory listing checkpoints", ckdir);
				return LT_ERR_NOMEM;
			}
			out->steps = p;
			cap = ncap;
		}
		out->steps[out->n++] = step;
	}
	closedir(d);
	if (out->n)  /* qsort must not see a NULL array, even an empty one */
		qsort(out->steps, out->n, sizeof *out->steps, newest_first);
	return LT_OK;
}

void lt_ckpt_skips_free(struct lt_ckpt_skips *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++) {
		free(k->v[i].dir);
		free(k->v[i].why);
	}
	free(k->v);
	k->v = NULL;
	k->n = 0;
}

/* msg less a leading "dir/" or "dir: " (read_state names the files of
 * dir either way), so that what remains names the file within dir. */
static const char *within(const char *msg, const char *dir)
{
	size_t n = strlen(dir);
	if (strncmp(msg, dir, n) != 0)
		return msg;
	if (msg[n] == '/')
		return msg + n + 1;
	if (msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg;
}

/* Records checkpoint dir of step, passed over for lt_errmsg's reason. */
static enum lt_status record_skip(struct lt_ckpt_skips *k, long step, const char *dir)
{
	struct lt_ckpt_skip *v = realloc(k->v, (k->n + 1) * sizeof *v);
	if (v)
		k->v = v;
	char *d = v ? strdup(dir) : NULL, *why = d ? strdup(within(lt_errmsg(), dir)) : NULL;
	if (!why) {
		free(d);
		lt_errmsg_set("%s: out of memory recording why it was passed over", dir);
		return LT_ERR_NOMEM;
	}
	k->v[k->n++] = (struct lt_ckpt_skip){ step, d, why };
	return LT_OK;
}

/* Hands the verified state s of checkpoint dir to the caller: path[cap]
 * and, when found != NULL, *found (else s is freed). */
static enum lt_status hand_over(const char *dir, struct lt_ckpt_state *s, char *path,
				size_t cap, struct lt_ckpt_state *found)
{
	if ((size_t)snprintf(path, cap, "%s", dir) >= cap) {
		lt_ckpt_state_free(s);
		lt_errmsg_set("%s: path too long for the caller's %zu bytes", dir, cap);
		return LT_ERR_ARG;
	}
	if (found)
		*found = *s;
	else
		lt_ckpt_state_free(s);
	return LT_OK;
}

enum lt_status lt_checkpoint_latest(const char *run_dir, char *path, size_t cap,
				    struct lt_ckpt_state *found, struct lt_ckpt_skips *skipped)
{
	char ckdir[CKPT_PATH_MAX], dir[CKPT_PATH_MAX], first_err[1024] = "";
	struct step_list list;
	enum lt_status st;
	size_t invalid = 0;

	lt_ckpt_skips_free(skipped);
	if ((st = lt_rundir_checkpoints(run_dir, ckdir, sizeof ckdir)) != LT_OK ||
	    (st = list_steps(ckdir, &list)) != LT_OK)
		return st;
	for (size_t i = 0; i < list.n; i++) {
		struct lt_ckpt_state s;
		if (lt_rundir_checkpoint(run_dir, list.steps[i], dir, sizeof dir) != LT_OK)
			continue;
		if (lt_checkpoint_read_state(dir, &s) != LT_OK) {
			if (!invalid++)
				snprintf(first_err, sizeof first_err, "%s", lt_errmsg());
			if (skipped && (st = record_skip(skipped, list.steps[i], dir)) != LT_OK)
				break;
			continue;
		}
		free(list.steps);
		return hand_over(dir, &s, path, cap, found);
	}
	free(list.steps);
	if (st != LT_OK)
		return st;
	if (invalid) {
		lt_errmsg_set("%s: no valid checkpoint (%zu in %s fail to verify; the newest: %s)",
			      run_dir, invalid, ckdir, first_err);
		return LT_ERR_FORMAT;
	}
	lt_errmsg_set("%s: no checkpoint (expected %s/step_NNNNNNNN)", run_dir, ckdir);
	return LT_ERR_NOTFOUND;
}

enum lt_status lt_checkpoint_resolve(const char *path, char *out, size_t cap,
				     struct lt_ckpt_state *s, struct lt_ckpt_skips *skipped)
{
	char state[CKPT_PATH_MAX];
	struct stat sb;
	enum lt_status st;

	lt_ckpt_skips_free(skipped);
	if (stat(path, &sb) != 0) {
		int err = errno;
		lt_errmsg_set("%s: %s", path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	if (!S_ISDIR(sb.st_mode)) {
		lt_errmsg_set("%s: not a directory (expected a checkpoint or a run directory)",
			      path);
		return LT_ERR_ARG;
	}
	if ((st = lt_fs_join(state, sizeof state, path, LT_RUNDIR_STATE)) != LT_OK)
		return st;
	if (access(state, F_OK) != 0)
		return lt_checkpoint_latest(path, out, cap, s, skipped);
	if ((size_t)snprintf(out, cap, "%s", path) >= cap) {
		lt_errmsg_set("%s: path too long for the caller's %zu bytes", path, cap);
		return LT_ERR_ARG;
	}
	return s ? lt_checkpoint_read_state(out, s) : LT_OK;
}

/* out[cap] = the directory that holds path (".", where path has no
 * slash but a trailing one). */
static void parent_of(const char *path, char *out, size_t cap)
{
	size_t n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		n--;
	while (n > 0 && path[n - 1] != '/')
		n--;
	while (n > 1 && path[n - 1] == '/')
		n--;
	if (n == 0)
		snprintf(out, cap, ".");
	else
		snprintf(out, cap, "%.*s", (int)n, path);
}

enum lt_status lt_checkpoint_set_aside(const char *dir, char *out, size_t cap)
{
	char parent[CKPT_PATH_MAX];
	struct stat sb;
	enum lt_status st;

	for (int k = 1;; k++) {
		if ((st = lt_rundir_damaged_path(dir, k, out, cap)) != LT_OK)
			return st;
		if (lstat(out, &sb) != 0) {
			if (errno == ENOENT)
				break;
			lt_errmsg_set("%s: cannot move it aside to %s: %s", dir, out,
				      strerror(errno));
			return LT_ERR_IO;
		}
		if (k == DAMAGED_TRIES) {
			lt_errmsg_set("%s: cannot move it aside: %s and the %d names before it are "
				      "taken", dir, out, DAMAGED_TRIES - 1);
			return LT_ERR_IO;
		}
	}
	if (rename(dir, out) != 0) {
		lt_errmsg_set("%s: cannot move it aside to %s: %s", dir, out, strerror(errno));
		return LT_ERR_IO;
	}
	parent_of(dir, parent, sizeof parent);
	return lt_fs_sync(parent);
}

/* Removes ckdir/name and what it holds. */
static enum lt_status remove_entry(const char *ckdir, const char *name)
{
	char path[CKPT_PATH_MAX];
	enum lt_status st = lt_fs_join(path, sizeof path, ckdir, name);
	return st != LT_OK ? st : lt_fs_remove_tree(path);
}

enum lt_status lt_checkpoint_prune(const char *run_dir, int keep)
{
	char ckdir[CKPT_PATH_MAX], name[LT_RUNDIR_NAME_MAX];
	struct step_list list;
	enum lt_status st, first = LT_OK;
	DIR *d;
	struct dirent *e;

	if ((st = lt_rundir_checkpoints(run_dir, ckdir, sizeof ckdir)) != LT_OK ||
	    (st = list_steps(ckdir, &list)) != LT_OK)
		return st;
	for (size_t i = keep > 0 ? (size_t)keep : list.n; i < list.n; i++) {
		lt_rundir_step_name(list.steps[i], name);
		if ((st = remove_entry(ckdir, name)) != LT_OK && first == LT_OK)
			first = st;
	}
	free(list.steps);
	if (!(d = opendir(ckdir)))
		return first;
	/* Names are collected before removing, so the listing is not changed
	 * under readdir. */
	char **tmps = NULL;
	size_t n = 0;
	while ((e = readdir(d)) != NULL) {
		char **p;
		if (!lt_rundir_is_temp_name(e->d_name) || !(p = realloc(tmps, (n + 1) * sizeof *p)))
			continue;
		tmps = p;
		if ((tmps[n] = strdup(e->d_name)) != NULL)
			n++;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		if ((st = remove_entry(ckdir, tmps[i])) != LT_OK && first == LT_OK)
			first = st;
		free(tmps[i]);
	}
	free(tmps);
	if (first == LT_OK)
		first = lt_fs_sync(ckdir);
	return first;
}

enum lt_status lt_checkpoint_open(const char *path, char *dir, size_t cap,
				  struct lt_ckpt_state *s, struct lt_conf *conf,
				  struct lt_ckpt_skips *skipped)
{
	char origin[CKPT_PATH_MAX + 16];
	enum lt_status st = lt_checkpoint_resolve(path, dir, cap, s, skipped);
	if (st != LT_OK) {
		if (!strstr(lt_errmsg(), path))
			lt_errmsg_prefix("%s", path);
		return st;
	}
	if (lt_fs_join(origin, sizeof origin, dir, LT_RUNDIR_STATE) != LT_OK)
		return LT_ERR_ARG;
	if (!s->config) {
		lt_errmsg_set("%s: holds no config, so the model's shape is unknown", origin);
		return LT_ERR_FORMAT;
	}
	lt_conf_defaults(conf);
	if ((st = lt_conf_apply_string(conf, s->config, origin)) != LT_OK)
		return st;
	if ((st = lt_model_config_check(&conf->model)) != LT_OK)
		lt_errmsg_prefix("%s: ", origin);
	return st;
}
