/* Fused causal grouped-query attention on OpenCL: the flash-attention forward, its backward
 * without float atomics, and decoding over a key/value cache. Nothing T x T is ever stored.
 *
 * Built once per head size, with the tiles the host picks for the device:
 *   LT_D   head size (even)
 *   LT_WG  rows (work-items) per work-group of the forward
 *   LT_BK  key rows per local-memory tile of the forward
 *   LT_P   work-items sharing a row in the backward, each holding D / LT_P of it
 *   LT_RB  rows per work-group of the backward (LT_RB * LT_P work-items)
 *   LT_BB  rows per local-memory tile of the backward
 *   LT_BC  rows of a backward tile taken per register chunk (divides LT_BB)
 *   LT_NT  work-items sharing one query row when decoding
 * and, from those (the options stay short):
 *   LT_KC  rows of a forward tile taken per register chunk: 8, or LT_BK if less
 * A row of D floats is held as D / VW vectors: float4 when 4 divides D, float2 otherwise.
 * Rows past T are staged as zeros and masked, so no NaN or Inf ever meets a zero weight.
 * out, qkv, dout, dqkv and the caches are arrays of f32 or bf16 (bf16.cl), each its own: rows
 * widen as they are loaded (into registers, or into the local tiles) and round as they are
 * stored; everything in between is float. */

#ifndef LT_D
#error "LT_D (the head size) must be given"
#endif
#ifndef LT_WG
#define LT_WG 64
#endif
#ifndef LT_BK
#define LT_BK 32
#endif
#ifndef LT_P
#define LT_P 1
#endif
#ifndef LT_RB
#define LT_RB 64
#endif
#ifndef LT_BB
#define LT_BB 32
#endif
#ifndef LT_BC
#define LT_BC 8
#endif
#ifndef LT_NT
#define LT_NT 64
#endif

#if LT_D % 4 == 0
#define VW 4
typedef float4 vec;
#define vload_vec vload4
#define vstore_vec vstore4
#define vload_bits vload4
#define vstore_bits vstore4
#define widen_vec(h) as_float4(convert_uint4(h) << 16)
#define round_vec(v) \
	(ushort4)(bf16_round((v).x), bf16_round((v).y), bf16_round((v).z), bf16_round((v).w))
#else
#define VW 2
typedef float2 vec;
#define vload_vec vload2
#define vstore_vec vstore2
#define vload_bits vload2
#define vstore_bits vstore2
#define widen_vec(h) as_float2(convert_uint2(h) << 16)
#define round_vec(v) (ushort2)(bf16_round((v).x), bf16_round((v).y))
#endif
#define DV (LT_D / VW)
#define LT_KC (LT_BK < 8 ? LT_BK : 8)
/* vectors of a row that one backward work-item holds, and work-items per backward group */
#define DVP (DV / LT_P)
#define NB (LT_RB * LT_P)

#if LT_BK % LT_KC != 0 || LT_BB % LT_BC != 0 || DV % LT_P != 0
#error "LT_KC must divide LT_BK, LT_BC LT_BB, and LT_P the vectors of a row"
#endif

/* The VW elements from element e on of an array of either type (bf 1: bf16), as a vector;
 * and back, rounded when bf16. */
static inline vec load_vec(global const uchar *p, size_t e, int bf)
{
	if (bf)
		return widen_vec(vload_bits(0, (global const ushort *)p + e));
	return vload_vec(0, (global const float *)p + e);
}

static inline void store_vec(vec x, global uchar *p, size_t e, int bf)
{
	if (bf)
		vstore_bits(round_vec(x), 0, (global ushort *)p + e);
	else
		vstore_vec(x, 0, (global float *)p + e);
}

BODY void stage_rows_of(local vec *dst, global const uchar *src, size_t ld, int r0, int n,
			int rows, int threads, int bf)
{
	for (int i = get_local_id(0); i < rows * DV; i += threads) {
		int r = i / DV, v = i % DV;
		dst[i] = r < n ? load_vec(src, (size_t)(r0 + r) * ld + v * VW, bf) : (vec)(0.0f);
	}
}

