/* Tests of ZeRO's gradient reduction that need no MPI: its arithmetic
 * (the ranges each rank owns, each local rank's piece of a bucket, the sum
 * of the node's copies into every copy or into the owners' shards, against
 * a float64 reference), the exact sum of --deterministic (the same bits in
 * any order), the gradient slots' layout of stage 2, and a model whose
 * gradient buffer keeps only two blocks' slots giving bitwise the
 * gradients of a whole buffer; the closeness tests refuse NaN. */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dist/exact_sum.h"
#include "dist/grad_slots.h"
#include "dist/reduce.h"
#include "grad_helpers.h"
#include "model.h"
#include "tap.h"

static const struct lt_model_config tiny_bytes = {
	.vocab_size = 256, .dim = 64, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2,
	.ffn_dim = 160, .max_seq = 64, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0,
};

/* Sizes that leave the last range short or some ranges empty, and rank
 * counts from one up. */
static const size_t sizes[] = { 0, 1, 15, 16, 17, 40, 100, 1000, 4099, 12345 };
static const int rank_counts[] = { 1, 2, 3, 4, 7, 16 };
#define N_SIZES (sizeof sizes / sizeof *sizes)
#define N_RANKS (sizeof rank_counts / sizeof *rank_counts)

/* A small deterministic generator: a value in [-1, 1). */
static float next_value(uint64_t *state)
{
	*state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(*state >> 40) / (double)(1ULL << 23) - 1.0);
}

/* Whether off[ranks + 1] covers [0, numel) in order, with boundaries on
 * LT_REDUCE_ALIGN (or at numel) and ranges whose block counts differ by at
 * most one. */
static int ranges_fair(const size_t *off, int ranks, size_t numel)
{
	size_t fewest = SIZE_MAX, most = 0;
	if (off[0] != 0 || off[ranks] != numel)
		return 0;
	for (int r = 0; r < ranks; r++) {
		size_t n = off[r + 1] - off[r], blocks = (n + LT_REDUCE_ALIGN - 1) / LT_REDUCE_ALIGN;
		if (off[r + 1] < off[r] || (off[r] % LT_REDUCE_ALIGN && off[r] != numel))
			return 0;
		fewest = blocks < fewest ? blocks : fewest;
		most = blocks > most ? blocks : most;
	}
	return most - fewest <= 1;
}

/* The ranges and their owned parts: every size and rank count gives fair
 * ranges; every bucket [lo, hi) is the union of its owned parts, each
 * starting where the one before ended; one rank owns everything. */
static void check_ranges(void)
{
	size_t bad = 0, cases = 0, empty = 0;
	for (size_t i = 0; i < N_SIZES; i++) {
		for (size_t k = 0; k < N_RANKS; k++) {
			int ranks = rank_counts[k];
			size_t numel = sizes[i], off[17];
			lt_reduce_ranges(numel, ranks, off);
			bad += !ranges_fair(off, ranks, numel);
			for (int r = 0; r < ranks; r++)
				empty += off[r + 1] == off[r];
			for (size_t lo = 0; lo <= numel; lo += numel / 7 + 1) {
				for (size_t hi = lo; hi <= numel; hi += numel / 5 + 1) {
					size_t at = lo;
					for (int r = 0; r < ranks; r++) {
						size_t from, n = lt_reduce_owned(off, r, lo, hi, &from);
						bad += n && (from != at || from < off[r] ||
							     from + n > off[r + 1]);
						at += n;
					}
					bad += at != hi;
					cases++;
				}
			}
		}
	}
	size_t one[2];
	lt_reduce_ranges(1000, 1, one);
	tap_ok(bad == 0 && empty > 0 && one[0] == 0 && one[1] == 1000,
	       "ranges: %zu of %zu buckets split wrongly over the owners' ranges (%zu empty ranges "
	       "among the cases)", bad, cases, empty);
}

/* The pieces a node's ranks sum: in order, on LT_REDUCE_ALIGN, from 0 to n,
 * and as even as the alignment allows. */
