/* The byte-level BPE tokenizer (see tokenizer.h): GPT-2 pre-tokenisation
 * through PCRE2, BPE training with incremental pair counts, encoding with a
 * cache, and tokenizer.json reading and writing through jansson. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkstemp, fdopen, fsync, fchmod under -std=c11 */
#endif
#include "text/tokenizer.h"

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
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Files are read for training in blocks of this many bytes. */
#define READ_BLOCK (1u << 20)
/* Encoding caches pieces up to this long, and starts over past this many. */
#define CACHE_MAX_PIECE 128
#define CACHE_MAX_ENTRIES (1u << 17)
/* The merge loop's scratch is kept between pieces up to this many bytes. */
#define SCRATCH_KEEP (1u << 16)

enum tok_kind { KIND_NORMAL, KIND_SPECIAL, KIND_ADDED };

/* ---------------------------------------------------------------- memory */

/* Grows the array *pp (of elem-byte items, capacity *cap) to hold need. */
static enum lt_status grow(void *pp, size_t *cap, size_t need, size_t elem, const char *what)
{
	void *p, *np;
	size_t ncap;

	if (need <= *cap)
		return LT_OK;
	ncap = *cap ? *cap : 16;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 4 / elem) {
			lt_errmsg_set("cannot allocate %zu items of %zu bytes for %s", need, elem, what);
			return LT_ERR_NOMEM;
		}
		ncap *= 2;
	}
	memcpy(&p, pp, sizeof p);
	np = realloc(p, ncap * elem);
	if (!np) {
		lt_errmsg_set("cannot allocate %zu bytes for %s", ncap * elem, what);
		return LT_ERR_NOMEM;
	}
	memcpy(pp, &np, sizeof np);
	*cap = ncap;
	return LT_OK;
}

static void *alloc_zero(size_t n, size_t elem, const char *what)
{
	void *p = calloc(n ? n : 1, elem);
	if (!p)
		lt_errmsg_set("cannot allocate %zu bytes for %s", n * elem, what);
	return p;
}

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
		enum lt_status st = grow(&out->v, &out->cap, out->n + 1, sizeof *out->v, "token ids");
		if (st != LT_OK)
			return st;
	}
	out->v[out->n++] = id;
	return LT_OK;
}

/* ---------------------------------------------------------------- hashing */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)n * 0xff51afd7ed558ccdULL), k;

	while (n >= 8) {
		memcpy(&k, p, 8);
		h = mix64(h ^ k);
		p += 8;
		n -= 8;
	}
	k = 0;
	if (n)
		memcpy(&k, p, n);
	return mix64(h ^ k ^ 0x2545f4914f6cdd1dULL);
}

/* Byte strings interned in an arena, found by open addressing. Entry i is
 * the i-th distinct string added; users keep parallel arrays by entry. */
struct strent {
	uint64_t hash;
	size_t off;
	uint32_t len;
};

struct strtab {
	char *arena;
	size_t alen, acap;
	struct strent *ent;
	size_t n, ecap;
	uint32_t *slot; /* entry + 1, 0 for empty */
	size_t nslot;   /* a power of two, or 0 */
};

static void strtab_fini(struct strtab *t)
{
	free(t->arena);
	free(t->ent);
	free(t->slot);
	memset(t, 0, sizeof *t);
}

static void strtab_clear(struct strtab *t)
{
	t->alen = 0;
	t->n = 0;
	if (t->slot)
		memset(t->slot, 0, t->nslot * sizeof *t->slot);
}

static int64_t strtab_find(const struct strtab *t, const char *s, size_t len, uint64_t h)
{
	size_t mask, i;

	if (!t->nslot)
		return -1;
	mask = t->nslot - 1;
	for (i = (size_t)h & mask;; i = (i + 1) & mask) {
		uint32_t e = t->slot[i];
		const struct strent *x;
		if (!e)
			return -1;
		x = &t->ent[e - 1];
		if (x->hash == h && x->len == len && memcmp(t->arena + x->off, s, len) == 0)
			return (int64_t)e - 1;
	}
}

static enum lt_status strtab_rehash(struct strtab *t, size_t nslot)
{
	uint32_t *slot = alloc_zero(nslot, sizeof *slot, "a string table");
	size_t mask = nslot - 1, e, i;

	if (!slot)
		return LT_ERR_NOMEM;
	for (e = 0; e < t->n; e++) {
		for (i = (size_t)t->ent[e].hash & mask; slot[i]; i = (i + 1) & mask)
			;
		slot[i] = (uint32_t)(e + 1);
	}
	free(t->slot);
	t->slot = slot;
	t->nslot = nslot;
	return LT_OK;
}

/* Adds s, which must not be in t yet, as entry *idx. */
static enum lt_status strtab_add(struct strtab *t, const char *s, size_t len, uint64_t h, size_t *idx)
{
	enum lt_status st;
	size_t mask, i;

	LT_ASSERT(len > 0);
	if (len > UINT32_MAX || t->n >= UINT32_MAX - 1) {
		lt_errmsg_set("a string table is full (a piece of %zu bytes, %zu pieces)", len, t->n);
		return LT_ERR_NOMEM;
	}
	if ((t->n + 1) * 2 > t->nslot && (st = strtab_rehash(t, t->nslot ? t->nslot * 2 : 1024)) != LT_OK)
		return st;
	if ((st = grow(&t->ent, &t->ecap, t->n + 1, sizeof *t->ent, "a string table")) != LT_OK)
		return st;
	if ((st = grow(&t->arena, &t->acap, t->alen + len, 1, "a string table")) != LT_OK)
		return st;
	memcpy(t->arena + t->alen, s, len);
	t->ent[t->n] = (struct strent){ .hash = h, .off = t->alen, .len = (uint32_t)len };
	t->alen += len;
	mask = t->nslot - 1;
	for (i = (size_t)h & mask; t->slot[i]; i = (i + 1) & mask)
		;
	t->slot[i] = (uint32_t)(t->n + 1);
	*idx = t->n++;
	return LT_OK;
}

/* (left id, right id) -> uint32 by open addressing; ids are below 2^31, so
 * the all-ones key marks an empty slot. */
#define PAIR_EMPTY UINT64_MAX

struct pairmap {
	uint64_t *key;
	uint32_t *val;
	size_t nslot, n;
};

static inline uint64_t pair_key(int32_t a, int32_t b)
{
	return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static void pairmap_fini(struct pairmap *m)
{
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof *m);
}

static inline int64_t pairmap_get(const struct pairmap *m, uint64_t k)
{
	size_t mask, i;

	if (!m->nslot)
		return -1;
	mask = m->nslot - 1;
	for (i = (size_t)mix64(k) & mask;; i = (i + 1) & mask) {
		if (m->key[i] == k)
			return m->val[i];
		if (m->key[i] == PAIR_EMPTY)
			return -1;
	}
}

static void pairmap_place(uint64_t *key, uint32_t *val, size_t mask, uint64_t k, uint32_t v)
{
	size_t i;
	for (i = (size_t)mix64(k) & mask; key[i] != PAIR_EMPTY && key[i] != k; i = (i + 1) & mask)
		;
	key[i] = k;
	val[i] = v;
}