/* Copies rows r0 .. r0+n-1 of a strided global matrix (row r at element r * ld of src, bf16
 * when bf) to the dense local tile dst[rows][DV], zeros from row n on; all `threads`
 * work-items take part. */
static inline void stage_rows(local vec *dst, global const uchar *src, int bf, size_t ld, int r0,
			      int n, int rows, int threads)
{
	if (bf)
		stage_rows_of(dst, src, ld, r0, n, rows, threads, 1);
	else
		stage_rows_of(dst, src, ld, r0, n, rows, threads, 0);
}

/* Copies n elements (zeros from n on) of src to dst[LT_BB]. */
static inline void stage_floats(local float *dst, global const float *src, int n)
{
	for (int i = get_local_id(0); i < LT_BB; i += NB)
		dst[i] = i < n ? src[i] : 0.0f;
}

/* x[len] = the len vectors at src (bf16 when bf) times s, or zeros when the row does not
 * exist. */
static inline void load_vecs(vec *x, global const uchar *src, int bf, int exists, float s,
			     int len)
{
#pragma unroll
	for (int d = 0; d < len; d++)
		x[d] = exists ? load_vec(src, (size_t)d * VW, bf) * s : (vec)(0.0f);
}

/* the len vectors at dst (bf16 when bf) = x[len] * s */
static inline void store_vecs(global uchar *dst, int bf, const vec *x, float s, int len)
{
#pragma unroll
	for (int d = 0; d < len; d++)
		store_vec(x[d] * s, dst, (size_t)d * VW, bf);
}

/* s[c] = x[len] . the len vectors of tile row c (rows DV apart), for the LT_KC rows of a
 * chunk; d outermost so the chunk's dot products are independent chains. */
static inline void chunk_dots(float *s, const vec *x, local const vec *tile, int len)
{
#pragma unroll
	for (int c = 0; c < LT_KC; c++)
		s[c] = 0.0f;
#pragma unroll
	for (int d = 0; d < len; d++) {
		vec xd = x[d];
#pragma unroll
		for (int c = 0; c < LT_KC; c++)
			s[c] += dot(xd, tile[c * DV + d]);
	}
}

/* acc[len] += sum over the chunk's rows c of w[c] * the len vectors of tile row c */
static inline void chunk_accumulate(vec *acc, const float *w, local const vec *tile, int len)
{
#pragma unroll
	for (int d = 0; d < len; d++) {
		vec a = acc[d];
#pragma unroll
		for (int c = 0; c < LT_KC; c++)
			a += w[c] * tile[c * DV + d];
		acc[d] = a;
	}
}

/* The backward's part `part` of a row is its vectors part, part + LT_P, ... (interleaved).
 * x[DVP] = those vectors at src (bf16 when bf) times s, or zeros when the row does not
 * exist. */
static inline void load_part(vec *x, global const uchar *src, int bf, int exists, float s,
			     int part)
{
#pragma unroll
	for (int d = 0; d < DVP; d++)
		x[d] = exists ? load_vec(src, (size_t)(d * LT_P + part) * VW, bf) * s : (vec)(0.0f);
}

/* the part's vectors of the row at dst (bf16 when bf) = x[DVP] * s */
static inline void store_part(global uchar *dst, int bf, const vec *x, float s, int part)
{
#pragma unroll
	for (int d = 0; d < DVP; d++)
		store_vec(x[d] * s, dst, (size_t)(d * LT_P + part) * VW, bf);
}

/* s[c] = the part of x . the part of tile row c, for the LT_BC rows c of a chunk (tile: the
 * part's first vector of the chunk's first row); d outermost so the chunk's dot products are
 * independent chains. */