static void check_pieces(void)
{
	size_t bad = 0;
	for (size_t i = 0; i < N_SIZES; i++) {
		for (size_t k = 0; k < N_RANKS; k++) {
			size_t n = sizes[i];
			int pieces = rank_counts[k];
			bad += lt_reduce_piece_at(n, pieces, 0) != 0 ||
			       lt_reduce_piece_at(n, pieces, pieces) != n;
			for (int j = 0; j < pieces; j++) {
				size_t a = lt_reduce_piece_at(n, pieces, j);
				size_t b = lt_reduce_piece_at(n, pieces, j + 1);
				bad += b < a || a % LT_REDUCE_ALIGN != 0;
				bad += j + 1 < pieces &&
				       b - a > (n / pieces / LT_REDUCE_ALIGN + 1) * LT_REDUCE_ALIGN;
			}
		}
	}
	tap_ok(bad == 0, "pieces: %zu misplaced over %zu sizes and %zu counts of pieces", bad,
	       N_SIZES, N_RANKS);
}

/* Whether got is the float64 sum want of terms whose magnitudes add to
 * scale, within float rounding of that many additions. */
static int near(float got, double want, double scale, int terms)
{
	return fabs((double)got - want) <= 2.0 * terms * 0x1p-24 * scale + 1e-30;
}

/* Whether got is the float64 sum want of `terms` terms whose magnitudes add
 * to scale, within float rounding of the result, the reference carrying
 * its own rounding of the terms' scale. */
static int near_exact(float got, double want, double scale, int terms)
{
	return fabs((double)got - want) <=
	       0x1p-24 * fabs(want) + 0x1p-50 * scale + 0x1p-79 * terms;
}

/* Both closeness tests refuse a NaN, on either side (a `> bound` count
 * would pass it). */
static void check_near_refuses_nan(void)
{
	tap_ok(near(1.0f, 1.0, 1.0, 2) && near_exact(1.0f, 1.0, 1.0, 2) && !near(NAN, 1.0, 1.0, 2) &&
		       !near(1.0f, NAN, 1.0, 2) && !near_exact(NAN, 1.0, 1.0, 2) &&
		       !near_exact(1.0f, NAN, 1.0, 2),
	       "the closeness tests accept equal sums and refuse a NaN on either side");
}

/* lt_reduce_sum of `count` copies over [at, at + n): into an output (and
 * added to it), and back into every copy; on OpenMP's threads or not,
 * bitwise alike and within rounding of the float64 sum. */
static void check_sum(void)
{
	enum { COUNT = 5, LEN = 5000, AT = 37, N = 4500 };
	uint64_t seed = 1;
	float *copies[COUNT], *twins[COUNT], out[N], out1[N];
	double want[N], scale[N];
	size_t far = 0, differ = 0;
	for (int c = 0; c < COUNT; c++) {
		copies[c] = malloc(LEN * sizeof **copies);
		twins[c] = malloc(LEN * sizeof **twins);
		for (int i = 0; i < LEN; i++)
			copies[c][i] = twins[c][i] = next_value(&seed) * (float)(c + 1);
	}
	for (int i = 0; i < N; i++) {
		out[i] = out1[i] = next_value(&seed);
		want[i] = out[i];
		scale[i] = fabs(out[i]);
		for (int c = 0; c < COUNT; c++) {
			want[i] += copies[c][AT + i];
			scale[i] += fabs(copies[c][AT + i]);
		}
	}
	lt_reduce_sum(copies, COUNT, AT, N, out, 1, 0);
	lt_reduce_sum(copies, COUNT, AT, N, out1, 1, 1);
	for (int i = 0; i < N; i++) {
		far += !near(out[i], want[i], scale[i], COUNT + 1);
		differ += memcmp(&out[i], &out1[i], sizeof *out) != 0;
	}
	/* in place: every copy holds the sum (less the output's term) */
	lt_reduce_sum(copies, COUNT, AT, N, NULL, 0, 1);
	lt_reduce_sum(twins, COUNT, AT, N, out, 0, 0);
	size_t outside = 0;
	for (int c = 0; c < COUNT; c++) {
		for (int i = 0; i < N; i++)
			differ += memcmp(&copies[c][AT + i], &out[i], sizeof *out) != 0;
		for (int i = 0; i < LEN; i++)
			outside += (i < AT || i >= AT + N) && copies[c][i] != twins[c][i];
	}
	for (int c = 0; c < COUNT; c++) {
		free(copies[c]);
		free(twins[c]);
	}
	tap_ok(far == 0 && differ == 0 && outside == 0,
	       "sum of %d copies: %zu of %d beyond rounding of the float64 sum, %zu differing "
	       "between one thread, OpenMP's and in place, %zu changed outside the bucket",
	       COUNT, far, N, differ, outside);
}

