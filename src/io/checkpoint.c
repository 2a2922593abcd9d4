/* Checkpoints (see checkpoint.h): atomic saves through a temporary
 * directory, state.json with sizes and CRC-32s, verified loads, and finding
 * and pruning the checkpoints of a run. */
#include "config.h"
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "io/fs.h"
#include "io/rundir.h"
#include "io/safetensors.h"

#define CKPT_PATH_MAX 4096
#define STATE_FORMAT_VERSION 1
/* Files are copied and checksummed in blocks of this many bytes. */
#define IO_BLOCK ((size_t)1 << 20)
/* Moments are read in pieces of at most this many floats, so that a host
 * view's staging copy (where the backend keeps them off the host) stays
 * small. */
#define STAGE_MAX ((size_t)1 << 22)
/* state.json is read whole; a larger one is refused. */
#define STATE_MAX ((size_t)64 << 20)

void lt_ckpt_state_free(struct lt_ckpt_state *s)
{
	if (!s)
		return;
	free(s->config);
	s->config = NULL;
}

/* ------------------------------------------------------------- paths */

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
	qsort(out->steps, out->n, sizeof *out->steps, newest_first);
	return LT_OK;
}

/* ------------------------------------------------------------- files */

/* The size and CRC-32 of a whole file, read back from the disk. */
static enum lt_status checksum_file(const char *path, uint64_t *bytes, uint32_t *crc)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	unsigned char *buf;
	uLong c = crc32(0L, Z_NULL, 0);
	uint64_t n = 0;

	if (fd < 0) {
		int err = errno;
		lt_errmsg_set("%s: cannot open: %s", path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	if (!(buf = malloc(IO_BLOCK))) {
		close(fd);
		lt_errmsg_set("cannot allocate %zu bytes to checksum %s", IO_BLOCK, path);
		return LT_ERR_NOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf, IO_BLOCK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			lt_errmsg_set("%s: read failed at byte %" PRIu64 ": %s", path, n,
				      strerror(errno));
			free(buf);
			close(fd);
			return LT_ERR_IO;
		}
		if (r == 0)
			break;
		c = crc32(c, buf, (uInt)r);
		n += (uint64_t)r;
	}
	free(buf);
	close(fd);
	*bytes = n;
	*crc = (uint32_t)c;
	return LT_OK;
}

/* ------------------------------------------------------------- shards */

/* One optimizer file of a checkpoint: its name, its range of the flat
 * parameter buffer, and the open file while its moments are to be read. */
struct shard {
	char name[LT_RUNDIR_NAME_MAX];
	size_t begin, end;
	lt_st *sf;
};

/* A shape as "[a, b]". */
static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
	size_t n = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", shape[i]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]");
}

/* A metadata entry of the optimizer file as a number. */
static enum lt_status meta_size(const lt_st *sf, const char *key, size_t *out)
{
	const char *v = lt_st_meta(sf, key);
	char *end;
	if (v && v[0] >= '0' && v[0] <= '9') {
		errno = 0;
		unsigned long long x = strtoull(v, &end, 10);
		if (!*end && !errno && x <= SIZE_MAX) {
			*out = (size_t)x;
			return LT_OK;
		}
	}
	lt_errmsg_set("%s: metadata \"%s\" is %s, expected a count of elements", lt_st_path(sf),
		      key, v ? "not a number" : "missing");
	return LT_ERR_FORMAT;
}

/* Moment tensor `name` of an optimizer file must be F32 [n]. */
static enum lt_status check_moment(const lt_st *sf, const char *name, size_t n)
{
	const struct lt_st_info *info;
	char have[160];
	enum lt_status st = lt_st_find(sf, name, &info);

	if (st != LT_OK)
		return st;
	if (info->ndim == 1 && (uint64_t)info->shape[0] == n && info->dtype == LT_ST_F32)
		return LT_OK;
	format_shape(have, sizeof have, info->ndim, info->shape);
	lt_errmsg_set("%s: tensor %s is %s %s, expected F32 [%zu]", lt_st_path(sf), name,
		      lt_st_dtype_name(info->dtype), have, n);
	return LT_ERR_FORMAT;
}

