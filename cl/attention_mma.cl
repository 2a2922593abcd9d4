/* The flash-attention forward on NVIDIA tensor cores through inline PTX: TF32 mma.sync for
 * the scores and for their weighted sum of values, fp32 softmax; for NVIDIA's OpenCL on
 * devices of compute capability 8.0 and later when train.matmul = tf32 (cl_attention.c
 * builds it nowhere else). Same contract as lt_attention_forward in attention.cl:
 * out[B*T, H*D], lse[B, H, T] from qkv[B*T, (H+2K)*D], causal, grouped-query, nothing
 * T x T stored; q (times the scale), k, the weights p and v are rounded to TF32 before
 * they multiply.
 *
 * A work-group of 4 warps takes 64 query rows of one (batch, head), 16 per warp, its q
 * held in registers as mma fragments. Key and value rows are staged LT_BKV at a time in
 * local memory; each warp computes its 16 x LT_BKV scores (m16n8k8 tiles), masks them,
 * folds them into a running max and sum per row (online softmax), and adds p v to its
 * 16 x D output. A row's maximum is taken across the four lanes that hold it with
 * shfl.sync; p moves from the scores' fragment layout to the operand layout the same way.
 * Every sum runs in a fixed order: a run gives the same bits every time.
 *
 * The backward (lt_attention_dq_mma, lt_attention_dkv_mma) takes the arguments and the
 * contract of attention.cl's lt_attention_dq and lt_attention_dkv, for head sizes up to 64
 * (its fragments live in registers): 64 query rows per work-group for dq, 64 key rows for
 * dk and dv, each warp 16 of them, recomputing p from lse as the forward made it.
 *
 * Built after mma.cl, its PTX helpers. Build options: LT_D, the head size (a multiple of 8);
 * LT_BKV, key rows per stage of the forward and of dq. */

#ifndef LT_D
#error "LT_D (the head size) must be given"
#endif
#ifndef LT_BKV
#define LT_BKV 64
#endif
#if LT_D % 8 != 0 || LT_BKV % 8 != 0
#error "LT_D and LT_BKV are multiples of 8"
#endif

#define BQ 64           /* query rows per work-group */
#define THREADS 128     /* 4 warps */
#define DK (LT_D / 8)   /* k8 steps of a dot product over D; n8 tiles of an output row */
#define NJ (LT_BKV / 8) /* n8 tiles of a score row; k8 steps of p v */
/* Row strides of the staged tiles: scores read k as (row g, column t) and v as (row t,
 * column g); these paddings put the 32 lanes of each read on 32 banks. */
#define KLD (LT_D + 4)
#define VLD (LT_D + 8)

/* The maximum and the sum over the four lanes of a quad (the lanes of one row). */
static inline float quad_max(float x)
{
	x = fmax(x, lane_xor(x, 1));
	return fmax(x, lane_xor(x, 2));
}
static inline float quad_sum(float x)
{
	x += lane_xor(x, 1);
	return x + lane_xor(x, 2);
}

/* Copies rows r0 .. r0+rows-1 of a strided global matrix (row r at src + r * ld, D floats)
 * to dst[rows][dld], zeros from row n on. */
static inline void stage(local float *dst, int dld, global const float *src, size_t ld, int r0,
			 int n, int rows)
{
	for (int i = get_local_id(0); i < rows * (LT_D / 4); i += THREADS) {
		int r = i / (LT_D / 4), c = (i % (LT_D / 4)) * 4;
		float4 v = r < n ? vload4(0, src + (size_t)(r0 + r) * ld + c) : (float4)(0.0f);
		vstore4(v, 0, dst + r * dld + c);
	}
}

/* The operand fragment of p for keys 8j .. 8j+7 from the scores' fragments s[4] of tile j:
 * the lane (g, t) holds p[g][2t, 2t+1] and p[g+8][2t, 2t+1] and needs p[g][t], p[g+8][t],
 * p[g][t+4], p[g+8][t+4], which lanes g*4 + t/2 and g*4 + 2 + t/2 hold. */
static inline void p_operand(uint *a, const float *s, int lane)
{
	int g = lane >> 2, t = lane & 3, lo = g * 4 + (t >> 1), hi = lo + 2, odd = t & 1;
	float x0 = lane_value(s[0], lo), x1 = lane_value(s[1], lo);
	float y0 = lane_value(s[2], lo), y1 = lane_value(s[3], lo);
	float z0 = lane_value(s[0], hi), z1 = lane_value(s[1], hi);
	float w0 = lane_value(s[2], hi), w1 = lane_value(s[3], hi);
	a[0] = to_tf32(odd ? x1 : x0);
	a[1] = to_tf32(odd ? y1 : y0);
	a[2] = to_tf32(odd ? z1 : z0);
	a[3] = to_tf32(odd ? w1 : w0);
}

