/* The token streams of a prepared data directory: its shards opened and
 * checked, random training windows keyed by (seed, sample index), and
 * sequential validation windows (see data.h). */
#include "config.h"
#include "text/data.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "io/shard.h"

/* Sample s draws its window from the random stream (seed, DATA_STREAM + s),
 * apart from the streams that initialisation and sampling use. */
#define DATA_STREAM UINT64_C(0x6461746100000000)

/* Example k of an example split: len tokens from `at` of shard `shard`. */
struct example {
	int shard;
	uint64_t at, len;
};

struct split {
	lt_shard **shards;
	int n;
	uint64_t tokens;
	int examples;          /* example shards: ex[n_ex] index them */
	struct example *ex;
	uint64_t n_ex, cap_ex;
};

struct lt_data {
	char *dir;
	struct split train, val;
};

/* Shorter names first, so train_10000.bin follows train_9999.bin. */
static int compare_names(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t nx = strlen(x), ny = strlen(y);
	return nx != ny ? (nx < ny ? -1 : 1) : strcmp(x, y);
}

/* name is PREFIX*.bin (and not hidden, not a .tmp left by a writer). */
static int is_shard_name(const char *name, const char *prefix)
{
	size_t n = strlen(name), p = strlen(prefix);
	return n > p + 4 && !strncmp(name, prefix, p) && !strcmp(name + n - 4, ".bin");
}

