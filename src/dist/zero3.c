/* ZeRO stage 3's parameter side: the rank's range, the model's block
 * slots, and the gathers of blocks before they compute. */
#include "config.h"
#include "dist/zero3.h"

#include <stdlib.h>

#include "dist/grad_slots.h"

struct lt_zero3 {
	lt_dist *dist;
	lt_model *model;
	const size_t *off;            /* [size + 1] the ranks' ranges */
	int rank, size, layers;
	size_t begin, end;            /* this rank's range */
	lt_buf *range;                /* [end - begin] its parameters */
	struct lt_grad_slots layout;  /* of the model's parameter buffer, sliced */
	int sliced;
	/* per slot: a host view of it, the block it holds (-1: none), the
	 * block whose gather into it is under way (-1: none) and the mark
	 * that gather completes by */
	struct lt_host_view view[LT_ZERO3_BLOCK_SLOTS];
	int holds[LT_ZERO3_BLOCK_SLOTS], coming[LT_ZERO3_BLOCK_SLOTS];
	size_t mark[LT_ZERO3_BLOCK_SLOTS];
	size_t *parts[LT_ZERO3_BLOCK_SLOTS];  /* [size + 1] each rank's part of its block */
	size_t *kept;                 /* [size + 1] scratch: the parts of a whole range */
	size_t bytes;
};

