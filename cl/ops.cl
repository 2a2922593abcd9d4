/* The OpenCL kernels of every op but GEMM and attention; cl_ops.c launches them.
 *
 * Shapes follow src/backend.h. Three launch shapes recur:
 *   elementwise: 1D grid-stride loop over size_t indices (any n);
 *   row: one work-group per row, its items striding over the row's columns;
 *   tile: 1D groups of L items, group g = row (g / tiles) and column tile
 *         (g % tiles), item = one column (no 2D grid: CUDA caps its y at 65535).
 * Work-group sizes of the kernels that reduce in local memory are powers of two.
 * Activations, weights and their gradients are arrays of f32 or bf16 (bf16.cl);
 * token ids are int, statistics, the gradients added into and AdamW's arrays
 * float (src/backend.h's types). */
#ifdef LT_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

/* ------------------------------------------------------------------ */
/* Accumulators: acc_t is a double where the device has one, else a float
 * pair (sum, error) added with Knuth's exact TwoSum (compensated). Both are
 * 8 bytes, which the host sizes scratch and local memory by. */

#ifdef LT_FP64
typedef double acc_t;

static inline acc_t acc_zero(void)
{
	return 0.0;
}

static inline acc_t acc_add(acc_t a, float x)
{
	return a + (double)x;
}

/* a + x^2, the square exact in double as on the CPU */
static inline acc_t acc_add_square(acc_t a, float x)
{
	return a + (double)x * (double)x;
}

static inline acc_t acc_merge(acc_t a, acc_t b)
{
	return a + b;
}

/* a * exp(from - to): a sum of exponentials relative to `from` moved to `to` */
static inline acc_t acc_rebase(acc_t a, float from, float to)
{
	return a * exp((double)from - (double)to);
}

static inline float acc_float(acc_t a)
{
	return (float)a;
}
#else
typedef float2 acc_t;

static inline acc_t acc_zero(void)
{
	return (float2)(0.0f, 0.0f);
}

static inline acc_t acc_add(acc_t a, float x)
{
	float s = a.x + x, bp = s - a.x;
	float err = (a.x - (s - bp)) + (x - bp);
	return (float2)(s, a.y + err);
}

static inline acc_t acc_add_square(acc_t a, float x)
{
	return acc_add(a, x * x);
}

static inline acc_t acc_merge(acc_t a, acc_t b)
{
	acc_t r = acc_add(a, b.x);
	r.y += b.y;
	return r;
}

static inline acc_t acc_rebase(acc_t a, float from, float to)
{
	return a * exp(from - to);
}

static inline float acc_float(acc_t a)
{
	return a.x + a.y;
}
#endif

/* The sum over the work-group (dimension 0, a power of two) of each item's
 * v, in a fixed tree order; every item gets it. sh holds local_size. */
static inline acc_t group_sum_acc(local acc_t *sh, acc_t v)
{
	int lid = get_local_id(0);
	sh[lid] = v;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = get_local_size(0) / 2; h > 0; h >>= 1) {
		if (lid < h)
			sh[lid] = acc_merge(sh[lid], sh[lid + h]);
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	acc_t r = sh[0];
	barrier(CLK_LOCAL_MEM_FENCE);
	return r;
}

/* As group_sum_acc, in float. */
static inline float group_sum(local float *sh, float v)
{
	int lid = get_local_id(0);
	sh[lid] = v;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = get_local_size(0) / 2; h > 0; h >>= 1) {
		if (lid < h)
			sh[lid] += sh[lid + h];
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	float r = sh[0];
	barrier(CLK_LOCAL_MEM_FENCE);
	return r;
}

/* ------------------------------------------------------------------ */
/* Elementwise, grid-stride over n (up to several billion). Each item takes
 * four elements a round, i, i + S, i + 2S, i + 3S (S the grid size), and
 * loads all four before it stores any: with one load in flight per item a
 * GPU reaches about half its memory bandwidth. The rest go one at a time.
 * The elements before the written array's first 128-byte boundary go
 * first (lead_in), so that the rounds' stores fill whole lines: partial
 * sectors cost a read each, half the write bandwidth of an H100. */

/* Elements of an array at element offset off before its first 128-byte
 * boundary (buffers start on one), at most n: lead_in for f32 arrays,
 * lead_in_of for an array of either type. */
static inline size_t lead_in_of(ulong off, ulong n, int bf)
{
	ulong line = bf ? 64 : 32;
	size_t k = (line - off % line) % line;
	return k < n ? k : (size_t)n;
}

static inline size_t lead_in(ulong off, ulong n)
{
	return lead_in_of(off, n, 0);
}

/* dst[n] = bf16(src[n]) */
kernel void lt_f32_to_bf16(global ushort *d_base, ulong d_off, global const float *s_base,
			   ulong s_off, ulong n)
{
	global ushort *d = d_base + d_off;
	global const float *s = s_base + s_off;
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0))
		d[i] = bf16_round(s[i]);
}

/* dst[n] = float(src[n]) */
kernel void lt_bf16_to_f32(global float *d_base, ulong d_off, global const ushort *s_base,
			   ulong s_off, ulong n)
{
	global float *d = d_base + d_off;
	global const ushort *s = s_base + s_off;
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0))
		d[i] = bf16_widen(s[i]);
}