static inline void part_dots(float *s, const vec *x, local const vec *tile)
{
#pragma unroll
	for (int c = 0; c < LT_BC; c++)
		s[c] = 0.0f;
#pragma unroll
	for (int d = 0; d < DVP; d++) {
		vec xd = x[d];
#pragma unroll
		for (int c = 0; c < LT_BC; c++)
			s[c] += dot(xd, tile[c * DV + d * LT_P]);
	}
}

/* acc[DVP] += sum over the chunk's rows c of w[c] * the part of tile row c, in order of c */
static inline void part_accumulate(vec *acc, const float *w, local const vec *tile)
{
#pragma unroll
	for (int d = 0; d < DVP; d++) {
		vec a = acc[d];
#pragma unroll
		for (int c = 0; c < LT_BC; c++)
			a += w[c] * tile[c * DV + d * LT_P];
		acc[d] = a;
	}
}

/* Completes the dot products a[c] and b[c] of a chunk whose LT_P parts the work-items of row
 * r hold, LT_RB apart (so the tile reads of a warp are broadcasts): each writes its parts
 * (a[c], b[c]) to xs[LT_BC][NB] and sums its row's back in part order, so every part gets the
 * same bits. The barrier also keeps the compiler from holding the chunk's tile in registers
 * until its second use. */
static inline void complete_dots(float *a, float *b, local float2 *xs)
{
	int w = get_local_id(0), r = w % LT_RB;
#pragma unroll
	for (int c = 0; c < LT_BC; c++)
		xs[c * NB + w] = (float2)(a[c], b[c]);
	barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
	for (int c = 0; c < LT_BC; c++) {
		float2 x = xs[c * NB + r];
#pragma unroll
		for (int p = 1; p < LT_P; p++)
			x += xs[c * NB + p * LT_RB + r];
		a[c] = x.s0;
		b[c] = x.s1;
	}
}

/* out[B*T, H*D], lse[B, H, T] from qkv[B*T, (H+2K)*D]: causal softmax(q k^T * scale) v.
 * One work-item per query row, LT_WG rows of one (batch, head) per work-group; key and value
 * rows are staged LT_BK at a time and folded in LT_KC at a time by an online softmax (running
 * max m, sum l, unnormalised output acc). Key tiles wholly after the group's last row are
 * never loaded. Blocks of rows are numbered last first, so the groups with the most keys are
 * dispatched first.
 * global (B * H * LT_WG, ceil(T / LT_WG)), local (LT_WG, 1) */