/* Sets k to v, adding k or overwriting its value. */
static enum lt_status pairmap_put(struct pairmap *m, uint64_t k, uint32_t v)
{
	if ((m->n + 1) * 2 > m->nslot) {
		size_t nslot = m->nslot ? m->nslot * 2 : 1024, i;
		uint64_t *key = malloc(nslot * sizeof *key);
		uint32_t *val = malloc(nslot * sizeof *val);
		if (!key || !val) {
			free(key);
			free(val);
			lt_errmsg_set("cannot allocate %zu bytes for a pair table", nslot * 12);
			return LT_ERR_NOMEM;
		}
		for (i = 0; i < nslot; i++)
			key[i] = PAIR_EMPTY;
		for (i = 0; i < m->nslot; i++)
			if (m->key[i] != PAIR_EMPTY)
				pairmap_place(key, val, nslot - 1, m->key[i], m->val[i]);
		free(m->key);
		free(m->val);
		m->key = key;
		m->val = val;
		m->nslot = nslot;
	}
	{
		size_t mask = m->nslot - 1, i;
		for (i = (size_t)mix64(k) & mask; m->key[i] != PAIR_EMPTY && m->key[i] != k; i = (i + 1) & mask)
			;
		if (m->key[i] == PAIR_EMPTY)
			m->n++;
		m->key[i] = k;
		m->val[i] = v;
	}
	return LT_OK;
}

/* ------------------------------------------------- GPT-2 byte alphabet */

/* GPT-2 shows each byte as one character: the printable Latin-1 bytes
 * ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) as themselves, the other 68
 * bytes as U+0100.. in byte order. */
static unsigned bl_cp(unsigned b)
{
	if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
		return b;
	if (b <= 0x20)
		return 256 + b;
	if (b <= 0xa0)
		return 256 + 33 + (b - 0x7f);
	return 256 + 67; /* 0xad */
}

/* The byte a code point stands for, or -1 if it is not in the alphabet. */
static int bl_byte(unsigned cp)
{
	if (cp < 256)
		return bl_cp(cp) == cp ? (int)cp : -1;
	if (cp < 256 + 33)
		return (int)(cp - 256);
	if (cp < 256 + 67)
		return (int)(cp - 256 - 33 + 0x7f);
	if (cp == 256 + 67)
		return 0xad;
	return -1;
}

/* Writes the alphabet's characters for bytes s[0..n) to out (room for 2n
 * + 1 bytes), NUL-terminated; returns the length. */