/* Opens dir/sh->name and checks its header against the model: numel
 * equal to the model's, begin <= end <= numel, both moments F32 [end -
 * begin]. On failure sh->sf is NULL again. */
static enum lt_status open_shard(const char *dir, const lt_model *m, struct shard *sh)
{
	char path[CKPT_PATH_MAX];
	size_t numel, want = lt_model_num_params(m);
	enum lt_status st;

	if ((st = lt_fs_join(path, sizeof path, dir, sh->name)) != LT_OK ||
	    (st = lt_st_open(path, &sh->sf)) != LT_OK)
		return st;
	if ((st = meta_size(sh->sf, "numel", &numel)) != LT_OK ||
	    (st = meta_size(sh->sf, "begin", &sh->begin)) != LT_OK ||
	    (st = meta_size(sh->sf, "end", &sh->end)) != LT_OK)
		goto fail;
	st = LT_ERR_FORMAT;
	if (numel != want) {
		lt_errmsg_set("%s: moments of a model of %zu parameters, this model has %zu", path,
			      numel, want);
		goto fail;
	}
	if (sh->begin > sh->end || sh->end > numel) {
		lt_errmsg_set("%s: moments of elements [%zu, %zu), expected a range inside [0, %zu)",
			      path, sh->begin, sh->end, numel);
		goto fail;
	}
	if ((st = check_moment(sh->sf, "exp_avg", sh->end - sh->begin)) == LT_OK &&
	    (st = check_moment(sh->sf, "exp_avg_sq", sh->end - sh->begin)) == LT_OK)
		return LT_OK;
fail:
	lt_st_close(sh->sf);
	sh->sf = NULL;
	return st;
}

