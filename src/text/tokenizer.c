/* The byte-level BPE tokenizer (see tokenizer.h): GPT-2 pre-tokenisation
 * through PCRE2, the vocabulary, encoding with a cache, and decoding.
 * Training is in tokenizer_train.c, tokenizer.json in tokenizer_json.c, the
 * tables they share in tokenizer_table.c. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Encoding caches pieces up to this long, and starts over past this many. */
#define CACHE_MAX_PIECE 128
#define CACHE_MAX_ENTRIES (1u << 17)
/* The merge loop's scratch is kept between pieces up to this many bytes. */
#define SCRATCH_KEEP (1u << 16)

/* ---------------------------------------------------------------- ids */

void lt_ids_free(lt_ids *ids)
{
	if (!ids)
		return;
	free(ids->v);
	ids->v = NULL;
	ids->n = ids->cap = 0;
}

static enum lt_status ids_push(lt_ids *out, int32_t id)
{
	if (out->n == out->cap) {
		enum lt_status st = lt_tok_grow(&out->v, &out->cap, out->n + 1, sizeof *out->v, "token ids");
		if (st != LT_OK)
			return st;
	}
	out->v[out->n++] = id;
	return LT_OK;
}

/* ------------------------------------------------------- pre-tokeniser */

/* GPT-2's pattern, with \s spelt out as the White_Space characters that the
 * Hugging Face library's regex engine (Oniguruma) uses, which differ from
 * PCRE2's \s in U+180E. Letters and numbers come from PCRE2's Unicode
 * tables, so characters newer than those tables may split differently. */
#define WS "\\t\\n\\x{0b}\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
	"\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
const char lt_pretok_gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+"
	"|[" WS "]+(?![^" WS "])|[" WS "]+";

void lt_pretok_re_fini(struct lt_pretok_re *re)
{
	pcre2_match_data_free(re->md);
	pcre2_match_context_free(re->mctx);
	pcre2_jit_stack_free(re->stack);
	pcre2_code_free(re->code);
	memset(re, 0, sizeof *re);
}

enum lt_status lt_pretok_re_init(struct lt_pretok_re *re)
{
	return lt_pretok_re_compile(re, lt_pretok_gpt2_pattern, strlen(lt_pretok_gpt2_pattern), "the GPT-2 pattern");
}

enum lt_status lt_pretok_re_compile(struct lt_pretok_re *re, const char *pattern, size_t len, const char *what)
{
	int err;
	PCRE2_SIZE at;

	memset(re, 0, sizeof *re);
	/* MATCH_INVALID_UTF: bytes that are not UTF-8 never match, so they
	 * fall between matches and become pieces of their own. */
	re->code = pcre2_compile((PCRE2_SPTR)pattern, len,
			PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
	if (!re->code) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof msg);
		lt_errmsg_set("PCRE2 cannot compile %s at offset %zu: %s", what, (size_t)at, (char *)msg);
		return LT_ERR_FORMAT;
	}
	re->md = pcre2_match_data_create_from_pattern(re->code, NULL);
	re->mctx = pcre2_match_context_create(NULL);
	/* A file's pattern may backtrack without end: bound the work of one
	 * match (PCRE2's default is ten million steps). */
	if (re->mctx)
		pcre2_set_match_limit(re->mctx, 1000000);
	if (!re->md || !re->mctx) {
		lt_pretok_re_fini(re);
		lt_errmsg_set("cannot allocate PCRE2 match data");
		return LT_ERR_NOMEM;
	}
	if (pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0) {
		re->stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
		if (re->stack) {
			pcre2_jit_stack_assign(re->mctx, NULL, re->stack);
			re->jit = 1;
		}
	}
	return LT_OK;
}

void lt_pretok_start(struct lt_pretok *it, const struct lt_pretok_re *re, const char *s, size_t len)
{
	*it = (struct lt_pretok){ .re = re, .s = s, .len = len, .pos = 0, .ms = SIZE_MAX, .me = 0 };
}

