/* ZeRO stage 3's parameter side: the rank's range, the model's slots, and
 * the gathers of what the model reads next (a block, the embedding table,
 * the output range) before it reads it. */
#include "config.h"
#include "dist/zero3.h"

#include <stdlib.h>

/* What the model reads at once, in a forward's order: piece 0 the
 * embedding table (for the lookup), piece l + 1 block l, and piece L + 1
 * the output range, with the embedding table when the head is tied (for
 * the final norm and the head). Backward reads pieces L + 1 down to 1. */
enum { NONE, COMING, HELD };

struct piece {
	size_t at, n;  /* its place in the model's buffer, and its elements */
	int state;     /* NONE, COMING (its gather under way) or HELD (on the device) */
	size_t mark;   /* COMING: the mark its gather completes by */
};

struct lt_zero3 {
	lt_dist *dist;
	lt_model *model;
	const size_t *off;            /* [size + 1] the ranks' ranges */
	int rank, size, layers, tied, slots;
	size_t begin, end;            /* this rank's range */
	lt_buf *range;                /* [end - begin] its parameters */
	size_t first, output, numel;  /* flat: where block 0 and the output range start; all */
	size_t block;                 /* elements of one block (and of a slot) */
	size_t embed_at, output_at;   /* where the model finds the two ranges now */
	struct piece *piece;          /* [layers + 2] */
	struct lt_host_view view;     /* the model's parameter buffer, once sliced */
	size_t *parts;                /* [size + 1] scratch: each rank's part of a range */
	int sliced;
	size_t bytes;
};

size_t lt_zero3_numel(const struct lt_model_config *c)
{
	int k = LT_ZERO3_SLOTS < c->n_layers ? LT_ZERO3_SLOTS : c->n_layers;
	size_t slots = (size_t)k * lt_model_config_block_params(c);
	/* the output piece, whether tied (the norm and the table) or not (the
	 * norm and the head), is the larger of the two ranges' pieces */
	size_t head = ((size_t)c->vocab_size + 1) * (size_t)c->dim;
	return slots > head ? slots : head;
}

enum lt_status lt_zero3_new(lt_dist *d, lt_model *m, const size_t *off, lt_zero3 **out)
{
	const struct lt_model_config *c = lt_model_config_of(m);
	int size = lt_dist_size(d), rank = lt_dist_rank(d);
	lt_zero3 *z = calloc(1, sizeof *z);
	*out = NULL;
	if (!z || !(z->parts = calloc((size_t)size + 1, sizeof *z->parts)) ||
	    !(z->piece = calloc((size_t)c->n_layers + 2, sizeof *z->piece))) {
		lt_zero3_free(z);
		lt_errmsg_set("cannot allocate ZeRO stage 3's state");
		return LT_ERR_NOMEM;
	}
	z->dist = d;
	z->model = m;
	z->off = off;
	z->rank = rank;
	z->size = size;
	z->layers = c->n_layers;
	z->tied = c->tied;
	z->slots = LT_ZERO3_SLOTS < z->layers ? LT_ZERO3_SLOTS : z->layers;
	z->begin = off[rank];
	z->end = off[rank + 1];
	z->first = lt_model_block_begin(m, 0);
	z->output = lt_model_block_begin(m, z->layers);
	z->numel = lt_model_num_params(m);
	z->block = lt_model_block_begin(m, 1) - z->first;
	size_t n = z->end - z->begin;
	enum lt_status st = lt_buf_new(lt_model_backend(m), LT_F32, n ? n : 1, &z->range);
	if (st != LT_OK) {
		lt_errmsg_prefix("this rank's %zu parameters", n);
		lt_zero3_free(z);
		return st;
	}
	*out = z;
	return LT_OK;
}

void lt_zero3_free(lt_zero3 *z)
{
	if (!z)
		return;
	if (z->sliced) {
		lt_model_set_param_hook(z->model, NULL);
		lt_model_set_param_sink(z->model, NULL, 0, 0);
	}
	lt_host_view_free(&z->view);
	lt_buf_free(lt_model_backend(z->model), z->range);
	free(z->piece);
	free(z->parts);
	free(z);
}

lt_ref lt_zero3_range(const lt_zero3 *z) { return (lt_ref){ z->range, 0 }; }
size_t lt_zero3_bytes(const lt_zero3 *z) { return z->bytes; }

/* The flat ranges of piece p, in the order they lie at its place: lo[i]
 * to hi[i] for each of the count it gives. */
static int ranges_of(const lt_zero3 *z, int p, size_t lo[2], size_t hi[2])
{
	if (p == 0 || p == z->layers + 1) {
		int n = 0;
		if (p) {
			lo[n] = z->output;
			hi[n++] = z->numel;
		}
		if (!p || z->tied) {
			lo[n] = 0;
			hi[n++] = z->first;
		}
		return n;
	}
	lo[0] = lt_model_block_begin(z->model, p - 1);
	hi[0] = lt_model_block_begin(z->model, p);
	return 1;
}