/* One node of `count` of `ranks` ranks (job ranks first, first + 1, ...)
 * over a buffer of numel elements: two backwards, each exchanged in
 * buckets of `bucket` elements whose copies sit at element 1 of every
 * rank's part (not at their flat offset, as in a part with slots), every
 * local rank summing its piece of each bucket into the owners' shards (the
 * second backward adding). Returns the shard elements beyond rounding of
 * the float64 sum; *cells counts them. */
static size_t node_case(size_t numel, int ranks, int first, int count, size_t bucket,
			size_t *cells)
{
	uint64_t seed = numel * 31 + (uint64_t)ranks;
	size_t off[17], bad = 0;
	float *grads[16], *shards[16];
	int rank[16];
	double *want = calloc(numel + 1, sizeof *want), *scale = calloc(numel + 1, sizeof *scale);
	lt_reduce_ranges(numel, ranks, off);
	for (int j = 0; j < count; j++) {
		rank[j] = first + j;
		grads[j] = malloc((bucket + 1) * sizeof **grads);
		shards[j] = calloc(off[rank[j] + 1] - off[rank[j]] + 1, sizeof **shards);
	}
	struct lt_reduce_node node = { .grads = grads, .shards = shards, .rank = rank, .off = off,
				       .count = count };
	for (int pass = 0; pass < 2; pass++) {
		for (size_t lo = 0; lo < numel; lo += bucket) {
			size_t hi = lo + bucket < numel ? lo + bucket : numel, at = 1;
			for (int j = 0; j < count; j++)
				for (size_t e = lo; e < hi; e++) {
					grads[j][at + e - lo] = next_value(&seed);
					want[e] += grads[j][at + e - lo];
					scale[e] += fabs(grads[j][at + e - lo]);
				}
			for (int j = 0; j < count; j++)
				lt_reduce_to_owners(&node, lo, at,
						    lo + lt_reduce_piece_at(hi - lo, count, j),
						    lo + lt_reduce_piece_at(hi - lo, count, j + 1),
						    pass > 0, j % 2);
		}
	}
	for (int j = 0; j < count; j++) {
		int r = rank[j];
		for (size_t e = off[r]; e < off[r + 1]; e++, ++*cells)
			bad += !near(shards[j][e - off[r]], want[e], scale[e], 2 * count);
		free(grads[j]);
		free(shards[j]);
	}
	free(want);
	free(scale);
	return bad;
}

/* The sum into owners: uneven ranges, empty shards, one rank, a node of
 * some of the job's ranks, buckets that cross the owners' boundaries. */
static void check_sum_to_owners(void)
{
	size_t bad = 0, cells = 0;
	bad += node_case(12345, 3, 0, 3, 1000, &cells);   /* uneven, buckets across owners */
	bad += node_case(40, 7, 0, 7, 24, &cells);        /* four of seven shards empty */
	bad += node_case(1000, 1, 0, 1, 300, &cells);     /* one rank */
	bad += node_case(4099, 4, 2, 2, 4099, &cells);    /* the second node of two: [2048, 4099) */
	bad += node_case(17, 2, 0, 2, 5, &cells);         /* a last block of one element */
	tap_ok(bad == 0 && cells == 12345 + 40 + 1000 + 2051 + 17,
	       "sum into owners: %zu of %zu shard elements beyond rounding of the float64 sum "
	       "of two backwards", bad, cells);
}

