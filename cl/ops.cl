/* The OpenCL kernels of every op but GEMM and attention; cl_ops.c launches them.
 *
 * Shapes follow src/backend.h. Three launch shapes recur:
 *   elementwise: 1D grid-stride loop over size_t indices (any n);
 *   row: one work-group per row, its items striding over the row's columns;
 *   tile: 1D groups of L items, group g = row (g / tiles) and column tile
 *         (g % tiles), item = one column (no 2D grid: CUDA caps its y at 65535).
 * Work-group sizes of the kernels that reduce in local memory are powers of two. */
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
 * boundary (buffers start on one), at most n. */
static inline size_t lead_in(ulong off, ulong n)
{
	size_t k = (32 - off % 32) % 32;
	return k < n ? k : (size_t)n;
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

/* x[n] = value */
kernel void lt_fill(global float *x_base, ulong x_off, ulong n, float value)
{
	global float *x = x_base + x_off;
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in(x_off, n);
	for (size_t k = i; k < pre; k += S)
		x[k] = value;
	x += pre;
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		x[i] = value;
		x[i + S] = value;
		x[i + 2 * S] = value;
		x[i + 3 * S] = value;
	}
	for (; i < n; i += S)
		x[i] = value;
}

/* The four elements p[i + k S], k < 4, as a vector; and back. */
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

/* x[n] *= s */
kernel void lt_scale(global float *x_base, ulong x_off, ulong n, float s)
{
	global float *x = x_base + x_off;
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in(x_off, n);
	for (size_t k = i; k < pre; k += S)
		x[k] *= s;
	x += pre;
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S)
		store4(x, i, S, load4(x, i, S) * s);
	for (; i < n; i += S)
		x[i] *= s;
}

/* y[n] = a[n] + b[n]; y may be a or b (each element is read, then written, by one item) */
kernel void lt_add(global float *y_base, ulong y_off, global const float *a_base, ulong a_off,
		   global const float *b_base, ulong b_off, ulong n)
{
	global float *y = y_base + y_off;
	global const float *a = a_base + a_off, *b = b_base + b_off;
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in(y_off, n);
	for (size_t k = i; k < pre; k += S)
		y[k] = a[k] + b[k];
	y += pre;
	a += pre;
	b += pre;
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		float4 va = load4(a, i, S), vb = load4(b, i, S);
		store4(y, i, S, va + vb);
	}
	for (; i < n; i += S)
		y[i] = a[i] + b[i];
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
kernel void lt_sum_partials(global float *part_base, ulong part_off, global const float *x_base,
			    ulong x_off, ulong n, int squares, local acc_t *sh)
{
	global acc_t *part = (global acc_t *)(part_base + part_off);
	global const float *x = x_base + x_off;
	size_t S = get_global_size(0), i = get_global_id(0), pre = lead_in(x_off, n);
	acc_t a0 = acc_zero(), a1 = acc_zero(), a2 = acc_zero(), a3 = acc_zero();
	for (size_t k = i; k < pre; k += S)
		a0 = acc_add_term(a0, x[k], squares);
	x += pre;
	n -= pre;
	for (; i + 3 * S < n; i += 4 * S) {
		float4 v = load4(x, i, S);
		a0 = acc_add_term(a0, v.x, squares);
		a1 = acc_add_term(a1, v.y, squares);
		a2 = acc_add_term(a2, v.z, squares);
		a3 = acc_add_term(a3, v.w, squares);
	}
	for (; i < n; i += S)
		a0 = acc_add_term(a0, x[i], squares);
	acc_t a = group_sum_acc(sh, acc_merge(acc_merge(a0, a1), acc_merge(a2, a3)));
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

/* out[N,C] = table[tokens[n], :], tile shape over (n, column); a token
 * outside [0, V) (a caller's bug) gives a NaN row rather than a stray read. */
kernel void lt_embedding_forward(global float *out_base, ulong out_off, global const int *tok_base,
				 ulong tok_off, global const float *tab_base, ulong tab_off, int C,
				 int V, int tiles)
{
	int g = get_group_id(0), n = g / tiles;
	int c = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (c >= C)
		return;
	int t = tok_base[tok_off + n];
	out_base[out_off + (size_t)n * C + c] =
		t >= 0 && t < V ? tab_base[tab_off + (size_t)t * C + c] : NAN;
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

/* dtable[tokens[n], :] += dout[n, :], tile shape over (rank r, column): the
 * item of the first rank of each token adds that token's rows in order of
 * n, in float, as the CPU does, and writes once; four rows' loads at a time. */
kernel void lt_embedding_backward(global float *dt_base, ulong dt_off, global const int *tok_base,
				  ulong tok_off, global const float *dout_base, ulong dout_off,
				  global const int *order_base, ulong order_off,
				  global const int *run_base, ulong run_off, int C, int V,
				  int tiles)
{
	global const int *order = order_base + order_off;
	int g = get_group_id(0), r = g / tiles;
	int c = (g - r * tiles) * get_local_size(0) + get_local_id(0);
	int cnt = run_base[run_off + r];
	if (cnt == 0 || c >= C)
		return;
	int t = tok_base[tok_off + order[r]];
	if (t < 0 || t >= V)
		return;
	global float *dst = dt_base + dt_off + (size_t)t * C + c;
	global const float *src = dout_base + dout_off + c;
	global const int *rows = order + r;
	float acc = *dst;
	int j = 0;
	for (; j + 3 < cnt; j += 4) {
		float v0 = src[(size_t)rows[j] * C], v1 = src[(size_t)rows[j + 1] * C];
		float v2 = src[(size_t)rows[j + 2] * C], v3 = src[(size_t)rows[j + 3] * C];
		acc += v0;
		acc += v1;
		acc += v2;
		acc += v3;
	}
	for (; j < cnt; j++)
		acc += src[(size_t)rows[j] * C];
	*dst = acc;
}

/* ------------------------------------------------------------------ */
/* RMSNorm. */

/* rstd[N] = 1 / sqrt(mean(inp[n,:]^2) + eps); out[N,C] = inp * rstd * w;
 * row shape, sh[local_size] */
kernel void lt_rmsnorm_forward(global float *out_base, ulong out_off, global float *rstd_base,
			       ulong rstd_off, global const float *inp_base, ulong inp_off,
			       global const float *w_base, ulong w_off, int C, float eps,
			       local float *sh)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), L = get_local_size(0);
	global const float *x = inp_base + inp_off + n * C, *w = w_base + w_off;
	global float *o = out_base + out_off + n * C;
	float ss = 0.0f;
	for (int i = lid; i < C; i += L)
		ss += x[i] * x[i];
	ss = group_sum(sh, ss);
	float r = 1.0f / sqrt(ss / (float)C + eps);
	if (lid == 0)
		rstd_base[rstd_off + n] = r;
	for (int i = lid; i < C; i += L)
		o[i] = x[i] * r * w[i];
}