/* Index in a batch of rows x cols matrices (row stride ld, batch stride
 * stride) of its i-th element in order. */
static inline size_t matrix_index(size_t i, int rows, int cols, int ld, ulong stride)
{
	size_t per = (size_t)rows * cols, b = i / per, r = i % per / cols, col = i % cols;
	return b * stride + r * ld + col;
}

/* dst = bf16(src) over the matrices' own elements */
kernel void lt_f32_to_bf16_matrices(global ushort *d_base, ulong d_off,
				    global const float *s_base, ulong s_off, int rows, int cols,
				    int ld, ulong stride, ulong n)
{
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) {
		size_t at = matrix_index(i, rows, cols, ld, stride);
		d_base[d_off + at] = bf16_round(s_base[s_off + at]);
	}
}

/* p[i] + p[n + i] + ... + p[(slices - 1) n + i], in that order. */
static inline float slice_sum(global const float *p, int slices, size_t n, size_t i)
{
	float s = 0.0f;
	for (int k = 0; k < slices; k++)
		s += p[(size_t)k * n + i];
	return s;
}

/* c = alpha (p[0] + p[1] + ... + p[slices - 1]) + beta c over a rows x cols matrix of
 * leading dimension ld (beta == 0: c is not read), the slices [slices][rows][cols]
 * summed in their order: the partial products of a GEMM split along k. */
kernel void lt_sum_slices(global float *c_base, ulong c_off, int ld, global const float *p_base,
			  ulong p_off, int slices, int rows, int cols, float alpha, float beta)
{
	size_t n = (size_t)rows * cols;
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) {
		float s = slice_sum(p_base + p_off, slices, n, i);
		size_t at = c_off + i / (size_t)cols * (size_t)ld + i % (size_t)cols;
		c_base[at] = beta == 0.0f ? alpha * s : alpha * s + beta * c_base[at];
	}
}

/* The same into a bf16 c, rounded once to nearest even. */
kernel void lt_sum_slices_bf16(global ushort *c_base, ulong c_off, int ld,
			       global const float *p_base, ulong p_off, int slices, int rows,
			       int cols, float alpha, float beta)
{
	size_t n = (size_t)rows * cols;
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) {
		float s = slice_sum(p_base + p_off, slices, n, i);
		size_t at = c_off + i / (size_t)cols * (size_t)ld + i % (size_t)cols;
		c_base[at] = bf16_round(beta == 0.0f ? alpha * s
						     : alpha * s + beta * bf16_widen(c_base[at]));
	}
}

/* dst = float(src) over the matrices' own elements */
kernel void lt_bf16_to_f32_matrices(global float *d_base, ulong d_off,
				    global const ushort *s_base, ulong s_off, int rows, int cols,
				    int ld, ulong stride, ulong n)
{
	for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) {
		size_t at = matrix_index(i, rows, cols, ld, stride);
		d_base[d_off + at] = bf16_widen(s_base[s_off + at]);
	}
}

/* The four elements p[i + k S], k < 4, of an array of either type, as a
 * vector; and back. */
static inline float4 load4_of(global const uchar *p, size_t i, size_t S, int bf)
{
	return (float4)(load_elem(p, i, bf), load_elem(p, i + S, bf), load_elem(p, i + 2 * S, bf),
			load_elem(p, i + 3 * S, bf));
}

static inline void store4_of(global uchar *p, size_t i, size_t S, float4 v, int bf)
{
	store_elem(p, i, v.x, bf);
	store_elem(p, i + S, v.y, bf);
	store_elem(p, i + 2 * S, v.z, bf);
	store_elem(p, i + 3 * S, v.w, bf);
}

/* The same on f32 arrays. */
static inline float4 load4(global const float *p, size_t i, size_t S)
{
	return (float4)(p[i], p[i + S], p[i + 2 * S], p[i + 3 * S]);
}

static inline void store4(global float *p, size_t i, size_t S, float4 v)
{
	p[i] = v.x;
	p[i + S] = v.y;
	p[i + 2 * S] = v.z;
	p[i + 3 * S] = v.w;
}

/* x[n] = value, x at element offset x_off of its buffer */
BODY void fill_body(global uchar *x, ulong x_off, ulong n, float value, int bf)
{
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in_of(x_off, n, bf);
	for (size_t k = i; k < pre; k += S)
		store_elem(x, k, value, bf);
	x = ELEM_AT(x, pre, bf);
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S)
		store4_of(x, i, S, (float4)(value), bf);
	for (; i < n; i += S)
		store_elem(x, i, value, bf);
}

kernel void lt_fill(global uchar *x_base, ulong x_off, int x_bf, ulong n, float value)
{
	global uchar *x = ELEM_AT(x_base, x_off, x_bf);
	if (x_bf)
		fill_body(x, x_off, n, value, 1);
	else
		fill_body(x, x_off, n, value, 0);
}

