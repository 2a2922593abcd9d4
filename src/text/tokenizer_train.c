/* BPE training for the tokenizer (see tokenizer.h): the corpus is kept as
 * a table of distinct pre-tokens with their counts, then merges are learned
 * with incremental pair counts and a queue of pairs by frequency. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Files are read for training in blocks of this many bytes. */
#define READ_BLOCK (1u << 20)

/* ------------------------------------------------------------ training */

struct lt_tokenizer_trainer {
	struct lt_tokenizer_train_opts opts;
	struct lt_pretok_re re;
	struct lt_strtab words; /* distinct pre-tokens */
	int64_t *count;      /* by word */
	size_t count_cap;
	uint64_t n_bytes;
	int finished;
};

enum lt_status lt_tokenizer_trainer_new(const struct lt_tokenizer_train_opts *opts,
		lt_tokenizer_trainer **out)
{
	lt_tokenizer_trainer *tr;
	enum lt_status st;

	*out = NULL;
	if (opts->vocab_size < 257 || opts->vocab_size > LT_TOKENIZER_MAX_VOCAB) {
		lt_errmsg_set("vocabulary size %d is impossible: it must be from 257 (256 bytes and '%s') to %d",
				opts->vocab_size, LT_TOKENIZER_EOT, LT_TOKENIZER_MAX_VOCAB);
		return LT_ERR_CONFIG;
	}
	if (opts->min_frequency < 0) {
		lt_errmsg_set("minimum pair frequency %ld is negative", opts->min_frequency);
		return LT_ERR_CONFIG;
	}
	if (!(tr = lt_tok_alloc_zero(1, sizeof *tr, "a tokenizer trainer")))
		return LT_ERR_NOMEM;
	tr->opts = *opts;
	if ((st = lt_pretok_re_init(&tr->re)) != LT_OK) {
		free(tr);
		return st;
	}
	*out = tr;
	return LT_OK;
}

void lt_tokenizer_trainer_free(lt_tokenizer_trainer *tr)
{
	if (!tr)
		return;
	lt_pretok_re_fini(&tr->re);
	lt_strtab_fini(&tr->words);
	free(tr->count);
	free(tr);
}

enum lt_status lt_tokenizer_trainer_add(lt_tokenizer_trainer *tr, const char *text, size_t len)
{
	struct lt_pretok it;
	enum lt_status st = LT_OK;
	size_t b, e, idx;
	int r;

	if (tr->finished) {
		lt_errmsg_set("text added to a tokenizer trainer that has finished");
		return LT_ERR_ARG;
	}
	if (!len)
		return LT_OK;
	tr->n_bytes += len;
	lt_pretok_start(&it, &tr->re, text, len);
	while ((r = lt_pretok_next(&it, &b, &e, &st)) > 0) {
		uint64_t h = lt_tok_hash_bytes(text + b, e - b);
		int64_t w = lt_strtab_find(&tr->words, text + b, e - b, h);
		if (w >= 0) {
			tr->count[w]++;
			continue;
		}
		if ((st = lt_strtab_add(&tr->words, text + b, e - b, h, &idx)) != LT_OK)
			return st;
		if ((st = lt_tok_grow(&tr->count, &tr->count_cap, idx + 1, sizeof *tr->count, "word counts")) != LT_OK)
			return st;
		tr->count[idx] = 1;
	}
	return r < 0 ? st : LT_OK;
}

