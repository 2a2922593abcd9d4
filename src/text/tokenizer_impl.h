/* Private to the tokenizer: what its parts share. tokenizer.c holds the
 * pre-tokeniser, the vocabulary, encoding and decoding; tokenizer_table.c
 * the growable arrays, the interned-string table and the pair map;
 * tokenizer_train.c BPE training; tokenizer_json.c tokenizer.json and
 * tokenizer_config.json. tokenizer.h is the one public contract.
 *
 * Ownership: each table here belongs to the struct that holds it and is
 * released with its _fini (which leaves it empty); a struct lt_tok_parts
 * is borrowed by lt_tok_build, which copies what it keeps. */
#ifndef LT_TOKENIZER_IMPL_H
#define LT_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "status.h"
#include "text/tokenizer.h"

/* What a vocabulary entry is: a learned or byte token, a special token
 * (such as "<|endoftext|>"), or another added token of a loaded file. */
enum lt_tok_kind { LT_TOK_NORMAL, LT_TOK_SPECIAL, LT_TOK_ADDED };

/* ------------------------------------------------------------ memory */

/* Grows the array *pp (of elem-byte items, capacity *cap) to hold need. */
enum lt_status lt_tok_grow(void *pp, size_t *cap, size_t need, size_t elem, const char *what);
/* calloc of n (at least 1) items, or NULL with the error set naming what. */
void *lt_tok_alloc_zero(size_t n, size_t elem, const char *what);

/* ----------------------------------------------------------- hashing */

/* The hash functions sit here, inline, because encoding and training look
 * up a table for every piece and every pair. */
static inline uint64_t lt_tok_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint64_t lt_tok_hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)n * 0xff51afd7ed558ccdULL), k;

	while (n >= 8) {
		memcpy(&k, p, 8);
		h = lt_tok_mix64(h ^ k);
		p += 8;
		n -= 8;
	}
	k = 0;
	if (n)
		memcpy(&k, p, n);
	return lt_tok_mix64(h ^ k ^ 0x2545f4914f6cdd1dULL);
}

/* ------------------------------------------------ interned strings */

/* Byte strings interned in an arena, found by open addressing. Entry i is
 * the i-th distinct string added; users keep parallel arrays by entry. */
struct lt_strent {
	uint64_t hash;
	size_t off;
	uint32_t len;
};

struct lt_strtab {
	char *arena;
	size_t alen, acap;
	struct lt_strent *ent;
	size_t n, ecap;
	uint32_t *slot; /* entry + 1, 0 for empty */
	size_t nslot;   /* a power of two, or 0 */
};

void lt_strtab_fini(struct lt_strtab *t);
/* Forgets every string, keeping the memory. */
void lt_strtab_clear(struct lt_strtab *t);
/* Adds s (of hash h), which must not be in t yet, as entry *idx. */
enum lt_status lt_strtab_add(struct lt_strtab *t, const char *s, size_t len, uint64_t h, size_t *idx);

/* The entry of s (of hash h), or -1. */
static inline int64_t lt_strtab_find(const struct lt_strtab *t, const char *s, size_t len, uint64_t h)
{
	size_t mask, i;

	if (!t->nslot)
		return -1;
	mask = t->nslot - 1;
	for (i = (size_t)h & mask;; i = (i + 1) & mask) {
		uint32_t e = t->slot[i];
		const struct lt_strent *x;
		if (!e)
			return -1;
		x = &t->ent[e - 1];
		if (x->hash == h && x->len == len && memcmp(t->arena + x->off, s, len) == 0)
			return (int64_t)e - 1;
	}
}

/* --------------------------------------------------------- pair map */

/* (left id, right id) -> uint32 by open addressing; ids are below 2^31, so
 * the all-ones key marks an empty slot. */
#define LT_PAIR_EMPTY UINT64_MAX

struct lt_pairmap {
	uint64_t *key;
	uint32_t *val;
	size_t nslot, n;
};