/* global (B * H * THREADS, ceil(T / BQ)), local (THREADS, 1) */
kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void lt_attention_forward_mma(global float *out_base, ulong out_off, global float *lse_base,
			      ulong lse_off, global const float *qkv_base, ulong qkv_off, int T,
			      int H, int K, float scale)
{
	local float ks[LT_BKV * KLD] __attribute__((aligned(16)));
	local float vs[LT_BKV * VLD] __attribute__((aligned(16)));
	const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
	const int g = lane >> 2, t = lane & 3;
	const int q0 = (get_num_groups(1) - 1 - get_group_id(1)) * BQ, w0 = q0 + warp * 16;
	const int r0 = w0 + g, r1 = r0 + 8;
	const int bh = get_group_id(0), b = bh / H, h = bh % H, kv = h / (H / K);
	const size_t W = (size_t)(H + 2 * K) * LT_D;
	global const float *x = qkv_base + qkv_off + (size_t)b * T * W;
	global const float *qx = x + (size_t)h * LT_D;
	global const float *kx = x + (size_t)(H + kv) * LT_D, *vx = x + (size_t)(H + K + kv) * LT_D;

	uint q[DK][4];
#pragma unroll
	for (int kk = 0; kk < DK; kk++) {
		int c = kk * 8 + t;
		q[kk][0] = to_tf32(r0 < T ? qx[(size_t)r0 * W + c] * scale : 0.0f);
		q[kk][1] = to_tf32(r1 < T ? qx[(size_t)r1 * W + c] * scale : 0.0f);
		q[kk][2] = to_tf32(r0 < T ? qx[(size_t)r0 * W + c + 4] * scale : 0.0f);
		q[kk][3] = to_tf32(r1 < T ? qx[(size_t)r1 * W + c + 4] * scale : 0.0f);
	}
	float o[DK][4];
#pragma unroll
	for (int d = 0; d < DK; d++)
		o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
	/* the first tile holds key 0, which every row sees, so m is finite after it */
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
	const int kend = min(T, q0 + BQ);
	for (int k0 = 0; k0 < kend; k0 += LT_BKV) {
		barrier(CLK_LOCAL_MEM_FENCE);
		stage(ks, KLD, kx, W, k0, kend - k0, LT_BKV);
		stage(vs, VLD, vx, W, k0, kend - k0, LT_BKV);
		barrier(CLK_LOCAL_MEM_FENCE);
		if (k0 > w0 + 15)  /* every key of the tile is after this warp's rows */
			continue;
		float s[NJ][4];
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
			for (int kk = 0; kk < DK; kk++) {
				uint bk[2];
				bk[0] = to_tf32(ks[(j * 8 + g) * KLD + kk * 8 + t]);
				bk[1] = to_tf32(ks[(j * 8 + g) * KLD + kk * 8 + t + 4]);
				mma_tf32(s[j], q[kk], bk);
			}
		}
		float mx0 = m0, mx1 = m1;
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			int key = k0 + j * 8 + 2 * t;
			s[j][0] = key <= r0 ? s[j][0] : -INFINITY;
			s[j][1] = key + 1 <= r0 ? s[j][1] : -INFINITY;
			s[j][2] = key <= r1 ? s[j][2] : -INFINITY;
			s[j][3] = key + 1 <= r1 ? s[j][3] : -INFINITY;
			mx0 = fmax(mx0, fmax(s[j][0], s[j][1]));
			mx1 = fmax(mx1, fmax(s[j][2], s[j][3]));
		}
		mx0 = quad_max(mx0);
		mx1 = quad_max(mx1);
		float alpha0 = exp(m0 - mx0), alpha1 = exp(m1 - mx1);
		l0 *= alpha0;
		l1 *= alpha1;
#pragma unroll
		for (int d = 0; d < DK; d++) {
			o[d][0] *= alpha0;
			o[d][1] *= alpha0;
			o[d][2] *= alpha1;
			o[d][3] *= alpha1;
		}
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			s[j][0] = exp(s[j][0] - mx0);
			s[j][1] = exp(s[j][1] - mx0);
			s[j][2] = exp(s[j][2] - mx1);
			s[j][3] = exp(s[j][3] - mx1);
			l0 += s[j][0] + s[j][1];
			l1 += s[j][2] + s[j][3];
		}
		m0 = mx0;
		m1 = mx1;
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			uint a[4];
			p_operand(a, s[j], lane);