int lt_pretok_next(struct lt_pretok *it, size_t *b, size_t *e, enum lt_status *st)
{
	if (it->pos >= it->len)
		return 0;
	if (it->ms == SIZE_MAX) {
		const struct lt_pretok_re *re = it->re;
		int rc;
		if (re->jit)
			rc = pcre2_jit_match(re->code, (PCRE2_SPTR)it->s, it->len, it->pos, 0, re->md, re->mctx);
		else
			rc = pcre2_match(re->code, (PCRE2_SPTR)it->s, it->len, it->pos, 0, re->md, re->mctx);
		if (rc == PCRE2_ERROR_NOMATCH) {
			it->ms = it->me = it->len;
		} else if (rc < 0) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(rc, msg, sizeof msg);
			lt_errmsg_set("PCRE2 failed at byte %zu of the text: %s", it->pos, (char *)msg);
			*st = rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_JIT_STACKLIMIT ||
				rc == PCRE2_ERROR_HEAPLIMIT ? LT_ERR_NOMEM : LT_ERR_BACKEND;
			return -1;
		} else {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
			it->ms = ov[0];
			it->me = ov[1];
			LT_ASSERT(it->me > it->ms && it->ms >= it->pos);
		}
	}
	*b = it->pos;
	if (it->ms > it->pos) {
		*e = it->pos = it->ms;
		if (it->ms == it->len)
			it->ms = SIZE_MAX;
		return 1;
	}
	*e = it->pos = it->me;
	it->ms = SIZE_MAX;
	return 1;
}

/* ----------------------------------------------------------- tokenizer */

/* One entry of the encoding cache: its ids are cache_ids[off .. off + n). */
struct lt_tok_cached {
	size_t off;
	uint32_t n;
};

/* A min-heap item of the encoder: merge rank r at symbol pos, making to. */
struct lt_tok_pending {
	int32_t rank, pos, to;
};

void lt_tokenizer_free(lt_tokenizer *tok)
{
	if (!tok)
		return;
	free(tok->blob);
	free(tok->off);
	free(tok->kind);
	free(tok->raw);
	free(tok->merges);
	lt_pairmap_fini(&tok->rank_of);
	lt_strtab_fini(&tok->whole);
	free(tok->whole_id);
	for (int i = 0; i < LT_TOK_MAX_STEPS; i++)
		lt_pretok_re_fini(&tok->re[i]);
	lt_tok_pipe_fini(&tok->pipe);
	free(tok->added);
	free(tok->norm_buf[0]);
	free(tok->norm_buf[1]);
	lt_strtab_fini(&tok->cache);
	free(tok->cache_ent);
	free(tok->cache_ids);
	free(tok->sym);
	free(tok->prev);
	free(tok->next);
	free(tok->heap);
	free(tok);
}

static int eot_matches(const lt_tokenizer *tok, int32_t id)
{
	size_t n = tok->off[id + 1] - tok->off[id];
	return n == strlen(LT_TOKENIZER_EOT) && memcmp(tok->blob + tok->off[id], LT_TOKENIZER_EOT, n) == 0;
}

/* Token text -> id, for ignore_merges and for the characters of a
 * text-level vocabulary: the byte-level tokens, or every token of a
 * text-level one (the first of equal texts). */
static enum lt_status whole_table(lt_tokenizer *tok)
{
	enum lt_status st;

	if (!tok->ignore_merges && !tok->pipe.charlevel)
		return LT_OK;
	if (!(tok->whole_id = lt_tok_alloc_zero((size_t)tok->n_vocab, sizeof *tok->whole_id, "a token table")))
		return LT_ERR_NOMEM;
	for (int32_t i = 0; i < tok->n_vocab; i++) {
		const char *s = tok->blob + tok->off[i];
		size_t n = tok->off[i + 1] - tok->off[i], e;
		uint64_t h = lt_tok_hash_bytes(s, n);
		if (!n || (tok->raw[i] && !tok->pipe.charlevel) || lt_strtab_find(&tok->whole, s, n, h) >= 0)
			continue;
		if ((st = lt_strtab_add(&tok->whole, s, n, h, &e)) != LT_OK)
			return st;
		tok->whole_id[e] = i;
	}
	return LT_OK;
}

