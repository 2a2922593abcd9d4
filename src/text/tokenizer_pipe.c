/* The tokenizer's pipeline around BPE (see tokenizer_impl.h): normalizer
 * operations, pre-tokenizer split steps with Hugging Face's delimiter
 * behaviours, and the index that finds added tokens in text. */
#include "config.h"
#include "text/tokenizer.h"
#include "text/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* The normalized copy of a stretch is kept between calls up to this size. */
#define NORM_KEEP (1u << 20)

/* ------------------------------------------------------ description */

static char *dup_str(const char *s, enum lt_status *st)
{
	char *d;
	if (!s)
		return NULL;
	if (!(d = strdup(s))) {
		lt_errmsg_set("cannot allocate %zu bytes for the tokenizer's pipeline", strlen(s) + 1);
		*st = LT_ERR_NOMEM;
	}
	return d;
}

void lt_tok_pipe_fini(struct lt_tok_pipe *p)
{
	for (int i = 0; i < p->n_norm; i++) {
		free(p->norm[i].a);
		free(p->norm[i].b);
	}
	for (int i = 0; i < p->n_steps; i++)
		free(p->step[i].pattern);
	free(p->unk);
	free(p->json_normalizer);
	free(p->json_pre);
	free(p->json_post);
	free(p->json_decoder);
	memset(p, 0, sizeof *p);
}

enum lt_status lt_tok_pipe_copy(struct lt_tok_pipe *dst, const struct lt_tok_pipe *src)
{
	enum lt_status st = LT_OK;

	*dst = *src;
	for (int i = 0; i < src->n_norm; i++) {
		dst->norm[i].a = dup_str(src->norm[i].a, &st);
		dst->norm[i].b = dup_str(src->norm[i].b, &st);
	}
	for (int i = 0; i < src->n_steps; i++)
		dst->step[i].pattern = dup_str(src->step[i].pattern, &st);
	dst->unk = dup_str(src->unk, &st);
	dst->json_normalizer = dup_str(src->json_normalizer, &st);
	dst->json_pre = dup_str(src->json_pre, &st);
	dst->json_post = dup_str(src->json_post, &st);
	dst->json_decoder = dup_str(src->json_decoder, &st);
	if (st != LT_OK)
		lt_tok_pipe_fini(dst);
	return st;
}

enum lt_status lt_tok_pipe_default(struct lt_tok_pipe *p)
{
	enum lt_status st = LT_OK;

	memset(p, 0, sizeof *p);
	p->n_steps = 1;
	p->step[0].behavior = LT_SPLIT_ISOLATED;
	if (!(p->step[0].pattern = dup_str(lt_pretok_gpt2_pattern, &st)))
		p->n_steps = 0;
	return st;
}

enum lt_status lt_tok_pipe_compile(lt_tokenizer *tok)
{
	for (int i = 0; i < tok->pipe.n_steps; i++) {
		const char *pat = tok->pipe.step[i].pattern;
		enum lt_status st = lt_pretok_re_compile(&tok->re[i], pat, strlen(pat), "the pre-tokenizer's pattern");
		if (st != LT_OK)
			return st;
	}
	return LT_OK;
}

/* ---------------------------------------------------- added tokens */

/* An added token's place in the index: by first byte, then longest first,
 * then smallest id. */
struct added_key {
	unsigned first;
	size_t len;
	int32_t id;
};

static int cmp_added(const void *x, const void *y)
{
	const struct added_key *a = x, *b = y;

	if (a->first != b->first)
		return a->first < b->first ? -1 : 1;
	if (a->len != b->len)
		return a->len > b->len ? -1 : 1;
	return a->id < b->id ? -1 : a->id > b->id;
}

enum lt_status lt_tok_index_added(lt_tokenizer *tok)
{
	struct added_key *keys;
	int32_t i, n = 0;