/* The exact sum: sequences of gradients from 2^-30 to 2^19 in magnitude
 * added in order and in reverse give the same bits, within float rounding
 * of the float64 sum; an element of 2^20 is out of range and said so. */
static void check_exact_sum(void)
{
	enum { SEQS = 40, N = 1000 };
	uint64_t seed = 7;
	float *g = malloc((size_t)SEQS * N * sizeof *g), ahead[N], back[N];
	double want[N] = { 0 }, scale[N] = { 0 };
	lt_exact_sum *s = NULL;
	if (!g || lt_exact_sum_new(N, &s) != LT_OK) {
		tap_ok(0, "exact sum: cannot allocate");
		free(g);
		return;
	}
	for (int q = 0; q < SEQS; q++)
		for (int i = 0; i < N; i++) {
			float v = ldexpf(next_value(&seed), (i * 7 + q) % 50 - 30);
			g[(size_t)q * N + i] = v;
			want[i] += v;
			scale[i] += fabs(v);
		}
	for (int q = 0; q < SEQS; q++)
		lt_exact_sum_add(s, g + (size_t)q * N);
	int bad = lt_exact_sum_take(s, ahead);
	for (int q = SEQS - 1; q >= 0; q--)
		lt_exact_sum_add(s, g + (size_t)q * N);
	bad |= lt_exact_sum_take(s, back);
	size_t differ = 0, far = 0;
	double most = 0;
	for (int i = 0; i < N; i++) {
		differ += memcmp(&ahead[i], &back[i], sizeof *back) != 0;
		far += !near_exact(ahead[i], want[i], scale[i], SEQS);
		most = fmax(most, scale[i]);
	}
	g[3] = 0x1p20f;
	lt_exact_sum_add(s, g);
	int out_of_range = lt_exact_sum_take(s, back);
	lt_exact_sum_free(s);
	free(g);
	tap_ok(!bad && differ == 0 && far == 0 && out_of_range,
	       "exact sum: %zu of %d elements differ between orders, %zu beyond rounding of the "
	       "float64 sum (terms adding to %g at most); 2^20 %s out of range", differ, N, far, most,
	       out_of_range ? "is" : "is not");
}

/* lt_grad_slots_index lays a buffer out as the gradient buffer with k
 * slots, whatever the model keeps: every element in place at k <= 0 and at
 * k >= layers (4), and at k = 3 within the 3-slot buffer, blocks 0 and 3
 * sharing a slot and blocks 0 to 2 apart. (Where the model puts the
 * gradients at k = 2 is check_gradient_slots's.) */
static void check_slot_index(const lt_model *whole, const lt_model *slotted,
			     const struct lt_model_config *c)
{
	struct lt_grad_slots s3, s0, s4, s9;
	lt_grad_slots_of(whole, 3, &s3);
	lt_grad_slots_of(slotted, 0, &s0);
	lt_grad_slots_of(slotted, 4, &s4);
	lt_grad_slots_of(slotted, 9, &s9);
	size_t P = lt_model_num_params(whole), G3 = lt_grad_slots_config_numel(c, 3), bad = 0;
	size_t first[4];
	for (size_t off = 0, b = 0; off < P && b < 4; off++)
		if (lt_grad_slots_block_of(&s3, off) == (int)b)
			first[b++] = off;
	for (size_t off = 0; off < P; off++) {
		size_t i3 = lt_grad_slots_index(&s3, off);
		bad += lt_grad_slots_index(&s0, off) != off;
		bad += lt_grad_slots_index(&s4, off) != off;
		bad += lt_grad_slots_index(&s9, off) != off;
		bad += i3 >= G3;
	}
	bad += lt_grad_slots_numel(&s3) != G3;
	size_t z0 = lt_grad_slots_index(&s3, first[0]);
	tap_ok(bad == 0 && z0 == lt_grad_slots_index(&s3, first[3]) &&
		       z0 != lt_grad_slots_index(&s3, first[1]) &&
		       z0 != lt_grad_slots_index(&s3, first[2]) &&
		       lt_grad_slots_index(&s3, first[1]) != lt_grad_slots_index(&s3, first[2]),
	       "slot index: %zu of %zu elements misplaced at k = 0, 3, 4 and 9", bad, P);
}