/* Shards by the start of their range (then its end, so empty ones first). */
static int by_range(const void *a, const void *b)
{
	const struct shard *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorts the n shards of dir and checks that their ranges tile [0, numel)
 * exactly (empty ones aside); a gap is named with `where`, the list of
 * files, an overlap with both files. */
static enum lt_status check_tiling(const char *dir, const char *where, struct shard *sh, size_t n,
				   size_t numel)
{
	const struct shard *prev = NULL;
	size_t next = 0;

	qsort(sh, n, sizeof *sh, by_range);
	for (size_t i = 0; i <= n; i++) {
		size_t begin = i < n ? sh[i].begin : numel;
		if (i < n && sh[i].begin == sh[i].end)
			continue;
		if (begin > next) {
			lt_errmsg_set("%s: [%zu, %zu) is in no optimizer file (the files must tile "
				      "[0, %zu))", where, next, begin, numel);
			return LT_ERR_FORMAT;
		}
		if (i < n && begin < next) {
			lt_errmsg_set("%s/%s: elements [%zu, %zu) are also in %s/%s", dir, sh[i].name,
				      begin, sh[i].end < next ? sh[i].end : next, dir, prev->name);
			return LT_ERR_FORMAT;
		}
		if (i < n) {
			next = sh[i].end;
			prev = &sh[i];
		}
	}
	return LT_OK;
}

/* Closes every open shard file of sh and frees the array. */
static void close_shards(struct shard *sh, size_t n)
{
	for (size_t i = 0; sh && i < n; i++)
		lt_st_close(sh[i].sf);
	free(sh);
}

/* Opens and checks the header of each of the n shards of dir (sh[i].name
 * set), and that they tile the model's flat buffer. Files whose range
 * misses [lo, hi) are closed again; the others stay open for reading. */
static enum lt_status open_shards(const char *dir, const char *where, struct shard *sh, size_t n,
				  const lt_model *m, size_t lo, size_t hi)
{
	enum lt_status st;

	for (size_t i = 0; i < n; i++) {
		if ((st = open_shard(dir, m, &sh[i])) != LT_OK)
			return st;
		if (sh[i].end <= lo || sh[i].begin >= hi || sh[i].begin == sh[i].end) {
			lt_st_close(sh[i].sf);
			sh[i].sf = NULL;
		}
	}
	return check_tiling(dir, where, sh, n, lt_model_num_params(m));
}

/* At commit: the nshards optimizer shards that the ranks wrote into tmp
 * are all there, and their headers and ranges fit together and the model. */
static enum lt_status check_saved_shards(const char *tmp, const lt_model *m, int nshards)
{
	struct shard *sh = calloc(nshards ? (size_t)nshards : 1, sizeof *sh);
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
		st = open_shards(tmp, tmp, sh, (size_t)nshards, m, 0, 0);
	close_shards(sh, (size_t)nshards);
	return st;
}

/* ------------------------------------------------------------- saving */

/* Where a tensor's bytes come from while the writer streams it. */
struct fetch_src {
	lt_backend *be;
	lt_ref ref;
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

/* A float range of a backend buffer added to the writer: straight from the
 * host when the backend maps it, else fetched through src piece by piece
 * as the writer streams it (a whole host copy of the model is never made). */
static enum lt_status add_floats(lt_st_writer *w, const char *name, int ndim,
				 const int64_t *shape, struct fetch_src *src)
{
	float *host = lt_backend_host_ptr(src->be, src->ref);
	if (host)
		return lt_st_writer_add(w, name, LT_ST_F32, ndim, shape, host);
	return lt_st_writer_add_fetch(w, name, LT_ST_F32, ndim, shape, fetch_floats, src);
}

/* Fails when the backend has failed since creation: what it would hand
 * out could be anything. */
static enum lt_status check_backend(lt_backend *be, const char *path)
{
	enum lt_status st = be->ops->sync(be);
	if (st != LT_OK)
		lt_errmsg_prefix("%s: the backend failed", path);
	return st;
}

/* Every parameter tensor under its Hugging Face name, shape [rows, cols]
 * or [n], F32. */
enum lt_status lt_checkpoint_write_model(const char *path, lt_model *m)
{
	lt_backend *be = lt_model_backend(m);
	int n = lt_model_num_tensors(m);
	struct fetch_src *src = calloc((size_t)n, sizeof *src);
	lt_st_writer *w = NULL;
	enum lt_status st;

	if (!src) {
		lt_errmsg_set("%s: cannot allocate the tensor list", path);
		return LT_ERR_NOMEM;
	}
	if ((st = check_backend(be, path)) != LT_OK || (st = lt_st_writer_new(path, &w)) != LT_OK ||
	    (st = lt_st_writer_set_meta(w, "format", "pt")) != LT_OK)
		goto out;
	for (int i = 0; i < n; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		int64_t shape[2] = { t->shape[0], t->shape[1] };
		src[i] = (struct fetch_src){ be, lt_ref_at(lt_model_params(m), t->off) };
		if ((st = add_floats(w, t->name, t->ndim, shape, &src[i])) != LT_OK)
			goto out;
	}
	if ((st = lt_st_writer_finish(w)) != LT_OK)
		goto out;
	if ((st = check_backend(be, path)) != LT_OK)
		unlink(path);
out:
	lt_st_writer_free(w);
	free(src);
	return st;
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
	if ((st = check_backend(be, path)) == LT_OK &&
	    (st = lt_st_writer_new(path, &w)) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "format", "pt")) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "begin", num[0])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "end", num[1])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "numel", num[2])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "rank", num[3])) == LT_OK &&
	    (st = lt_st_writer_set_meta(w, "ranks", num[4])) == LT_OK &&
	    (st = add_floats(w, "exp_avg", 1, shape, &src[0])) == LT_OK &&
	    (st = add_floats(w, "exp_avg_sq", 1, shape, &src[1])) == LT_OK &&
	    (st = lt_st_writer_finish(w)) == LT_OK &&
	    (st = check_backend(be, path)) != LT_OK)
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
		    (st = checksum_file(path, &f[i].bytes, &f[i].crc)) != LT_OK)
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
	struct saved_file *f = calloc((size_t)nshards + 3, sizeof *f);
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