/* dinp[N,C] += r w dout - (r^3 / C) inp sum_c(dout w inp); row shape, sh[local_size] */
kernel void lt_rmsnorm_backward(global float *dinp_base, ulong dinp_off,
				global const float *dout_base, ulong dout_off,
				global const float *inp_base, ulong inp_off,
				global const float *w_base, ulong w_off,
				global const float *rstd_base, ulong rstd_off, int C,
				local float *sh)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), L = get_local_size(0);
	global const float *x = inp_base + inp_off + n * C, *dy = dout_base + dout_off + n * C;
	global const float *w = w_base + w_off;
	global float *dx = dinp_base + dinp_off + n * C;
	float r = rstd_base[rstd_off + n], dot = 0.0f;
	for (int i = lid; i < C; i += L)
		dot += dy[i] * w[i] * x[i];
	dot = group_sum(sh, dot);
	float k = r * r * r * dot / (float)C;
	for (int i = lid; i < C; i += L)
		dx[i] += r * w[i] * dy[i] - k * x[i];
}

/* part[B,C] (acc_t): row block b's sum over its rows [b * rows, min(N, (b + 1) * rows))
 * of dout * inp * rstd, tile shape over (b, column) */
kernel void lt_rmsnorm_dw_partials(global float *part_base, ulong part_off,
				   global const float *dout_base, ulong dout_off,
				   global const float *inp_base, ulong inp_off,
				   global const float *rstd_base, ulong rstd_off, int N, int C,
				   int rows, int tiles)
{
	global acc_t *part = (global acc_t *)(part_base + part_off);
	global const float *rs = rstd_base + rstd_off;
	int g = get_group_id(0), b = g / tiles;
	int c = (g - b * tiles) * get_local_size(0) + get_local_id(0);
	if (c >= C)
		return;
	int n0 = b * rows, n1 = N - n0 < rows ? N : n0 + rows;
	global const float *dy = dout_base + dout_off + c, *x = inp_base + inp_off + c;
	acc_t a = acc_zero();
	for (int n = n0; n < n1; n++) {
		size_t i = (size_t)n * C;
		a = acc_add(a, dy[i] * x[i] * rs[n]);
	}
	part[(size_t)b * C + c] = a;
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
/* RoPE: rotates the `heads` (H + K) query and key heads of row n of
 * qkv[N, W] in place by (pos0 + n % T) * inv_freq[i] on the pairs (i, i + D/2);
 * sgn -1 rotates back. Row shape; the group computes the row's D/2 (cos, sin)
 * pairs once into cs[D], in float as the CPU does. */
kernel void lt_rope(global float *x_base, ulong x_off, global const float *f_base, ulong f_off,
		    int T, int pos0, int heads, int D, int W, float sgn, local float *cs)
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
	global float *row = x_base + x_off + n * W;
	for (int j = lid; j < heads * pairs; j += L) {
		int hd = j / pairs, i = j - hd * pairs;
		global float *x1 = row + hd * D + i, *x2 = x1 + pairs;
		float u = *x1, v = *x2, c = cs[i], s = cs[pairs + i];
		*x1 = u * c - v * s;
		*x2 = v * c + u * s;
	}
}