/* x[n] *= s */
BODY void scale_body(global uchar *x, ulong x_off, ulong n, float s, int bf)
{
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in_of(x_off, n, bf);
	for (size_t k = i; k < pre; k += S)
		store_elem(x, k, load_elem(x, k, bf) * s, bf);
	x = ELEM_AT(x, pre, bf);
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S)
		store4_of(x, i, S, load4_of(x, i, S, bf) * s, bf);
	for (; i < n; i += S)
		store_elem(x, i, load_elem(x, i, bf) * s, bf);
}

kernel void lt_scale(global uchar *x_base, ulong x_off, int x_bf, ulong n, float s)
{
	global uchar *x = ELEM_AT(x_base, x_off, x_bf);
	if (x_bf)
		scale_body(x, x_off, n, s, 1);
	else
		scale_body(x, x_off, n, s, 0);
}

/* y[n] = a[n] + b[n]; y may be a or b (each element is read, then written, by one item) */
BODY void add_body(global uchar *y, ulong y_off, global const uchar *a, global const uchar *b,
		   ulong n, int ybf, int abf, int bbf)
{
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in_of(y_off, n, ybf);
	for (size_t k = i; k < pre; k += S)
		store_elem(y, k, load_elem(a, k, abf) + load_elem(b, k, bbf), ybf);
	y = ELEM_AT(y, pre, ybf);
	a = ELEM_AT(a, pre, abf);
	b = ELEM_AT(b, pre, bbf);
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		float4 va = load4_of(a, i, S, abf), vb = load4_of(b, i, S, bbf);
		store4_of(y, i, S, va + vb, ybf);
	}
	for (; i < n; i += S)
		store_elem(y, i, load_elem(a, i, abf) + load_elem(b, i, bbf), ybf);
}

kernel void lt_add(global uchar *y_base, ulong y_off, int y_bf, global const uchar *a_base,
		   ulong a_off, int a_bf, global const uchar *b_base, ulong b_off, int b_bf,
		   ulong n)
{
	global uchar *y = ELEM_AT(y_base, y_off, y_bf);
	global const uchar *a = ELEM_AT(a_base, a_off, a_bf), *b = ELEM_AT(b_base, b_off, b_bf);
	if (y_bf | a_bf | b_bf)
		add_body(y, y_off, a, b, n, y_bf, a_bf, b_bf);
	else
		add_body(y, y_off, a, b, n, 0, 0, 0);
}

/* One AdamW update of P, M, V from G (float or float4, elementwise), in the
 * CPU's order of operations; the bias corrections come as their inverses. */
#define ADAMW_UPDATE(P, G, M, V) do { \
		(G) *= gs; \
		(M) = b1 * (M) + omb1 * (G); \
		(V) = b2 * (V) + omb2 * (G) * (G); \
		(P) -= lr * ((M) * ibc1 / (sqrt((V) * ibc2) + eps) + wd * (P)); \
	} while (0)

/* AdamW on one element */
static inline void adamw_one(global float *p, global const float *g, global float *m,
			     global float *v, float b1, float b2, float omb1, float omb2, float lr,
			     float eps, float wd, float gs, float ibc1, float ibc2)
{
	float pi = *p, gi = *g, mi = *m, vi = *v;
	ADAMW_UPDATE(pi, gi, mi, vi);
	*m = mi;
	*v = vi;
	*p = pi;
}

/* AdamW over p, g, m, v[n] with the host's constants */
kernel void lt_adamw(global float *p_base, ulong p_off, global const float *g_base, ulong g_off,
		     global float *m_base, ulong m_off, global float *v_base, ulong v_off, ulong n,
		     float b1, float b2, float omb1, float omb2, float lr, float eps, float wd,
		     float gs, float ibc1, float ibc2)
{
	global float *p = p_base + p_off, *m = m_base + m_off, *v = v_base + v_off;
	global const float *g = g_base + g_off;
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in(p_off, n);
	for (size_t k = i; k < pre; k += S)
		adamw_one(p + k, g + k, m + k, v + k, b1, b2, omb1, omb2, lr, eps, wd, gs, ibc1,
			  ibc2);
	p += pre;
	g += pre;
	m += pre;
	v += pre;
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		float4 pi = load4(p, i, S), gi = load4(g, i, S), mi = load4(m, i, S);
		float4 vi = load4(v, i, S);
		ADAMW_UPDATE(pi, gi, mi, vi);
		store4(m, i, S, mi);
		store4(v, i, S, vi);
		store4(p, i, S, pi);
	}
	for (; i < n; i += S)
		adamw_one(p + i, g + i, m + i, v + i, b1, b2, omb1, omb2, lr, eps, wd, gs, ibc1,
			  ibc2);
}

/* ------------------------------------------------------------------ */
/* sum and sum_squares: x[n] -> part[G] (acc_t) -> out[1]. */

static inline acc_t acc_add_term(acc_t a, float x, int squares)
{
	return squares ? acc_add_square(a, x) : acc_add(a, x);
}

/* part[g] = group g's sum of x[i] (squares: x[i]^2) over its items' share
 * of n, grid-stride as the elementwise kernels (lead-in, then four a round
 * into four sums): the share depends on n and the grid alone. Interleaved
 * rather than one span per group, so that the groups stream through memory
 * together (spans a gigabyte apart thrash the GPU's TLB). */
/* This item's share of the sum of x[i] (squares: x[i]^2), x at element
 * offset x_off of its buffer. */