enum lt_status lt_tok_build(const struct lt_tok_parts *d, lt_tokenizer **out)
{
	lt_tokenizer *tok;
	enum lt_status st = LT_ERR_NOMEM;
	size_t nv = (size_t)d->n_vocab, nb = d->off[nv];
	int32_t i;

	*out = NULL;
	if (!(tok = lt_tok_alloc_zero(1, sizeof *tok, "a tokenizer")))
		return LT_ERR_NOMEM;
	tok->n_vocab = d->n_vocab;
	tok->n_merges = d->n_merges;
	tok->ignore_merges = d->ignore_merges;
	memcpy(tok->byte_id, d->byte_id, sizeof tok->byte_id);
	if (!(tok->blob = lt_tok_alloc_zero(nb, 1, "token bytes")) ||
			!(tok->off = lt_tok_alloc_zero(nv + 1, sizeof *tok->off, "token offsets")) ||
			!(tok->kind = lt_tok_alloc_zero(nv, 1, "token kinds")) ||
			!(tok->raw = lt_tok_alloc_zero(nv, 1, "token kinds")) ||
			!(tok->merges = lt_tok_alloc_zero((size_t)d->n_merges, sizeof *tok->merges, "merges")))
		goto fail;
	if (nb)
		memcpy(tok->blob, d->blob, nb);
	memcpy(tok->off, d->off, (nv + 1) * sizeof *tok->off);
	memcpy(tok->kind, d->kind, nv);
	memcpy(tok->raw, d->raw, nv);
	if (d->n_merges)
		memcpy(tok->merges, d->merges, (size_t)d->n_merges * sizeof *tok->merges);

	for (i = 0; i < d->n_merges; i++) {
		const struct lt_merge *m = &d->merges[i];
		LT_ASSERT(m->a >= 0 && m->a < d->n_vocab && m->b >= 0 && m->b < d->n_vocab &&
				m->to >= 0 && m->to < d->n_vocab);
		if ((st = lt_pairmap_put(&tok->rank_of, lt_pair_key(m->a, m->b), (uint32_t)i)) != LT_OK)
			goto fail;
	}
	st = d->pipe ? lt_tok_pipe_copy(&tok->pipe, d->pipe) : lt_tok_pipe_default(&tok->pipe);
	if (st != LT_OK || (st = whole_table(tok)) != LT_OK || (st = lt_tok_index_added(tok)) != LT_OK)
		goto fail;
	tok->unk_id = tok->pipe.unk ? lt_tokenizer_token_id(tok, tok->pipe.unk, strlen(tok->pipe.unk)) : -1;
	tok->all_bytes = 1;
	for (i = 0; i < 256; i++)
		tok->all_bytes &= tok->byte_id[i] >= 0;
	tok->eot_id = -1;
	for (i = 0; i < d->n_vocab && tok->eot_id < 0; i++)
		if (tok->kind[i] != LT_TOK_NORMAL && eot_matches(tok, i))
			tok->eot_id = i;
	for (i = 0; i < d->n_vocab && tok->eot_id < 0; i++)
		if (eot_matches(tok, i))
			tok->eot_id = i;
	if ((st = lt_tok_pipe_compile(tok)) != LT_OK)
		goto fail;
	*out = tok;
	return LT_OK;
fail:
	lt_tokenizer_free(tok);
	return st;
}

static struct lt_tok_parts parts_of(const lt_tokenizer *tok)
{
	return (struct lt_tok_parts){
		.n_vocab = tok->n_vocab, .blob = tok->blob, .off = tok->off, .kind = tok->kind,
		.raw = tok->raw, .byte_id = tok->byte_id, .n_merges = tok->n_merges,
		.merges = tok->merges, .ignore_merges = tok->ignore_merges, .pipe = &tok->pipe,
	};
}