/* ------------------------------------------------------------------ */
/* SwiGLU, tile shape over (n, f): h[N, 2F] = [gate | up]. */

/* out[N,F] = silu(gate) * up */
kernel void lt_swiglu_forward(global float *out_base, ulong out_off, global const float *h_base,
			      ulong h_off, int F, int tiles)
{
	int g = get_group_id(0), n = g / tiles;
	int f = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (f >= F)
		return;
	global const float *gate = h_base + h_off + (size_t)n * 2 * F + f;
	float x = gate[0], u = gate[F];
	float sg = 1.0f / (1.0f + exp(-x));
	out_base[out_off + (size_t)n * F + f] = x * sg * u;
}

/* dh[N,2F] = [dout * up * silu'(gate) | dout * silu(gate)],
 * silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
kernel void lt_swiglu_backward(global float *dh_base, ulong dh_off, global const float *dout_base,
			       ulong dout_off, global const float *h_base, ulong h_off, int F,
			       int tiles)
{
	int g = get_group_id(0), n = g / tiles;
	int f = (g - n * tiles) * get_local_size(0) + get_local_id(0);
	if (f >= F)
		return;
	size_t at = (size_t)n * 2 * F + f;
	float x = h_base[h_off + at], u = h_base[h_off + at + F];
	float dy = dout_base[dout_off + (size_t)n * F + f];
	float sg = 1.0f / (1.0f + exp(-x));
	dh_base[dh_off + at] = dy * u * sg * (1.0f + x * (1.0f - sg));
	dh_base[dh_off + at + F] = dy * x * sg;
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

/* losses[N] and (write) the gradient in place of logits[N,V], row shape:
 * each item keeps a running max m and sum of exp(x - m) over its columns
 * (one pass over the row, four loads a round), the group merges them in a
 * tree, then (write) a second pass turns the row into
 * grad_scale * (softmax - onehot). An ignored row (target < 0) reads
 * nothing: loss 0 and, with write, zeros. shm and shs hold local_size. */
kernel void lt_xent(global float *loss_base, ulong loss_off, global float *z_base, ulong z_off,
		    global const int *tgt_base, ulong tgt_off, int V, float grad_scale, int write,
		    local float *shm, local acc_t *shs)
{
	size_t n = get_group_id(0);
	int lid = get_local_id(0), L = get_local_size(0), t = tgt_base[tgt_off + n];
	global float *x = z_base + z_off + n * V;
	if (t < 0) {
		for (int j = lid; write && j < V; j += L)
			x[j] = 0.0f;
		if (lid == 0)
			loss_base[loss_off + n] = 0.0f;
		return;
	}
	float zt = t < V ? x[t] : NAN, m = -INFINITY;
	acc_t s = acc_zero();
	int j = lid;
	for (; j + 3 * L < V; j += 4 * L) {
		float4 v = load4(x, j, L);
		s = softmax_add(s, &m, v.x);
		s = softmax_add(s, &m, v.y);
		s = softmax_add(s, &m, v.z);
		s = softmax_add(s, &m, v.w);
	}
	for (; j < V; j += L)
		s = softmax_add(s, &m, x[j]);
	shm[lid] = m;
	shs[lid] = s;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (int h = L / 2; h > 0; h >>= 1) {
		if (lid < h) {
			float ma = shm[lid], mb = shm[lid + h], mx = mb > ma ? mb : ma;
			acc_t sa = shs[lid], sb = shs[lid + h];
			sa = ma == mx ? sa : acc_rebase(sa, ma, mx);
			sb = mb == mx ? sb : acc_rebase(sb, mb, mx);
			shm[lid] = mx;
			shs[lid] = acc_merge(sa, sb);
		}
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	float mx = shm[0];
	acc_t total = shs[0];
#ifdef LT_FP64
	if (lid == 0)
		loss_base[loss_off + n] = (float)((double)mx + log(total) - (double)zt);
	float k = (float)(grad_scale / total);
#else
	if (lid == 0)
		loss_base[loss_off + n] = mx + log(acc_float(total)) - zt;
	float k = grad_scale / acc_float(total);
#endif
	if (!write)
		return;
	for (j = lid; j + 3 * L < V; j += 4 * L) {
		float4 e = exp(load4(x, j, L) - mx) * k;
		int4 at = (int4)(j, j + L, j + 2 * L, j + 3 * L);
		store4(x, j, L, select(e, e - grad_scale, at == t));
	}
	for (; j < V; j += L) {
		float e = exp(x[j] - mx) * k;
		x[j] = j == t ? e - grad_scale : e;
	}
}