	for (i = 0; i < tok->n_vocab; i++)
		n += tok->kind[i] != LT_TOK_NORMAL && tok->off[i + 1] > tok->off[i];
	if (!(tok->added = lt_tok_alloc_zero((size_t)n, sizeof *tok->added, "the added tokens")) ||
			!(keys = lt_tok_alloc_zero((size_t)n, sizeof *keys, "the added tokens")))
		return LT_ERR_NOMEM;
	n = 0;
	for (i = 0; i < tok->n_vocab; i++)
		if (tok->kind[i] != LT_TOK_NORMAL && tok->off[i + 1] > tok->off[i])
			keys[n++] = (struct added_key){ (unsigned char)tok->blob[tok->off[i]], tok->off[i + 1] - tok->off[i], i };
	qsort(keys, (size_t)n, sizeof *keys, cmp_added);
	for (i = 0; i < n; i++)
		tok->added[i] = keys[i].id;
	tok->n_added = n;
	/* added_first[c]: the first entry whose first byte is c or more. */
	for (int c = 0, j = 0; c <= 256; c++) {
		while (j < n && keys[j].first < (unsigned)c)
			j++;
		tok->added_first[c] = j;
	}
	free(keys);
	return LT_OK;
}

int32_t lt_tok_added_at(const lt_tokenizer *tok, const char *text, size_t len)
{
	unsigned c = (unsigned char)text[0];

	for (int32_t j = tok->added_first[c]; j < tok->added_first[c + 1]; j++) {
		int32_t id = tok->added[j];
		size_t n = tok->off[id + 1] - tok->off[id];
		if (n <= len && memcmp(tok->blob + tok->off[id], text, n) == 0)
			return id;
	}
	return -1;
}

/* -------------------------------------------------------- normalizer */

/* Makes room for need bytes in norm_buf[which]. */
static enum lt_status norm_room(lt_tokenizer *tok, int which, size_t need)
{
	if (need <= tok->norm_cap[which])
		return LT_OK;
	return lt_tok_grow(&tok->norm_buf[which], &tok->norm_cap[which], need, 1, "normalized text");
}

/* The text in s[0..n) with every a replaced by b, into dst (*dn bytes). */
static enum lt_status replace_all(lt_tokenizer *tok, int dst, const char *s, size_t n,
		const char *a, const char *b, size_t *dn)
{
	size_t la = strlen(a), lb = strlen(b), i = 0, o = 0, hits = 0, need;
	enum lt_status st;

	for (i = 0; la && i + la <= n; i++)
		if (s[i] == a[0] && memcmp(s + i, a, la) == 0) {
			hits++;
			i += la - 1;
		}
	need = n + hits * lb + 1;
	if ((st = norm_room(tok, dst, need)) != LT_OK)
		return st;
	char *d = tok->norm_buf[dst];
	for (i = 0; i < n;) {
		if (la && i + la <= n && s[i] == a[0] && memcmp(s + i, a, la) == 0) {
			memcpy(d + o, b, lb);
			o += lb;
			i += la;
		} else {
			d[o++] = s[i++];
		}
	}
	*dn = o;
	return LT_OK;
}

/* Applies the normalizer to one stretch: *s and *n point at the result,
 * the stretch itself where nothing changes it. */
static enum lt_status normalize(lt_tokenizer *tok, const char **s, size_t *n, int at_start)
{
	int which = 0;
	enum lt_status st;

	for (int i = 0; i < tok->pipe.n_norm; i++) {
		const struct lt_norm_op *op = &tok->pipe.norm[i];
		size_t la = strlen(op->a), dn = 0;
		if (op->kind == LT_NORM_REPLACE) {
			if ((st = replace_all(tok, which, *s, *n, op->a, op->b, &dn)) != LT_OK)
				return st;
		} else {
			if (!*n || (op->kind == LT_NORM_META_PREPEND &&
					((op->first_only && !at_start) || (*n >= la && !memcmp(*s, op->a, la)))))
				continue;
			if ((st = norm_room(tok, which, *n + la + 1)) != LT_OK)
				return st;
			memcpy(tok->norm_buf[which], op->a, la);
			memmove(tok->norm_buf[which] + la, *s, *n);
			dn = *n + la;
		}
		*s = tok->norm_buf[which];
		*n = dn;
		which ^= 1;
	}
	return LT_OK;
}

/* ----------------------------------------------------- pre-tokenizer */

/* One split step over one piece: its segments (matches and the stretches
 * between them) come in order, and the behaviour decides which become
 * pieces for the next step. */
struct splitter {
	lt_tokenizer *tok;
	int k;
	const char *s;
	size_t len, cur;
	int cur_delim;
	enum lt_split_behavior how;
	lt_tok_piece_fn piece;
	lt_ids *out;
};