enum lt_status lt_tokenizer_clone(const lt_tokenizer *tok, lt_tokenizer **out)
{
	struct lt_tok_parts d = parts_of(tok);
	return lt_tok_build(&d, out);
}

int32_t lt_tokenizer_vocab_size(const lt_tokenizer *tok)
{
	return tok->n_vocab;
}

int32_t lt_tokenizer_eot_id(const lt_tokenizer *tok)
{
	return tok->eot_id;
}

const char *lt_tokenizer_token(const lt_tokenizer *tok, int32_t id, size_t *len)
{
	if (id < 0 || id >= tok->n_vocab)
		return NULL;
	*len = tok->off[id + 1] - tok->off[id];
	return tok->blob + tok->off[id];
}

int lt_tokenizer_token_id(const lt_tokenizer *t, const char *text, size_t len)
{
	int32_t i;

	if (len && (i = lt_tok_added_at(t, text, len)) >= 0 && t->off[i + 1] - t->off[i] == len)
		return i;
	if (t->whole.nslot) {
		int64_t e = lt_strtab_find(&t->whole, text, len, lt_tok_hash_bytes(text, len));
		if (e >= 0)
			return t->whole_id[e];
	}
	for (i = 0; i < t->n_vocab; i++)
		if (t->off[i + 1] - t->off[i] == len && memcmp(t->blob + t->off[i], text, len) == 0)
			return i;
	return -1;
}

int32_t lt_tokenizer_n_merges(const lt_tokenizer *tok)
{
	return tok->n_merges;
}

enum lt_status lt_tokenizer_merge(const lt_tokenizer *tok, int32_t rank,
		int32_t *left, int32_t *right, int32_t *to)
{
	if (rank < 0 || rank >= tok->n_merges) {
		lt_errmsg_set("merge rank %" PRId32 " is outside 0..%" PRId32, rank, tok->n_merges - 1);
		return LT_ERR_ARG;
	}
	*left = tok->merges[rank].a;
	*right = tok->merges[rank].b;
	*to = tok->merges[rank].to;
	return LT_OK;
}

/* ------------------------------------------------------------ encoding */

static inline int32_t rank_of(const lt_tokenizer *tok, int32_t a, int32_t b)
{
	return (int32_t)lt_pairmap_get(&tok->rank_of, lt_pair_key(a, b));
}