kernel __attribute__((reqd_work_group_size(LT_WG, 1, 1)))
void lt_attention_forward(global uchar *out_base, ulong out_off, int out_bf,
			  global float *lse_base, ulong lse_off, global const uchar *qkv_base,
			  ulong qkv_off, int qkv_bf, int T, int H, int K, float scale)
{
	local vec ks[LT_BK * DV], vs[LT_BK * DV];
	int q0 = (get_num_groups(1) - 1 - get_group_id(1)) * LT_WG, row = q0 + get_local_id(0);
	int bh = get_group_id(0), b = bh / H, h = bh % H, kv = h / (H / K);
	size_t W = (size_t)(H + 2 * K) * LT_D;
	global const uchar *x = ELEM_AT(qkv_base, qkv_off + (size_t)b * T * W, qkv_bf);
	global const uchar *kx = ELEM_AT(x, (size_t)(H + kv) * LT_D, qkv_bf);
	global const uchar *vx = ELEM_AT(x, (size_t)(H + K + kv) * LT_D, qkv_bf);

	vec q[DV], acc[DV];
	load_vecs(q, ELEM_AT(x, (size_t)row * W + (size_t)h * LT_D, qkv_bf), qkv_bf, row < T, scale,
		  DV);
#pragma unroll
	for (int d = 0; d < DV; d++)
		acc[d] = (vec)(0.0f);
	/* The first chunk holds key 0, which every row sees, so m is finite after it. */
	float m = -INFINITY, l = 0.0f;
	int kend = min(T, q0 + LT_WG);
	for (int k0 = 0; k0 < kend; k0 += LT_BK) {
		int nk = min(LT_BK, kend - k0);
		barrier(CLK_LOCAL_MEM_FENCE);
		stage_rows(ks, kx, qkv_bf, W, k0, nk, LT_BK, LT_WG);
		stage_rows(vs, vx, qkv_bf, W, k0, nk, LT_BK, LT_WG);
		barrier(CLK_LOCAL_MEM_FENCE);
		for (int c0 = 0; c0 < nk; c0 += LT_KC) {
			float s[LT_KC];
			chunk_dots(s, q, ks + c0 * DV, DV);
			float mc = m;
#pragma unroll
			for (int c = 0; c < LT_KC; c++) {
				s[c] = k0 + c0 + c <= row ? s[c] : -INFINITY;
				mc = fmax(mc, s[c]);
			}
			float alpha = exp(m - mc);
			l *= alpha;
#pragma unroll
			for (int d = 0; d < DV; d++)
				acc[d] *= alpha;
#pragma unroll
			for (int c = 0; c < LT_KC; c++) {
				s[c] = exp(s[c] - mc);
				l += s[c];
			}
			chunk_accumulate(acc, s, vs + c0 * DV, DV);
			m = mc;
		}
	}
	if (row < T) {
		size_t n = (size_t)b * T + row;
		store_vecs(ELEM_AT(out_base, out_off + n * H * LT_D + (size_t)h * LT_D, out_bf), out_bf,
			   acc, 1.0f / l, DV);
		lse_base[lse_off + (size_t)bh * T + row] = m + log(l);
	}
}

/* lt_attention_delta's row, dout and out bf16 where dybf, ybf */
BODY void delta_body(global float *delta_base, ulong delta_off, global const uchar *dout_base,
		     ulong dout_off, global const uchar *out_base, ulong out_off, int T, int H,
		     int dybf, int ybf)
{
	int t = get_group_id(1) * LT_WG + get_local_id(0), bh = get_group_id(0);
	int b = bh / H, h = bh % H;
	if (t >= T)
		return;
	size_t at = ((size_t)b * T + t) * H * LT_D + (size_t)h * LT_D;
	global const uchar *dy = ELEM_AT(dout_base, dout_off + at, dybf);
	global const uchar *y = ELEM_AT(out_base, out_off + at, ybf);
	vec sum = (vec)(0.0f);
	for (int d = 0; d < DV; d++)
		sum += load_vec(dy, (size_t)d * VW, dybf) * load_vec(y, (size_t)d * VW, ybf);
	delta_base[delta_off + (size_t)bh * T + t] = dot(sum, (vec)(1.0f));
}

/* delta[B, H, T] = sum over d of dout * out, per query row and head (dout, out[B*T, H*D]).
 * global (B * H * LT_WG, ceil(T / LT_WG)), local (LT_WG, 1) */
kernel __attribute__((reqd_work_group_size(LT_WG, 1, 1)))
void lt_attention_delta(global float *delta_base, ulong delta_off, global const uchar *dout_base,
			ulong dout_off, int dout_bf, global const uchar *out_base, ulong out_off,
			int out_bf, int T, int H)
{
	if (dout_bf | out_bf)
		delta_body(delta_base, delta_off, dout_base, dout_off, out_base, out_off, T, H,
			   dout_bf, out_bf);
	else
		delta_body(delta_base, delta_off, dout_base, dout_off, out_base, out_off, T, H, 0, 0);
}

/* The query part of dqkv[B*T, (H+2K)*D] (overwritten) from dout[B*T, H*D], lse and
 * delta[B, H, T], qkv: dq = scale * sum over keys j <= t of p (dp - delta) k_j, with
 * p = exp(s - lse), dp = dout . v_j. LT_P work-items LT_RB apart per query row, each holding
 * its part of q, dout and dq; LT_RB rows of one (batch, head) per work-group, the keys and
 * values staged LT_BB rows at a time, in order, and folded in LT_BC at a time. p takes
 * native_exp: the gradient tolerates its few ulps, and exp would cost more than the dot
 * products here.
 * global (B * H * NB, ceil(T / LT_RB)), local (NB, 1) */