BODY acc_t sum_share_of(global const uchar *x, ulong x_off, ulong n, int squares, int bf)
{
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in_of(x_off, n, bf);
	acc_t a0 = acc_zero(), a1 = acc_zero(), a2 = acc_zero(), a3 = acc_zero();
	for (size_t k = i; k < pre; k += S)
		a0 = acc_add_term(a0, load_elem(x, k, bf), squares);
	x = ELEM_AT(x, pre, bf);
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		float4 v = load4_of(x, i, S, bf);
		a0 = acc_add_term(a0, v.x, squares);
		a1 = acc_add_term(a1, v.y, squares);
		a2 = acc_add_term(a2, v.z, squares);
		a3 = acc_add_term(a3, v.w, squares);
	}
	for (; i < n; i += S)
		a0 = acc_add_term(a0, load_elem(x, i, bf), squares);
	return acc_merge(acc_merge(a0, a1), acc_merge(a2, a3));
}

kernel void lt_sum_partials(global float *part_base, ulong part_off, global const uchar *x_base,
			    ulong x_off, int x_bf, ulong n, int squares, local acc_t *sh)
{
	global acc_t *part = (global acc_t *)(part_base + part_off);
	global const uchar *x = ELEM_AT(x_base, x_off, x_bf);
	acc_t a = x_bf ? sum_share_of(x, x_off, n, squares, 1) : sum_share_of(x, x_off, n, squares, 0);
	a = group_sum_acc(sh, a);
	if (get_local_id(0) == 0)
		part[get_group_id(0)] = a;
}

/* out[0] = sum of part[G] (acc_t), one group */
kernel void lt_sum_finish(global float *out_base, ulong out_off, global const float *part_base,
			  ulong part_off, int G, local acc_t *sh)
{
	global const acc_t *part = (global const acc_t *)(part_base + part_off);
	acc_t a = acc_zero();
	for (int g = get_local_id(0); g < G; g += get_local_size(0))
		a = acc_merge(a, part[g]);
	a = group_sum_acc(sh, a);
	if (get_local_id(0) == 0)
		out_base[out_off] = acc_float(a);
}

/* ------------------------------------------------------------------ */
/* Embedding. */

/* out[N,C] = table[tokens[n], :], tile shape over (n, column); a token < 0
 * (another slice's) gives a zero row, and one >= V (a caller's bug) a NaN
 * row rather than a stray read. */
BODY void embedding_forward_body(global uchar *out, global const int *tok, global const uchar *tab,
				 int C, int V, int tiles, int obf, int tbf)
{
	int g = get_group_id(0), n = g / tiles;
	int c = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (c >= C)
		return;
	int t = tok[n];
	float v = t < 0 ? 0.0f : t < V ? load_elem(tab, (size_t)t * C + c, tbf) : NAN;
	store_elem(out, (size_t)n * C + c, v, obf);
}

kernel void lt_embedding_forward(global uchar *out_base, ulong out_off, int out_bf,
				 global const int *tok_base, ulong tok_off,
				 global const uchar *tab_base, ulong tab_off, int tab_bf, int C,
				 int V, int tiles)
{
	global uchar *out = ELEM_AT(out_base, out_off, out_bf);
	global const uchar *tab = ELEM_AT(tab_base, tab_off, tab_bf);
	global const int *tok = tok_base + tok_off;
	if (out_bf | tab_bf)
		embedding_forward_body(out, tok, tab, C, V, tiles, out_bf, tab_bf);
	else
		embedding_forward_body(out, tok, tab, C, V, tiles, 0, 0);
}

/* Sorts tokens[N] by (token, n) without moving them: order[r] = the n of
 * rank r, run[r] = how many n share that token where r is the first of
 * them, else 0. Each n counts the tokens that sort before it, against all N
 * read through local tiles of L = local_size (O(N^2) compares): a group
 * ranks nb = L / parts tokens, each by `parts` items that split every tile,
 * and adds their counts (integers, so exactly) through cnt[3 L]. */
kernel void lt_embedding_sort(global int *order_base, ulong order_off, global int *run_base,
			      ulong run_off, global const int *tok_base, ulong tok_off, int N,
			      int parts, local int *tile, local int *cnt)
{
	global const int *tok = tok_base + tok_off;
	int lid = get_local_id(0), L = get_local_size(0), nb = L / parts;
	int p = lid / nb, nl = lid - p * nb, n = get_group_id(0) * nb + nl;
	int t = n < N ? tok[n] : 0, less = 0, before = 0, same = 0;
	for (int m0 = 0; m0 < N; m0 += L) {
		barrier(CLK_LOCAL_MEM_FENCE);
		if (m0 + lid < N)
			tile[lid] = tok[m0 + lid];
		barrier(CLK_LOCAL_MEM_FENCE);
		int j0 = p * nb, j1 = N - m0 < j0 + nb ? N - m0 : j0 + nb;
		for (int j = j0; j < j1; j++) {
			int u = tile[j];
			less += u < t;
			same += u == t;
			before += u == t && m0 + j < n;
		}
	}
	cnt[lid] = less;
	cnt[L + lid] = before;
	cnt[2 * L + lid] = same;
	barrier(CLK_LOCAL_MEM_FENCE);
	if (p > 0 || n >= N)
		return;
	for (int q = 1; q < parts; q++) {
		less += cnt[q * nb + nl];
		before += cnt[L + q * nb + nl];
		same += cnt[2 * L + q * nb + nl];
	}
	order_base[order_off + less + before] = n;
	run_base[run_off + less + before] = before ? 0 : same;
}