void lt_checkpoint_abandon(const char *tmp)
{
	char saved[8192]; /* lt_errmsg's room */
	snprintf(saved, sizeof saved, "%s", lt_errmsg());
	lt_fs_remove_tree(tmp);
	lt_errmsg_set("%s", saved);
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

/* ------------------------------------------------------------- state */

/* The whole of a small file, NUL-terminated, malloc'd. */
static enum lt_status read_small_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat sb;
	char *buf;
	size_t n;

	*out = NULL;
	if (!f) {
		int err = errno;
		lt_errmsg_set("%s: cannot open: %s", path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	if (fstat(fileno(f), &sb) != 0 || (uint64_t)sb.st_size > STATE_MAX) {
		fclose(f);
		lt_errmsg_set("%s: cannot be read whole (over %zu bytes, or fstat failed)", path,
			      STATE_MAX);
		return LT_ERR_FORMAT;
	}
	if (!(buf = malloc((size_t)sb.st_size + 1))) {
		fclose(f);
		lt_errmsg_set("%s: cannot allocate %zu bytes to read it", path,
			      (size_t)sb.st_size + 1);
		return LT_ERR_NOMEM;
	}
	n = fread(buf, 1, (size_t)sb.st_size, f);
	if (n != (size_t)sb.st_size) {
		lt_errmsg_set("%s: read %zu of %zu bytes: %s", path, n, (size_t)sb.st_size,
			      ferror(f) ? strerror(errno) : "end of file (did it shrink?)");
		free(buf);
		fclose(f);
		return LT_ERR_IO;
	}
	fclose(f);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return LT_OK;
}

/* A member that must be an integer in [min, max] (a decimal string is
 * accepted for values past json_int_t, as json_u64 writes them). */
static enum lt_status get_u64(const char *path, const json_t *j, const char *key,
			      uint64_t max, uint64_t *out)
{
	const json_t *v = json_object_get(j, key);
	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    (uint64_t)json_integer_value(v) <= max) {
		*out = (uint64_t)json_integer_value(v);
		return LT_OK;
	}
	if (json_is_string(v)) {
		const char *t = json_string_value(v);
		char *end;
		errno = 0;
		unsigned long long x = strtoull(t, &end, 10);
		if (t[0] >= '0' && t[0] <= '9' && !*end && !errno && x <= max) {
			*out = x;
			return LT_OK;
		}
	}
	lt_errmsg_set("%s: \"%s\" is %s, expected an integer in [0, %" PRIu64 "]", path, key,
		      v ? "out of range or not an integer" : "missing", max);
	return LT_ERR_FORMAT;
}

/* Checks one entry of "files" against the file on disk. */
static enum lt_status verify_file(const char *dir, const char *state_path, const char *name,
				  const json_t *entry)
{
	char path[CKPT_PATH_MAX], what[CKPT_PATH_MAX + 32];
	const json_t *crc_v = json_object_get(entry, "crc32");
	uint64_t want_bytes, bytes;
	uint32_t crc;
	char *end;
	enum lt_status st;

	if (!name[0] || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")) {
		lt_errmsg_set("%s: \"files\" names '%s', expected a plain file name", state_path,
			      name);
		return LT_ERR_FORMAT;
	}
	snprintf(what, sizeof what, "%s: files.%s", state_path, name);
	if (!json_is_object(entry)) {
		lt_errmsg_set("%s: expected an object with bytes and crc32", what);
		return LT_ERR_FORMAT;
	}
	if ((st = get_u64(what, entry, "bytes", UINT64_MAX, &want_bytes)) != LT_OK)
		return st;
	const char *hex = json_string_value(crc_v);
	unsigned long want_crc = hex ? strtoul(hex, &end, 16) : 0;
	if (!hex || strlen(hex) != 8 || *end || want_crc > 0xffffffffUL) {
		lt_errmsg_set("%s: \"crc32\" must be 8 hexadecimal digits", what);
		return LT_ERR_FORMAT;
	}
	if ((st = lt_fs_join(path, sizeof path, dir, name)) != LT_OK)
		return st;
	struct stat sb;
	if (stat(path, &sb) != 0) {
		int err = errno;
		lt_errmsg_set("%s: %s (listed in %s)", path, strerror(err), LT_RUNDIR_STATE);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	if ((uint64_t)sb.st_size != want_bytes) {
		lt_errmsg_set("%s: %" PRIu64 " bytes, expected %" PRIu64 " (%s?)", path,
			      (uint64_t)sb.st_size, want_bytes,
			      (uint64_t)sb.st_size < want_bytes ? "truncated" : "changed");
		return LT_ERR_FORMAT;
	}
	if ((st = checksum_file(path, &bytes, &crc)) != LT_OK)
		return st;
	if (bytes != want_bytes || crc != (uint32_t)want_crc) {
		lt_errmsg_set("%s: checksum mismatch (file changed or corrupted)", path);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* Fills s from the parsed state.json j (of path). */
static enum lt_status parse_state(const char *dir, const char *path, const json_t *j,
				  struct lt_ckpt_state *s)
{
	uint64_t version, step, tokens, bad, samples, seed;
	const json_t *files = json_object_get(j, "files"), *cfg = json_object_get(j, "config");
	const json_t *elapsed = json_object_get(j, "elapsed"), *entry;
	const char *name;
	enum lt_status st;

	if (!json_is_object(j)) {
		lt_errmsg_set("%s: expected a JSON object", path);
		return LT_ERR_FORMAT;
	}
	if ((st = get_u64(path, j, "format_version", 1000, &version)) != LT_OK)
		return st;
	if (version > STATE_FORMAT_VERSION) {
		lt_errmsg_set("%s: format_version %" PRIu64 " is newer than lltrain reads (%d)",
			      path, version, STATE_FORMAT_VERSION);
		return LT_ERR_FORMAT;
	}
	if ((st = get_u64(path, j, "step", 0x7fffffff, &step)) != LT_OK ||
	    (st = get_u64(path, j, "samples", UINT64_MAX, &samples)) != LT_OK ||
	    (st = get_u64(path, j, "seed", UINT64_MAX, &seed)) != LT_OK ||
	    (st = get_u64(path, j, "tokens", INT64_MAX, &tokens)) != LT_OK ||
	    (st = get_u64(path, j, "bad_steps", 0x7fffffff, &bad)) != LT_OK)
		return st;
	if (!json_is_number(elapsed) || !(json_number_value(elapsed) >= 0.0)) {
		lt_errmsg_set("%s: \"elapsed\" is %s, expected seconds (a number >= 0)", path,
			      elapsed ? "not a number >= 0" : "missing");
		return LT_ERR_FORMAT;
	}
	if (cfg && !json_is_null(cfg) && !json_is_string(cfg)) {
		lt_errmsg_set("%s: \"config\" must be INI text (a string) or null", path);
		return LT_ERR_FORMAT;
	}
	if (!json_is_object(files) || !json_object_get(files, LT_RUNDIR_MODEL)) {
		lt_errmsg_set("%s: \"files\" is missing or does not list %s", path, LT_RUNDIR_MODEL);
		return LT_ERR_FORMAT;
	}
	json_object_foreach((json_t *)files, name, entry) {
		if ((st = verify_file(dir, path, name, entry)) != LT_OK)
			return st;
	}
	s->step = (long)step;
	s->samples = samples;
	s->seed = seed;
	s->elapsed = json_number_value(elapsed);
	s->tokens = (long)tokens;
	s->bad_steps = (int)bad;
	if (json_is_string(cfg) && !(s->config = strdup(json_string_value(cfg)))) {
		lt_errmsg_set("%s: out of memory copying the config", path);
		return LT_ERR_NOMEM;
	}
	return LT_OK;
}

enum lt_status lt_checkpoint_read_state(const char *dir, struct lt_ckpt_state *s)
{
	char path[CKPT_PATH_MAX], *text;
	size_t len;
	json_error_t jerr;
	json_t *j;
	enum lt_status st;

	memset(s, 0, sizeof *s);
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_STATE)) != LT_OK ||
	    (st = read_small_file(path, &text, &len)) != LT_OK)
		return st;
	j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!j) {
		lt_errmsg_set("%s:%d: %s", path, jerr.line, jerr.text);
		return LT_ERR_FORMAT;
	}
	st = parse_state(dir, path, j, s);
	json_decref(j);
	if (st != LT_OK) {
		lt_ckpt_state_free(s);
		memset(s, 0, sizeof *s);
	}
	return st;
}