kernel __attribute__((reqd_work_group_size(NB, 1, 1)))
void lt_attention_dq(global uchar *dqkv_base, ulong dqkv_off, int dqkv_bf,
		     global const uchar *dout_base, ulong dout_off, int dout_bf,
		     global const float *lse_base, ulong lse_off, global const float *delta_base,
		     ulong delta_off, global const uchar *qkv_base, ulong qkv_off, int qkv_bf, int T,
		     int H, int K, float scale)
{
	local vec ks[LT_BB * DV], vs[LT_BB * DV];
	local float2 xs[2 * LT_BC * NB];
	int r = get_local_id(0) % LT_RB, part = get_local_id(0) / LT_RB;
	int q0 = (get_num_groups(1) - 1 - get_group_id(1)) * LT_RB, row = q0 + r;
	int bh = get_group_id(0), b = bh / H, h = bh % H, kv = h / (H / K);
	size_t W = (size_t)(H + 2 * K) * LT_D, n = (size_t)b * T + row;
	global const uchar *x = ELEM_AT(qkv_base, qkv_off + (size_t)b * T * W, qkv_bf);
	global const uchar *kx = ELEM_AT(x, (size_t)(H + kv) * LT_D, qkv_bf);
	global const uchar *vx = ELEM_AT(x, (size_t)(H + K + kv) * LT_D, qkv_bf);

	vec q[DVP], dy[DVP], dq[DVP];
	load_part(q, ELEM_AT(x, (size_t)row * W + (size_t)h * LT_D, qkv_bf), qkv_bf, row < T, scale,
		  part);
	load_part(dy, ELEM_AT(dout_base, dout_off + n * H * LT_D + (size_t)h * LT_D, dout_bf),
		  dout_bf, row < T, 1.0f, part);
#pragma unroll
	for (int d = 0; d < DVP; d++)
		dq[d] = (vec)(0.0f);
	float lse = row < T ? lse_base[lse_off + (size_t)bh * T + row] : 0.0f;
	float delta = row < T ? delta_base[delta_off + (size_t)bh * T + row] : 0.0f;
	int kend = min(T, q0 + LT_RB), buf = 0;
	for (int k0 = 0; k0 < kend; k0 += LT_BB) {
		int nk = min(LT_BB, kend - k0);
		barrier(CLK_LOCAL_MEM_FENCE);
		stage_rows(ks, kx, qkv_bf, W, k0, nk, LT_BB, NB);
		stage_rows(vs, vx, qkv_bf, W, k0, nk, LT_BB, NB);
		barrier(CLK_LOCAL_MEM_FENCE);
		for (int c0 = 0; c0 < nk; c0 += LT_BC, buf ^= LT_BC * NB) {
			float s[LT_BC], dp[LT_BC];
			part_dots(s, q, ks + c0 * DV + part);
			part_dots(dp, dy, vs + c0 * DV + part);
			complete_dots(s, dp, xs + buf);
#pragma unroll
			for (int c = 0; c < LT_BC; c++) {
				float p = k0 + c0 + c <= row ? native_exp(s[c] - lse) : 0.0f;
				s[c] = p * (dp[c] - delta);
			}
			part_accumulate(dq, s, ks + c0 * DV + part);
		}
	}
	if (row < T)
		store_part(ELEM_AT(dqkv_base, dqkv_off + n * W + (size_t)h * LT_D, dqkv_bf), dqkv_bf, dq,
			   scale, part);
}