static inline int pending_before(const struct lt_tok_pending *x, const struct lt_tok_pending *y)
{
	return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void pending_push(struct lt_tok_pending *h, size_t *n, struct lt_tok_pending m)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!pending_before(&m, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = m;
}

static struct lt_tok_pending pending_pop(struct lt_tok_pending *h, size_t *n)
{
	struct lt_tok_pending top = h[0], last = h[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && pending_before(&h[c + 1], &h[c]))
			c++;
		if (!pending_before(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = last;
	return top;
}

/* The length of the UTF-8 character at s[0] (1 for a stray byte). */
static size_t char_len(const char *s, size_t n)
{
	unsigned c = (unsigned char)s[0];
	size_t k = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	return k <= n ? k : 1;
}

/* The first symbols of a piece of a text-level vocabulary, as the Hugging
 * Face BPE model makes them: each character's token; else, with byte
 * fallback, its bytes' <0xNN> tokens when all exist; else the unknown
 * token (one for a run of them with fuse_unk), or nothing where there is
 * none. Returns how many symbols it wrote (at most n). */
static size_t char_symbols(const lt_tokenizer *tok, const char *p, size_t n, int32_t *sym)
{
	size_t i = 0, k = 0, c, j;
	int last_unk = 0;

	while (i < n) {
		int64_t e;
		c = char_len(p + i, n - i);
		e = lt_strtab_find(&tok->whole, p + i, c, lt_tok_hash_bytes(p + i, c));
		if (e >= 0) {
			sym[k++] = tok->whole_id[e];
			last_unk = 0;
			i += c;
			continue;
		}
		for (j = 0; tok->pipe.byte_fallback && j < c && tok->byte_id[(unsigned char)p[i + j]] >= 0; j++)
			;
		if (tok->pipe.byte_fallback && j == c) {
			for (j = 0; j < c; j++)
				sym[k++] = tok->byte_id[(unsigned char)p[i + j]];
			last_unk = 0;
		} else if (tok->unk_id >= 0) {
			if (!(tok->pipe.fuse_unk && last_unk))
				sym[k++] = tok->unk_id;
			last_unk = 1;
		}
		i += c;
	}
	return k;
}

/* The first symbols of a piece of a byte-level vocabulary that lacks some
 * byte tokens: those bytes are unknown, as in char_symbols. */
static size_t byte_symbols(const lt_tokenizer *tok, const char *p, size_t n, int32_t *sym)
{
	size_t i, k = 0;
	int last_unk = 0;

	for (i = 0; i < n; i++) {
		int32_t id = tok->byte_id[(unsigned char)p[i]];
		if (id >= 0) {
			sym[k++] = id;
			last_unk = 0;
		} else if (tok->unk_id >= 0) {
			if (!(tok->pipe.fuse_unk && last_unk))
				sym[k++] = tok->unk_id;
			last_unk = 1;
		}
	}
	return k;
}

/* Applies the merges to one piece of n >= 2 bytes, the way the Hugging
 * Face BPE model does: always the lowest-ranked adjacent pair, leftmost
 * first, each queued entry checked against what its place now holds. */
static enum lt_status bpe_piece(lt_tokenizer *tok, const char *p, size_t n, lt_ids *out)
{
	enum lt_status st;
	size_t i, nh = 0;
	int32_t *sym, *prev, *next, r;

	if (n > INT32_MAX / 4) {
		lt_errmsg_set("a piece of %zu bytes is too long to encode", n);
		return LT_ERR_ARG;
	}
	if (n > tok->sym_cap) {
		size_t c1 = tok->sym_cap, c2 = tok->sym_cap, c3 = tok->sym_cap;
		if ((st = lt_tok_grow(&tok->sym, &c1, n, sizeof *tok->sym, "encoder scratch")) != LT_OK ||
				(st = lt_tok_grow(&tok->prev, &c2, n, sizeof *tok->prev, "encoder scratch")) != LT_OK ||
				(st = lt_tok_grow(&tok->next, &c3, n, sizeof *tok->next, "encoder scratch")) != LT_OK)
			return st;
		tok->sym_cap = c1 < c2 ? (c1 < c3 ? c1 : c3) : (c2 < c3 ? c2 : c3);
	}
	/* The queue holds at most 2n items: n - 1 at the start, and each merge
	 * takes one out and puts at most two in. */
	if (2 * n > tok->heap_cap &&
			(st = lt_tok_grow(&tok->heap, &tok->heap_cap, 2 * n, sizeof *tok->heap, "encoder scratch")) != LT_OK)
		return st;
	sym = tok->sym;
	prev = tok->prev;
	next = tok->next;
	if (tok->pipe.charlevel || !tok->all_bytes) {
		n = tok->pipe.charlevel ? char_symbols(tok, p, n, sym) : byte_symbols(tok, p, n, sym);
		if (!n)
			return LT_OK;
	} else {
		for (i = 0; i < n; i++)
			sym[i] = tok->byte_id[(unsigned char)p[i]];
	}
	for (i = 0; i < n; i++) {
		prev[i] = (int32_t)i - 1;
		next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	for (i = 0; i + 1 < n; i++)
		if ((r = rank_of(tok, sym[i], sym[i + 1])) >= 0)
			pending_push(tok->heap, &nh, (struct lt_tok_pending){ r, (int32_t)i, tok->merges[r].to });
	while (nh) {
		struct lt_tok_pending m = pending_pop(tok->heap, &nh);
		int32_t a = m.pos, b = next[a];
		if (sym[a] < 0 || b < 0)
			continue;
		r = rank_of(tok, sym[a], sym[b]);
		if (r < 0 || tok->merges[r].to != m.to)
			continue;
		sym[a] = m.to;
		sym[b] = -1;
		next[a] = next[b];
		if (next[b] >= 0)
			prev[next[b]] = a;
		if (prev[a] >= 0 && (r = rank_of(tok, sym[prev[a]], sym[a])) >= 0)
			pending_push(tok->heap, &nh, (struct lt_tok_pending){ r, prev[a], tok->merges[r].to });
		if (next[a] >= 0 && (r = rank_of(tok, sym[a], sym[next[a]])) >= 0)
			pending_push(tok->heap, &nh, (struct lt_tok_pending){ r, a, tok->merges[r].to });
	}
	st = LT_OK;
	for (r = 0; r >= 0 && st == LT_OK; r = next[r])
		st = ids_push(out, sym[r]);
	/* Do not keep the scratch of a huge piece. */
	if (tok->sym_cap > SCRATCH_KEEP) {
		free(tok->sym);
		free(tok->prev);
		free(tok->next);
		free(tok->heap);
		tok->sym = tok->prev = tok->next = NULL;
		tok->heap = NULL;
		tok->sym_cap = tok->heap_cap = 0;
	}
	return st;
}

static enum lt_status encode_piece(lt_tokenizer *tok, const char *p, size_t n, lt_ids *out)
{
	enum lt_status st;
	uint64_t h;
	int64_t e;
	size_t n0 = out->n, k, idx;

	if (n == 1 && !tok->pipe.charlevel && tok->all_bytes)
		return ids_push(out, tok->byte_id[(unsigned char)p[0]]);
	if (tok->ignore_merges) {
		h = lt_tok_hash_bytes(p, n);
		if ((e = lt_strtab_find(&tok->whole, p, n, h)) >= 0)
			return ids_push(out, tok->whole_id[e]);
	}
	if (n > CACHE_MAX_PIECE)
		return bpe_piece(tok, p, n, out);
	h = lt_tok_hash_bytes(p, n);
	if ((e = lt_strtab_find(&tok->cache, p, n, h)) >= 0) {
		k = tok->cache_ent[e].n;
		if (out->n + k > out->cap &&
				(st = lt_tok_grow(&out->v, &out->cap, out->n + k, sizeof *out->v, "token ids")) != LT_OK)
			return st;
		memcpy(out->v + out->n, tok->cache_ids + tok->cache_ent[e].off, k * sizeof *out->v);
		out->n += k;
		return LT_OK;
	}
	if ((st = bpe_piece(tok, p, n, out)) != LT_OK)
		return st;
	/* Remember it; a full cache starts over rather than evicting. */
	k = out->n - n0;
	if (tok->cache.n >= CACHE_MAX_ENTRIES) {
		lt_strtab_clear(&tok->cache);
		tok->cache_len = 0;
	}
	if ((st = lt_strtab_add(&tok->cache, p, n, h, &idx)) != LT_OK)
		goto fail;
	if ((st = lt_tok_grow(&tok->cache_ent, &tok->cache_ecap, idx + 1, sizeof *tok->cache_ent, "the encoding cache")) != LT_OK ||
			(st = lt_tok_grow(&tok->cache_ids, &tok->cache_cap, tok->cache_len + k, sizeof *tok->cache_ids,
					"the encoding cache")) != LT_OK)
		goto fail;
	if (k > 0)  /* (no ids: the buffers may not exist yet) */
		memcpy(tok->cache_ids + tok->cache_len, out->v + n0, k * sizeof *out->v);
	tok->cache_ent[idx] = (struct lt_tok_cached){ .off = tok->cache_len, .n = (uint32_t)k };
	tok->cache_len += k;
	return LT_OK;
fail:
	/* The cache may hold the piece without its ids: start it over. */
	lt_strtab_clear(&tok->cache);
	tok->cache_len = 0;
	return st;
}

enum lt_status lt_tokenizer_encode(lt_tokenizer *tok, const char *text, size_t len, lt_ids *out)
{
	return lt_tok_pretokenize(tok, text, len, 1, encode_piece, out);
}

enum lt_status lt_tokenizer_encode_special(lt_tokenizer *tok, const char *text, size_t len, lt_ids *out)
{
	size_t i = 0, start = 0;
	enum lt_status st;

	while (i < len) {
		unsigned c = (unsigned char)text[i];
		int32_t id;
		if (tok->added_first[c] == tok->added_first[c + 1] || (id = lt_tok_added_at(tok, text + i, len - i)) < 0) {
			i++;
			continue;
		}
		if ((st = lt_tok_pretokenize(tok, text + start, i - start, start == 0, encode_piece, out)) != LT_OK ||
				(st = ids_push(out, id)) != LT_OK)
			return st;
		i += tok->off[id + 1] - tok->off[id];
		start = i;
	}
	return lt_tok_pretokenize(tok, text + start, len - start, start == 0, encode_piece, out);
}

enum lt_status lt_tokenizer_append_eot(const lt_tokenizer *tok, lt_ids *out)
{
	if (tok->eot_id < 0) {
		lt_errmsg_set("the tokenizer has no '%s' token", LT_TOKENIZER_EOT);
		return LT_ERR_NOTFOUND;
	}
	return ids_push(out, tok->eot_id);
}

/* The byte of a <0xNN> token of byte fallback, or -1. */
static int fallback_byte(const lt_tokenizer *tok, int32_t id)
{
	const char *t = tok->blob + tok->off[id];
	unsigned v;

	if (!tok->pipe.dec_bytes || tok->off[id + 1] - tok->off[id] != 6 || memcmp(t, "<0x", 3) || t[5] != '>')
		return -1;
	v = (unsigned)strtoul(t + 3, NULL, 16);
	return v < 256 && tok->byte_id[v] == id ? (int)v : -1;
}

/* Appends the decoded text of one token of a text-level vocabulary at
 * s + at (its own length is room enough); returns the new length. */
static size_t decode_text(const lt_tokenizer *tok, int32_t id, char *s, size_t at)
{
	const char *t = tok->blob + tok->off[id];
	size_t k = tok->off[id + 1] - tok->off[id], j;
	int b = fallback_byte(tok, id);

	if (b >= 0) {
		s[at++] = (char)b;
		return at;
	}
	for (j = 0; j < k; j++) {
		if (tok->pipe.dec_meta && j + 3 <= k && !memcmp(t + j, "\xe2\x96\x81", 3)) {
			s[at++] = ' ';
			j += 2;
		} else {
			s[at++] = t[j];
		}
	}
	return at;
}

enum lt_status lt_tokenizer_decode(const lt_tokenizer *tok, const int32_t *ids, size_t n,
		char **text, size_t *len)
{
	size_t i, total = 0;
	char *s;

	*text = NULL;
	*len = 0;
	for (i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= tok->n_vocab) {
			lt_errmsg_set("token id %" PRId32 " at position %zu is outside the vocabulary of %" PRId32,
					ids[i], i, tok->n_vocab);
			return LT_ERR_ARG;
		}
		total += tok->off[ids[i] + 1] - tok->off[ids[i]];
	}
	if (!(s = malloc(total + 1))) {
		lt_errmsg_set("cannot allocate %zu bytes for decoded text", total + 1);
		return LT_ERR_NOMEM;
	}
	total = 0;
	for (i = 0; i < n; i++) {
		size_t k = tok->off[ids[i] + 1] - tok->off[ids[i]];
		if (tok->pipe.charlevel) {
			total = decode_text(tok, ids[i], s, total);
			continue;
		}
		memcpy(s + total, tok->blob + tok->off[ids[i]], k);
		total += k;
	}
	for (i = 0; tok->pipe.charlevel && (int)i < tok->pipe.dec_strip && i < total && s[i] == ' '; i++)
		;
	if (i && tok->pipe.charlevel) {
		memmove(s, s + i, total - i);
		total -= i;
	}
	s[total] = '\0';
	*text = s;
	*len = total;
	return LT_OK;
}