/* ------------------------------------------------------------- loading */

/* The model's tensor t against the file's entry for it. */
static enum lt_status check_tensor(const lt_st *sf, const struct lt_tensor *t)
{
	const struct lt_st_info *info = lt_st_lookup(sf, t->name);
	int64_t want[2] = { t->shape[0], t->shape[1] };
	char have_s[160], want_s[64];

	format_shape(want_s, sizeof want_s, t->ndim, want);
	if (!info) {
		lt_errmsg_set("%s: tensor %s is missing (the model expects %s)", lt_st_path(sf),
			      t->name, want_s);
		return LT_ERR_FORMAT;
	}
	int same = info->ndim == t->ndim;
	for (int d = 0; same && d < t->ndim; d++)
		same = info->shape[d] == want[d];
	if (!same) {
		format_shape(have_s, sizeof have_s, info->ndim, info->shape);
		lt_errmsg_set("%s: tensor %s has shape %s, the model expects %s", lt_st_path(sf),
			      t->name, have_s, want_s);
		return LT_ERR_FORMAT;
	}
	if (info->dtype != LT_ST_F32 && info->dtype != LT_ST_F64 && info->dtype != LT_ST_F16 &&
	    info->dtype != LT_ST_BF16) {
		lt_errmsg_set("%s: tensor %s has dtype %s, expected F32 (or F64, F16, BF16)",
			      lt_st_path(sf), t->name, lt_st_dtype_name(info->dtype));
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* Every tensor of the file must be one of the model's and the reverse. */
static enum lt_status check_model_file(const lt_st *sf, const lt_model *m)
{
	enum lt_status st;
	for (int i = 0; i < lt_model_num_tensors(m); i++)
		if ((st = check_tensor(sf, lt_model_tensor(m, i))) != LT_OK)
			return st;
	for (size_t i = 0; i < lt_st_count(sf); i++) {
		const char *name = lt_st_at(sf, i)->name;
		int head = !strcmp(name, "lm_head.weight");
		const char *why = head ? " (its embeddings are tied)" : "";
		if (!lt_model_find(m, name)) {
			lt_errmsg_set("%s: holds tensor %s, which the model does not have%s",
				      lt_st_path(sf), name, why);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* Reads the parameters of the open file sf, whose shapes were checked,
 * into m, each tensor through a host view of its place. */
static enum lt_status read_params(const lt_st *sf, lt_model *m)
{
	lt_backend *be = lt_model_backend(m);
	struct lt_host_view view = { 0 };
	enum lt_status st = LT_OK;

	for (int i = 0; i < lt_model_num_tensors(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		lt_ref dst = lt_ref_at(lt_model_params(m), t->off);
		if ((st = lt_host_view_map(&view, be, dst, t->numel)) != LT_OK) {
			lt_errmsg_prefix("%s: tensor %s", lt_st_path(sf), t->name);
			break;
		}
		if ((st = lt_st_read_f32(sf, t->name, view.p, t->numel)) == LT_OK)
			lt_host_view_write(&view);
	}
	lt_host_view_free(&view);
	if (st == LT_OK)
		st = check_backend(be, lt_st_path(sf));
	return st;
}

/* Loads the parameters of the open file sf into m (shapes checked first,
 * so a mismatch leaves the model as it was). */
static enum lt_status load_params(const lt_st *sf, lt_model *m)
{
	enum lt_status st = check_model_file(sf, m);
	return st == LT_OK ? read_params(sf, m) : st;
}

enum lt_status lt_checkpoint_load_model(const char *path, lt_model *m)
{
	char file[CKPT_PATH_MAX];
	lt_st *sf;
	enum lt_status st;

	if (lt_fs_is_dir(path)) {
		if ((st = lt_fs_join(file, sizeof file, path, LT_RUNDIR_MODEL)) != LT_OK)
			return st;
	} else {
		snprintf(file, sizeof file, "%s", path);
	}
	if ((st = lt_st_open(file, &sf)) != LT_OK)
		return st;
	st = load_params(sf, m);
	lt_st_close(sf);
	return st;
}

/* The optimizer files that "files" of dir/state.json lists, into *out (n
 * of them, names set); LT_ERR_NOTFOUND naming state.json when none is. */
static enum lt_status list_shards(const char *dir, struct shard **out, size_t *n)
{
	char path[CKPT_PATH_MAX], *text;
	const char *name;
	json_t *j, *files, *entry;
	json_error_t jerr;
	size_t len;
	enum lt_status st;

	*out = NULL;
	*n = 0;
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_STATE)) != LT_OK ||
	    (st = read_small_file(path, &text, &len)) != LT_OK)
		return st;
	j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!j || !json_is_object(files = json_object_get(j, "files"))) {
		lt_errmsg_set("%s: %s", path, j ? "\"files\" is missing" : jerr.text);
		json_decref(j);
		return LT_ERR_FORMAT;
	}
	if (!(*out = calloc(json_object_size(files) + 1, sizeof **out))) {
		json_decref(j);
		lt_errmsg_set("%s: cannot allocate the list of optimizer files", path);
		return LT_ERR_NOMEM;
	}
	json_object_foreach(files, name, entry) {
		if (lt_rundir_is_optim_name(name))
			snprintf((*out)[(*n)++].name, LT_RUNDIR_NAME_MAX, "%s", name);
	}
	json_decref(j);
	if (*n > 0)
		return LT_OK;
	lt_errmsg_set("%s: lists no optimizer file (the checkpoint holds no optimizer state)", path);
	return LT_ERR_NOTFOUND;
}

/* Elements [first, first + count) of moment tensor `name` of shard sh into
 * the backend at dst, through view in pieces of at most STAGE_MAX
 * elements (so that a staging copy stays small). */
static enum lt_status read_moment(const struct shard *sh, const char *name, size_t first,
				  size_t count, struct lt_host_view *view, lt_backend *be,
				  lt_ref dst)
{
	enum lt_status st = LT_OK;
	for (size_t done = 0; done < count && st == LT_OK;) {
		size_t k = count - done < STAGE_MAX ? count - done : STAGE_MAX;
		if ((st = lt_host_view_map(view, be, lt_ref_at(dst, done), k)) != LT_OK) {
			lt_errmsg_prefix("%s: tensor %s", lt_st_path(sh->sf), name);
			break;
		}
		if ((st = lt_st_read_f32_range(sh->sf, name, first + done, k, view->p)) == LT_OK)
			lt_host_view_write(view);
		done += k;
	}
	return st;
}

/* The optimizer's range of the moments from the parts of the open shards
 * that overlap it (open_shards checked that they cover it). */
static enum lt_status load_moments(const struct shard *sh, size_t n, lt_model *m, lt_optim *o,
				   const char *dir)
{
	lt_backend *be = lt_model_backend(m);
	size_t lo = lt_optim_begin(o), hi = lt_optim_end(o);
	const char *names[2] = { "exp_avg", "exp_avg_sq" };
	lt_ref dst[2] = { lt_optim_m(o), lt_optim_v(o) };
	struct lt_host_view view = { 0 };
	enum lt_status st = LT_OK;

	for (size_t i = 0; i < n && st == LT_OK; i++) {
		if (!sh[i].sf)
			continue;
		size_t a = sh[i].begin > lo ? sh[i].begin : lo, b = sh[i].end < hi ? sh[i].end : hi;
		for (int k = 0; k < 2 && st == LT_OK; k++)
			st = read_moment(&sh[i], names[k], a - sh[i].begin, b - a, &view, be,
					 lt_ref_at(dst[k], a - lo));
	}
	lt_host_view_free(&view);
	if (st == LT_OK)
		st = check_backend(be, dir);
	return st;
}

enum lt_status lt_checkpoint_load_tensors(const char *dir, lt_model *m, lt_optim *o)
{
	char path[CKPT_PATH_MAX], where[CKPT_PATH_MAX];
	struct shard *sh = NULL;
	size_t n = 0;
	lt_st *model_sf = NULL;
	enum lt_status st;

	/* Every header is opened and checked before anything is read, so a
	 * bad checkpoint leaves the model and the optimizer as they were. */
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_MODEL)) != LT_OK ||
	    (st = lt_st_open(path, &model_sf)) != LT_OK || (st = check_model_file(model_sf, m)) != LT_OK)
		goto out;
	if (o && ((st = lt_fs_join(where, sizeof where, dir, LT_RUNDIR_STATE)) != LT_OK ||
		  (st = list_shards(dir, &sh, &n)) != LT_OK ||
		  (st = open_shards(dir, where, sh, n, m, lt_optim_begin(o), lt_optim_end(o)))))
		goto out;
	if ((st = read_params(model_sf, m)) == LT_OK && o)
		st = load_moments(sh, n, m, o, dir);
