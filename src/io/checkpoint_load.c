/* Checkpoints (see checkpoint.h), the reading side: state.json parsed and
 * every file it lists verified by size and CRC-32, the parameters loaded,
 * and the moments of an optimizer's range read from whichever optimizer
 * files overlap it, however many ranks wrote them. */
#include "config.h"
#include "io/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "io/checkpoint_impl.h"
#include "io/fs.h"
#include "io/rundir.h"
#include "io/safetensors.h"

/* Files are checksummed in blocks of this many bytes. */
#define IO_BLOCK ((size_t)1 << 20)
/* Moments are read in pieces of at most this many floats, so that a host
 * view's staging copy (where the backend keeps them off the host) stays
 * small. */
#define STAGE_MAX ((size_t)1 << 22)
/* state.json is read whole; a larger one is refused. */
#define STATE_MAX ((size_t)64 << 20)

/* ------------------------------------------------------------- files */

enum lt_status lt_ckpt_checksum_file(const char *path, uint64_t *bytes, uint32_t *crc)
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
static enum lt_status open_shard(const char *dir, const lt_model *m, struct lt_ckpt_shard *sh)
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
	const struct lt_ckpt_shard *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorts the n shards of dir and checks that their ranges tile [0, numel)
 * exactly (empty ones aside); a gap is named with `where`, the list of
 * files, an overlap with both files. */
static enum lt_status check_tiling(const char *dir, const char *where,
				   struct lt_ckpt_shard *sh, size_t n, size_t numel)
{
	const struct lt_ckpt_shard *prev = NULL;
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

void lt_ckpt_close_shards(struct lt_ckpt_shard *sh, size_t n)
{
	for (size_t i = 0; sh && i < n; i++)
		lt_st_close(sh[i].sf);
	free(sh);
}

enum lt_status lt_ckpt_open_shards(const char *dir, const char *where, struct lt_ckpt_shard *sh,
				   size_t n, const lt_model *m, size_t lo, size_t hi)
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

/* The file dir/name against the size and CRC-32 state.json lists for it;
 * what is wrong is said as "DIR: NAME is ..., state.json says ...". */
static enum lt_status check_listed_file(const char *dir, const char *name, uint64_t want_bytes,
					uint32_t want_crc)
{
	char path[CKPT_PATH_MAX];
	uint64_t bytes;
	uint32_t crc;
	struct stat sb;
	enum lt_status st = lt_fs_join(path, sizeof path, dir, name);

	if (st != LT_OK)
		return st;
	if (stat(path, &sb) != 0) {
		int err = errno;
		if (err == ENOENT)
			lt_errmsg_set("%s: %s is missing (%s lists it)", dir, name, LT_RUNDIR_STATE);
		else
			lt_errmsg_set("%s: %s cannot be read: %s (%s lists it)", dir, name,
				      strerror(err), LT_RUNDIR_STATE);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	bytes = (uint64_t)sb.st_size;
	if (bytes == want_bytes && (st = lt_ckpt_checksum_file(path, &bytes, &crc)) != LT_OK)
		return st;
	if (bytes != want_bytes) {
		lt_errmsg_set("%s: %s is %" PRIu64 " bytes, %s says %" PRIu64 " (%s)", dir, name,
			      bytes, LT_RUNDIR_STATE, want_bytes,
			      bytes < want_bytes ? "truncated" : "changed since the save");
		return LT_ERR_FORMAT;
	}
	if (crc != want_crc) {
		lt_errmsg_set("%s: %s has CRC-32 %08" PRIx32 ", %s says %08" PRIx32
			      " (corrupted since the save)", dir, name, crc, LT_RUNDIR_STATE, want_crc);
		return LT_ERR_FORMAT;
	}
	return LT_OK;
}

/* Checks one entry of "files" against the file on disk. */
static enum lt_status verify_file(const char *dir, const char *state_path, const char *name,
				  const json_t *entry)
{
	char what[CKPT_PATH_MAX + 32];
	const json_t *crc_v = json_object_get(entry, "crc32");
	uint64_t want_bytes;
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
	return check_listed_file(dir, name, want_bytes, (uint32_t)want_crc);
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
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_STATE)) != LT_OK)
		return st;
	if ((st = read_small_file(path, &text, &len)) != LT_OK) {
		if (st == LT_ERR_NOTFOUND)
			lt_errmsg_set("%s: %s is missing (no finished save here)", dir,
				      LT_RUNDIR_STATE);
		return st;
	}
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