/* With two gradient slots over four blocks, the ranges a hook reads as
 * backward reports them are bitwise the whole buffer's gradient, and a
 * second backward writes rather than adds; the buffer holds the embedding,
 * the output and two blocks only. */
static void check_gradient_slots(lt_backend *be)
{
	const int B = 2, T = 8;
	struct lt_model_config c = tiny_bytes;
	lt_model *whole = NULL, *slotted = NULL;
	struct lt_grad_slots slots;
	int32_t tok[16], tgt[16];
	for (int i = 0; i < B * T; i++) {
		tok[i] = (int32_t)(i * 5 % 256);
		tgt[i] = (int32_t)(i * 11 % 256);
	}
	if (lt_model_new(be, &c, &whole) != LT_OK || lt_model_init(whole, 9) != LT_OK ||
	    lt_model_plan(whole, B, T) != LT_OK || lt_model_new(be, &c, &slotted) != LT_OK ||
	    lt_model_init(slotted, 9) != LT_OK || lt_model_plan(slotted, B, T) != LT_OK ||
	    (lt_grad_slots_of(slotted, 2, &slots), lt_grad_slots_apply(slotted, &slots)) != LT_OK) {
		tap_ok(0, "gradient slots: model setup failed");
		tap_ok(0, "slot index: model setup failed");
		lt_model_free(whole);
		lt_model_free(slotted);
		return;
	}
	size_t P = lt_model_num_params(whole), G = lt_model_grads_numel(slotted);
	float *want = malloc(P * sizeof *want), *got = calloc(P, sizeof *got);
	struct hook_copy h = { .m = slotted, .slots = &slots, .out = got };
	double loss;
	long n;
	read_plain_gradient(be, whole, tok, tgt, B, T, want);
	lt_model_set_grad_hook(slotted, &(struct lt_grad_hook){ .ctx = &h, .ready = copy_hook });
	enum lt_status st = LT_OK;
	for (int pass = 0; pass < 2 && st == LT_OK; pass++) {
		lt_model_forward(slotted, tok, tgt, 1.0f / (B * T), &loss, &n);
		st = lt_model_backward(slotted);
	}
	size_t same = 0;
	for (size_t i = 0; i < P; i++)
		same += memcmp(&want[i], &got[i], sizeof *got) == 0;
	tap_ok(st == LT_OK && same == P && G == lt_grad_slots_config_numel(&c, 2) && G < P &&
		       G == lt_grad_slots_numel(&slots) &&
		       G == P - 2 * (P - lt_grad_slots_config_numel(&c, 3)),
	       "gradient slots: %zu of %zu gradients bitwise those of the whole buffer after two "
	       "backwards; buffer of %zu elements", same, P, G);
	check_slot_index(whole, slotted, &c);
	free(want);
	free(got);
	lt_model_free(whole);
	lt_model_free(slotted);
}

int main(void)
{
	lt_backend *be = NULL;
	tap_plan(9);
	check_near_refuses_nan();
	check_ranges();
	check_pieces();
	check_sum();
	check_sum_to_owners();
	check_exact_sum();
	if (lt_backend_new("cpu", 0, &be) != LT_OK) {
		printf("Bail out! cannot open the cpu backend\n");
		return 1;
	}
	check_gradient_slots(be);
	tap_ok(be->ops->sync(be) == LT_OK, "backend reports no failure");
	lt_backend_free(be);
	return tap_done();
}