#pragma unroll
			for (int d = 0; d < DK; d++) {
				uint bv[2];
				bv[0] = to_tf32(vs[(j * 8 + t) * VLD + d * 8 + g]);
				bv[1] = to_tf32(vs[(j * 8 + t + 4) * VLD + d * 8 + g]);
				mma_tf32(o[d], a, bv);
			}
		}
	}
	l0 = quad_sum(l0);
	l1 = quad_sum(l1);
	size_t HD = (size_t)H * LT_D;
	global float *y = out_base + out_off + (size_t)b * T * HD + (size_t)h * LT_D + 2 * t;
#pragma unroll
	for (int d = 0; d < DK; d++) {
		if (r0 < T)
			vstore2((float2)(o[d][0], o[d][1]) / l0, 0, y + (size_t)r0 * HD + d * 8);
		if (r1 < T)
			vstore2((float2)(o[d][2], o[d][3]) / l1, 0, y + (size_t)r1 * HD + d * 8);
	}
	if (t == 0 && r0 < T)
		lse_base[lse_off + (size_t)bh * T + r0] = m0 + log(l0);
	if (t == 0 && r1 < T)
		lse_base[lse_off + (size_t)bh * T + r1] = m1 + log(l1);
}

/* ------------------------------------------------------------------ */
/* The backward, for head sizes up to 64 (its fragments would not fit in registers beyond). */
#if LT_D <= 64

/* Query rows per stage of dk/dv. */
#define BQB 32
#define NQ (BQB / 8)

/* The operand fragments of rows r0 and r1 = r0 + 8 of a strided matrix (row r at src + r * ld,
 * D floats) times s, zeros for rows from T on. */
static inline void row_operand(uint x[DK][4], global const float *src, size_t ld, int r0, int T,
			       float s, int t)
{
	int r1 = r0 + 8;
#pragma unroll
	for (int kk = 0; kk < DK; kk++) {
		int c = kk * 8 + t;
		x[kk][0] = to_tf32(r0 < T ? src[(size_t)r0 * ld + c] * s : 0.0f);
		x[kk][1] = to_tf32(r1 < T ? src[(size_t)r1 * ld + c] * s : 0.0f);
		x[kk][2] = to_tf32(r0 < T ? src[(size_t)r0 * ld + c + 4] * s : 0.0f);
		x[kk][3] = to_tf32(r1 < T ? src[(size_t)r1 * ld + c + 4] * s : 0.0f);
	}
}

/* d[n][16 x 8] = x[16 x D] . (rows 8n .. 8n+7 of tile[.][KLD])^T for the n tiles: the dot
 * products of a warp's 16 rows with n * 8 staged rows. */
static inline void dots(float d[][4], int n, const uint x[DK][4], local const float *tile,
			int g, int t)
{
#pragma unroll
	for (int j = 0; j < n; j++) {
		d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < DK; kk++) {
			uint b[2];
			b[0] = to_tf32(tile[(j * 8 + g) * KLD + kk * 8 + t]);
			b[1] = to_tf32(tile[(j * 8 + g) * KLD + kk * 8 + t + 4]);
			mma_tf32(d[j], x[kk], b);
		}
	}
}

/* acc[16 x D] += w[16 x n*8] . tile[n*8 rows][KLD], w given as its n score tiles. */
static inline void weigh_rows(float acc[DK][4], float w[][4], int n, local const float *tile,
			      int lane)
{
	int g = lane >> 2, t = lane & 3;
#pragma unroll
	for (int j = 0; j < n; j++) {
		uint a[4];
		p_operand(a, w[j], lane);
#pragma unroll
		for (int d = 0; d < DK; d++) {
			uint b[2];
			b[0] = to_tf32(tile[(j * 8 + t) * KLD + d * 8 + g]);
			b[1] = to_tf32(tile[(j * 8 + t + 4) * KLD + d * 8 + g]);
			mma_tf32(acc[d], a, b);
		}
	}
}

/* Stores rows r0 and r0 + 8 of acc[16 x D] times s at dst + r * ld (columns d * 8 + 2t). */
static inline void store_rows(global float *dst, size_t ld, const float acc[DK][4], int r0, int T,
			      float s, int t)
{
#pragma unroll
	for (int d = 0; d < DK; d++) {
		if (r0 < T)
			vstore2((float2)(acc[d][0], acc[d][1]) * s, 0,
				dst + (size_t)r0 * ld + d * 8 + 2 * t);
		if (r0 + 8 < T)
			vstore2((float2)(acc[d][2], acc[d][3]) * s, 0,
				dst + (size_t)(r0 + 8) * ld + d * 8 + 2 * t);
	}
}