out:
	close_shards(sh, n);
	lt_st_close(model_sf);
	return st;
}

enum lt_status lt_checkpoint_load(const char *dir, lt_model *m, lt_optim *o,
				  struct lt_ckpt_state *s)
{
	struct lt_ckpt_state local;
	enum lt_status st;

	if (!s)
		s = &local;
	if ((st = lt_checkpoint_read_state(dir, s)) != LT_OK)
		return st;
	st = lt_checkpoint_load_tensors(dir, m, o);
	if (st != LT_OK || s == &local) {
		lt_ckpt_state_free(s);
		memset(s, 0, sizeof *s);
	}
	return st;
}

/* ------------------------------------------------------------- finding */

enum lt_status lt_checkpoint_latest(const char *run_dir, char *path, size_t cap,
				    struct lt_ckpt_state *found)
{
	char ckdir[CKPT_PATH_MAX], dir[CKPT_PATH_MAX], first_err[1024] = "";
	struct step_list list;
	enum lt_status st;
	size_t invalid = 0;

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
			continue;
		}
		free(list.steps);
		if ((size_t)snprintf(path, cap, "%s", dir) >= cap) {
			lt_ckpt_state_free(&s);
			lt_errmsg_set("%s: path too long for the caller's %zu bytes", dir, cap);
			return LT_ERR_ARG;
		}
		if (found)
			*found = s;
		else
			lt_ckpt_state_free(&s);
		return LT_OK;
	}
	free(list.steps);
	if (invalid)
		lt_errmsg_set("%s: no valid checkpoint (%zu in %s fail to verify; the newest: %s)",
			      run_dir, invalid, ckdir, first_err);
	else
		lt_errmsg_set("%s: no checkpoint (expected %s/step_NNNNNNNN)", run_dir, ckdir);
	return LT_ERR_NOTFOUND;
}

enum lt_status lt_checkpoint_resolve(const char *path, char *out, size_t cap,
				     struct lt_ckpt_state *s)
{
	char state[CKPT_PATH_MAX];
	struct stat sb;
	enum lt_status st;

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
		return lt_checkpoint_latest(path, out, cap, s);
	if ((size_t)snprintf(out, cap, "%s", path) >= cap) {
		lt_errmsg_set("%s: path too long for the caller's %zu bytes", path, cap);
		return LT_ERR_ARG;
	}
	return s ? lt_checkpoint_read_state(out, s) : LT_OK;
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
				  struct lt_ckpt_state *s, struct lt_conf *conf)
{
	char origin[CKPT_PATH_MAX + 16];
	enum lt_status st = lt_checkpoint_resolve(path, dir, cap, s);
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