/* dtable[tokens[n], :] += dout[n, :], tile shape over (rank r, column),
 * tokens < 0 (another slice's) skipped: the item of the first rank of
 * each token adds that token's rows in order of n, in float, as the CPU
 * does, and writes once; four rows' loads at a time. */
BODY void embedding_backward_body(global float *dt, global const int *tok,
				  global const uchar *dout, global const int *order,
				  global const int *run, int C, int V, int tiles, int bf)
{
	int g = get_group_id(0), r = g / tiles;
	int c = (g - r * tiles) * get_local_size(0) + get_local_id(0);
	int cnt = run[r];
	if (cnt == 0 || c >= C)
		return;
	int t = tok[order[r]];
	if (t < 0 || t >= V)
		return;
	global float *dst = dt + (size_t)t * C + c;
	global const uchar *src = ELEM_AT(dout, c, bf);
	global const int *rows = order + r;
	float acc = *dst;
	int j = 0;
	for (; j + 3 < cnt; j += 4) {
		float v0 = load_elem(src, (size_t)rows[j] * C, bf);
		float v1 = load_elem(src, (size_t)rows[j + 1] * C, bf);
		float v2 = load_elem(src, (size_t)rows[j + 2] * C, bf);
		float v3 = load_elem(src, (size_t)rows[j + 3] * C, bf);
		acc += v0;
		acc += v1;
		acc += v2;
		acc += v3;
	}
	for (; j < cnt; j++)
		acc += load_elem(src, (size_t)rows[j] * C, bf);
	*dst = acc;
}

kernel void lt_embedding_backward(global float *dt_base, ulong dt_off, global const int *tok_base,
				  ulong tok_off, global const uchar *dout_base, ulong dout_off,
				  int dout_bf, global const int *order_base, ulong order_off,
				  global const int *run_base, ulong run_off, int C, int V,
				  int tiles)
{
	global float *dt = dt_base + dt_off;
	global const int *tok = tok_base + tok_off, *order = order_base + order_off;
	global const int *run = run_base + run_off;
	global const uchar *dout = ELEM_AT(dout_base, dout_off, dout_bf);
	if (dout_bf)
		embedding_backward_body(dt, tok, dout, order, run, C, V, tiles, 1);
	else
		embedding_backward_body(dt, tok, dout, order, run, C, V, tiles, 0);
}

/* ------------------------------------------------------------------ */
/* RMSNorm. */

/* This item's share (columns lid, lid + L, ...) of the row's sum of x^2 */
BODY float share_of_squares(global const uchar *x, int C, int bf)
{
	int lid = get_local_id(0), L = get_local_size(0);
	float ss = 0.0f;
	for (int i = lid; i < C; i += L) {
		float xi = load_elem(x, i, bf);
		ss += xi * xi;
	}
	return ss;
}

/* This item's columns of the row o = x * r * w */
BODY void normalize_share(global uchar *o, global const uchar *x, global const uchar *w, int C,
			  float r, int obf, int ibf, int wbf)
{
	int lid = get_local_id(0), L = get_local_size(0);
	for (int i = lid; i < C; i += L)
		store_elem(o, i, load_elem(x, i, ibf) * r * load_elem(w, i, wbf), obf);
}

/* rstd[N] = 1 / sqrt(mean(inp[n,:]^2) + eps); out[N,C] = inp * rstd * w;
 * row shape, sh[local_size] */
kernel void lt_rmsnorm_forward(global uchar *out_base, ulong out_off, int out_bf,
			       global float *rstd_base, ulong rstd_off,
			       global const uchar *inp_base, ulong inp_off, int inp_bf,
			       global const uchar *w_base, ulong w_off, int w_bf, int C, float eps,
			       local float *sh)
{
	size_t n = get_group_id(0);
	global uchar *o = ELEM_AT(out_base, out_off + n * C, out_bf);
	global const uchar *x = ELEM_AT(inp_base, inp_off + n * C, inp_bf);
	global const uchar *w = ELEM_AT(w_base, w_off, w_bf);
	float ss = inp_bf ? share_of_squares(x, C, 1) : share_of_squares(x, C, 0);
	ss = group_sum(sh, ss);
	float r = 1.0f / sqrt(ss / (float)C + eps);
	if (get_local_id(0) == 0)
		rstd_base[rstd_off + n] = r;
	if (out_bf | inp_bf | w_bf)
		normalize_share(o, x, w, C, r, out_bf, inp_bf, w_bf);
	else
		normalize_share(o, x, w, C, r, 0, 0, 0);
}