static void free_names(char **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The sorted paths dir/PREFIX*.bin. */
static enum lt_status list_shards(const char *dir, const char *prefix, char ***out, int *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	int cap = 0;
	*out = NULL;
	*n = 0;
	if (!d) {
		int err = errno;
		lt_errmsg_set("%s: %s", dir, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	while ((e = readdir(d))) {
		if (!is_shard_name(e->d_name, prefix))
			continue;
		if (*n == cap) {
			int ncap = cap ? 2 * cap : 16;
			char **grown = realloc(names, (size_t)ncap * sizeof *names);
			if (!grown)
				goto nomem;
			names = grown;
			cap = ncap;
		}
		size_t len = strlen(dir) + strlen(e->d_name) + 2;
		if (!(names[*n] = malloc(len)))
			goto nomem;
		snprintf(names[*n], len, "%s/%s", dir, e->d_name);
		(*n)++;
	}
	closedir(d);
	if (*n > 1)
		qsort(names, (size_t)*n, sizeof *names, compare_names);
	*out = names;
	return LT_OK;
nomem:
	closedir(d);
	free_names(names, *n);
	*n = 0;
	lt_errmsg_set("%s: cannot allocate the list of shards", dir);
	return LT_ERR_NOMEM;
}

static enum lt_status add_example(struct split *sp, int shard, uint64_t at)
{
	if (sp->n_ex == sp->cap_ex) {
		uint64_t cap = sp->cap_ex ? 2 * sp->cap_ex : 1024;
		struct example *grown = realloc(sp->ex, (size_t)cap * sizeof *grown);
		if (!grown) {
			lt_errmsg_set("cannot allocate the index of %" PRIu64 " examples", cap);
			return LT_ERR_NOMEM;
		}
		sp->ex = grown;
		sp->cap_ex = cap;
	}
	sp->ex[sp->n_ex++] = (struct example){ .shard = shard, .at = at };
	return LT_OK;
}

/* The examples of shard k (whose marks say where each starts) appended to
 * the split's index. */
static enum lt_status index_shard(struct split *sp, int k)
{
	const lt_shard *s = sp->shards[k];
	uint64_t count = lt_shard_info(s)->n_tokens, first = sp->n_ex;
	uint8_t marks[4096];
	enum lt_status st = LT_OK;
	for (uint64_t i = 0; i < count && st == LT_OK; i += sizeof marks) {
		size_t n = count - i < sizeof marks ? (size_t)(count - i) : sizeof marks;
		st = lt_shard_read_marks(s, i, marks, n);
		for (size_t j = 0; j < n && st == LT_OK; j++)
			if (marks[j] & LT_SHARD_START)
				st = add_example(sp, k, i + j);
	}
	for (uint64_t e = first; e < sp->n_ex; e++)
		sp->ex[e].len = (e + 1 < sp->n_ex ? sp->ex[e + 1].at : count) - sp->ex[e].at;
	return st;
}

/* Example shards or token shards, all alike; example shards indexed. */
static enum lt_status index_split(const char *dir, struct split *sp)
{
	enum lt_status st = LT_OK;
	sp->examples = lt_shard_info(sp->shards[0])->examples;
	for (int k = 0; k < sp->n && st == LT_OK; k++) {
		if (lt_shard_info(sp->shards[k])->examples != sp->examples) {
			lt_errmsg_set("%s: %s is %s shard, %s is not: expected one kind in %s",
				      dir, lt_shard_path(sp->shards[k]),
				      sp->examples ? "a token" : "an example",
				      lt_shard_path(sp->shards[0]), dir);
			return LT_ERR_FORMAT;
		}
		if (sp->examples)
			st = index_shard(sp, k);
	}
	return st;
}

/* Opens every dir/PREFIX*.bin, each checked in full against the vocabulary
 * (*vocab_size, or the first shard's when it is 0). */
static enum lt_status open_split(const char *dir, const char *prefix, int *vocab_size,
				 struct split *sp)
{
	char **paths;
	int n;
	enum lt_status st = list_shards(dir, prefix, &paths, &n);
	if (st != LT_OK)
		return st;
	if (n == 0) {
		free(paths);
		lt_errmsg_set("%s: no %s*.bin token shards (prepare the data with lltrain prepare)",
			      dir, prefix);
		return LT_ERR_NOTFOUND;
	}
	if (!(sp->shards = calloc((size_t)n, sizeof *sp->shards))) {
		free_names(paths, n);
		lt_errmsg_set("%s: cannot allocate %d shard readers", dir, n);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < n && st == LT_OK; i++) {
		st = lt_shard_open(paths[i], *vocab_size, 1, &sp->shards[i]);
		if (st != LT_OK)
			break;
		sp->n = i + 1;
		*vocab_size = lt_shard_info(sp->shards[i])->vocab_size;
		sp->tokens += lt_shard_info(sp->shards[i])->n_tokens;
	}
	free_names(paths, n);
	return st == LT_OK ? index_split(dir, sp) : st;
}

static void close_split(struct split *sp)
{
	for (int i = 0; i < sp->n; i++)
		lt_shard_close(sp->shards[i]);
	free(sp->shards);
	free(sp->ex);
}

enum lt_status lt_data_open(const char *dir, int vocab_size, lt_data **out)
{
	lt_data *d = calloc(1, sizeof *d);
	enum lt_status st;
	*out = NULL;
	if (!d || !(d->dir = malloc(strlen(dir) + 1))) {
		free(d);
		lt_errmsg_set("%s: cannot allocate the data reader", dir);
		return LT_ERR_NOMEM;
	}
	strcpy(d->dir, dir);
	if ((st = open_split(dir, "train_", &vocab_size, &d->train)) != LT_OK ||
	    (st = open_split(dir, "val_", &vocab_size, &d->val)) != LT_OK) {
		lt_data_close(d);
		return st;
	}
	if (d->train.examples != d->val.examples) {
		lt_errmsg_set("%s: the training shards are %s shards, the validation shards are "
			      "not: expected one kind", dir, d->train.examples ? "example" : "token");
		lt_data_close(d);
		return LT_ERR_FORMAT;
	}
	*out = d;
	return LT_OK;
}

void lt_data_close(lt_data *d)
{
	if (!d)
		return;
	close_split(&d->train);
	close_split(&d->val);
	free(d->dir);
	free(d);
}

uint64_t lt_data_tokens(const lt_data *d, enum lt_data_split split)
{
	return split == LT_DATA_TRAIN ? d->train.tokens : d->val.tokens;
}

/* Window starts in a shard of n tokens: those with T+1 tokens from them. */
static uint64_t window_starts(const lt_shard *s, int T)
{
	uint64_t n = lt_shard_info(s)->n_tokens;
	return n > (uint64_t)T ? n - (uint64_t)T : 0;
}

/* ------------------------------------------------------------ examples */

int lt_data_has_examples(const lt_data *d)
{
	return d->train.examples;
}

uint64_t lt_data_examples(const lt_data *d, enum lt_data_split split)
{
	return split == LT_DATA_TRAIN ? d->train.n_ex : d->val.n_ex;
}

uint64_t lt_data_truncated(const lt_data *d, enum lt_data_split split, int T)
{
	const struct split *sp = split == LT_DATA_TRAIN ? &d->train : &d->val;
	uint64_t n = 0;
	for (uint64_t k = 0; k < sp->n_ex; k++)
		n += sp->ex[k].len > (uint64_t)T + 1;
	return n;
}

/* Window of example k of sp: its first T tokens (the rest the pad token),
 * the targets the next tokens where those are trained (else -1); *n
 * counts the trained targets. An example of more than T+1 tokens is cut. */
static enum lt_status example_window(const struct split *sp, uint64_t k, int T, int32_t *tokens,
				     int32_t *targets, long *n)
{
	const struct example *e = &sp->ex[k];
	const lt_shard *s = sp->shards[e->shard];
	size_t take = e->len < (uint64_t)T + 1 ? (size_t)e->len : (size_t)T + 1;
	size_t real = take > 0 ? take - 1 : 0;
	enum lt_status st = lt_shard_read(s, e->at, tokens, take < (size_t)T ? take : (size_t)T);
	if (st == LT_OK)
		st = lt_shard_read(s, e->at + 1, targets, real);
	for (size_t done = 0; done < real && st == LT_OK;) {
		uint8_t marks[4096];
		size_t m = real - done < sizeof marks ? real - done : sizeof marks;
		st = lt_shard_read_marks(s, e->at + 1 + done, marks, m);
		for (size_t j = 0; j < m && st == LT_OK; j++) {
			if (!(marks[j] & LT_SHARD_TRAINED))
				targets[done + j] = -1;
			*n += targets[done + j] >= 0;
		}
		done += m;
	}
	for (size_t t = take; t < (size_t)T; t++)
		tokens[t] = lt_shard_info(s)->eot_id;
	for (size_t t = real; t < (size_t)T; t++)
		targets[t] = -1;
	return st;
}

/* The example that sample `sample` draws: uniform over all of them. */
static uint64_t drawn_example(const lt_data *d, uint64_t seed, uint64_t sample)
{
	struct lt_rng r;
	lt_rng_seed(&r, seed, DATA_STREAM + sample);
	return lt_rng_below(&r, d->train.n_ex);
}

static enum lt_status example_batch(const lt_data *d, uint64_t seed, uint64_t first, int B,
				    int T, int32_t *tokens, int32_t *targets)
{
	if (d->train.n_ex == 0) {
		lt_errmsg_set("%s: no training examples", d->dir);
		return LT_ERR_ARG;
	}
	for (int b = 0; b < B; b++) {
		long n = 0;
		enum lt_status st = example_window(&d->train, drawn_example(d, seed, first + (uint64_t)b),
						   T, tokens + (size_t)b * T,
						   targets + (size_t)b * T, &n);
		if (st != LT_OK)
			return st;
	}
	return LT_OK;
}

enum lt_status lt_data_train_targets(const lt_data *d, uint64_t seed, uint64_t first,
				     uint64_t count, int T, long *n)
{
	*n = 0;
	if (!d->train.examples) {
		*n = (long)count * T;
		return LT_OK;
	}
	if (d->train.n_ex == 0) {
		lt_errmsg_set("%s: no training examples", d->dir);
		return LT_ERR_ARG;
	}
	int32_t *buf = malloc(2 * (size_t)T * sizeof *buf);
	enum lt_status st = LT_OK;
	if (!buf) {
		lt_errmsg_set("cannot allocate a window of %d tokens", T);
		return LT_ERR_NOMEM;
	}
	for (uint64_t i = 0; i < count && st == LT_OK; i++)
		st = example_window(&d->train, drawn_example(d, seed, first + i), T, buf, buf + T, n);
	free(buf);
	return st;
}

uint64_t lt_data_val_windows(const lt_data *d, int T)
{
	if (d->val.examples)
		return d->val.n_ex;
	return (d->val.tokens + (uint64_t)T - 1) / (uint64_t)T;
}

/* ------------------------------------------------------ token windows */

enum lt_status lt_data_train_batch(const lt_data *d, uint64_t seed, uint64_t first, int B, int T,
				   int32_t *tokens, int32_t *targets)
{
	uint64_t starts = 0, longest = 0;
	if (B <= 0 || T <= 0) {
		lt_errmsg_set("%s: a batch of %d x %d tokens, expected positive sizes", d->dir, B,
			      T);
		return LT_ERR_ARG;
	}
	if (d->train.examples)
		return example_batch(d, seed, first, B, T, tokens, targets);
	for (int k = 0; k < d->train.n; k++) {
		starts += window_starts(d->train.shards[k], T);
		if (lt_shard_info(d->train.shards[k])->n_tokens > longest)
			longest = lt_shard_info(d->train.shards[k])->n_tokens;
	}
	if (starts == 0) {
		lt_errmsg_set("%s: no training shard holds a window of %d tokens (the longest has %"
			      PRIu64 "); lower train.seq or prepare more text", d->dir, T + 1,
			      longest);
		return LT_ERR_ARG;
	}
	/* Each sample is uniform over every window start of every shard, so
	 * every training token is drawn about equally often. */
	for (int b = 0; b < B; b++) {
		struct lt_rng r;
		lt_rng_seed(&r, seed, DATA_STREAM + first + (uint64_t)b);
		uint64_t at = lt_rng_below(&r, starts);
		int k = 0;
		while (at >= window_starts(d->train.shards[k], T))
			at -= window_starts(d->train.shards[k++], T);
		enum lt_status st = lt_shard_read(d->train.shards[k], at, tokens + (size_t)b * T,
						  (size_t)T);
		if (st == LT_OK)
			st = lt_shard_read(d->train.shards[k], at + 1, targets + (size_t)b * T,
					   (size_t)T);
		if (st != LT_OK)
			return st;
	}
	return LT_OK;
}

/* out[0..n) = the validation tokens at .. at+n-1, across shard ends
 * (at + n <= the validation token count). */
static enum lt_status read_val(const lt_data *d, uint64_t at, int32_t *out, size_t n)
{
	for (int k = 0; k < d->val.n && n > 0; k++) {
		uint64_t count = lt_shard_info(d->val.shards[k])->n_tokens;
		if (at >= count) {
			at -= count;
			continue;
		}
		size_t take = count - at < n ? (size_t)(count - at) : n;
		enum lt_status st = lt_shard_read(d->val.shards[k], at, out, take);
		if (st != LT_OK)
			return st;
		out += take;
		n -= take;
		at = 0;
	}
	return LT_OK;
}

enum lt_status lt_data_val_batch(const lt_data *d, uint64_t index, int B, int T,
				 int32_t *tokens, int32_t *targets, long *n)
{
	uint64_t total = d->val.tokens, per = (uint64_t)B * (uint64_t)T;
	*n = 0;
	if (B <= 0 || T <= 0) {
		lt_errmsg_set("%s: a batch of %d x %d tokens, expected positive sizes", d->dir, B,
			      T);
		return LT_ERR_ARG;
	}
	if (d->val.examples) {
		for (int b = 0; b < B; b++) {
			uint64_t k = index * (uint64_t)B + (uint64_t)b;
			int32_t *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
			if (index < d->val.n_ex && k < d->val.n_ex) {
				enum lt_status st = example_window(&d->val, k, T, tok, tgt, n);
				if (st != LT_OK)
					return st;
				continue;
			}
			for (int t = 0; t < T; t++) {
				tok[t] = 0;
				tgt[t] = -1;
			}
		}
		return LT_OK;
	}
	/* past the end as a whole (and no overflow in index * per below) */
	int past = index >= total / per + 1;
	for (int b = 0; b < B; b++) {
		uint64_t at = past ? total : index * per + (uint64_t)b * (uint64_t)T;
		uint64_t have = at < total ? total - at : 0;
		size_t take = have < (uint64_t)T + 1 ? (size_t)have : (size_t)T + 1;
		int32_t *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
		size_t real = take > 0 ? take - 1 : 0; /* targets that exist */
		enum lt_status st = read_val(d, at, tok, take < (size_t)T ? take : (size_t)T);
		if (st == LT_OK)
			st = read_val(d, at + 1, tgt, real);
		if (st != LT_OK)
			return st;
		for (size_t t = take; t < (size_t)T; t++)
			tok[t] = 0;
		for (size_t t = real; t < (size_t)T; t++)
			tgt[t] = -1;
		*n += (long)real;
	}
	return LT_OK;
}