static enum lt_status split_from(lt_tokenizer *tok, int k, const char *s, size_t len,
		lt_tok_piece_fn piece, lt_ids *out);

static enum lt_status down(struct splitter *sp, size_t b, size_t e)
{
	if (e <= b)
		return LT_OK;
	return split_from(sp->tok, sp->k + 1, sp->s + b, e - b, sp->piece, sp->out);
}

static enum lt_status segment(struct splitter *sp, size_t b, size_t e, int delim)
{
	enum lt_status st = LT_OK;

	switch (sp->how) {
	case LT_SPLIT_ISOLATED:
		return down(sp, b, e);
	case LT_SPLIT_REMOVED:
		return delim ? LT_OK : down(sp, b, e);
	case LT_SPLIT_MERGED_PREV:
		if (delim) {
			st = down(sp, sp->cur, e);
			sp->cur = e;
		}
		return st;
	case LT_SPLIT_MERGED_NEXT:
		if (delim) {
			st = down(sp, sp->cur, b);
			sp->cur = b;
		}
		return st;
	case LT_SPLIT_CONTIGUOUS:
		/* Neighbours of the same kind join (Hugging Face's fold). */
		if (delim == sp->cur_delim && sp->cur < b)
			return LT_OK;
		st = down(sp, sp->cur, b);
		sp->cur = b;
		sp->cur_delim = delim;
		return st;
	}
	return LT_OK;
}

/* The length of the UTF-8 character at s[0] (1 for a stray byte). */
static size_t char_len(const char *s, size_t n)
{
	unsigned c = (unsigned char)s[0];
	size_t k = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	return k <= n ? k : 1;
}

static enum lt_status split_from(lt_tokenizer *tok, int k, const char *s, size_t len,
		lt_tok_piece_fn piece, lt_ids *out)
{
	struct splitter sp = { .tok = tok, .k = k, .s = s, .len = len, .piece = piece, .out = out };
	const struct lt_pretok_re *re;
	size_t pos = 0, from = 0;
	int inv, rc;
	enum lt_status st;

	if (k == tok->pipe.n_steps)
		return piece(tok, s, len, out);
	re = &tok->re[k];
	sp.how = tok->pipe.step[k].behavior;
	inv = tok->pipe.step[k].invert;
	while (from < len) {
		if (re->jit)
			rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, len, from, 0, re->md, re->mctx);
		else
			rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, from, 0, re->md, re->mctx);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			PCRE2_UCHAR msg[256];
			pcre2_get_error_message(rc, msg, sizeof msg);
			lt_errmsg_set("PCRE2 failed at byte %zu of a piece: %s", from, (char *)msg);
			return rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_JIT_STACKLIMIT ||
				rc == PCRE2_ERROR_HEAPLIMIT ? LT_ERR_NOMEM : LT_ERR_BACKEND;
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
		size_t ms = ov[0], me = ov[1];
		if (me == ms) { /* an empty match splits nothing */
			from = ms + char_len(s + ms, len - ms);
			continue;
		}
		if (ms > pos && (st = segment(&sp, pos, ms, inv)) != LT_OK)
			return st;
		if ((st = segment(&sp, ms, me, !inv)) != LT_OK)
			return st;
		pos = from = me;
	}
	if (pos < len && (st = segment(&sp, pos, len, inv)) != LT_OK)
		return st;
	if (sp.how == LT_SPLIT_ISOLATED || sp.how == LT_SPLIT_REMOVED)
		return LT_OK;
	return down(&sp, sp.cur, len);
}

enum lt_status lt_tok_pretokenize(lt_tokenizer *tok, const char *text, size_t len, int at_start,
		lt_tok_piece_fn piece, lt_ids *out)
{
	enum lt_status st;

	if (!len)
		return LT_OK;
	if (tok->pipe.n_norm && (st = normalize(tok, &text, &len, at_start)) != LT_OK)
		return st;
	st = split_from(tok, 0, text, len, piece, out);
	/* Do not keep the copy of a huge stretch. */
	for (int i = 0; i < 2; i++)
		if (tok->norm_cap[i] > NORM_KEEP) {
			free(tok->norm_buf[i]);
			tok->norm_buf[i] = NULL;
			tok->norm_cap[i] = 0;
		}
	return st;
}