/* Where piece p lies once sliced: a block in slot l % slots; the
 * embedding's piece and the output piece where they fit in one slot, in
 * the slot the block before (after) them would take, so that their
 * gathers overlap the blocks' work as the blocks' do; else from the
 * buffer's start, over the slots. */
static void place_pieces(lt_zero3 *z)
{
	size_t lo[2], hi[2];
	for (int p = 0; p <= z->layers + 1; p++) {
		struct piece *q = &z->piece[p];
		int count = ranges_of(z, p, lo, hi), slot = (p + z->slots - 1) % z->slots;
		q->n = 0;
		for (int i = 0; i < count; i++)
			q->n += hi[i] - lo[i];
		q->at = q->n <= z->block ? (size_t)slot * z->block : 0;
		q->state = NONE;
	}
}

static int overlap(const struct piece *a, const struct piece *b)
{
	return a->at < b->at + b->n && b->at < a->at + a->n;
}

/* Each rank's part of the flat elements [lo, hi), as offsets from lo. */
static void parts_of(const lt_zero3 *z, size_t lo, size_t hi, size_t *part)
{
	for (int r = 0; r <= z->size; r++) {
		size_t o = z->off[r] < lo ? lo : z->off[r] > hi ? hi : z->off[r];
		part[r] = o - lo;
	}
}

/* This rank's part of the flat elements [lo, hi) into p, the host copy of
 * where they go (p[0] is element lo). */
static enum lt_status put_own_part(lt_zero3 *z, float *p, size_t lo, size_t hi)
{
	lt_backend *be = lt_model_backend(z->model);
	size_t a = z->begin > lo ? z->begin : lo, b = z->end < hi ? z->end : hi;
	if (a < b)
		be->ops->read(be, p + (a - lo), (lt_ref){ z->range, a - z->begin }, b - a);
	return be->ops->sync(be);
}

/* Starts the gather of piece p into its place, once the gathers of the
 * pieces it displaces are done. */
static enum lt_status start_piece(lt_zero3 *z, int p)
{
	struct piece *q = &z->piece[p];
	size_t lo[2], hi[2], at = q->at;
	enum lt_status st;
	for (int o = 0; o <= z->layers + 1; o++) {
		struct piece *x = &z->piece[o];
		if (o == p || x->state == NONE || !overlap(q, x))
			continue;
		if (x->state == COMING && (st = lt_dist_wait_to(z->dist, x->mark)) != LT_OK)
			return st;
		x->state = NONE;
	}
	int count = ranges_of(z, p, lo, hi);
	for (int i = 0; i < count; at += hi[i] - lo[i], i++) {
		parts_of(z, lo[i], hi[i], z->parts);
		if ((st = put_own_part(z, z->view.p + at, lo[i], hi[i])) != LT_OK ||
		    (st = lt_dist_allgatherv_start(z->dist, z->view.p + at, z->parts,
						   p == 0 ? "the embedding's all-gather" :
						   p > z->layers ? "the output range's all-gather" :
						   "the parameter all-gather of a block")) != LT_OK)
			return st;
	}
	q->state = COMING;
	q->mark = lt_dist_mark(z->dist);
	return LT_OK;
}

/* Piece p at its place on the device (its gather started if it was not,
 * and completed), and the model told where the embedding table and the
 * output range lie. */
static enum lt_status have_piece(lt_zero3 *z, int p)
{
	struct piece *q = &z->piece[p];
	enum lt_status st;
	if (q->state == NONE && (st = start_piece(z, p)) != LT_OK)
		return st;
	if (q->state == COMING) {
		if ((st = lt_dist_wait_to(z->dist, q->mark)) != LT_OK)
			return st;
		struct lt_host_view v = { .p = z->view.p + q->at, .n = q->n, .staged = z->view.staged,
					  .be = z->view.be, .ref = lt_ref_at(z->view.ref, q->at) };
		lt_host_view_write(&v);
		q->state = HELD;
	}
	if (p == 0) {
		z->embed_at = q->at;
	} else if (p == z->layers + 1) {
		z->output_at = q->at;
		if (z->tied)
			z->embed_at = q->at + (z->numel - z->output);
	}
	lt_model_place_ranges(z->model, z->embed_at, z->output_at);
	return LT_OK;
}

/* The model's hook: what it reads next where it reads it, and the gather
 * of what it reads after that under way where it does not displace it
 * (the piece after, in a forward; the block before, in a backward). */
static enum lt_status need_piece(void *ctx, int l, int backward)
{
	lt_zero3 *z = ctx;
	/* (backward reads no embedding table: its lookup's gradient needs none) */
	int p = l + 1, next = backward ? p - 1 : p + 1, lowest = backward ? 1 : 0;
	enum lt_status st = have_piece(z, p);
	/* after the output range a training forward writes the head's weight
	 * gradient into the gradient buffer: what still reads it (the last
	 * backward's exchanges) done first; only the output range's gather
	 * was started since */
	if (st == LT_OK && !backward && p == z->layers + 1)
		st = lt_dist_wait_all(z->dist);
	if (st != LT_OK || next < lowest || next > z->layers + 1 ||
	    z->piece[next].state != NONE || overlap(&z->piece[p], &z->piece[next]))
		return st;
	return start_piece(z, next);
}