/* A frozen tensor of the model held in GGUF blocks must be in the file as
 * the run wrote it: U8 [rows, bytes of a row's blocks] of the same type. */
static enum lt_status check_blocks(const lt_st *sf, const lt_model *m, const struct lt_tensor *t)
{
	enum lt_dtype type = lt_buf_type(lt_model_frozen_ref(m, t).buf);
	const struct lt_st_info *info = lt_st_lookup(sf, t->name);
	const char *held = lt_st_meta(sf, "lora_base");
	int64_t bytes = (int64_t)lt_dtype_bytes(type, (size_t)t->shape[1]);
	if (info && info->dtype == LT_ST_U8 && info->ndim == 2 && held &&
	    !strcmp(held, lt_dtype_name(type)) && info->shape[0] == t->shape[0] &&
	    info->shape[1] == bytes)
		return LT_OK;
	lt_errmsg_set("%s: tensor %s is not the %s blocks the run holds (U8 [%d, %" PRId64 "] "
		      "with lora_base = %s in the metadata; train.lora_base changed?)",
		      lt_st_path(sf), t->name, lt_dtype_name(type), t->shape[0], bytes,
		      lt_dtype_name(type));
	return LT_ERR_FORMAT;
}

/* Frozen tensor t of the model: its place's type says how the file holds it. */
static enum lt_status check_frozen(const lt_st *sf, const lt_model *m, const struct lt_tensor *t)
{
	if (lt_dtype_is_block(lt_buf_type(lt_model_frozen_ref(m, t).buf)))
		return check_blocks(sf, m, t);
	return check_tensor(sf, t);
}