/* dk and dv of key rows j of kv head kv, summed over the query heads h = kv * G + split,
 * + nsplit, ... of its group (G = H / K) and their query rows i >= j:
 *   dv = sum p dout_i,  dk = scale * sum p (dp - delta_i) q_i,
 * p = exp(q_i . k_j * scale - lse_i) (native_exp, as in lt_attention_dq), dp = dout_i . v_j.
 * LT_P work-items LT_RB apart per key row, each holding its part of k, v, dk and dv; LT_RB
 * rows of one (batch, kv head, split) per work-group; query rows, dout rows, lse and delta
 * staged LT_BB at a time in a fixed order, from the group's first key row on (earlier queries
 * see none of its keys), and folded in LT_BC at a time. Row j of (b, kv, split) goes to
 * dst + b * bstride + kv * kvstride + split * sstride + j * rstride (dk) and dv_at further
 * (dv): the packed dqkv when nsplit is 1, else a partial sum for lt_attention_dkv_sum.
 * global (B * K * nsplit * NB, ceil(T / LT_RB)), local (NB, 1) */
kernel __attribute__((reqd_work_group_size(NB, 1, 1)))
void lt_attention_dkv(global uchar *dst_base, ulong dst_off, int dst_bf, ulong bstride,
		      ulong kvstride, ulong sstride, ulong rstride, ulong dv_at,
		      global const uchar *dout_base, ulong dout_off, int dout_bf,
		      global const float *lse_base, ulong lse_off, global const float *delta_base,
		      ulong delta_off, global const uchar *qkv_base, ulong qkv_off, int qkv_bf, int T,
		      int H, int K, int nsplit, float scale)
{
	local vec qs[LT_BB * DV], dys[LT_BB * DV];
	local float lses[LT_BB], deltas[LT_BB];
	local float2 xs[2 * LT_BC * NB];
	int r = get_local_id(0) % LT_RB, part = get_local_id(0) / LT_RB;
	int k0 = get_group_id(1) * LT_RB, row = k0 + r;
	int g = get_group_id(0), split = g % nsplit, bk = g / nsplit, b = bk / K, kv = bk % K;
	int G = H / K, buf = 0;
	size_t W = (size_t)(H + 2 * K) * LT_D, HD = (size_t)H * LT_D;
	global const uchar *x = ELEM_AT(qkv_base, qkv_off + (size_t)b * T * W, qkv_bf);
	global const uchar *dyb = ELEM_AT(dout_base, dout_off + (size_t)b * T * HD, dout_bf);

	vec kk[DVP], vv[DVP], dk[DVP], dv[DVP];
	load_part(kk, ELEM_AT(x, (size_t)row * W + (size_t)(H + kv) * LT_D, qkv_bf), qkv_bf, row < T,
		  scale, part);
	load_part(vv, ELEM_AT(x, (size_t)row * W + (size_t)(H + K + kv) * LT_D, qkv_bf), qkv_bf,
		  row < T, 1.0f, part);
#pragma unroll
	for (int d = 0; d < DVP; d++)
		dk[d] = dv[d] = (vec)(0.0f);
	for (int h = kv * G + split; h < (kv + 1) * G; h += nsplit) {
		size_t bh = (size_t)b * H + h;
		for (int i0 = k0; i0 < T; i0 += LT_BB) {
			int ni = min(LT_BB, T - i0);
			barrier(CLK_LOCAL_MEM_FENCE);
			stage_rows(qs, ELEM_AT(x, (size_t)h * LT_D, qkv_bf), qkv_bf, W, i0, ni, LT_BB,
				   NB);
			stage_rows(dys, ELEM_AT(dyb, (size_t)h * LT_D, dout_bf), dout_bf, HD, i0, ni,
				   LT_BB, NB);
			stage_floats(lses, lse_base + lse_off + bh * T + i0, ni);
			stage_floats(deltas, delta_base + delta_off + bh * T + i0, ni);
			barrier(CLK_LOCAL_MEM_FENCE);
			for (int c0 = 0; c0 < ni; c0 += LT_BC, buf ^= LT_BC * NB) {
				float s[LT_BC], dp[LT_BC];
				part_dots(s, kk, qs + c0 * DV + part);
				part_dots(dp, vv, dys + c0 * DV + part);
				complete_dots(s, dp, xs + buf);
#pragma unroll
				for (int c = 0; c < LT_BC; c++) {
					int i = i0 + c0 + c;
					s[c] = i >= row && i < T ? native_exp(s[c] - lses[c0 + c]) :
								   0.0f;
					dp[c] = s[c] * (dp[c] - deltas[c0 + c]);
				}
				part_accumulate(dv, s, dys + c0 * DV + part);
				part_accumulate(dk, dp, qs + c0 * DV + part);
			}
		}
	}
	if (row < T) {
		global uchar *dst = ELEM_AT(dst_base, dst_off + b * bstride + kv * kvstride +
						       split * sstride + row * rstride, dst_bf);
		store_part(dst, dst_bf, dk, scale, part);
		store_part(ELEM_AT(dst, dv_at, dst_bf), dst_bf, dv, 1.0f, part);
	}
}