static inline uint64_t lt_pair_key(int32_t a, int32_t b)
{
	return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

void lt_pairmap_fini(struct lt_pairmap *m);
/* Sets k to v, adding k or overwriting its value. */
enum lt_status lt_pairmap_put(struct lt_pairmap *m, uint64_t k, uint32_t v);

/* The value of k, or -1. */
static inline int64_t lt_pairmap_get(const struct lt_pairmap *m, uint64_t k)
{
	size_t mask, i;

	if (!m->nslot)
		return -1;
	mask = m->nslot - 1;
	for (i = (size_t)lt_tok_mix64(k) & mask;; i = (i + 1) & mask) {
		if (m->key[i] == k)
			return m->val[i];
		if (m->key[i] == LT_PAIR_EMPTY)
			return -1;
	}
}

/* ---------------------------------------------------- pre-tokeniser */

/* The compiled GPT-2 pattern; one per tokenizer or trainer, since its
 * match data are scratch. */
struct lt_pretok_re {
	pcre2_code *code;
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *stack;
	int jit;
};

/* Compiles GPT-2's pattern, or (compile) any pattern of len bytes, named
 * what in messages. */
enum lt_status lt_pretok_re_init(struct lt_pretok_re *re);
enum lt_status lt_pretok_re_compile(struct lt_pretok_re *re, const char *pattern, size_t len, const char *what);
void lt_pretok_re_fini(struct lt_pretok_re *re);
/* GPT-2's pattern as PCRE2 source. */
extern const char lt_pretok_gpt2_pattern[];

/* Walks text as pieces: each match of the pattern, and each run of bytes
 * between matches (only invalid UTF-8 is left between them). */
struct lt_pretok {
	const struct lt_pretok_re *re;
	const char *s;
	size_t len, pos;
	size_t ms, me; /* the next match, when ms != SIZE_MAX */
};

void lt_pretok_start(struct lt_pretok *it, const struct lt_pretok_re *re, const char *s, size_t len);
/* The next piece as [*b, *e): 1, 0 at the end, or an error status < 0. */
int lt_pretok_next(struct lt_pretok *it, size_t *b, size_t *e, enum lt_status *st);

/* ----------------------------------------------------------- pipeline */

/* What surrounds the BPE model, as a tokenizer.json file describes it:
 * normalizer operations applied in order to each stretch of text between
 * added tokens, pre-tokenizer split steps applied one after the other to
 * every piece, and how decoding undoes the normalizer. Plain data, copied
 * by lt_tok_pipe_copy; the compiled patterns live in the tokenizer. */
enum lt_norm_kind {
	LT_NORM_PREPEND,      /* a before the stretch, unless it is empty */
	LT_NORM_REPLACE,      /* every a by b */
	LT_NORM_META_PREPEND, /* a before the stretch unless it starts with a;
			       * with first_only only at the text's start */
};

struct lt_norm_op {
	enum lt_norm_kind kind;
	char *a, *b;
	int first_only;
};

/* How a split step keeps the matches of its pattern (Hugging Face's
 * SplitDelimiterBehavior). */
enum lt_split_behavior {
	LT_SPLIT_ISOLATED, LT_SPLIT_REMOVED, LT_SPLIT_MERGED_PREV, LT_SPLIT_MERGED_NEXT, LT_SPLIT_CONTIGUOUS,
};

struct lt_split_step {
	char *pattern; /* PCRE2 source */
	enum lt_split_behavior behavior;
	int invert;    /* the pieces between matches are the delimiters */
};

#define LT_TOK_MAX_NORM 8
#define LT_TOK_MAX_STEPS 8

struct lt_tok_pipe {
	int charlevel;     /* tokens are text (SentencePiece style), not bytes */
	int byte_fallback; /* a character without a token becomes its <0xNN> tokens */
	int fuse_unk;      /* consecutive unknown characters give one unk */
	int n_norm, n_steps;
	struct lt_norm_op norm[LT_TOK_MAX_NORM];
	struct lt_split_step step[LT_TOK_MAX_STEPS];
	int dec_meta;      /* decoding turns U+2581 into a space */
	int dec_strip;     /* and then drops this many leading spaces */
	int dec_bytes;     /* decoding turns <0xNN> tokens into their bytes */
	char *unk;         /* the unknown token's text, or NULL */
	/* The file's own JSON of these parts, written back on save (NULL: the
	 * byte-level defaults). */
	char *json_normalizer, *json_pre, *json_post, *json_decoder;
};

/* The byte-level pipeline of a trained tokenizer: GPT-2's pattern alone. */
enum lt_status lt_tok_pipe_default(struct lt_tok_pipe *p);
enum lt_status lt_tok_pipe_copy(struct lt_tok_pipe *dst, const struct lt_tok_pipe *src);
void lt_tok_pipe_fini(struct lt_tok_pipe *p);

/* ------------------------------------------------------- tokenizer */

/* Merge rank r joins tokens a and b (in that order) into token to. */
struct lt_merge {
	int32_t a, b, to;
};

/* The encoder's scratch, defined in tokenizer.c. */
struct lt_tok_cached;
struct lt_tok_pending;

struct lt_tokenizer {
	int32_t n_vocab;
	char *blob;      /* every token's bytes, back to back */
	size_t *off;     /* token i is blob[off[i] .. off[i + 1]) */
	uint8_t *kind;   /* enum lt_tok_kind */
	uint8_t *raw;    /* an added token whose text is not byte-level */
	int32_t byte_id[256];      /* -1 for a byte without a token */
	int all_bytes;             /* every byte has one */
	int32_t eot_id;
	int32_t n_merges;
	struct lt_merge *merges;
	struct lt_pairmap rank_of; /* (a, b) -> rank; a repeated pair keeps the last rank */
	int ignore_merges;         /* a piece that is a whole token skips the merges */
	struct lt_strtab whole;    /* with ignore_merges: token bytes -> entry */
	int32_t *whole_id;

	struct lt_tok_pipe pipe;
	int32_t unk_id;              /* pipe.unk's id, or -1 */
	struct lt_pretok_re re[LT_TOK_MAX_STEPS]; /* pipe.step's patterns */
	/* Added tokens (not NORMAL), by first byte then longest first:
	 * added_first[c] .. added_first[c + 1] in added. */
	int32_t *added;
	int32_t n_added;
	int32_t added_first[257];
	/* Normalized text of one stretch. */
	char *norm_buf[2];
	size_t norm_cap[2];
	/* Encoding cache: piece bytes -> entry e, its ids at cache_ids + off. */
	struct lt_strtab cache;
	struct lt_tok_cached *cache_ent;
	size_t cache_ecap;
	int32_t *cache_ids;
	size_t cache_len, cache_cap;
	/* Scratch of the merge loop. */
	int32_t *sym, *prev, *next;
	size_t sym_cap;
	struct lt_tok_pending *heap;
	size_t heap_cap;
};

/* What a tokenizer is made of, given to lt_tok_build (which copies it). */
struct lt_tok_parts {
	int32_t n_vocab;
	const char *blob;
	const size_t *off;
	const uint8_t *kind, *raw;
	const int32_t *byte_id;
	int32_t n_merges;
	const struct lt_merge *merges;
	int ignore_merges;
	const struct lt_tok_pipe *pipe; /* NULL: the byte-level default */
};

/* A new tokenizer from its parts: the rank and whole-token tables built,
 * the special token found, the patterns compiled. */
enum lt_status lt_tok_build(const struct lt_tok_parts *p, lt_tokenizer **out);

/* tokenizer_pipe.c: the compiled steps, the added-token index, and
 * walking one stretch of text through normalizer and pre-tokenizer into
 * pieces, each handed to piece(tok, bytes, n). */
enum lt_status lt_tok_pipe_compile(lt_tokenizer *tok);
enum lt_status lt_tok_index_added(lt_tokenizer *tok);
/* The added token that starts at text[0..len) (longest), or -1. */
int32_t lt_tok_added_at(const lt_tokenizer *tok, const char *text, size_t len);
typedef enum lt_status (*lt_tok_piece_fn)(lt_tokenizer *tok, const char *p, size_t n, lt_ids *out);
enum lt_status lt_tok_pretokenize(lt_tokenizer *tok, const char *text, size_t len, int at_start,
		lt_tok_piece_fn piece, lt_ids *out);

/* tokenizer_pipe_json.c: the pipeline of a tokenizer.json root (1, or 0
 * with the error set naming the JSON path), and its JSON back. */
struct json_t;
int lt_tok_pipe_from_json(const struct json_t *root, struct lt_tok_pipe *p);
int lt_tok_pipe_to_json(const struct lt_tok_pipe *p, struct json_t *root, struct json_t *model);

/* tokenizer_json.c: a tokenizer from a tokenizer.json document (the file's
 * name is the caller's to add to the message). */
enum lt_status lt_tok_load_json(const struct json_t *root, lt_tokenizer **out);

#endif