/* This item's share of the row's sum of dy * w * x */
BODY float share_of_dot(global const uchar *dy, global const uchar *w, global const uchar *x,
			int C, int dobf, int wbf, int ibf)
{
	int lid = get_local_id(0), L = get_local_size(0);
	float dot = 0.0f;
	for (int i = lid; i < C; i += L)
		dot += load_elem(dy, i, dobf) * load_elem(w, i, wbf) * load_elem(x, i, ibf);
	return dot;
}

/* This item's columns of the row dx += r w dy - k x */
BODY void add_share_of_dx(global uchar *dx, global const uchar *dy, global const uchar *w,
			  global const uchar *x, int C, float r, float k, int dibf, int dobf,
			  int wbf, int ibf)
{
	int lid = get_local_id(0), L = get_local_size(0);
	for (int i = lid; i < C; i += L) {
		float g = r * load_elem(w, i, wbf) * load_elem(dy, i, dobf) -
			  k * load_elem(x, i, ibf);
		store_elem(dx, i, load_elem(dx, i, dibf) + g, dibf);
	}
}

/* dinp[N,C] += r w dout - (r^3 / C) inp sum_c(dout w inp); row shape, sh[local_size] */
kernel void lt_rmsnorm_backward(global uchar *dinp_base, ulong dinp_off, int dinp_bf,
				global const uchar *dout_base, ulong dout_off, int dout_bf,
				global const uchar *inp_base, ulong inp_off, int inp_bf,
				global const uchar *w_base, ulong w_off, int w_bf,
				global const float *rstd_base, ulong rstd_off, int C,
				local float *sh)
{
	size_t n = get_group_id(0);
	global uchar *dx = ELEM_AT(dinp_base, dinp_off + n * C, dinp_bf);
	global const uchar *dy = ELEM_AT(dout_base, dout_off + n * C, dout_bf);
	global const uchar *x = ELEM_AT(inp_base, inp_off + n * C, inp_bf);
	global const uchar *w = ELEM_AT(w_base, w_off, w_bf);
	int any = dinp_bf | dout_bf | inp_bf | w_bf;
	float r = rstd_base[rstd_off + n];
	float dot = any ? share_of_dot(dy, w, x, C, dout_bf, w_bf, inp_bf)
			: share_of_dot(dy, w, x, C, 0, 0, 0);
	dot = group_sum(sh, dot);
	float k = r * r * r * dot / (float)C;
	if (any)
		add_share_of_dx(dx, dy, w, x, C, r, k, dinp_bf, dout_bf, w_bf, inp_bf);
	else
		add_share_of_dx(dx, dy, w, x, C, r, k, 0, 0, 0, 0);
}

/* part[B,C] (acc_t): row block b's sum over its rows [b * rows, min(N, (b + 1) * rows))
 * of dout * inp * rstd, tile shape over (b, column) */
BODY void rmsnorm_dw_partials_body(global acc_t *part, global const uchar *dout,
				   global const uchar *inp, global const float *rs, int N, int C,
				   int rows, int tiles, int dobf, int ibf)
{
	int g = get_group_id(0), b = g / tiles;
	int c = (g - b * tiles) * get_local_size(0) + get_local_id(0);
	if (c >= C)
		return;
	int n0 = b * rows, n1 = N - n0 < rows ? N : n0 + rows;
	global const uchar *dy = ELEM_AT(dout, c, dobf), *x = ELEM_AT(inp, c, ibf);
	acc_t a = acc_zero();
	for (int n = n0; n < n1; n++) {
		size_t i = (size_t)n * C;
		a = acc_add(a, load_elem(dy, i, dobf) * load_elem(x, i, ibf) * rs[n]);
	}
	part[(size_t)b * C + c] = a;
}

kernel void lt_rmsnorm_dw_partials(global float *part_base, ulong part_off,
				   global const uchar *dout_base, ulong dout_off, int dout_bf,
				   global const uchar *inp_base, ulong inp_off, int inp_bf,
				   global const float *rstd_base, ulong rstd_off, int N, int C,
				   int rows, int tiles)
{
	global acc_t *part = (global acc_t *)(part_base + part_off);
	global const uchar *dout = ELEM_AT(dout_base, dout_off, dout_bf);
	global const uchar *inp = ELEM_AT(inp_base, inp_off, inp_bf);
	global const float *rs = rstd_base + rstd_off;
	if (dout_bf | inp_bf)
		rmsnorm_dw_partials_body(part, dout, inp, rs, N, C, rows, tiles, dout_bf, inp_bf);
	else
		rmsnorm_dw_partials_body(part, dout, inp, rs, N, C, rows, tiles, 0, 0);
}

/* dw[C] += sum over b < B of part[b, c]. A group takes `cols` columns (a
 * power of two dividing local_size) with L / cols lanes each; lane l sums
 * the blocks b = l mod lanes in order, then the lanes add up in a fixed
 * tree through sh[local_size]: sequential sums over all B blocks per column
 * would leave the GPU waiting on memory, with few items. */