/* The key and value parts of dqkv[B*T, (H+2K)*D] from part[nsplit, B, K, T, 2D] (dk then dv
 * per row), summed over the splits in order. global (T * 2 * DV, B * K), local NULL */
kernel void lt_attention_dkv_sum(global uchar *dqkv_base, ulong dqkv_off, int dqkv_bf,
				 global const float *part_base, ulong part_off, int T, int H,
				 int K, int nsplit)
{
	int i = get_global_id(0), bk = get_global_id(1), b = bk / K, kv = bk % K;
	int t = i / (2 * DV), e = i % (2 * DV), which = e / DV, v = e % DV;
	size_t W = (size_t)(H + 2 * K) * LT_D, stride = (size_t)get_global_size(1) * T * 2 * LT_D;
	global const float *p = part_base + part_off + ((size_t)bk * T + t) * 2 * LT_D + e * VW;
	vec sum = (vec)(0.0f);
	for (int sp = 0; sp < nsplit; sp++)
		sum += vload_vec(0, p + sp * stride);
	size_t at = ((size_t)b * T + t) * W + (size_t)(H + which * K + kv) * LT_D + v * VW;
	store_vec(sum, dqkv_base, dqkv_off + at, dqkv_bf);
}

/* kcache and vcache[B, K, S, D] at positions pos0 .. pos0+T-1 = the key and value heads of
 * the new rows qkv[B*T, (H+2K)*D]. global (T * DV, B * K), local NULL */
kernel void lt_attention_append(global uchar *kc_base, ulong kc_off, int kc_bf,
				global uchar *vc_base, ulong vc_off, int vc_bf,
				global const uchar *qkv_base, ulong qkv_off, int qkv_bf, int T, int H,
				int K, int S, int pos0)
{
	int i = get_global_id(0), bk = get_global_id(1), b = bk / K, kv = bk % K;
	int t = i / DV, v = i % DV;
	size_t W = (size_t)(H + 2 * K) * LT_D;
	size_t src = qkv_off + ((size_t)b * T + t) * W + v * VW;
	size_t at = ((size_t)bk * S + pos0 + t) * LT_D + v * VW;
	store_vec(load_vec(qkv_base, src + (size_t)(H + kv) * LT_D, qkv_bf), kc_base, kc_off + at,
		  kc_bf);
	store_vec(load_vec(qkv_base, src + (size_t)(H + K + kv) * LT_D, qkv_bf), vc_base,
		  vc_off + at, vc_bf);
}

/* Work-item w's share of a decoded row: folds cache positions j = w, w + LT_NT, ... <= last
 * of kc and vc (bf16 when kbf, vbf) into the online softmax (*m, *l, acc[DV]) of query q. */