static int is_ascii_space(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Where to cut buf[0..n) (n a full block) so that pre-tokens stay as in
 * the whole text: after an ASCII non-space that whitespace follows (no
 * match can span that place), looked for in the second half; else at a
 * UTF-8 character boundary. */
static size_t find_cut(const char *buf, size_t n)
{
	size_t p;
	for (p = n - 1; p > n / 2; p--) {
		unsigned char c = (unsigned char)buf[p - 1];
		if (c > 0x20 && c < 0x7f && is_ascii_space((unsigned char)buf[p]))
			return p;
	}
	for (p = n - 1; p > n - 4; p--)
		if (((unsigned char)buf[p] & 0xc0) != 0x80)
			return p;
	return n;
}

enum lt_status lt_tokenizer_trainer_add_file(lt_tokenizer_trainer *tr, const char *path)
{
	enum lt_status st = LT_OK;
	FILE *f;
	char *buf;
	size_t have = 0;

	if (!(buf = malloc(READ_BLOCK))) {
		lt_errmsg_set("cannot allocate %u bytes to read %s", READ_BLOCK, path);
		return LT_ERR_NOMEM;
	}
	if (!(f = fopen(path, "rb"))) {
		int err = errno;
		lt_errmsg_set("%s: cannot open: %s", path, strerror(err));
		free(buf);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	for (;;) {
		size_t want = READ_BLOCK - have, got = fread(buf + have, 1, want, f), cut;
		have += got;
		if (got < want) {
			if (ferror(f)) {
				lt_errmsg_set("%s: cannot read: %s", path, strerror(errno));
				st = LT_ERR_IO;
			} else {
				st = lt_tokenizer_trainer_add(tr, buf, have);
			}
			break;
		}
		cut = find_cut(buf, have);
		if ((st = lt_tokenizer_trainer_add(tr, buf, cut)) != LT_OK)
			break;
		memmove(buf, buf + cut, have - cut);
		have -= cut;
	}
	if (st != LT_OK && st != LT_ERR_IO)
		lt_errmsg_prefix("%s", path);
	fclose(f);
	free(buf);
	return st;
}

/* One pair during training: its count over the corpus and the words that
 * hold (or held) it. */
struct train_pair {
	int32_t a, b;
	int64_t count;
	uint32_t *where;
	size_t nwhere, cwhere;
	int touched;
};

/* An item of the pair queue, a max-heap: more frequent first, then smaller
 * (a, b). Items go stale as counts change and are checked when they
 * surface. */
struct queued_pair {
	int64_t count;
	int32_t a, b;
	uint32_t pair;
};

struct learner {
	/* words, as symbol ids over the same offsets as their bytes */
	const struct lt_strtab *words;
	const int64_t *wcount;
	int32_t *sym;
	uint32_t *wlen;
	/* pairs */
	struct train_pair *pairs;
	size_t npairs, cpairs;
	struct lt_pairmap pair_ix;
	struct queued_pair *heap;
	size_t nheap, cheap;
	uint32_t *touched;
	size_t ntouched, ctouched;
	/* tokens, by id: 0..255 bytes, 256 the special token, then merges */
	char *blob;
	size_t blen, bcap;
	size_t *off;
	size_t coff;
	int32_t n_ids;
	struct lt_strtab tok_ix; /* merged tokens' bytes -> entry, for repeats */
	int32_t *tok_id;
	size_t ctok_id;
	struct lt_merge *merges;
	int32_t n_merges;
	size_t cmerges;
};

static void learner_fini(struct learner *L)
{
	size_t i;
	free(L->sym);
	free(L->wlen);
	for (i = 0; i < L->npairs; i++)
		free(L->pairs[i].where);
	free(L->pairs);
	lt_pairmap_fini(&L->pair_ix);
	free(L->heap);
	free(L->touched);
	free(L->blob);
	free(L->off);
	lt_strtab_fini(&L->tok_ix);
	free(L->tok_id);
	free(L->merges);
}

static inline int queued_before(const struct queued_pair *x, const struct queued_pair *y)
{
	if (x->count != y->count)
		return x->count > y->count;
	if (x->a != y->a)
		return x->a < y->a;
	return x->b < y->b;
}

static enum lt_status queue_push(struct learner *L, const struct train_pair *p, uint32_t ix)
{
	struct queued_pair t = { .count = p->count, .a = p->a, .b = p->b, .pair = ix };
	enum lt_status st;
	size_t i;

	if ((st = lt_tok_grow(&L->heap, &L->cheap, L->nheap + 1, sizeof *L->heap, "the pair queue")) != LT_OK)
		return st;
	i = L->nheap++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!queued_before(&t, &L->heap[up]))
			break;
		L->heap[i] = L->heap[up];
		i = up;
	}
	L->heap[i] = t;
	return LT_OK;
}