enum lt_status lt_zero3_new(lt_dist *d, lt_model *m, const size_t *off, lt_zero3 **out)
{
	int size = lt_dist_size(d), rank = lt_dist_rank(d);
	lt_zero3 *z = calloc(1, sizeof *z);
	*out = NULL;
	if (!z || !(z->kept = calloc((size_t)size + 1, sizeof *z->kept))) {
		free(z);
		lt_errmsg_set("cannot allocate ZeRO stage 3's state");
		return LT_ERR_NOMEM;
	}
	z->dist = d;
	z->model = m;
	z->off = off;
	z->rank = rank;
	z->size = size;
	z->layers = lt_model_config_of(m)->n_layers;
	z->begin = off[rank];
	z->end = off[rank + 1];
	for (int s = 0; s < LT_ZERO3_BLOCK_SLOTS; s++) {
		z->holds[s] = z->coming[s] = -1;
		if (!(z->parts[s] = calloc((size_t)size + 1, sizeof *z->parts[s]))) {
			lt_zero3_free(z);
			lt_errmsg_set("cannot allocate ZeRO stage 3's state");
			return LT_ERR_NOMEM;
		}
	}
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

static void free_views(lt_zero3 *z)
{
	for (int s = 0; s < LT_ZERO3_BLOCK_SLOTS; s++) {
		lt_host_view_free(&z->view[s]);
		z->holds[s] = z->coming[s] = -1;
	}
}

void lt_zero3_free(lt_zero3 *z)
{
	if (!z)
		return;
	if (z->sliced)
		lt_model_set_param_hook(z->model, NULL);
	free_views(z);
	lt_buf_free(lt_model_backend(z->model), z->range);
	for (int s = 0; s < LT_ZERO3_BLOCK_SLOTS; s++)
		free(z->parts[s]);
	free(z->kept);
	free(z);
}

lt_ref lt_zero3_range(const lt_zero3 *z) { return (lt_ref){ z->range, 0 }; }
size_t lt_zero3_bytes(const lt_zero3 *z) { return z->bytes; }

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

/* Starts the gather of block l into its slot. */
static enum lt_status start_block(lt_zero3 *z, int l)
{
	int s = l % LT_ZERO3_BLOCK_SLOTS;
	size_t lo = lt_model_block_begin(z->model, l), hi = lt_model_block_begin(z->model, l + 1);
	enum lt_status st;
	/* the slot's last gather must be done before this one writes there */
	if (z->coming[s] >= 0 && (st = lt_dist_wait_to(z->dist, z->mark[s])) != LT_OK)
		return st;
	z->holds[s] = -1;
	parts_of(z, lo, hi, z->parts[s]);
	if ((st = put_own_part(z, z->view[s].p, lo, hi)) != LT_OK ||
	    (st = lt_dist_allgatherv_start(z->dist, z->view[s].p, z->parts[s],
					   "the parameter all-gather of a block")) != LT_OK)
		return st;
	z->coming[s] = l;
	z->mark[s] = lt_dist_mark(z->dist);
	return LT_OK;
}

/* Block l in its slot on the device: its gather started if it was not,
 * and completed. */
static enum lt_status have_block(lt_zero3 *z, int l)
{
	int s = l % LT_ZERO3_BLOCK_SLOTS;
	enum lt_status st;
	if (z->holds[s] == l)
		return LT_OK;
	if (z->coming[s] != l && (st = start_block(z, l)) != LT_OK)
		return st;
	if ((st = lt_dist_wait_to(z->dist, z->mark[s])) != LT_OK)
		return st;
	lt_host_view_write(&z->view[s]);
	z->coming[s] = -1;
	z->holds[s] = l;
	return LT_OK;
}

/* The model's hook: block l where it computes, and the gather of the
 * block after it in this pass (the one before it in a backward) under
 * way into the other slot. */
static enum lt_status need_block(void *ctx, int l, int backward)
{
	lt_zero3 *z = ctx;
	int next = backward ? l - 1 : l + 1, s = next % LT_ZERO3_BLOCK_SLOTS;
	enum lt_status st = have_block(z, l);
	if (st != LT_OK || next < 0 || next >= z->layers || next % LT_ZERO3_BLOCK_SLOTS == l %
	    LT_ZERO3_BLOCK_SLOTS || z->holds[s] == next || z->coming[s] == next)
		return st;
	return start_block(z, next);
}

enum lt_status lt_zero3_idle_pass(lt_zero3 *z, int backward)
{
	enum lt_status st = LT_OK;
	for (int l = 0; l < z->layers && st == LT_OK; l++)
		st = need_block(z, l, 0);
	for (int l = z->layers - 1; backward && l >= 0 && st == LT_OK; l--)
		st = need_block(z, l, 1);
	return st;
}

/* Host views of the model's slots. */
static enum lt_status map_slots(lt_zero3 *z)
{
	lt_backend *be = lt_model_backend(z->model);
	lt_ref params = lt_model_params(z->model);
	for (int s = 0; s < LT_ZERO3_BLOCK_SLOTS && s < z->layers; s++) {
		size_t at = lt_grad_slots_index(&z->layout, z->layout.first + (size_t)s * z->layout.block);
		enum lt_status st = lt_host_view_map(&z->view[s], be, lt_ref_at(params, at),
						     z->layout.block);
		if (st != LT_OK) {
			lt_errmsg_prefix("the host view of a block's parameters");
			return st;
		}
		if (z->view[s].staged)
			z->bytes += z->layout.block * sizeof(float);
	}
	return LT_OK;
}

/* The model's parameter buffer in the slots' layout. */
static enum lt_status apply_slots(lt_zero3 *z)
{
	size_t *block = malloc((size_t)z->layers * sizeof *block);
	if (!block) {
		lt_errmsg_set("cannot allocate the parameter slots' layout");
		return LT_ERR_NOMEM;
	}
	for (int l = 0; l < z->layers; l++)
		block[l] = lt_grad_slots_index(&z->layout, z->layout.first + (size_t)l * z->layout.block);
	struct lt_grad_layout layout = { .numel = lt_grad_slots_numel(&z->layout),
					 .output = lt_grad_slots_index(&z->layout, z->layout.output),
					 .block = block };
	enum lt_status st = lt_model_set_param_layout(z->model, &layout);
	free(block);
	return st;
}

enum lt_status lt_zero3_slice(lt_zero3 *z)
{
	lt_backend *be = lt_model_backend(z->model);
	enum lt_status st;
	if (z->sliced)
		return LT_OK;
	if (z->end > z->begin)
		be->ops->copy(be, (lt_ref){ z->range, 0 },
			      lt_ref_at(lt_model_params(z->model), z->begin), z->end - z->begin);
	if ((st = be->ops->sync(be)) != LT_OK)
		return st;
	lt_grad_slots_of(z->model, LT_ZERO3_BLOCK_SLOTS, &z->layout);
	if ((st = apply_slots(z)) != LT_OK)
		return st;
	z->sliced = 1;
	z->bytes = 0;
	if ((st = map_slots(z)) != LT_OK)
		return st;
	z->bytes += lt_model_params_numel(z->model) * sizeof(float);
	struct lt_param_hook hook = { .ctx = z, .need = need_block };
	lt_model_set_param_hook(z->model, &hook);
	return LT_OK;
}

/* Flat elements [lo, hi) of the model's buffer gathered from every
 * rank's range, through a host view of where they lie. */
static enum lt_status gather_range(lt_zero3 *z, size_t lo, size_t hi, const char *what)
{
	lt_backend *be = lt_model_backend(z->model);
	struct lt_host_view v = { 0 };
	if (lo >= hi)
		return LT_OK;
	lt_ref at = lt_ref_at(lt_model_params(z->model), lt_model_param_index(z->model, lo));
	enum lt_status st = lt_host_view_map(&v, be, at, hi - lo);
	if (st != LT_OK) {
		lt_errmsg_prefix("the host view of %s", what);
		return st;
	}
	parts_of(z, lo, hi, z->kept);
	if ((st = put_own_part(z, v.p, lo, hi)) == LT_OK &&
	    (st = lt_dist_allgatherv_f32(z->dist, v.p, z->kept, what)) == LT_OK) {
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
	/* the slots' gathers first: their buffers go */
	if ((st = lt_dist_wait_all(z->dist)) != LT_OK)
		return st;
	lt_model_set_param_hook(z->model, NULL);
	free_views(z);
	if ((st = lt_model_set_param_layout(z->model, NULL)) != LT_OK)
		return st;
	z->sliced = 0;
	return gather_range(z, lt_model_block_begin(z->model, 0),
			    lt_model_block_begin(z->model, z->layers), "the parameter all-gather");
}

enum lt_status lt_zero3_updated(lt_zero3 *z)
{
	enum lt_status st;
	size_t first = lt_model_block_begin(z->model, 0), output = lt_model_block_begin(z->model, z->layers);
	if ((st = lt_dist_wait_all(z->dist)) != LT_OK)
		return st;
	for (int s = 0; s < LT_ZERO3_BLOCK_SLOTS; s++)
		z->holds[s] = z->coming[s] = -1;
	if (!z->sliced) {
		/* the whole buffer: every range */
		return gather_range(z, 0, lt_model_num_params(z->model), "the parameter all-gather");
	}
	if ((st = gather_range(z, 0, first, "the embedding's all-gather")) != LT_OK)
		return st;
	return gather_range(z, output, lt_model_num_params(z->model),
			    "the output range's all-gather");
}