BODY void fold_positions(vec *acc, float *m, float *l, const vec *q, global const uchar *kc,
			 global const uchar *vc, int w, int last, int kbf, int vbf)
{
	for (int j = w; j <= last; j += LT_NT) {
		global const uchar *k = ELEM_AT(kc, (size_t)j * LT_D, kbf);
		global const uchar *v = ELEM_AT(vc, (size_t)j * LT_D, vbf);
		vec s4 = (vec)(0.0f);
#pragma unroll
		for (int d = 0; d < DV; d++)
			s4 += q[d] * load_vec(k, (size_t)d * VW, kbf);
		float s = dot(s4, (vec)(1.0f));
		if (s > *m) {
			float alpha = exp(*m - s);
			*l *= alpha;
#pragma unroll
			for (int d = 0; d < DV; d++)
				acc[d] *= alpha;
			*m = s;
		}
		float p = exp(s - *m);
		*l += p;
#pragma unroll
		for (int d = 0; d < DV; d++)
			acc[d] += p * load_vec(v, (size_t)d * VW, vbf);
	}
}

/* out[B*T, H*D] for new query rows at positions pos0 + t over cache positions 0 .. pos0 + t
 * of kcache, vcache[B, K, S, D]. LT_NT work-items per (row, head): work-item w folds in
 * positions w, w + LT_NT, ... with its own online softmax, then the group merges the LT_NT
 * partial results in local memory, in work-item order.
 * global (LT_NT * H, B * T), local (LT_NT, 1) */
kernel __attribute__((reqd_work_group_size(LT_NT, 1, 1)))
void lt_attention_cached(global uchar *out_base, ulong out_off, int out_bf,
			 global const uchar *qkv_base, ulong qkv_off, int qkv_bf,
			 global const uchar *kc_base, ulong kc_off, int kc_bf,
			 global const uchar *vc_base, ulong vc_off, int vc_bf, int T, int H, int K,
			 int S, int pos0, float scale)
{
	local float ms[LT_NT], ls[LT_NT];
	local vec accs[LT_NT * DV];
	int w = get_local_id(0), h = get_group_id(0), n = get_global_id(1);
	int b = n / T, last = pos0 + n % T, kv = h / (H / K);
	size_t W = (size_t)(H + 2 * K) * LT_D, cache = ((size_t)b * K + kv) * S * LT_D;
	global const uchar *kc = ELEM_AT(kc_base, kc_off + cache, kc_bf);
	global const uchar *vc = ELEM_AT(vc_base, vc_off + cache, vc_bf);

	vec q[DV], acc[DV];
	load_vecs(q, ELEM_AT(qkv_base, qkv_off + (size_t)n * W + (size_t)h * LT_D, qkv_bf), qkv_bf,
		  1, scale, DV);
#pragma unroll
	for (int d = 0; d < DV; d++)
		acc[d] = (vec)(0.0f);
	float m = -INFINITY, l = 0.0f;
	if (kc_bf | vc_bf)
		fold_positions(acc, &m, &l, q, kc, vc, w, last, kc_bf, vc_bf);
	else
		fold_positions(acc, &m, &l, q, kc, vc, w, last, 0, 0);
	ms[w] = m;
	ls[w] = l;
	barrier(CLK_LOCAL_MEM_FENCE);
	/* Work-item 0 saw position 0, so the maximum is finite; idle work-items weigh 0. */
	float mx = ms[0], sum = 0.0f;
	for (int i = 1; i < LT_NT; i++)
		mx = fmax(mx, ms[i]);
	for (int i = 0; i < LT_NT; i++)
		sum += ls[i] * exp(ms[i] - mx);
	float f = exp(m - mx);
#pragma unroll
	for (int d = 0; d < DV; d++)
		accs[w * DV + d] = acc[d] * f;
	barrier(CLK_LOCAL_MEM_FENCE);
	size_t o = out_off + (size_t)n * H * LT_D + (size_t)h * LT_D;
	for (int d = w; d < DV; d += LT_NT) {
		vec a = (vec)(0.0f);
		for (int i = 0; i < LT_NT; i++)
			a += accs[i * DV + d];
		store_vec(a / sum, out_base, o + (size_t)d * VW, out_bf);
	}
}