kernel void lt_rmsnorm_dw_finish(global float *dw_base, ulong dw_off, global const float *part_base,
				 ulong part_off, int B, int C, int cols, local acc_t *sh)
{
	global const acc_t *part = (global const acc_t *)(part_base + part_off);
	int lid = get_local_id(0), lanes = get_local_size(0) / cols;
	int lane = lid / cols, c = get_group_id(0) * cols + (lid - lane * cols);
	acc_t a = acc_zero();
	for (int b = lane; c < C && b < B; b += lanes)
		a = acc_merge(a, part[(size_t)b * C + c]);
	sh[lid] = a;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = lanes / 2; h > 0; h >>= 1) {
		if (lane < h)
			sh[lid] = acc_merge(sh[lid], sh[lid + h * cols]);
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	if (lane == 0 && c < C)
		dw_base[dw_off + c] += acc_float(sh[lid]);
}

/* ------------------------------------------------------------------ */
/* This item's pairs of the row's heads rotated by cs (cos, then sin) */
BODY void rotate_share(global uchar *row, local const float *cs, int heads, int D, int bf)
{
	int lid = get_local_id(0), L = get_local_size(0), pairs = D / 2;
	for (int j = lid; j < heads * pairs; j += L) {
		int hd = j / pairs, i = j - hd * pairs;
		size_t i1 = (size_t)hd * D + i, i2 = i1 + pairs;
		float u = load_elem(row, i1, bf), v = load_elem(row, i2, bf);
		float c = cs[i], s = cs[pairs + i];
		store_elem(row, i1, u * c - v * s, bf);
		store_elem(row, i2, v * c + u * s, bf);
	}
}

/* RoPE: rotates the `heads` (H + K) query and key heads of row n of
 * qkv[N, W] in place by (pos0 + n % T) * inv_freq[i] on the pairs (i, i + D/2);
 * sgn -1 rotates back. Row shape; the group computes the row's D/2 (cos, sin)
 * pairs once into cs[D], in float as the CPU does. */
kernel void lt_rope(global uchar *x_base, ulong x_off, int x_bf, global const float *f_base,
		    ulong f_off, int T, int pos0, int heads, int D, int W, float sgn,
		    local float *cs)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), L = get_local_size(0), pairs = D / 2;
	float pos = (float)(pos0 + (int)(n % (size_t)T));
	for (int i = lid; i < pairs; i += L) {
		float a = pos * f_base[f_off + i];
		cs[i] = cos(a);
		cs[pairs + i] = sgn * sin(a);
	}
	barrier(CLK_LOCAL_MEM_FENCE);
	global uchar *row = ELEM_AT(x_base, x_off + n * W, x_bf);
	if (x_bf)
		rotate_share(row, cs, heads, D, 1);
	else
		rotate_share(row, cs, heads, D, 0);
}

/* ------------------------------------------------------------------ */
/* SwiGLU, tile shape over (n, f): h[N, 2F] = [gate | up]. */

/* out[N,F] = silu(gate) * up */
BODY void swiglu_forward_body(global uchar *out, global const uchar *h, int F, int tiles,
			      int obf, int hbf)
{
	int g = get_group_id(0), n = g / tiles;
	int f = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (f >= F)
		return;
	size_t at = (size_t)n * 2 * F + f;
	float x = load_elem(h, at, hbf), u = load_elem(h, at + F, hbf);
	float sg = 1.0f / (1.0f + exp(-x));
	store_elem(out, (size_t)n * F + f, x * sg * u, obf);
}

kernel void lt_swiglu_forward(global uchar *out_base, ulong out_off, int out_bf,
			      global const uchar *h_base, ulong h_off, int h_bf, int F, int tiles)
{
	global uchar *out = ELEM_AT(out_base, out_off, out_bf);
	global const uchar *h = ELEM_AT(h_base, h_off, h_bf);
	if (out_bf | h_bf)
		swiglu_forward_body(out, h, F, tiles, out_bf, h_bf);
	else
		swiglu_forward_body(out, h, F, tiles, 0, 0);
}

/* dh[N,2F] = [dout * up * silu'(gate) | dout * silu(gate)],
 * silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
BODY void swiglu_backward_body(global uchar *dh, global const uchar *dout, global const uchar *h,
			       int F, int tiles, int dhbf, int dobf, int hbf)
{
	int g = get_group_id(0), n = g / tiles;
	int f = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (f >= F)
		return;
	size_t at = (size_t)n * 2 * F + f;
	float x = load_elem(h, at, hbf), u = load_elem(h, at + F, hbf);
	float dy = load_elem(dout, (size_t)n * F + f, dobf);
	float sg = 1.0f / (1.0f + exp(-x));
	store_elem(dh, at, dy * u * sg * (1.0f + x * (1.0f - sg)), dhbf);
	store_elem(dh, at + F, dy * x * sg, dhbf);
}

kernel void lt_swiglu_backward(global uchar *dh_base, ulong dh_off, int dh_bf,
			       global const uchar *dout_base, ulong dout_off, int dout_bf,
			       global const uchar *h_base, ulong h_off, int h_bf, int F, int tiles)
{
	global uchar *dh = ELEM_AT(dh_base, dh_off, dh_bf);
	global const uchar *dout = ELEM_AT(dout_base, dout_off, dout_bf);
	global const uchar *h = ELEM_AT(h_base, h_off, h_bf);
	if (dh_bf | dout_bf | h_bf)
		swiglu_backward_body(dh, dout, h, F, tiles, dh_bf, dout_bf, h_bf);
	else
		swiglu_backward_body(dh, dout, h, F, tiles, 0, 0, 0);
}

/* ------------------------------------------------------------------ */
/* Cross-entropy. */