enum lt_status lt_zero3_idle_pass(lt_zero3 *z, int backward)
{
	enum lt_status st = LT_OK;
	for (int l = -1; l <= z->layers && st == LT_OK; l++)
		st = need_piece(z, l, 0);
	for (int l = z->layers; backward && l >= 0 && st == LT_OK; l--)
		st = need_piece(z, l, 1);
	return st;
}

/* The model's parameter buffer in the slots' layout, and its host view. */
static enum lt_status apply_slots(lt_zero3 *z)
{
	lt_backend *be = lt_model_backend(z->model);
	size_t *block = malloc((size_t)z->layers * sizeof *block);
	if (!block) {
		lt_errmsg_set("cannot allocate the parameter slots' layout");
		return LT_ERR_NOMEM;
	}
	for (int l = 0; l < z->layers; l++)
		block[l] = (size_t)(l % z->slots) * z->block;
	struct lt_param_layout layout = { .numel = lt_zero3_numel(lt_model_config_of(z->model)),
					  .block = block };
	enum lt_status st = lt_model_set_param_layout(z->model, &layout);
	free(block);
	if (st != LT_OK)
		return st;
	z->sliced = 1;
	z->embed_at = z->output_at = 0;
	st = lt_host_view_map(&z->view, be, lt_model_params(z->model), layout.numel);
	if (st != LT_OK) {
		lt_errmsg_prefix("the host view of the gathered parameters");
		return st;
	}
	z->bytes = layout.numel * (sizeof(float) * (z->view.staged ? 2 : 1) +
				   (lt_model_precision(z->model) == LT_PRECISION_BF16 ? 2 : 0));
	return LT_OK;
}

enum lt_status lt_zero3_slice(lt_zero3 *z)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if (z->sliced)
		return LT_OK;
	/* (a model of lt_model_new_sliced has nothing to copy: it is written
	 * through the sink) */
	if (z->end > z->begin && lt_model_holds_params(z->model))
		be->ops->copy(be, (lt_ref){ z->range, 0 },
			      lt_ref_at(lt_model_params(z->model), z->begin), z->end - z->begin);
	if ((st = be->ops->sync(be)) != LT_OK)
		return st;
	place_pieces(z);
	if ((st = apply_slots(z)) != LT_OK)
		return st;
	struct lt_param_hook hook = { .ctx = z, .need = need_piece };
	lt_model_set_param_hook(z->model, &hook);
	lt_model_set_param_sink(z->model, z->range, z->begin, z->end);
	return LT_OK;
}

/* Flat elements [lo, hi) of the model's whole buffer gathered from every
 * rank's range, through a host view of where they lie. */
static enum lt_status gather_range(lt_zero3 *z, size_t lo, size_t hi, const char *what)
{
	lt_backend *be = lt_model_backend(z->model);
	struct lt_host_view v = { 0 };
	if (lo >= hi)
		return LT_OK;
	enum lt_status st = lt_host_view_map(&v, be, lt_ref_at(lt_model_params(z->model), lo),
					     hi - lo);
	if (st != LT_OK) {
		lt_errmsg_prefix("the host view of %s", what);
		return st;
	}
	parts_of(z, lo, hi, z->parts);
	if ((st = put_own_part(z, v.p, lo, hi)) == LT_OK &&
	    (st = lt_dist_allgatherv_f32(z->dist, v.p, z->parts, what)) == LT_OK) {
		lt_host_view_write(&v);
		st = be->ops->sync(be);
	}
	lt_host_view_free(&v);
	return st;
}

enum lt_status lt_zero3_whole(lt_zero3 *z)
{
	enum lt_status st;
	if (!z->sliced)
		return LT_OK;
	/* the pieces' gathers first: their buffer goes */
	if ((st = lt_dist_wait_all(z->dist)) != LT_OK)
		return st;
	lt_model_set_param_hook(z->model, NULL);
	lt_model_set_param_sink(z->model, NULL, 0, 0);
	lt_host_view_free(&z->view);
	z->sliced = 0;
	z->bytes = 0;
	if ((st = lt_model_set_param_layout(z->model, NULL)) != LT_OK)
		return st;
	return gather_range(z, 0, z->numel, "the parameter all-gather");
}

enum lt_status lt_zero3_updated(lt_zero3 *z)
{
	enum lt_status st;
	if ((st = lt_dist_wait_all(z->dist)) != LT_OK)
		return st;
	for (int p = 0; p <= z->layers + 1; p++)
		z->piece[p].state = NONE;
	/* the whole buffer: every range (sliced, each piece is gathered as the
	 * model reads it) */
	return z->sliced ? LT_OK : gather_range(z, 0, z->numel, "the parameter all-gather");
}