static size_t bl_encode(const char *s, size_t n, char *out)
{
	size_t i, o = 0;
	for (i = 0; i < n; i++) {
		unsigned cp = bl_cp((unsigned char)s[i]);
		if (cp < 0x80) {
			out[o++] = (char)cp;
		} else {
			out[o++] = (char)(0xc0 | cp >> 6);
			out[o++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	out[o] = '\0';
	return o;
}

/* Reads alphabet characters (valid UTF-8, as jansson gives) back into bytes
 * (out has room for n); returns the byte count or -1 if a character is not
 * in the alphabet. */
static long bl_decode(const char *s, size_t n, char *out)
{
	size_t i = 0, o = 0;
	while (i < n) {
		unsigned c = (unsigned char)s[i], cp;
		int b;
		if (c < 0x80) {
			cp = c;
			i += 1;
		} else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
			cp = (c & 0x1f) << 6 | ((unsigned char)s[i + 1] & 0x3f);
			i += 2;
		} else {
			return -1;
		}
		if ((b = bl_byte(cp)) < 0)
			return -1;
		out[o++] = (char)b;
	}
	return (long)o;
}

/* ------------------------------------------------------- pre-tokeniser */

/* GPT-2's pattern, with \s spelt out as the White_Space characters that the
 * Hugging Face library's regex engine (Oniguruma) uses, which differ from
 * PCRE2's \s in U+180E. Letters and numbers come from PCRE2's Unicode
 * tables, so characters newer than those tables may split differently. */
#define WS "\\t\\n\\x{0b}\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
	"\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
static const char gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+"
	"|[" WS "]+(?![^" WS "])|[" WS "]+";

struct pretok_re {
	pcre2_code *code;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *stack;
	int jit;
};

static void re_fini(struct pretok_re *re)
{
	pcre2_match_data_free(re->md);
	pcre2_match_context_free(re->mctx);
	pcre2_jit_stack_free(re->stack);
	pcre2_code_free(re->code);
	memset(re, 0, sizeof *re);
}

static enum lt_status re_init(struct pretok_re *re)
{
	int err;
	PCRE2_SIZE at;

	memset(re, 0, sizeof *re);
	/* MATCH_INVALID_UTF: bytes that are not UTF-8 never match, so they
	 * fall between matches and become pieces of their own. */
	re->code = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
			PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
	if (!re->code) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof msg);
		lt_errmsg_set("PCRE2 cannot compile the GPT-2 pattern at offset %zu: %s", (size_t)at, (char *)msg);
		return LT_ERR_BACKEND;
	}
	re->md = pcre2_match_data_create_from_pattern(re->code, NULL);
	re->mctx = pcre2_match_context_create(NULL);
	if (!re->md || !re->mctx) {
		re_fini(re);
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

/* Walks text as pieces: each match of the pattern, and each run of bytes
 * between matches (only invalid UTF-8 is left between them). */
struct pretok {
	const struct pretok_re *re;
	const char *s;
	size_t len, pos;
	size_t ms, me; /* the next match, when ms != SIZE_MAX */
};

static void pretok_start(struct pretok *it, const struct pretok_re *re, const char *s, size_t len)
{
	*it = (struct pretok){ .re = re, .s = s, .len = len, .pos = 0, .ms = SIZE_MAX, .me = 0 };
}

/* The next piece as [*b, *e): 1, 0 at the end, or an error status < 0. */
static int pretok_next(struct pretok *it, size_t *b, size_t *e, enum lt_status *st)
{
	if (it->pos >= it->len)
		return 0;
	if (it->ms == SIZE_MAX) {
		const struct pretok_re *re = it->re;
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

struct merge {
	int32_t a, b, to;
};

/* A min-heap item of the encoder: merge rank r at symbol pos, making to. */
struct ment {
	int32_t rank, pos, to;
};

struct lt_tokenizer {
	int32_t n_vocab;
	char *blob;      /* every token's bytes, back to back */
	size_t *off;     /* token i is blob[off[i] .. off[i + 1]) */
	uint8_t *kind;   /* enum tok_kind */
	uint8_t *raw;    /* an added token whose text is not byte-level */
	int32_t byte_id[256];
	int32_t eot_id;
	int32_t n_merges;
	struct merge *merges;
	struct pairmap rank_of; /* (a, b) -> rank; a repeated pair keeps the last rank */
	int ignore_merges;      /* a piece that is a whole token skips the merges */
	struct strtab whole;    /* with ignore_merges: token bytes -> entry */
	int32_t *whole_id;

	struct pretok_re re;
	/* Encoding cache: piece bytes -> entry e, its ids at cache_ids + off. */
	struct strtab cache;
	struct centry {
		size_t off;
		uint32_t n;
	} *cache_ent;
	size_t cache_ecap;
	int32_t *cache_ids;
	size_t cache_len, cache_cap;
	/* Scratch of the merge loop. */
	int32_t *sym, *prev, *next;
	size_t sym_cap;
	struct ment *heap;
	size_t heap_cap;
};

/* What a tokenizer is made of, given to tok_build (which copies it). */
struct tokdef {
	int32_t n_vocab;
	const char *blob;
	const size_t *off;
	const uint8_t *kind, *raw;
	const int32_t *byte_id;
	int32_t n_merges;
	const struct merge *merges;
	int ignore_merges;
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
	pairmap_fini(&tok->rank_of);
	strtab_fini(&tok->whole);
	free(tok->whole_id);
	re_fini(&tok->re);
	strtab_fini(&tok->cache);
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

static enum lt_status tok_build(const struct tokdef *d, lt_tokenizer **out)
{
	lt_tokenizer *tok;
	enum lt_status st = LT_ERR_NOMEM;
	size_t nv = (size_t)d->n_vocab, nb = d->off[nv];
	int32_t i;

	*out = NULL;
	if (!(tok = alloc_zero(1, sizeof *tok, "a tokenizer")))
		return LT_ERR_NOMEM;
	tok->n_vocab = d->n_vocab;
	tok->n_merges = d->n_merges;
	tok->ignore_merges = d->ignore_merges;
	memcpy(tok->byte_id, d->byte_id, sizeof tok->byte_id);
	if (!(tok->blob = alloc_zero(nb, 1, "token bytes")) ||
			!(tok->off = alloc_zero(nv + 1, sizeof *tok->off, "token offsets")) ||
			!(tok->kind = alloc_zero(nv, 1, "token kinds")) ||
			!(tok->raw = alloc_zero(nv, 1, "token kinds")) ||
			!(tok->merges = alloc_zero((size_t)d->n_merges, sizeof *tok->merges, "merges")))
		goto fail;
	if (nb)
		memcpy(tok->blob, d->blob, nb);
	memcpy(tok->off, d->off, (nv + 1) * sizeof *tok->off);
	memcpy(tok->kind, d->kind, nv);
	memcpy(tok->raw, d->raw, nv);
	if (d->n_merges)
		memcpy(tok->merges, d->merges, (size_t)d->n_merges * sizeof *tok->merges);

	for (i = 0; i < d->n_merges; i++) {
		const struct merge *m = &d->merges[i];
		LT_ASSERT(m->a >= 0 && m->a < d->n_vocab && m->b >= 0 && m->b < d->n_vocab &&
				m->to >= 0 && m->to < d->n_vocab);
		if ((st = pairmap_put(&tok->rank_of, pair_key(m->a, m->b), (uint32_t)i)) != LT_OK)
			goto fail;
	}
	if (d->ignore_merges) {
		if (!(tok->whole_id = alloc_zero(nv, sizeof *tok->whole_id, "a token table")))
			goto fail;
		for (i = 0; i < d->n_vocab; i++) {
			const char *s = tok->blob + tok->off[i];
			size_t n = tok->off[i + 1] - tok->off[i], e;
			uint64_t h = hash_bytes(s, n);
			if (!n || tok->raw[i] || strtab_find(&tok->whole, s, n, h) >= 0)
				continue;
			if ((st = strtab_add(&tok->whole, s, n, h, &e)) != LT_OK)
				goto fail;
			tok->whole_id[e] = i;
		}
	}
	tok->eot_id = -1;
	for (i = 0; i < d->n_vocab && tok->eot_id < 0; i++)
		if (tok->kind[i] != KIND_NORMAL && eot_matches(tok, i))
			tok->eot_id = i;
	for (i = 0; i < d->n_vocab && tok->eot_id < 0; i++)
		if (eot_matches(tok, i))
			tok->eot_id = i;
	if ((st = re_init(&tok->re)) != LT_OK)
		goto fail;
	*out = tok;
	return LT_OK;
fail:
	lt_tokenizer_free(tok);
	return st;
}

static struct tokdef tok_def(const lt_tokenizer *tok)
{
	return (struct tokdef){
		.n_vocab = tok->n_vocab, .blob = tok->blob, .off = tok->off, .kind = tok->kind,
		.raw = tok->raw, .byte_id = tok->byte_id, .n_merges = tok->n_merges,
		.merges = tok->merges, .ignore_merges = tok->ignore_merges,
	};
}

enum lt_status lt_tokenizer_clone(const lt_tokenizer *tok, lt_tokenizer **out)
{
	struct tokdef d = tok_def(tok);
	return tok_build(&d, out);
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
	return (int32_t)pairmap_get(&tok->rank_of, pair_key(a, b));
}

static inline int ment_less(const struct ment *x, const struct ment *y)
{
	return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void ment_push(struct ment *h, size_t *n, struct ment m)
{
	size_t i = (*n)++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!ment_less(&m, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = m;
}

static struct ment ment_pop(struct ment *h, size_t *n)
{
	struct ment top = h[0], last = h[--(*n)];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && ment_less(&h[c + 1], &h[c]))
			c++;
		if (!ment_less(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = last;
	return top;
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
		if ((st = grow(&tok->sym, &c1, n, sizeof *tok->sym, "encoder scratch")) != LT_OK ||
				(st = grow(&tok->prev, &c2, n, sizeof *tok->prev, "encoder scratch")) != LT_OK ||
				(st = grow(&tok->next, &c3, n, sizeof *tok->next, "encoder scratch")) != LT_OK)
			return st;
		tok->sym_cap = c1 < c2 ? (c1 < c3 ? c1 : c3) : (c2 < c3 ? c2 : c3);
	}
	/* The queue holds at most 2n items: n - 1 at the start, and each merge
	 * takes one out and puts at most two in. */
	if (2 * n > tok->heap_cap &&
			(st = grow(&tok->heap, &tok->heap_cap, 2 * n, sizeof *tok->heap, "encoder scratch")) != LT_OK)
		return st;
	sym = tok->sym;
	prev = tok->prev;
	next = tok->next;
	for (i = 0; i < n; i++) {
		sym[i] = tok->byte_id[(unsigned char)p[i]];
		prev[i] = (int32_t)i - 1;
		next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	for (i = 0; i + 1 < n; i++)
		if ((r = rank_of(tok, sym[i], sym[i + 1])) >= 0)
			ment_push(tok->heap, &nh, (struct ment){ r, (int32_t)i, tok->merges[r].to });
	while (nh) {
		struct ment m = ment_pop(tok->heap, &nh);
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
			ment_push(tok->heap, &nh, (struct ment){ r, prev[a], tok->merges[r].to });
		if (next[a] >= 0 && (r = rank_of(tok, sym[a], sym[next[a]])) >= 0)
			ment_push(tok->heap, &nh, (struct ment){ r, a, tok->merges[r].to });
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

	if (n == 1)
		return ids_push(out, tok->byte_id[(unsigned char)p[0]]);
	if (tok->ignore_merges) {
		h = hash_bytes(p, n);
		if ((e = strtab_find(&tok->whole, p, n, h)) >= 0)
			return ids_push(out, tok->whole_id[e]);
	}
	if (n > CACHE_MAX_PIECE)
		return bpe_piece(tok, p, n, out);
	h = hash_bytes(p, n);
	if ((e = strtab_find(&tok->cache, p, n, h)) >= 0) {
		k = tok->cache_ent[e].n;
		if (out->n + k > out->cap &&
				(st = grow(&out->v, &out->cap, out->n + k, sizeof *out->v, "token ids")) != LT_OK)
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
		strtab_clear(&tok->cache);
		tok->cache_len = 0;
	}
	if ((st = strtab_add(&tok->cache, p, n, h, &idx)) != LT_OK)
		goto undo;
	if ((st = grow(&tok->cache_ent, &tok->cache_ecap, idx + 1, sizeof *tok->cache_ent, "the encoding cache")) != LT_OK ||
			(st = grow(&tok->cache_ids, &tok->cache_cap, tok->cache_len + k, sizeof *tok->cache_ids,
					"the encoding cache")) != LT_OK)
		goto undo;
	memcpy(tok->cache_ids + tok->cache_len, out->v + n0, k * sizeof *out->v);
	tok->cache_ent[idx] = (struct centry){ .off = tok->cache_len, .n = (uint32_t)k };
	tok->cache_len += k;
	return LT_OK;
undo:
	strtab_clear(&tok->cache);
	tok->cache_len = 0;
	return st;
}

enum lt_status lt_tokenizer_encode(lt_tokenizer *tok, const char *text, size_t len, lt_ids *out)
{
	struct pretok it;
	enum lt_status st = LT_OK;
	size_t b, e;
	int r;

	if (!len)
		return LT_OK;
	pretok_start(&it, &tok->re, text, len);
	while ((r = pretok_next(&it, &b, &e, &st)) > 0)
		if ((st = encode_piece(tok, text + b, e - b, out)) != LT_OK)
			return st;
	return r < 0 ? st : LT_OK;
}

enum lt_status lt_tokenizer_append_eot(const lt_tokenizer *tok, lt_ids *out)
{
	if (tok->eot_id < 0) {
		lt_errmsg_set("the tokenizer has no '%s' token", LT_TOKENIZER_EOT);
		return LT_ERR_NOTFOUND;
	}
	return ids_push(out, tok->eot_id);
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
		memcpy(s + total, tok->blob + tok->off[ids[i]], k);
		total += k;
	}
	s[total] = '\0';
	*text = s;
	*len = total;
	return LT_OK;
}

/* ------------------------------------------------------------ training */

struct lt_tokenizer_trainer {
	struct lt_tokenizer_train_opts opts;
	struct pretok_re re;
	struct strtab words; /* distinct pre-tokens */
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
	if (!(tr = alloc_zero(1, sizeof *tr, "a tokenizer trainer")))
		return LT_ERR_NOMEM;
	tr->opts = *opts;
	if ((st = re_init(&tr->re)) != LT_OK) {
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
	re_fini(&tr->re);
	strtab_fini(&tr->words);
	free(tr->count);
	free(tr);
}

enum lt_status lt_tokenizer_trainer_add(lt_tokenizer_trainer *tr, const char *text, size_t len)
{
	struct pretok it;
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
	pretok_start(&it, &tr->re, text, len);
	while ((r = pretok_next(&it, &b, &e, &st)) > 0) {
		uint64_t h = hash_bytes(text + b, e - b);
		int64_t w = strtab_find(&tr->words, text + b, e - b, h);
		if (w >= 0) {
			tr->count[w]++;
			continue;
		}
		if ((st = strtab_add(&tr->words, text + b, e - b, h, &idx)) != LT_OK)
			return st;
		if ((st = grow(&tr->count, &tr->count_cap, idx + 1, sizeof *tr->count, "word counts")) != LT_OK)
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
struct tpair {
	int32_t a, b;
	int64_t count;
	uint32_t *where;
	size_t nwhere, cwhere;
	int touched;
};

/* A max-heap item: more frequent first, then smaller (a, b). Items go
 * stale as counts change and are checked when they surface. */
struct tent {
	int64_t count;
	int32_t a, b;
	uint32_t pair;
};

struct learner {
	/* words, as symbol ids over the same offsets as their bytes */
	const struct strtab *words;
	const int64_t *wcount;
	int32_t *sym;
	uint32_t *wlen;
	/* pairs */
	struct tpair *pairs;
	size_t npairs, cpairs;
	struct pairmap pair_ix;
	struct tent *heap;
	size_t nheap, cheap;
	uint32_t *touched;
	size_t ntouched, ctouched;
	/* tokens, by id: 0..255 bytes, 256 the special token, then merges */
	char *blob;
	size_t blen, bcap;
	size_t *off;
	size_t coff;
	int32_t n_ids;
	struct strtab tok_ix; /* merged tokens' bytes -> entry, for repeats */
	int32_t *tok_id;
	size_t ctok_id;
	struct merge *merges;
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
	pairmap_fini(&L->pair_ix);
	free(L->heap);
	free(L->touched);
	free(L->blob);
	free(L->off);
	strtab_fini(&L->tok_ix);
	free(L->tok_id);
	free(L->merges);
}

static inline int tent_before(const struct tent *x, const struct tent *y)
{
	if (x->count != y->count)
		return x->count > y->count;
	if (x->a != y->a)
		return x->a < y->a;
	return x->b < y->b;
}

static enum lt_status tent_push(struct learner *L, const struct tpair *p, uint32_t ix)
{
	struct tent t = { .count = p->count, .a = p->a, .b = p->b, .pair = ix };
	enum lt_status st;
	size_t i;

	if ((st = grow(&L->heap, &L->cheap, L->nheap + 1, sizeof *L->heap, "the pair queue")) != LT_OK)
		return st;
	i = L->nheap++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!tent_before(&t, &L->heap[up]))
			break;
		L->heap[i] = L->heap[up];
		i = up;
	}
	L->heap[i] = t;
	return LT_OK;
}

static struct tent tent_pop(struct learner *L)
{
	struct tent *h = L->heap, top = h[0], last = h[--L->nheap];
	size_t i = 0, n = L->nheap;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && tent_before(&h[c + 1], &h[c]))
			c++;
		if (!tent_before(&h[c], &last))
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
	uint64_t k = pair_key(a, b);
	int64_t ix = pairmap_get(&L->pair_ix, k);
	enum lt_status st;
	struct tpair *p;

	if (ix < 0) {
		LT_ASSERT(delta > 0);
		if (L->npairs >= UINT32_MAX - 1) {
			lt_errmsg_set("too many distinct pairs (%zu) in the training corpus", L->npairs);
			return LT_ERR_NOMEM;
		}
		if ((st = grow(&L->pairs, &L->cpairs, L->npairs + 1, sizeof *L->pairs, "pair counts")) != LT_OK)
			return st;
		ix = (int64_t)L->npairs;
		L->pairs[ix] = (struct tpair){ .a = a, .b = b };
		if ((st = pairmap_put(&L->pair_ix, k, (uint32_t)ix)) != LT_OK)
			return st;
		L->npairs++;
	}
	p = &L->pairs[ix];
	p->count += delta;
	if (delta < 0)
		return LT_OK;
	if (!p->nwhere || p->where[p->nwhere - 1] != w) {
		if ((st = grow(&p->where, &p->cwhere, p->nwhere + 1, sizeof *p->where, "pair places")) != LT_OK)
			return st;
		p->where[p->nwhere++] = w;
	}
	if (!p->touched) {
		if ((st = grow(&L->touched, &L->ctouched, L->ntouched + 1, sizeof *L->touched, "pair counts")) != LT_OK)
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

	if ((st = grow(&L->off, &L->coff, id + 2, sizeof *L->off, "the vocabulary")) != LT_OK ||
			(st = grow(&L->blob, &L->bcap, L->blen + n, 1, "the vocabulary")) != LT_OK)
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
	h = hash_bytes(s, la + lb);
	if ((found = strtab_find(&L->tok_ix, s, la + lb, h)) >= 0) {
		*to = L->tok_id[found];
		st = LT_OK;
	} else if ((st = strtab_add(&L->tok_ix, s, la + lb, h, &e)) == LT_OK &&
			(st = grow(&L->tok_id, &L->ctok_id, e + 1, sizeof *L->tok_id, "the vocabulary")) == LT_OK) {
		*to = L->tok_id[e] = L->n_ids;
		st = add_token(L, s, la + lb);
	}
	if (s != stackbuf)
		free(s);
	return st;
}

static enum lt_status learn(struct learner *L, const struct lt_tokenizer_train_opts *opts)
{
	const struct strtab *W = L->words;
	int64_t min_freq = opts->min_frequency > 1 ? opts->min_frequency : 1;
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
	if (!(L->sym = alloc_zero(W->alen, sizeof *L->sym, "word symbols")) ||
			!(L->wlen = alloc_zero(W->n, sizeof *L->wlen, "word lengths")))
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
		if ((st = tent_push(L, &L->pairs[i], (uint32_t)i)) != LT_OK)
			return st;
	}
	L->ntouched = 0;

	while (L->n_ids < opts->vocab_size && L->nheap) {
		struct tent t = tent_pop(L);
		struct tpair *p = &L->pairs[t.pair];
		uint32_t *where;
		size_t nwhere;
		int32_t to;

		if (p->count != t.count) {
			/* Stale: requeue a fallen count; a risen one is queued already. */
			if (p->count > 0 && p->count < t.count && (st = tent_push(L, p, t.pair)) != LT_OK)
				return st;
			continue;
		}
		if (p->count < min_freq)
			break;
		if ((st = join_tokens(L, t.a, t.b, &to)) != LT_OK)
			return st;
		if ((st = grow(&L->merges, &L->cmerges, (size_t)L->n_merges + 1, sizeof *L->merges, "merges")) != LT_OK)
			return st;
		L->merges[L->n_merges++] = (struct merge){ .a = t.a, .b = t.b, .to = to };
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
			struct tpair *q = &L->pairs[L->touched[i]];
			q->touched = 0;
			if (q->count > 0 && (st = tent_push(L, q, L->touched[i])) != LT_OK)
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
	if (!(kind = alloc_zero((size_t)L.n_ids, 1, "token kinds")) ||
			!(raw = alloc_zero((size_t)L.n_ids, 1, "token kinds")))
		goto done;
	kind[LT_TOKENIZER_EOT_ID] = KIND_SPECIAL;
	for (i = 0; i < 256; i++)
		byte_id[i] = i;
	{
		struct tokdef d = {
			.n_vocab = L.n_ids, .blob = L.blob, .off = L.off, .kind = kind, .raw = raw,
			.byte_id = byte_id, .n_merges = L.n_merges, .merges = L.merges, .ignore_merges = 0,
		};
		st = tok_build(&d, out);
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

/* ------------------------------------------------------- saving */

/* The tokenizer.json text of a token: byte-level characters, or an added
 * token's own text where that is not byte-level. A new string, or NULL. */
static char *token_key(const lt_tokenizer *tok, int32_t id)
{
	const char *s = tok->blob + tok->off[id];
	size_t n = tok->off[id + 1] - tok->off[id];
	char *k = malloc(2 * n + 1);

	if (!k) {
		lt_errmsg_set("cannot allocate %zu bytes for a token", 2 * n + 1);
		return NULL;
	}
	if (tok->raw[id]) {
		memcpy(k, s, n);
		k[n] = '\0';
	} else {
		bl_encode(s, n, k);
	}
	return k;
}

static json_t *byte_level_object(void)
{
	return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
			"trim_offsets", 1, "use_regex", 1);
}

static json_t *added_token_object(const lt_tokenizer *tok, int32_t id, const char *content, int with_id)
{
	int special = tok->kind[id] == KIND_SPECIAL;
	if (with_id)
		return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (int)id, "content", content,
				"single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
	return json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", content, "single_word", 0,
			"lstrip", 0, "rstrip", 0, "normalized", 0, "special", special);
}

/* Builds the tokenizer.json document, or NULL with the error set. */
static json_t *tokenizer_json(const lt_tokenizer *tok)
{
	json_t *root = NULL, *model = NULL, *vocab = NULL, *merges = NULL, *added = NULL, *post = NULL;
	char *ka = NULL, *kb = NULL, *pair = NULL;
	int32_t i;
	int bad;

	if (!(root = json_object()) || !(model = json_object()) || !(vocab = json_object()) ||
			!(merges = json_array()) || !(added = json_array()))
		goto nomem;
	for (i = 0; i < tok->n_vocab; i++) {
		if (!(ka = token_key(tok, i)))
			goto fail;
		if (json_object_get(vocab, ka)) {
			lt_errmsg_set("tokens %lld and %" PRId32 " are both '%s'",
					(long long)json_integer_value(json_object_get(vocab, ka)), i, ka);
			goto fail;
		}
		if (json_object_set_new(vocab, ka, json_integer(i)) != 0)
			goto nomem;
		if (tok->kind[i] != KIND_NORMAL && json_array_append_new(added, added_token_object(tok, i, ka, 1)) != 0)
			goto nomem;
		free(ka);
		ka = NULL;
	}
	for (i = 0; i < tok->n_merges; i++) {
		size_t la, lb;
		if (!(ka = token_key(tok, tok->merges[i].a)) || !(kb = token_key(tok, tok->merges[i].b)))
			goto fail;
		la = strlen(ka);
		lb = strlen(kb);
		if (!(pair = malloc(la + lb + 2)))
			goto nomem;
		memcpy(pair, ka, la);
		pair[la] = ' ';
		memcpy(pair + la + 1, kb, lb + 1);
		if (json_array_append_new(merges, json_string(pair)) != 0)
			goto nomem;
		free(ka);
		free(kb);
		free(pair);
		ka = kb = pair = NULL;
	}
	if (json_object_set_new(model, "type", json_string("BPE")) ||
			json_object_set_new(model, "dropout", json_null()) ||
			json_object_set_new(model, "unk_token", json_null()) ||
			json_object_set_new(model, "continuing_subword_prefix", json_null()) ||
			json_object_set_new(model, "end_of_word_suffix", json_null()) ||
			json_object_set_new(model, "fuse_unk", json_false()) ||
			json_object_set_new(model, "byte_fallback", json_false()) ||
			(tok->ignore_merges && json_object_set_new(model, "ignore_merges", json_true())))
		goto nomem;
	/* A _new setter takes the value even when it fails. */
	bad = json_object_set_new(model, "vocab", vocab);
	vocab = NULL;
	bad |= json_object_set_new(model, "merges", merges);
	merges = NULL;
	if (bad)
		goto nomem;
	if (!(post = byte_level_object()) || json_object_set_new(post, "trim_offsets", json_false()))
		goto nomem;
	if (json_object_set_new(root, "version", json_string("1.0")) ||
			json_object_set_new(root, "truncation", json_null()) ||
			json_object_set_new(root, "padding", json_null()))
		goto nomem;
	bad = json_object_set_new(root, "added_tokens", added);
	added = NULL;
	bad |= json_object_set_new(root, "normalizer", json_null());
	bad |= json_object_set_new(root, "pre_tokenizer", byte_level_object());
	bad |= json_object_set_new(root, "post_processor", post);
	post = NULL;
	bad |= json_object_set_new(root, "decoder", byte_level_object());
	bad |= json_object_set_new(root, "model", model);
	model = NULL;
	if (bad)
		goto nomem;
	return root;
nomem:
	lt_errmsg_set("out of memory while building tokenizer.json");
fail:
	free(ka);
	free(kb);
	free(pair);
	json_decref(post);
	json_decref(added);
	json_decref(merges);
	json_decref(vocab);
	json_decref(model);
	json_decref(root);
	return NULL;
}

static json_t *config_json(const lt_tokenizer *tok, long model_max_length)
{
	json_t *cfg = json_object(), *dec = json_object();
	int32_t i;

	if (!cfg || !dec)
		goto fail;
	if (json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast")))
		goto fail;
	if (tok->eot_id >= 0 &&
			(json_object_set_new(cfg, "bos_token", json_string(LT_TOKENIZER_EOT)) ||
			 json_object_set_new(cfg, "eos_token", json_string(LT_TOKENIZER_EOT)) ||
			 json_object_set_new(cfg, "unk_token", json_string(LT_TOKENIZER_EOT))))
		goto fail;
	if (json_object_set_new(cfg, "model_max_length", json_integer(model_max_length)) ||
			json_object_set_new(cfg, "add_prefix_space", json_false()) ||
			json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false()))
		goto fail;
	for (i = 0; i < tok->n_vocab; i++) {
		char idbuf[24], *k;
		json_t *o;
		if (tok->kind[i] == KIND_NORMAL)
			continue;
		if (!(k = token_key(tok, i)))
			goto fail;
		o = added_token_object(tok, i, k, 0);
		free(k);
		snprintf(idbuf, sizeof idbuf, "%" PRId32, i);
		if (json_object_set_new(dec, idbuf, o))
			goto fail;
	}
	if (json_object_set_new(cfg, "added_tokens_decoder", dec)) {
		dec = NULL;
		goto fail;
	}
	return cfg;
fail:
	json_decref(dec);
	json_decref(cfg);
	lt_errmsg_set("out of memory while building tokenizer_config.json");
	return NULL;
}

/* Writes j to dir/name through a temporary file, fsync and rename. */
static enum lt_status write_json_atomic(const char *dir, const char *name, const json_t *j)
{
	size_t n = strlen(dir) + strlen(name) + 16;
	char *path = malloc(n), *tmp = malloc(n);
	enum lt_status st = LT_ERR_IO;
	FILE *f = NULL;
	int fd = -1, dfd;

	if (!path || !tmp) {
		free(path);
		free(tmp);
		lt_errmsg_set("cannot allocate %zu bytes for a path", n);
		return LT_ERR_NOMEM;
	}
	snprintf(path, n, "%s/%s", dir, name);
	snprintf(tmp, n, "%s/.%s.XXXXXX", dir, name);
	if ((fd = mkstemp(tmp)) < 0) {
		lt_errmsg_set("%s: cannot create a temporary file: %s", path, strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0644) != 0 || !(f = fdopen(fd, "w"))) {
		lt_errmsg_set("%s: %s", tmp, strerror(errno));
		close(fd);
		goto unlink;
	}
	if (json_dumpf(j, f, JSON_INDENT(2)) != 0 || fputc('\n', f) == EOF || fflush(f) != 0) {
		lt_errmsg_set("%s: cannot write: %s", tmp, strerror(errno));
		fclose(f);
		goto unlink;
	}
	if (fsync(fileno(f)) != 0) {
		lt_errmsg_set("%s: cannot fsync: %s", tmp, strerror(errno));
		fclose(f);
		goto unlink;
	}
	if (fclose(f) != 0) {
		lt_errmsg_set("%s: cannot close: %s", tmp, strerror(errno));
		goto unlink;
	}
	if (rename(tmp, path) != 0) {
		lt_errmsg_set("%s: cannot rename into place: %s", path, strerror(errno));
		goto unlink;
	}
	/* Make the rename itself durable. */
	if ((dfd = open(dir, O_RDONLY)) >= 0) {
		fsync(dfd);
		close(dfd);
	}
	st = LT_OK;
	goto out;
unlink:
	unlink(tmp);
out:
	free(path);
	free(tmp);
	return st;
}

enum lt_status lt_tokenizer_save(const lt_tokenizer *tok, const char *dir, long model_max_length)
{
	json_t *j;
	enum lt_status st;

	if (model_max_length <= 0) {
		lt_errmsg_set("model_max_length %ld is not positive", model_max_length);
		return LT_ERR_ARG;
	}
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		lt_errmsg_set("%s: cannot create the directory: %s", dir, strerror(errno));
		return LT_ERR_IO;
	}
	if (!(j = tokenizer_json(tok)))
		return LT_ERR_NOMEM;
	st = write_json_atomic(dir, "tokenizer.json", j);
	json_decref(j);
	if (st != LT_OK)
		return st;
	if (!(j = config_json(tok, model_max_length)))
		return LT_ERR_NOMEM;
	st = write_json_atomic(dir, "tokenizer_config.json", j);
	json_decref(j);
	return st;
}

/* ------------------------------------------------------------ loading */

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	case JSON_NULL: return "null";
	}
	return "something else";
}

/* Checks that obj.type (named what) is the string want. */
static int check_type(const json_t *obj, const char *what, const char *want)
{
	const json_t *t = json_object_get(obj, "type");
	if (!json_is_string(t)) {
		lt_errmsg_set("%s.type is %s, expected '%s'", what, t ? json_kind(t) : "missing", want);
		return 0;
	}
	if (strcmp(json_string_value(t), want) != 0) {
		lt_errmsg_set("%s.type is '%s', expected '%s'", what, json_string_value(t), want);
		return 0;
	}
	return 1;
}

/* A member that must be absent, null, or (if empty_ok) "". */
static int check_unset(const json_t *obj, const char *what, const char *key, int empty_ok)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v) || (empty_ok && json_is_string(v) && !json_string_value(v)[0]))
		return 1;
	if (json_is_string(v))
		lt_errmsg_set("%s.%s is '%s', expected null", what, key, json_string_value(v));
	else
		lt_errmsg_set("%s.%s is %s, expected null", what, key, json_kind(v));
	return 0;
}

/* Checks everything around the model; the model's own members are checked
 * where they are read. */
static int check_pipeline(const json_t *root)
{
	const json_t *pre = json_object_get(root, "pre_tokenizer"), *v;
	const json_t *dec = json_object_get(root, "decoder"), *model = json_object_get(root, "model");

	if (!check_unset(root, "tokenizer", "normalizer", 0)) {
		const json_t *nt = json_object_get(json_object_get(root, "normalizer"), "type");
		if (json_is_string(nt))
			lt_errmsg_set("normalizer.type is '%s', expected no normalizer", json_string_value(nt));
		return 0;
	}
	if (!json_is_object(pre)) {
		lt_errmsg_set("pre_tokenizer is %s, expected a ByteLevel object", pre ? json_kind(pre) : "missing");
		return 0;
	}
	if (!check_type(pre, "pre_tokenizer", "ByteLevel"))
		return 0;
	v = json_object_get(pre, "add_prefix_space");
	if (!json_is_false(v)) {
		lt_errmsg_set("pre_tokenizer.add_prefix_space is %s, expected false",
				v ? json_kind(v) : "missing (true)");
		return 0;
	}
	v = json_object_get(pre, "use_regex");
	if (v && !json_is_true(v)) {
		lt_errmsg_set("pre_tokenizer.use_regex is %s, expected true", json_kind(v));
		return 0;
	}
	if (dec && !json_is_null(dec) && !check_type(dec, "decoder", "ByteLevel"))
		return 0;
	if (!json_is_object(model)) {
		lt_errmsg_set("model is %s, expected a BPE object", model ? json_kind(model) : "missing");
		return 0;
	}
	if (json_object_get(model, "type") || !json_object_get(model, "merges"))
		if (!check_type(model, "model", "BPE"))
			return 0;
	if (!check_unset(model, "model", "dropout", 0) ||
			!check_unset(model, "model", "continuing_subword_prefix", 1) ||
			!check_unset(model, "model", "end_of_word_suffix", 1))
		return 0;
	v = json_object_get(model, "ignore_merges");
	if (v && !json_is_boolean(v)) {
		lt_errmsg_set("model.ignore_merges is %s, expected true or false", json_kind(v));
		return 0;
	}
	return 1;
}

/* The tables of a loaded file, freed by loaded_fini. */
struct loaded {
	size_t n;
	const char **text; /* by id: its string in the file */
	size_t *text_len;
	uint8_t *kind, *raw;
	char *blob;
	size_t *off;
	struct merge *merges;
	size_t n_merges;
};

static void loaded_fini(struct loaded *ld)
{
	free(ld->text);
	free(ld->text_len);
	free(ld->kind);
	free(ld->raw);
	free(ld->blob);
	free(ld->off);
	free(ld->merges);
}

/* The id that model.vocab gives the string s, or -1 (error set). */
static int32_t vocab_id(const json_t *vocab, const char *s, size_t i, const char *pair)
{
	const json_t *v = json_object_get(vocab, s);
	if (!v) {
		lt_errmsg_set("merges[%zu] '%s': '%s' is not in model.vocab", i, pair, s);
		return -1;
	}
	return (int32_t)json_integer_value(v);
}

static int read_merges(const json_t *vocab, const json_t *merges, struct loaded *ld)
{
	size_t i, cap = 0;
	char *buf = NULL;

	if (!json_is_array(merges)) {
		lt_errmsg_set("model.merges is %s, expected an array", merges ? json_kind(merges) : "missing");
		return 0;
	}
	ld->n_merges = json_array_size(merges);
	if (ld->n_merges > LT_TOKENIZER_MAX_VOCAB) {
		lt_errmsg_set("model.merges has %zu entries, more than the %d lltrain reads",
				ld->n_merges, LT_TOKENIZER_MAX_VOCAB);
		return 0;
	}
	if (!(ld->merges = alloc_zero(ld->n_merges, sizeof *ld->merges, "merges")))
		return 0;
	for (i = 0; i < ld->n_merges; i++) {
		const json_t *m = json_array_get(merges, i);
		const char *a, *b;
		size_t la, lb, need;
		int32_t ia, ib, to;

		if (json_is_string(m)) {
			const char *s = json_string_value(m), *sp = strchr(s, ' ');
			if (!sp || strchr(sp + 1, ' ')) {
				lt_errmsg_set("merges[%zu] is '%s', expected two tokens separated by one space", i, s);
				goto fail;
			}
			a = s;
			la = (size_t)(sp - s);
			b = sp + 1;
			lb = strlen(b);
		} else if (json_is_array(m) && json_array_size(m) == 2 &&
				json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
			a = json_string_value(json_array_get(m, 0));
			b = json_string_value(json_array_get(m, 1));
			la = strlen(a);
			lb = strlen(b);
		} else {
			lt_errmsg_set("merges[%zu] is %s, expected \"left right\" or [\"left\", \"right\"]", i, json_kind(m));
			goto fail;
		}
		need = 3 * (la + lb) + 8;
		if (need > cap) {
			char *nb = realloc(buf, need);
			if (!nb) {
				lt_errmsg_set("cannot allocate %zu bytes for a merge", need);
				goto fail;
			}
			buf = nb;
			cap = need;
		}
		/* buf: "a\0b\0ab\0" for look-ups, then "a b" for messages. */
		memcpy(buf, a, la);
		buf[la] = '\0';
		memcpy(buf + la + 1, b, lb);
		buf[la + 1 + lb] = '\0';
		{
			char *ab = buf + la + lb + 2, *shown = ab + la + lb + 1;
			memcpy(ab, a, la);
			memcpy(ab + la, b, lb);
			ab[la + lb] = '\0';
			memcpy(shown, a, la);
			shown[la] = ' ';
			memcpy(shown + la + 1, b, lb);
			shown[la + 1 + lb] = '\0';
			if ((ia = vocab_id(vocab, buf, i, shown)) < 0 || (ib = vocab_id(vocab, buf + la + 1, i, shown)) < 0)
				goto fail;
			if ((to = vocab_id(vocab, ab, i, shown)) < 0) {
				lt_errmsg_set("merges[%zu] '%s': the joined token '%s' is not in model.vocab", i, shown, ab);
				goto fail;
			}
		}
		ld->merges[i] = (struct merge){ .a = ia, .b = ib, .to = to };
	}
	free(buf);
	return 1;
fail:
	free(buf);
	return 0;
}

/* Assigns string s (of n bytes) to id; a second, different string for the
 * same id is an error. */
static int assign_id(struct loaded *ld, int64_t id, const char *s, size_t n, const char *where)
{
	if (ld->text[id] && (ld->text_len[id] != n || memcmp(ld->text[id], s, n) != 0)) {
		lt_errmsg_set("%s gives id %" PRId64 " to '%s', but it is already '%s'", where, id, s, ld->text[id]);
		return 0;
	}
	ld->text[id] = s;
	ld->text_len[id] = n;
	return 1;
}

static enum lt_status load_json(const json_t *root, lt_tokenizer **out)
{
	const json_t *model, *vocab, *added, *v;
	struct loaded ld = { 0 };
	enum lt_status st = LT_ERR_FORMAT;
	int64_t max_id = -1;
	int32_t byte_id[256];
	const char *key;
	size_t i, nb;

	if (!json_is_object(root)) {
		lt_errmsg_set("the top level is %s, expected an object", json_kind(root));
		return LT_ERR_FORMAT;
	}
	if (!check_pipeline(root))
		return LT_ERR_FORMAT;
	model = json_object_get(root, "model");
	vocab = json_object_get(model, "vocab");
	added = json_object_get(root, "added_tokens");
	if (!json_is_object(vocab)) {
		lt_errmsg_set("model.vocab is %s, expected an object", vocab ? json_kind(vocab) : "missing");
		return LT_ERR_FORMAT;
	}
	if (added && !json_is_null(added) && !json_is_array(added)) {
		lt_errmsg_set("added_tokens is %s, expected an array", json_kind(added));
		return LT_ERR_FORMAT;
	}
	/* Ids, from model.vocab and added_tokens. */
	json_object_foreach((json_t *)vocab, key, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= LT_TOKENIZER_MAX_VOCAB) {
			lt_errmsg_set("model.vocab['%s'] is %s, expected an id from 0 to %d", key,
					json_is_integer(v) ? "out of range" : json_kind(v), LT_TOKENIZER_MAX_VOCAB - 1);
			return LT_ERR_FORMAT;
		}
		if (json_integer_value(v) > max_id)
			max_id = json_integer_value(v);
	}
	for (i = 0; i < json_array_size(added); i++) {
		const json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
		if (!json_is_object(a) || !json_is_integer(id) || json_integer_value(id) < 0 ||
				json_integer_value(id) >= LT_TOKENIZER_MAX_VOCAB ||
				!json_is_string(json_object_get(a, "content"))) {
			lt_errmsg_set("added_tokens[%zu] is not an object with an id (0 to %d) and a content string",
					i, LT_TOKENIZER_MAX_VOCAB - 1);
			return LT_ERR_FORMAT;
		}
		if (json_integer_value(id) > max_id)
			max_id = json_integer_value(id);
	}
	if (max_id < 0) {
		lt_errmsg_set("model.vocab is empty");
		return LT_ERR_FORMAT;
	}
	ld.n = (size_t)max_id + 1;
	st = LT_ERR_NOMEM;
	if (!(ld.text = alloc_zero(ld.n, sizeof *ld.text, "the vocabulary")) ||
			!(ld.text_len = alloc_zero(ld.n, sizeof *ld.text_len, "the vocabulary")) ||
			!(ld.kind = alloc_zero(ld.n, 1, "the vocabulary")) ||
			!(ld.raw = alloc_zero(ld.n, 1, "the vocabulary")) ||
			!(ld.off = alloc_zero(ld.n + 1, sizeof *ld.off, "the vocabulary")))
		goto done;
	st = LT_ERR_FORMAT;
	json_object_foreach((json_t *)vocab, key, v)
		if (!assign_id(&ld, json_integer_value(v), key, strlen(key), "model.vocab"))
			goto done;
	for (i = 0; i < json_array_size(added); i++) {
		const json_t *a = json_array_get(added, i), *c = json_object_get(a, "content");
		int64_t id = json_integer_value(json_object_get(a, "id"));
		if (!assign_id(&ld, id, json_string_value(c), json_string_length(c), "added_tokens"))
			goto done;
		ld.kind[id] = json_is_true(json_object_get(a, "special")) ? KIND_SPECIAL : KIND_ADDED;
	}
	/* Bytes, by id: byte-level text decoded; an added token's own text. */
	nb = 0;
	for (i = 0; i < ld.n; i++) {
		if (!ld.text[i]) {
			lt_errmsg_set("id %zu is in neither model.vocab nor added_tokens", i);
			goto done;
		}
		nb += ld.text_len[i];
	}
	if (!(ld.blob = alloc_zero(nb, 1, "the vocabulary"))) {
		st = LT_ERR_NOMEM;
		goto done;
	}
	nb = 0;
	for (i = 0; i < ld.n; i++) {
		long k = bl_decode(ld.text[i], ld.text_len[i], ld.blob + nb);
		if (k < 0) {
			if (ld.kind[i] == KIND_NORMAL) {
				lt_errmsg_set("model.vocab token '%s' (id %zu) is not byte-level text, expected "
						"only characters of GPT-2's byte alphabet", ld.text[i], i);
				goto done;
			}
			memcpy(ld.blob + nb, ld.text[i], ld.text_len[i]);
			k = (long)ld.text_len[i];
			ld.raw[i] = 1;
		}
		ld.off[i] = nb;
		nb += (size_t)k;
	}
	ld.off[ld.n] = nb;
	for (i = 0; i < 256; i++) {
		char k[3];
		bl_encode((const char *)&(unsigned char){ (unsigned char)i }, 1, k);
		if (!(v = json_object_get(vocab, k))) {
			lt_errmsg_set("model.vocab has no token '%s' for byte 0x%02zx, expected all 256 byte tokens", k, i);
			goto done;
		}
		byte_id[i] = (int32_t)json_integer_value(v);
	}
	if (!read_merges(vocab, json_object_get(model, "merges"), &ld))
		goto done;
	{
		struct tokdef d = {
			.n_vocab = (int32_t)ld.n, .blob = ld.blob, .off = ld.off, .kind = ld.kind, .raw = ld.raw,
			.byte_id = byte_id, .n_merges = (int32_t)ld.n_merges, .merges = ld.merges,
			.ignore_merges = json_is_true(json_object_get(model, "ignore_merges")),
		};
		st = tok_build(&d, out);
	}
done:
	loaded_fini(&ld);
	return st;
}

enum lt_status lt_tokenizer_load(const char *path, lt_tokenizer **out)
{
	struct stat sb;
	json_error_t jerr;
	json_t *root;
	enum lt_status st;
	char *file;
	FILE *f;
	size_t n = strlen(path) + sizeof "/tokenizer.json";

	*out = NULL;
	if (!(file = malloc(n))) {
		lt_errmsg_set("cannot allocate %zu bytes for a path", n);
		return LT_ERR_NOMEM;
	}
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
		snprintf(file, n, "%s/tokenizer.json", path);
	else
		snprintf(file, n, "%s", path);
	if (!(f = fopen(file, "rb"))) {
		int err = errno;
		lt_errmsg_set("%s: cannot open: %s", file, strerror(err));
		free(file);
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root) {
		lt_errmsg_set("%s: not JSON: line %d column %d: %s", file, jerr.line, jerr.column, jerr.text);
		free(file);
		return LT_ERR_FORMAT;
	}
	st = load_json(root, out);
	if (st != LT_OK)
		lt_errmsg_prefix("%s", file);
	json_decref(root);
	free(file);
	return st;
}