/* s + exp(v - *m), s a sum of exponentials relative to the running max *m,
 * moved to v when v is a new max; -inf adds nothing, NaN makes s NaN. */
static inline acc_t softmax_add(acc_t s, float *m, float v)
{
	if (v > *m) {
		s = acc_add(acc_rebase(s, *m, v), 1.0f);
		*m = v;
	} else if (v != -INFINITY) {
		s = acc_add(s, exp(v - *m));
	}
	return s;
}

/* This item's running max *m and sum of exp(x - *m) over its columns of the
 * row x[V] (lid, lid + L, ...; four loads a round) */
BODY acc_t softmax_share(global const uchar *x, int V, float *m, int bf)
{
	int lid = get_local_id(0), L = get_local_size(0), j = lid;
	acc_t s = acc_zero();
	for (; j + 3 * L < V; j += 4 * L) {
		float4 v = load4_of(x, j, L, bf);
		s = softmax_add(s, m, v.x);
		s = softmax_add(s, m, v.y);
		s = softmax_add(s, m, v.z);
		s = softmax_add(s, m, v.w);
	}
	for (; j < V; j += L)
		s = softmax_add(s, m, load_elem(x, j, bf));
	return s;
}

/* This item's columns of the row x[V] = grad_scale * (softmax - onehot(t)),
 * softmax = exp(x - mx) * k */
BODY void gradient_share(global uchar *x, int V, int t, float mx, float k, float grad_scale,
			 int bf)
{
	int lid = get_local_id(0), L = get_local_size(0), j = lid;
	for (; j + 3 * L < V; j += 4 * L) {
		float4 e = exp(load4_of(x, j, L, bf) - mx) * k;
		int4 at = (int4)(j, j + L, j + 2 * L, j + 3 * L);
		store4_of(x, j, L, select(e, e - grad_scale, at == t), bf);
	}
	for (; j < V; j += L) {
		float e = exp(load_elem(x, j, bf) - mx) * k;
		store_elem(x, j, j == t ? e - grad_scale : e, bf);
	}
}

/* The max *mx and the sum of exp(z - *mx) over the first V columns of a
 * row z, each item taking its share and the group merging them in a tree
 * (shm and shs hold local_size); the arrays are free again on return. */
static inline acc_t group_softmax(global const uchar *z, int V, int zbf, local float *shm,
				  local acc_t *shs, float *mx)
{
	int lid = get_local_id(0), L = get_local_size(0);
	float m = -INFINITY;
	acc_t s = zbf ? softmax_share(z, V, &m, 1) : softmax_share(z, V, &m, 0);
	shm[lid] = m;
	shs[lid] = s;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = L / 2; h > 0; h >>= 1) {
		if (lid < h) {
			float ma = shm[lid], mb = shm[lid + h], mm = mb > ma ? mb : ma;
			acc_t sa = shs[lid], sb = shs[lid + h];
			sa = ma == mm ? sa : acc_rebase(sa, ma, mm);
			sb = mb == mm ? sb : acc_rebase(sb, mb, mm);
			shm[lid] = mm;
			shs[lid] = acc_merge(sa, sb);
		}
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	*mx = shm[0];
	acc_t total = shs[0];
	barrier(CLK_LOCAL_MEM_FENCE);
	return total;
}

/* losses[N] and (write) the gradient in place of logits[N,V], row shape:
 * each item keeps a running max m and sum of exp(x - m) over its columns
 * (one pass over the row, four loads a round), the group merges them in a
 * tree, then (write) a second pass turns the row into
 * grad_scale * (softmax - onehot). An ignored row (target < 0) reads
 * nothing: loss 0 and, with write, zeros. shm and shs hold local_size. */
kernel void lt_xent(global float *loss_base, ulong loss_off, global uchar *z_base, ulong z_off,
		    int z_bf, global const int *tgt_base, ulong tgt_off, int V, float grad_scale,
		    int write, local float *shm, local acc_t *shs)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), L = get_local_size(0), t = tgt_base[tgt_off + n];
	global float *loss = loss_base + loss_off;
	global uchar *x = ELEM_AT(z_base, z_off + n * V, z_bf);
	if (t < 0) {
		for (int j = lid; write && j < V; j += L)
			store_elem(x, j, 0.0f, z_bf);
		if (lid == 0)
			loss[n] = 0.0f;
		return;
	}
	float zt = t < V ? load_elem(x, t, z_bf) : NAN, mx;
	acc_t total = group_softmax(x, V, z_bf, shm, shs, &mx);
#ifdef LT_FP64
	if (lid == 0)
		loss[n] = (float)((double)mx + log(total) - (double)zt);
	float k = (float)(grad_scale / total);
#else
	if (lid == 0)
		loss[n] = mx + log(acc_float(total)) - zt;
	float k = grad_scale / acc_float(total);
#endif
	if (!write)
		return;
	if (z_bf)
		gradient_share(x, V, t, mx, k, grad_scale, 1);
	else
		gradient_share(x, V, t, mx, k, grad_scale, 0);
}