/* Every tensor of the file must be one of the model's and the reverse. */
static enum lt_status check_model_file(const lt_st *sf, const lt_model *m)
{
	enum lt_status st;
	for (int i = 0; i < lt_model_num_tensors(m); i++)
		if ((st = check_tensor(sf, lt_model_tensor(m, i))) != LT_OK)
			return st;
	for (int i = 0; i < lt_model_num_frozen(m); i++)
		if ((st = check_frozen(sf, m, lt_model_frozen(m, i))) != LT_OK)
			return st;
	for (size_t i = 0; i < lt_st_count(sf); i++) {
		const char *name = lt_st_at(sf, i)->name;
		int head = !strcmp(name, "lm_head.weight");
		const char *why = head ? " (its embeddings are tied)" : "";
		if (!lt_model_find(m, name) && !lt_model_find_frozen(m, name)) {
			lt_errmsg_set("%s: holds tensor %s, which the model does not have%s",
				      lt_st_path(sf), name, why);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

/* Weight t of m from the open file sf (its shape checked), through a host copy. */
static enum lt_status read_weight(const lt_st *sf, lt_model *m, const struct lt_tensor *t)
{
	float *host = malloc(t->numel * sizeof *host);
	if (!host) {
		lt_errmsg_set("%s: cannot allocate %zu bytes for tensor %s", lt_st_path(sf),
			      t->numel * sizeof *host, t->name);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_st_read_f32(sf, t->name, host, t->numel);
	if (st == LT_OK)
		st = lt_model_write_weight(m, t, host);
	free(host);
	return st;
}

/* Frozen tensor t of GGUF blocks from the open file sf (checked), as they are. */
static enum lt_status read_blocks(const lt_st *sf, lt_model *m, const struct lt_tensor *t)
{
	lt_backend *be = lt_model_backend(m);
	lt_ref ref = lt_model_frozen_ref(m, t);
	size_t bytes = lt_dtype_bytes(lt_buf_type(ref.buf), t->numel);
	void *raw = malloc(bytes + 1);
	if (!raw) {
		lt_errmsg_set("%s: cannot allocate %zu bytes for tensor %s", lt_st_path(sf), bytes,
			      t->name);
		return LT_ERR_NOMEM;
	}
	enum lt_status st = lt_st_read_raw(sf, t->name, raw, bytes);
	if (st == LT_OK) {
		be->ops->write(be, ref, raw, t->numel);
		st = be->ops->sync(be);
	}
	free(raw);
	return st;
}

/* Reads the frozen base of a model with adapters from the open file sf
 * (shapes checked), rounding to bf16 where the base is bf16 (exact for
 * what a bf16 run saved), and GGUF blocks as they are. */
static enum lt_status read_frozen(const lt_st *sf, lt_model *m)
{
	enum lt_status st = LT_OK;
	for (int i = 0; i < lt_model_num_frozen(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_frozen(m, i);
		if (lt_dtype_is_block(lt_buf_type(lt_model_frozen_ref(m, t).buf)))
			st = read_blocks(sf, m, t);
		else
			st = read_weight(sf, m, t);
	}
	return st;
}

/* With a sink (lt_model_set_param_sink): the part of each tensor of the
 * open file sf in its range, in pieces of at most STAGE_MAX elements. */
static enum lt_status read_sunk_params(const lt_st *sf, lt_model *m, size_t lo, size_t hi)
{
	float *host = malloc(STAGE_MAX * sizeof *host);
	enum lt_status st = LT_OK;
	if (!host) {
		lt_errmsg_set("%s: cannot allocate %zu bytes to read the parameters", lt_st_path(sf),
			      STAGE_MAX * sizeof *host);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < lt_model_num_tensors(m) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(m, i);
		size_t a = t->off > lo ? t->off : lo;
		size_t b = t->off + t->numel < hi ? t->off + t->numel : hi;
		for (; a < b && st == LT_OK; a += STAGE_MAX) {
			size_t k = b - a < STAGE_MAX ? b - a : STAGE_MAX;
			if ((st = lt_st_read_f32_range(sf, t->name, a - t->off, k, host)) == LT_OK) {
				lt_model_put_params(m, a, host, k);
				st = lt_model_backend(m)->ops->sync(lt_model_backend(m));
			}
		}
	}
	free(host);
	return st;
}

/* Reads the parameters of the open file sf, whose shapes were checked,
 * into m, each tensor through a host view of its place (with a sink, the
 * part of each in its range). */
static enum lt_status read_params(const lt_st *sf, lt_model *m)
{
	lt_backend *be = lt_model_backend(m);
	struct lt_host_view view = { 0 };
	enum lt_status st = LT_OK;
	size_t lo, hi;

	if (lt_model_sink_range(m, &lo, &hi))
		return (st = read_sunk_params(sf, m, lo, hi)) == LT_OK
			       ? lt_ckpt_check_backend(be, lt_st_path(sf)) : st;
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
		st = read_frozen(sf, m);
	if (st == LT_OK)
		st = lt_ckpt_check_backend(be, lt_st_path(sf));
	return st;
}

/* Loads the parameters of the open file sf into m (shapes checked first,
 * so a mismatch leaves the model as it was). */
static enum lt_status load_params(const lt_st *sf, lt_model *m)
{
	enum lt_status st = check_model_file(sf, m);
	return st == LT_OK ? read_params(sf, m) : st;
}

/* The model file of path (a checkpoint directory's, or path itself), opened. */
static enum lt_status open_model_file(const char *path, lt_st **sf)
{
	char file[CKPT_PATH_MAX];
	enum lt_status st;
	if (lt_fs_is_dir(path)) {
		if ((st = lt_fs_join(file, sizeof file, path, LT_RUNDIR_MODEL)) != LT_OK)
			return st;
	} else {
		snprintf(file, sizeof file, "%s", path);
	}
	return lt_st_open(file, sf);
}

enum lt_status lt_checkpoint_load_model(const char *path, lt_model *m)
{
	lt_st *sf;
	enum lt_status st = open_model_file(path, &sf);
	if (st != LT_OK)
		return st;
	st = load_params(sf, m);
	lt_st_close(sf);
	return st;
}

/* Every weight of m in the open file sf, of its shape, and nothing else there. */
static enum lt_status check_weights_file(const lt_st *sf, const lt_model *m)
{
	enum lt_status st;
	for (int i = 0; i < lt_model_num_weights(m); i++)
		if ((st = check_tensor(sf, lt_model_weight(m, i))) != LT_OK)
			return st;
	for (size_t i = 0; i < lt_st_count(sf); i++) {
		const char *name = lt_st_at(sf, i)->name;
		if (strstr(name, ".lora_")) {
			lt_errmsg_set("%s: holds LoRA adapter %s: a new run starts from weights "
				      "alone (lltrain export folds the adapters into them)",
				      lt_st_path(sf), name);
			return LT_ERR_FORMAT;
		}
		if (!lt_model_find_weight(m, name)) {
			lt_errmsg_set("%s: holds tensor %s, which the model does not have",
				      lt_st_path(sf), name);
			return LT_ERR_FORMAT;
		}
	}
	return LT_OK;
}

enum lt_status lt_checkpoint_load_weights(const char *path, lt_model *m)
{
	lt_st *sf;
	enum lt_status st = open_model_file(path, &sf);
	if (st != LT_OK)
		return st;
	st = check_weights_file(sf, m);
	for (int i = 0; st == LT_OK && i < lt_model_num_weights(m); i++)
		st = read_weight(sf, m, lt_model_weight(m, i));
	lt_st_close(sf);
	return st;
}

/* The optimizer files that "files" of dir/state.json lists with the
 * prefix before their names, into *out (n of them, names set);
 * LT_ERR_NOTFOUND naming state.json when none is. */
static enum lt_status list_shards(const char *dir, const char *prefix,
				  struct lt_ckpt_shard **out, size_t *n)
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
		if (!strncmp(name, prefix, strlen(prefix)) &&
		    lt_rundir_is_optim_name(name + strlen(prefix)))
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
static enum lt_status read_moment(const struct lt_ckpt_shard *sh, const char *name, size_t first,
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
 * that overlap it (lt_ckpt_open_shards checked that they cover it). */
static enum lt_status load_moments(const struct lt_ckpt_shard *sh, size_t n, lt_model *m,
				   lt_optim *o, const char *dir)
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
		st = lt_ckpt_check_backend(be, dir);
	return st;
}

enum lt_status lt_checkpoint_load_tensors(const char *dir, lt_model *m, lt_optim *o)
{
	return lt_checkpoint_load_tensors_as(dir, "", m, o);
}

enum lt_status lt_checkpoint_load_tensors_as(const char *dir, const char *prefix, lt_model *m,
					     lt_optim *o)
{
	char path[CKPT_PATH_MAX], where[CKPT_PATH_MAX], name[LT_RUNDIR_NAME_MAX + 32];
	struct lt_ckpt_shard *sh = NULL;
	size_t n = 0;
	lt_st *model_sf = NULL;
	enum lt_status st;

	/* Every header is opened and checked before anything is read, so a
	 * bad checkpoint leaves the model and the optimizer as they were. */
	snprintf(name, sizeof name, "%s%s", prefix, LT_RUNDIR_MODEL);
	if ((st = lt_fs_join(path, sizeof path, dir, name)) != LT_OK ||
	    (st = lt_st_open(path, &model_sf)) != LT_OK ||
	    (st = check_model_file(model_sf, m)) != LT_OK)
		goto out;
	if (o && ((st = lt_fs_join(where, sizeof where, dir, LT_RUNDIR_STATE)) != LT_OK ||
		  (st = list_shards(dir, prefix, &sh, &n)) != LT_OK ||
		  (st = lt_ckpt_open_shards(dir, where, sh, n, m, lt_optim_begin(o),
					    lt_optim_end(o))) != LT_OK))
		goto out;
	if ((st = read_params(model_sf, m)) == LT_OK && o)
		st = load_moments(sh, n, m, o, dir);
out:
	lt_ckpt_close_shards(sh, n);
	lt_st_close(model_sf);
	return st;
}

enum lt_status lt_checkpoint_load_moments(const char *dir, lt_model *m, lt_optim *o)
{
	char where[CKPT_PATH_MAX];
	struct lt_ckpt_shard *sh = NULL;
	size_t n = 0;
	enum lt_status st;
	if ((st = lt_fs_join(where, sizeof where, dir, LT_RUNDIR_STATE)) == LT_OK &&
	    (st = list_shards(dir, "", &sh, &n)) == LT_OK &&
	    (st = lt_ckpt_open_shards(dir, where, sh, n, m, lt_optim_begin(o),
				      lt_optim_end(o))) == LT_OK)
		st = load_moments(sh, n, m, o, dir);
	lt_ckpt_close_shards(sh, n);
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

/* Elements [first, first + count) of moment `name` of the whole flat
 * buffer from the open shards that overlap them (they tile it) into dst. */
static enum lt_status read_flat_moment(const struct lt_ckpt_shard *sh, size_t n,
				       const char *name, size_t first, size_t count, float *dst)
{
	enum lt_status st = LT_OK;
	for (size_t i = 0; i < n && st == LT_OK; i++) {
		size_t a = sh[i].begin > first ? sh[i].begin : first;
		size_t b = sh[i].end < first + count ? sh[i].end : first + count;
		if (a < b)
			st = lt_st_read_f32_range(sh[i].sf, name, a - sh[i].begin, b - a,
						  dst + (a - first));
	}
	return st;
}

enum lt_status lt_checkpoint_load_whole(const char *dir, const lt_model *whole, int moments,
					lt_ckpt_put_fn put, void *ctx)
{
	char path[CKPT_PATH_MAX], where[CKPT_PATH_MAX];
	static const char *const names[2] = { "exp_avg", "exp_avg_sq" };
	struct lt_ckpt_shard *sh = NULL;
	size_t n = 0, most = 0;
	lt_st *sf = NULL;
	float *data = NULL;
	enum lt_status st;

	for (int i = 0; i < lt_model_num_tensors(whole); i++)
		if (lt_model_tensor(whole, i)->numel > most)
			most = lt_model_tensor(whole, i)->numel;
	if ((st = lt_fs_join(path, sizeof path, dir, LT_RUNDIR_MODEL)) != LT_OK ||
	    (st = lt_st_open(path, &sf)) != LT_OK || (st = check_model_file(sf, whole)) != LT_OK)
		goto out;
	if (moments && ((st = lt_fs_join(where, sizeof where, dir, LT_RUNDIR_STATE)) != LT_OK ||
			(st = list_shards(dir, "", &sh, &n)) != LT_OK ||
			(st = lt_ckpt_open_shards(dir, where, sh, n, whole, 0,
						  lt_model_num_params(whole))) != LT_OK))
		goto out;
	if (!(data = malloc(most * sizeof *data))) {
		lt_errmsg_set("%s: cannot allocate %zu bytes for a tensor", dir, most * sizeof *data);
		st = LT_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < lt_model_num_tensors(whole) && st == LT_OK; i++) {
		const struct lt_tensor *t = lt_model_tensor(whole, i);
		if ((st = lt_st_read_f32(sf, t->name, data, t->numel)) == LT_OK)
			st = put(ctx, 0, i, data);
		for (int k = 0; moments && k < 2 && st == LT_OK; k++)
			if ((st = read_flat_moment(sh, n, names[k], t->off, t->numel, data)) == LT_OK)
				st = put(ctx, k + 1, i, data);
	}
out:
	free(data);
	lt_ckpt_close_shards(sh, n);
	lt_st_close(sf);
	return st;
}
