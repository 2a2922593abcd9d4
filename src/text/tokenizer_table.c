/* The tokenizer's tables (see tokenizer_impl.h): growable arrays, byte
 * strings interned in an arena, and the map from pairs of ids to ranks or
 * counts, all by open addressing. */
#include "config.h"
#include "text/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- memory */

enum lt_status lt_tok_grow(void *pp, size_t *cap, size_t need, size_t elem, const char *what)
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

void *lt_tok_alloc_zero(size_t n, size_t elem, const char *what)
{
	void *p = calloc(n ? n : 1, elem);
	if (!p)
		lt_errmsg_set("cannot allocate %zu bytes for %s", n * elem, what);
	return p;
}

/* ------------------------------------------------------ interned strings */

void lt_strtab_fini(struct lt_strtab *t)
{
	free(t->arena);
	free(t->ent);
	free(t->slot);
	memset(t, 0, sizeof *t);
}

void lt_strtab_clear(struct lt_strtab *t)
{
	t->alen = 0;
	t->n = 0;
	if (t->slot)
		memset(t->slot, 0, t->nslot * sizeof *t->slot);
}

static enum lt_status strtab_rehash(struct lt_strtab *t, size_t nslot)
{
	uint32_t *slot = lt_tok_alloc_zero(nslot, sizeof *slot, "a string table");
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

enum lt_status lt_strtab_add(struct lt_strtab *t, const char *s, size_t len, uint64_t h, size_t *idx)
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
	if ((st = lt_tok_grow(&t->ent, &t->ecap, t->n + 1, sizeof *t->ent, "a string table")) != LT_OK)
		return st;
	if ((st = lt_tok_grow(&t->arena, &t->acap, t->alen + len, 1, "a string table")) != LT_OK)
		return st;
	memcpy(t->arena + t->alen, s, len);
	t->ent[t->n] = (struct lt_strent){ .hash = h, .off = t->alen, .len = (uint32_t)len };
	t->alen += len;
	mask = t->nslot - 1;
	for (i = (size_t)h & mask; t->slot[i]; i = (i + 1) & mask)
		;
	t->slot[i] = (uint32_t)(t->n + 1);
	*idx = t->n++;
	return LT_OK;
}

/* -------------------------------------------------------------- pair map */

void lt_pairmap_fini(struct lt_pairmap *m)
{
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof *m);
}

static void pairmap_place(uint64_t *key, uint32_t *val, size_t mask, uint64_t k, uint32_t v)
{
	size_t i;
	for (i = (size_t)lt_tok_mix64(k) & mask; key[i] != LT_PAIR_EMPTY && key[i] != k; i = (i + 1) & mask)
		;
	key[i] = k;
	val[i] = v;
}

enum lt_status lt_pairmap_put(struct lt_pairmap *m, uint64_t k, uint32_t v)
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
			key[i] = LT_PAIR_EMPTY;
		for (i = 0; i < m->nslot; i++)
			if (m->key[i] != LT_PAIR_EMPTY)
				pairmap_place(key, val, nslot - 1, m->key[i], m->val[i]);
		free(m->key);
		free(m->val);
		m->key = key;
		m->val = val;
		m->nslot = nslot;
	}
	{
		size_t mask = m->nslot - 1, i;
		for (i = (size_t)lt_tok_mix64(k) & mask; m->key[i] != LT_PAIR_EMPTY && m->key[i] != k; i = (i + 1) & mask)
			;
		if (m->key[i] == LT_PAIR_EMPTY)
			m->n++;
		m->key[i] = k;
		m->val[i] = v;
	}
	return LT_OK;
}