static struct queued_pair queue_pop(struct learner *L)
{
	struct queued_pair *h = L->heap, top = h[0], last = h[--L->nheap];
	size_t i = 0, n = L->nheap;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && queued_before(&h[c + 1], &h[c]))
			c++;
		if (!queued_before(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (n)
		h[i] = last;
	return top;
}

/* Adds delta to the count of (a, b); a rise also records word w as holding
 * the pair and marks it for requeueing. */
static enum lt_status pair_add(struct learner *L, int32_t a, int32_t b, int64_t delta, uint32_t w)
{
	uint64_t k = lt_pair_key(a, b);
	int64_t ix = lt_pairmap_get(&L->pair_ix, k);
	enum lt_status st;
	struct train_pair *p;

	if (ix < 0) {
		LT_ASSERT(delta > 0);
		if (L->npairs >= UINT32_MAX - 1) {
			lt_errmsg_set("too many distinct pairs (%zu) in the training corpus", L->npairs);
			return LT_ERR_NOMEM;
		}
		if ((st = lt_tok_grow(&L->pairs, &L->cpairs, L->npairs + 1, sizeof *L->pairs, "pair counts")) != LT_OK)
			return st;
		ix = (int64_t)L->npairs;
		L->pairs[ix] = (struct train_pair){ .a = a, .b = b };
		if ((st = lt_pairmap_put(&L->pair_ix, k, (uint32_t)ix)) != LT_OK)
			return st;
		L->npairs++;
	}
	p = &L->pairs[ix];
	p->count += delta;
	if (delta < 0)
		return LT_OK;
	if (!p->nwhere || p->where[p->nwhere - 1] != w) {
		if ((st = lt_tok_grow(&p->where, &p->cwhere, p->nwhere + 1, sizeof *p->where, "pair places")) != LT_OK)
			return st;
		p->where[p->nwhere++] = w;
	}
	if (!p->touched) {
		if ((st = lt_tok_grow(&L->touched, &L->ctouched, L->ntouched + 1, sizeof *L->touched, "pair counts")) != LT_OK)
			return st;
		p->touched = 1;
		L->touched[L->ntouched++] = (uint32_t)ix;
	}
	return LT_OK;
}

/* Replaces every (a, b) in word w by to, left to right, keeping the pair
 * counts of its neighbours right. */
static enum lt_status merge_word(struct learner *L, uint32_t w, int32_t a, int32_t b, int32_t to)
{
	int32_t *s = L->sym + L->words->ent[w].off;
	uint32_t n = L->wlen[w], i = 0, o = 0;
	int64_t c = L->wcount[w];
	enum lt_status st;

	while (i < n) {
		if (i + 1 < n && s[i] == a && s[i + 1] == b) {
			if (o > 0) {
				if ((st = pair_add(L, s[o - 1], a, -c, w)) != LT_OK ||
						(st = pair_add(L, s[o - 1], to, c, w)) != LT_OK)
					return st;
			}
			if (i + 2 < n) {
				if ((st = pair_add(L, b, s[i + 2], -c, w)) != LT_OK ||
						(st = pair_add(L, to, s[i + 2], c, w)) != LT_OK)
					return st;
			}
			s[o++] = to;
			i += 2;
		} else {
			s[o++] = s[i++];
		}
	}
	L->wlen[w] = o;
	return LT_OK;
}

/* Appends a token's bytes as the next id. */
static enum lt_status add_token(struct learner *L, const char *s, size_t n)
{
	enum lt_status st;
	size_t id = (size_t)L->n_ids;

	if ((st = lt_tok_grow(&L->off, &L->coff, id + 2, sizeof *L->off, "the vocabulary")) != LT_OK ||
			(st = lt_tok_grow(&L->blob, &L->bcap, L->blen + n, 1, "the vocabulary")) != LT_OK)
		return st;
	if (id == 0)
		L->off[0] = 0;
	memcpy(L->blob + L->blen, s, n);
	L->blen += n;
	L->off[id + 1] = L->blen;
	L->n_ids++;
	return LT_OK;
}

/* The id of the token a + b: an earlier one with the same bytes, or new. */
static enum lt_status join_tokens(struct learner *L, int32_t a, int32_t b, int32_t *to)
{
	size_t la = L->off[a + 1] - L->off[a], lb = L->off[b + 1] - L->off[b], e;
	enum lt_status st;
	char stackbuf[256], *s = stackbuf;
	uint64_t h;
	int64_t found;

	if (la + lb > sizeof stackbuf && !(s = malloc(la + lb))) {
		lt_errmsg_set("cannot allocate %zu bytes for a token", la + lb);
		return LT_ERR_NOMEM;
	}
	memcpy(s, L->blob + L->off[a], la);
	memcpy(s + la, L->blob + L->off[b], lb);
	h = lt_tok_hash_bytes(s, la + lb);
	if ((found = lt_strtab_find(&L->tok_ix, s, la + lb, h)) >= 0) {
		*to = L->tok_id[found];
		st = LT_OK;
	} else if ((st = lt_strtab_add(&L->tok_ix, s, la + lb, h, &e)) == LT_OK &&
			(st = lt_tok_grow(&L->tok_id, &L->ctok_id, e + 1, sizeof *L->tok_id, "the vocabulary")) == LT_OK) {
		*to = L->tok_id[e] = L->n_ids;
		st = add_token(L, s, la + lb);
	}
	if (s != stackbuf)
		free(s);
	return st;
}

/* The start of learning: the bytes and the special token as the first
 * ids, the words as byte ids, every pair counted and queued. */
static enum lt_status learn_start(struct learner *L)
{
	const struct lt_strtab *W = L->words;
	enum lt_status st;
	size_t w, i;
	int b;

	/* Bytes, the special token, and the words as byte ids. */
	for (b = 0; b < 256; b++) {
		char c = (char)b;
		if ((st = add_token(L, &c, 1)) != LT_OK)
			return st;
	}
	if ((st = add_token(L, LT_TOKENIZER_EOT, strlen(LT_TOKENIZER_EOT))) != LT_OK)
		return st;
	LT_ASSERT(L->n_ids == LT_TOKENIZER_EOT_ID + 1);
	if (!(L->sym = lt_tok_alloc_zero(W->alen, sizeof *L->sym, "word symbols")) ||
			!(L->wlen = lt_tok_alloc_zero(W->n, sizeof *L->wlen, "word lengths")))
		return LT_ERR_NOMEM;
	for (i = 0; i < W->alen; i++)
		L->sym[i] = (unsigned char)W->arena[i];
	for (w = 0; w < W->n; w++) {
		const int32_t *s = L->sym + W->ent[w].off;
		L->wlen[w] = W->ent[w].len;
		for (i = 0; i + 1 < W->ent[w].len; i++)
			if ((st = pair_add(L, s[i], s[i + 1], L->wcount[w], (uint32_t)w)) != LT_OK)
				return st;
	}
	for (i = 0; i < L->npairs; i++) {
		L->pairs[i].touched = 0;
		if ((st = queue_push(L, &L->pairs[i], (uint32_t)i)) != LT_OK)
			return st;
	}
	L->ntouched = 0;
	return LT_OK;
}

static enum lt_status learn(struct learner *L, const struct lt_tokenizer_train_opts *opts)
{
	int64_t min_freq = opts->min_frequency > 1 ? opts->min_frequency : 1;
	enum lt_status st;
	size_t i;

	if ((st = learn_start(L)) != LT_OK)
		return st;
	while (L->n_ids < opts->vocab_size && L->nheap) {
		struct queued_pair t = queue_pop(L);
		struct train_pair *p = &L->pairs[t.pair];
		uint32_t *where;
		size_t nwhere;
		int32_t to;

		if (p->count != t.count) {
			/* Stale: requeue a fallen count; a risen one is queued already. */
			if (p->count > 0 && p->count < t.count && (st = queue_push(L, p, t.pair)) != LT_OK)
				return st;
			continue;
		}
		if (p->count < min_freq)
			break;
		if ((st = join_tokens(L, t.a, t.b, &to)) != LT_OK)
			return st;
		if ((st = lt_tok_grow(&L->merges, &L->cmerges, (size_t)L->n_merges + 1, sizeof *L->merges, "merges")) != LT_OK)
			return st;
		L->merges[L->n_merges++] = (struct lt_merge){ .a = t.a, .b = t.b, .to = to };
		/* The merged pair cannot come back (to is longer than a and b),
		 * so its list of words is taken and freed. */
		where = p->where;
		nwhere = p->nwhere;
		p->where = NULL;
		p->nwhere = p->cwhere = 0;
		for (i = 0; i < nwhere; i++) {
			if ((st = merge_word(L, where[i], t.a, t.b, to)) != LT_OK) {
				free(where);
				return st;
			}
		}
		free(where);
		L->pairs[t.pair].count = 0;
		for (i = 0; i < L->ntouched; i++) {
			struct train_pair *q = &L->pairs[L->touched[i]];
			q->touched = 0;
			if (q->count > 0 && (st = queue_push(L, q, L->touched[i])) != LT_OK)
				return st;
		}
		L->ntouched = 0;
	}
	return LT_OK;
}

enum lt_status lt_tokenizer_trainer_finish(lt_tokenizer_trainer *tr, lt_tokenizer **out)
{
	struct learner L = { .words = &tr->words, .wcount = tr->count };
	enum lt_status st;
	uint8_t *kind = NULL, *raw = NULL;
	int32_t byte_id[256];
	int i;

	*out = NULL;
	if (tr->finished) {
		lt_errmsg_set("a tokenizer trainer can finish only once");
		return LT_ERR_ARG;
	}
	tr->finished = 1;
	if (tr->n_bytes == 0) {
		lt_errmsg_set("the training corpus is empty: no text to learn merges from");
		return LT_ERR_ARG;
	}
	if ((st = learn(&L, &tr->opts)) != LT_OK)
		goto done;
	st = LT_ERR_NOMEM;
	if (!(kind = lt_tok_alloc_zero((size_t)L.n_ids, 1, "token kinds")) ||
			!(raw = lt_tok_alloc_zero((size_t)L.n_ids, 1, "token kinds")))
		goto done;
	kind[LT_TOKENIZER_EOT_ID] = LT_TOK_SPECIAL;
	for (i = 0; i < 256; i++)
		byte_id[i] = i;
	{
		struct lt_tok_parts d = {
			.n_vocab = L.n_ids, .blob = L.blob, .off = L.off, .kind = kind, .raw = raw,
			.byte_id = byte_id, .n_merges = L.n_merges, .merges = L.merges, .ignore_merges = 0,
		};
		st = lt_tok_build(&d, out);
	}
done:
	free(kind);
	free(raw);
	learner_fini(&L);
	return st;
}

enum lt_status lt_tokenizer_train_files(const char *const *paths, int n,
		const struct lt_tokenizer_train_opts *opts, lt_tokenizer **out)
{
	lt_tokenizer_trainer *tr;
	enum lt_status st;
	int i;

	*out = NULL;
	if ((st = lt_tokenizer_trainer_new(opts, &tr)) != LT_OK)
		return st;
	for (i = 0; i < n && st == LT_OK; i++)
		st = lt_tokenizer_trainer_add_file(tr, paths[i]);
	if (st == LT_OK && tr->n_bytes == 0) {
		lt_errmsg_set("the training corpus is empty: %d file%s with no text", n, n == 1 ? "" : "s");
		st = LT_ERR_ARG;
	}
	if (st == LT_OK)
		st = lt_tokenizer_trainer_finish(tr, out);
	lt_tokenizer_trainer_free(tr);
	return st;
}

enum lt_status lt_tokenizer_train_buffer(const char *text, size_t len,
		const struct lt_tokenizer_train_opts *opts, lt_tokenizer **out)
{
	lt_tokenizer_trainer *tr;
	enum lt_status st;

	*out = NULL;
	if ((st = lt_tokenizer_trainer_new(opts, &tr)) != LT_OK)
		return st;
	if ((st = lt_tokenizer_trainer_add(tr, text, len)) == LT_OK)
		st = lt_tokenizer_trainer_finish(tr, out);
	lt_tokenizer_trainer_free(tr);
	return st;
}