/* The query part of dqkv (see lt_attention_dq): dq = scale * sum over keys j <= i of
 * p (dp - delta_i) k_j, p = exp(q_i . k_j scale - lse_i), dp = dout_i . v_j.
 * global (B * H * THREADS, ceil(T / BQ)), local (THREADS, 1) */
kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void lt_attention_dq_mma(global float *dqkv_base, ulong dqkv_off, global const float *dout_base,
			 ulong dout_off, global const float *lse_base, ulong lse_off,
			 global const float *delta_base, ulong delta_off,
			 global const float *qkv_base, ulong qkv_off, int T, int H, int K,
			 float scale)
{
	local float ks[LT_BKV * KLD] __attribute__((aligned(16)));
	local float vs[LT_BKV * KLD] __attribute__((aligned(16)));
	const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
	const int g = lane >> 2, t = lane & 3;
	const int q0 = (get_num_groups(1) - 1 - get_group_id(1)) * BQ, w0 = q0 + warp * 16;
	const int r0 = w0 + g, r1 = r0 + 8;
	const int bh = get_group_id(0), b = bh / H, h = bh % H, kv = h / (H / K);
	const size_t W = (size_t)(H + 2 * K) * LT_D, HD = (size_t)H * LT_D;
	global const float *x = qkv_base + qkv_off + (size_t)b * T * W;
	global const float *kx = x + (size_t)(H + kv) * LT_D, *vx = x + (size_t)(H + K + kv) * LT_D;

	uint q[DK][4], dy[DK][4];
	row_operand(q, x + (size_t)h * LT_D, W, w0 + g, T, scale, t);
	row_operand(dy, dout_base + dout_off + (size_t)b * T * HD + (size_t)h * LT_D, HD, w0 + g,
		    T, 1.0f, t);
	float dq[DK][4];
#pragma unroll
	for (int d = 0; d < DK; d++)
		dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.0f;
	global const float *lse = lse_base + lse_off + (size_t)bh * T;
	global const float *delta = delta_base + delta_off + (size_t)bh * T;
	float lse0 = r0 < T ? lse[r0] : 0.0f, lse1 = r1 < T ? lse[r1] : 0.0f;
	float dl0 = r0 < T ? delta[r0] : 0.0f, dl1 = r1 < T ? delta[r1] : 0.0f;
	const int kend = min(T, q0 + BQ);
	for (int k0 = 0; k0 < kend; k0 += LT_BKV) {
		barrier(CLK_LOCAL_MEM_FENCE);
		stage(ks, KLD, kx, W, k0, kend - k0, LT_BKV);
		stage(vs, KLD, vx, W, k0, kend - k0, LT_BKV);
		barrier(CLK_LOCAL_MEM_FENCE);
		if (k0 > w0 + 15)
			continue;
		float s[NJ][4], dp[NJ][4];
		dots(s, NJ, q, ks, g, t);
		dots(dp, NJ, dy, vs, g, t);
#pragma unroll
		for (int j = 0; j < NJ; j++) {
			int key = k0 + j * 8 + 2 * t;
			float p0 = key <= r0 ? exp(s[j][0] - lse0) : 0.0f;
			float p1 = key + 1 <= r0 ? exp(s[j][1] - lse0) : 0.0f;
			float p2 = key <= r1 ? exp(s[j][2] - lse1) : 0.0f;
			float p3 = key + 1 <= r1 ? exp(s[j][3] - lse1) : 0.0f;
			s[j][0] = p0 * (dp[j][0] - dl0);
			s[j][1] = p1 * (dp[j][1] - dl0);
			s[j][2] = p2 * (dp[j][2] - dl1);
			s[j][3] = p3 * (dp[j][3] - dl1);
		}
		weigh_rows(dq, s, NJ, ks, lane);
	}
	store_rows(dqkv_base + dqkv_off + (size_t)b * T * W + (size_t)h * LT_D, W, dq, w0 + g, T,
		   scale, t);
}

/* dk and dv of key rows j (see lt_attention_dkv): dv = sum p dout_i, dk = scale * sum
 * p (dp - delta_i) q_i over the query heads h = kv * G + split, + nsplit, ... and rows
 * i >= j, p = exp(q_i . k_j scale - lse_i), dp = dout_i . v_j; row j to dst + b * bstride +
 * kv * kvstride + split * sstride + j * rstride (dk) and dv_at further (dv).
 * global (B * K * nsplit * THREADS, ceil(T / BQ)), local (THREADS, 1) */
kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void lt_attention_dkv_mma(global float *dst_base, ulong dst_off, ulong bstride, ulong kvstride,
			  ulong sstride, ulong rstride, ulong dv_at, global const float *dout_base,
			  ulong dout_off, global const float *lse_base, ulong lse_off,
			  global const float *delta_base, ulong delta_off,
			  global const float *qkv_base, ulong qkv_off, int T, int H, int K,
			  int nsplit, float scale)
{
	local float qs[BQB * KLD] __attribute__((aligned(16)));
	local float dys[BQB * KLD] __attribute__((aligned(16)));
	local float lses[BQB], deltas[BQB];
	const int lane = get_local_id(0) & 31, warp = get_local_id(0) >> 5;
	const int g = lane >> 2, t = lane & 3;
	const int k0 = get_group_id(1) * BQ, w0 = k0 + warp * 16, j0 = w0 + g, j1 = j0 + 8;
	const int gr = get_group_id(0), split = gr % nsplit, bk = gr / nsplit;
	const int b = bk / K, kv = bk % K, G = H / K;
	const size_t W = (size_t)(H + 2 * K) * LT_D, HD = (size_t)H * LT_D;
	global const float *x = qkv_base + qkv_off + (size_t)b * T * W;
	global const float *dyb = dout_base + dout_off + (size_t)b * T * HD;

	uint kf[DK][4], vf[DK][4];
	row_operand(kf, x + (size_t)(H + kv) * LT_D, W, j0, T, scale, t);
	row_operand(vf, x + (size_t)(H + K + kv) * LT_D, W, j0, T, 1.0f, t);
	float dk[DK][4], dv[DK][4];
#pragma unroll
	for (int d = 0; d < DK; d++)
		dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = dv[d][0] = dv[d][1] = dv[d][2] =
			dv[d][3] = 0.0f;
	for (int h = kv * G + split; h < (kv + 1) * G; h += nsplit) {
		size_t bh = (size_t)b * H + h;
		for (int i0 = k0; i0 < T; i0 += BQB) {
			int ni = min(BQB, T - i0);
			barrier(CLK_LOCAL_MEM_FENCE);
			stage(qs, KLD, x + (size_t)h * LT_D, W, i0, ni, BQB);
			stage(dys, KLD, dyb + (size_t)h * LT_D, HD, i0, ni, BQB);
			for (int i = get_local_id(0); i < BQB; i += THREADS) {
				lses[i] = i < ni ? lse_base[lse_off + bh * T + i0 + i] : 0.0f;
				deltas[i] = i < ni ? delta_base[delta_off + bh * T + i0 + i] : 0.0f;
			}
			barrier(CLK_LOCAL_MEM_FENCE);
			if (i0 + BQB - 1 < w0)  /* every query of the tile is before this warp's keys */
				continue;
			float s[NQ][4], dp[NQ][4];
			dots(s, NQ, kf, qs, g, t);
			dots(dp, NQ, vf, dys, g, t);
#pragma unroll
			for (int c = 0; c < NQ; c++) {
				int at = c * 8 + 2 * t, i = i0 + at;
				float la = lses[at], lb = lses[at + 1];
				float da = deltas[at], db = deltas[at + 1];
				float p0 = i >= j0 && i < T ? exp(s[c][0] - la) : 0.0f;
				float p1 = i + 1 >= j0 && i + 1 < T ? exp(s[c][1] - lb) : 0.0f;
				float p2 = i >= j1 && i < T ? exp(s[c][2] - la) : 0.0f;
				float p3 = i + 1 >= j1 && i + 1 < T ? exp(s[c][3] - lb) : 0.0f;
				dp[c][0] = p0 * (dp[c][0] - da);
				dp[c][1] = p1 * (dp[c][1] - db);
				dp[c][2] = p2 * (dp[c][2] - da);
				dp[c][3] = p3 * (dp[c][3] - db);
				s[c][0] = p0;
				s[c][1] = p1;
				s[c][2] = p2;
				s[c][3] = p3;
			}
			weigh_rows(dv, s, NQ, dys, lane);
			weigh_rows(dk, dp, NQ, qs, lane);
		}
	}
	global float *dst = dst_base + dst_off + b * bstride + kv * kvstride + split * sstride;
	store_rows(dst, rstride, dk, j0, T, scale, t);
	store_rows(dst + dv_at, rstride, dv, j0, T, 1.0f, t);
	(void)j1;
}
#endif
