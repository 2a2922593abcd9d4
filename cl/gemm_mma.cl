/* GEMM on NVIDIA tensor cores through inline PTX: TF32 mma.sync with fp32
 * accumulation, for NVIDIA's OpenCL on devices of compute capability 8.0
 * and later (cl_gemm_mma.c builds it nowhere else).
 *
 * C[b] = alpha op(A[b]) op(B[b]) + beta C[b], row-major, exactly the
 * contract of struct lt_gemm in backend.h; op(A) is M x K, op(B) K x N.
 * Every element of op(A) and op(B) is rounded to TF32 (10 explicit mantissa
 * bits, round to nearest, ties away from zero, as cvt.rna rounds: mma.cl's
 * to_tf32) before it multiplies; products and sums are fp32. Each C element
 * is summed by one thread in a fixed order, so a run gives the same bits
 * every time.
 *
 * Tiling: a work-group computes an LT_BM x LT_BN block of C with
 * (LT_BM / LT_WM) x (LT_BN / LT_WN) warps, each an LT_WM x LT_WN tile made
 * of m16n8k8 mma.sync instructions. K advances LT_BK at a time through
 * LT_STAGES buffers in local memory, filled by cp.async while the previous
 * buffer is multiplied. Rows and columns past M, N and K are filled with
 * zeros, so ragged edges cost nothing but the padding.
 *
 * Local layouts: a tile whose K runs along global memory (A without
 * transpose, B with) is stored [rows][LT_BK + 4], or with LT_SWIZZLE
 * [rows][LT_BK] with its 16-byte chunks permuted by row (XOR); one whose
 * rows run along it, [LT_BK][cols + 8], or [LT_BK][cols] permuted likewise.
 * Padding and permutation both make the fragment reads of a warp touch 32
 * different banks.
 *
 * Built after mma.cl, its PTX helpers. Build options (the tuning parameters,
 * chosen per device by cl_gemm_mma.c):
 * LT_BM, LT_BN, LT_BK, LT_WM, LT_WN, LT_STAGES; LT_TA, LT_TB (the
 * transposes); LT_VEC 4 when every row of A and B starts on 16 bytes
 * (16-byte copies), else 1; LT_CP_ASYNC 0 loads through registers instead
 * of cp.async; LT_LDMATRIX 1 reads K-contiguous fragments with ldmatrix;
 * LT_KPAIR 1 gives a lane adjacent k in A and B alike (one 8-byte read, see
 * K_LO); LT_ITER 1 copies stages wholly inside the matrices without bounds;
 * LT_GROUP > 1 is mma.cl's grouped raster of work-groups. */

#ifndef LT_BM
#define LT_BM 128
#endif
#ifndef LT_BN
#define LT_BN 128
#endif
#ifndef LT_BK
#define LT_BK 16
#endif
#ifndef LT_WM
#define LT_WM 64
#endif
#ifndef LT_WN
#define LT_WN 64
#endif
#ifndef LT_STAGES
#define LT_STAGES 2
#endif
#ifndef LT_TA
#define LT_TA 0
#endif
#ifndef LT_TB
#define LT_TB 0
#endif
#ifndef LT_VEC
#define LT_VEC 4
#endif
#ifndef LT_CP_ASYNC
#define LT_CP_ASYNC 1
#endif
#ifndef LT_LDMATRIX
#define LT_LDMATRIX 0
#endif
#ifndef LT_SWIZZLE
#define LT_SWIZZLE 0
#endif
#ifndef LT_KPAIR
#define LT_KPAIR 0
#endif
#ifndef LT_ITER
#define LT_ITER 0
#endif
#ifndef LT_GROUP
#define LT_GROUP 0
#endif

#define WARPS_M (LT_BM / LT_WM)
#define WARPS_N (LT_BN / LT_WN)
#define THREADS (WARPS_M * WARPS_N * 32)
#define TM (LT_WM / 16) /* m16 tiles of a warp */
#define TN (LT_WN / 8)  /* n8 tiles of a warp */

/* Where element (r, c) of a K-contiguous local tile (rows r, k index c)
 * lives: padded rows, or unpadded rows whose 16-byte chunks are XORed with
 * a function of the row so that the 8 rows a fragment read touches fall in
 * 8 different groups of 4 banks. */
#define KCHUNKS (LT_BK / 4)
#if LT_SWIZZLE && LT_KPAIR
/* (LT_KPAIR: a half-warp reads 32 bytes of each of 4 rows; their pairs of chunks go to
 * different quarters of 128 bytes.) */
#define K_LD LT_BK
#define KIDX(r, c) \
	((r) * LT_BK + \
	 ((((c) >> 2) ^ ((((r) / (8 / KCHUNKS)) & (KCHUNKS / 2 - 1)) << 1)) << 2) + ((c) & 3))
#elif LT_SWIZZLE
#define K_LD LT_BK
#define KIDX(r, c) \
	((r) * LT_BK + ((((c) >> 2) ^ (((r) / (8 / KCHUNKS)) & (KCHUNKS - 1))) << 2) + ((c) & 3))
#elif LT_KPAIR
#define K_LD (LT_BK + 8)
#define KIDX(r, c) ((r) * K_LD + (c))
#else
#define K_LD (LT_BK + 4)
#define KIDX(r, c) ((r) * K_LD + (c))
#endif

/* Where element (k, c) of a tile with K down its rows and `cols` columns
 * lives: rows padded by 8, or unpadded with chunk c / 4 XORed by 2k mod 8,
 * which spreads the 4 k-rows x 8 columns of a fragment read over 32 banks. */
#if LT_SWIZZLE && LT_KPAIR
#define M_PAD 0
#define MIDX(k, c, cols) ((k) * (cols) + ((((c) >> 2) ^ ((((k) >> 1) & 3) << 1)) << 2) + ((c) & 3))
#elif LT_SWIZZLE
#define M_PAD 0
#define MIDX(k, c, cols) ((k) * (cols) + ((((c) >> 2) ^ (((k) << 1) & 7)) << 2) + ((c) & 3))
#elif LT_KPAIR
#define M_PAD 4
#define MIDX(k, c, cols) ((k) * ((cols) + M_PAD) + (c))
#else
#define M_PAD 8
#define MIDX(k, c, cols) ((k) * ((cols) + M_PAD) + (c))
#endif

/* Sizes (floats) of one stage of the local tiles. */
#if LT_TA
#define A_TILE (LT_BK * (LT_BM + M_PAD))
#else
#define A_TILE (LT_BM * K_LD)
#endif
#if LT_TB
#define B_TILE (LT_BN * K_LD)
#else
#define B_TILE (LT_BK * (LT_BN + M_PAD))
#endif

#if LT_CP_ASYNC
/* dst[0..bytes/4) = src[...], the rest of the 16 (or 4) bytes zeros; async. */
static inline void copy16(local float *dst, const global float *src, int bytes)
{
	__asm__ __volatile__("cp.async.cg.shared.global [%0], [%1], 16, %2;"
			     :: "r"(smem_addr(dst)), "l"(src), "r"(bytes) : "memory");
}
static inline void copy4(local float *dst, const global float *src, int bytes)
{
	__asm__ __volatile__("cp.async.ca.shared.global [%0], [%1], 4, %2;"
			     :: "r"(smem_addr(dst)), "l"(src), "r"(bytes) : "memory");
}
static inline void copies_commit(void)
{
	__asm__ __volatile__("cp.async.commit_group;" ::: "memory");
}
/* Waits until at most LT_STAGES - 2 committed groups are in flight. */
#if LT_STAGES == 2
#define IN_FLIGHT 0
#elif LT_STAGES == 3
#define IN_FLIGHT 1
#elif LT_STAGES == 4
#define IN_FLIGHT 2
#elif LT_STAGES == 5
#define IN_FLIGHT 3
#elif LT_STAGES == 6
#define IN_FLIGHT 4
#else
#error "LT_STAGES is 2 to 6"
#endif
static inline void copies_wait(void)
{
	__asm__ __volatile__("cp.async.wait_group " LT_STR(IN_FLIGHT) ";" ::: "memory");
}
#else
static inline void copy16(local float *dst, const global float *src, int bytes)
{
	float4 v = (float4)(0.0f);
	if (bytes == 16)
		v = vload4(0, src);
	else {
		if (bytes > 0) v.x = src[0];
		if (bytes > 4) v.y = src[1];
		if (bytes > 8) v.z = src[2];
	}
	vstore4(v, 0, dst);
}
static inline void copy4(local float *dst, const global float *src, int bytes)
{
	*dst = bytes ? *src : 0.0f;
}
static inline void copies_commit(void) {}
static inline void copies_wait(void) {}
#endif

/* The local index of element (r, c) of a tile: K-contiguous (kmajor), or
 * with K down its rows and `cols` columns. */
static inline int tile_index(int kmajor, int cols, int r, int c)
{
	return kmajor ? KIDX(r, c) : MIDX(r, c, cols);
}

/* Copies the tile rows [r0, r0 + R) x contiguous columns [c0, c0 + L) of the
 * global matrix src (rows x cols, leading dimension ld) into dst (laid out
 * by tile_index(kmajor, L, ...)), zeros outside the matrix. */
static inline void load_tile(local float *dst, int kmajor, const global float *src,
			     int ld, int rows, int cols, int r0, int c0, int R, int L, int tid)
{
#if LT_VEC == 4
	const int per_row = L / 4;
	for (int i = tid; i < R * per_row; i += THREADS) {
		int r = i / per_row, c = (i - r * per_row) * 4;
		int gr = r0 + r, gc = c0 + c;
		int left = cols - gc;
		int bytes = gr < rows && left > 0 ? (left >= 4 ? 16 : left * 4) : 0;
		const global float *p = bytes ? src + (size_t)gr * (size_t)ld + (size_t)gc : src;
		copy16(dst + tile_index(kmajor, L, r, c), p, bytes);
	}
#else
	for (int i = tid; i < R * L; i += THREADS) {
		int r = i / L, c = i - r * L;
		int gr = r0 + r, gc = c0 + c;
		int bytes = gr < rows && gc < cols ? 4 : 0;
		const global float *p = bytes ? src + (size_t)gr * (size_t)ld + (size_t)gc : src;
		copy4(dst + tile_index(kmajor, L, r, c), p, bytes);
	}
#endif
}

/* One stage: the LT_BK-wide slices of op(A) (rows m0..) and op(B) (columns n0..) at k0. */
static inline void load_stage(local float *as, local float *bs, const global float *A, int lda,
			      const global float *B, int ldb, int M, int N, int K, int m0, int n0,
			      int k0, int tid)
{
#if LT_TA
	load_tile(as, 0, A, lda, K, M, k0, m0, LT_BK, LT_BM, tid);
#else
	load_tile(as, 1, A, lda, M, K, m0, k0, LT_BM, LT_BK, tid);
#endif
#if LT_TB
	load_tile(bs, 1, B, ldb, N, K, n0, k0, LT_BN, LT_BK, tid);
#else
	load_tile(bs, 0, B, ldb, K, N, k0, n0, LT_BK, LT_BN, tid);
#endif
}

/* A thread's copies of one tile of R rows x L columns where the whole stage lies inside
 * the matrices: rows r + j * (THREADS / (L / 4)), j < copies, of the 16-byte column chunk
 * at c, from p (the thread's first element at this stage) on, step apart in global memory. */
#define PER_ROW(L) ((L) / 4)
#define RSTEP(L) (THREADS / PER_ROW(L))
#define COPIES(R, L) ((R) / RSTEP(L))
#if LT_ITER && (LT_VEC != 4 || THREADS % PER_ROW(LT_BM) || THREADS % PER_ROW(LT_BN) || \
		THREADS % PER_ROW(LT_BK) || LT_BK % RSTEP(LT_BM) || LT_BK % RSTEP(LT_BN) || \
		LT_BM % RSTEP(LT_BK) || LT_BN % RSTEP(LT_BK))
#error "LT_ITER needs 16-byte copies and every tile's rows split evenly over the threads"
#endif

static inline void copy_inside(local float *dst, int kmajor, const global float *p, size_t step,
			       int r, int c, int R, int L)
{
#pragma unroll
	for (int j = 0; j < COPIES(R, L); j++)
		copy16(dst + tile_index(kmajor, L, r + j * RSTEP(L), c), p + (size_t)j * step, 16);
}

/* Where the thread's first copy of a tile of L columns reads at k0 = 0: row r0 + tid /
 * (L / 4), column c0 + its chunk, of a matrix of leading dimension ld. */
static inline const global float *stage_origin(const global float *src, int ld, int r0, int c0,
					      int L, int tid)
{
	return src + (size_t)(r0 + tid / PER_ROW(L)) * (size_t)ld + (size_t)(c0 + tid % PER_ROW(L) * 4);
}

/* The stage at k0 when it lies wholly inside op(A) and op(B); pa and pb from stage_origin. */
static inline void load_stage_inside(local float *as, local float *bs, const global float *pa,
				     int lda, const global float *pb, int ldb, int k0, int tid)
{
#if LT_TA
	copy_inside(as, 0, pa + (size_t)k0 * lda, (size_t)RSTEP(LT_BM) * lda,
		    tid / PER_ROW(LT_BM), tid % PER_ROW(LT_BM) * 4, LT_BK, LT_BM);
#else
	copy_inside(as, 1, pa + k0, (size_t)RSTEP(LT_BK) * lda, tid / PER_ROW(LT_BK),
		    tid % PER_ROW(LT_BK) * 4, LT_BM, LT_BK);
#endif
#if LT_TB
	copy_inside(bs, 1, pb + k0, (size_t)RSTEP(LT_BK) * ldb, tid / PER_ROW(LT_BK),
		    tid % PER_ROW(LT_BK) * 4, LT_BN, LT_BK);
#else
	copy_inside(bs, 0, pb + (size_t)k0 * ldb, (size_t)RSTEP(LT_BN) * ldb,
		    tid / PER_ROW(LT_BN), tid % PER_ROW(LT_BN) * 4, LT_BK, LT_BN);
#endif
}

/* The A fragment (m16 x k8, rows m of the tile, k of the slice) of lane (g, t). With
 * LT_KPAIR the lane's two k of mma.sync's (t, t + 4) are the slice's 2t and 2t + 1 instead,
 * in A and B alike, so that the products summed are the same and a K-contiguous tile gives
 * both in one 8-byte read. */
#if LT_KPAIR
#if LT_LDMATRIX
#error "LT_KPAIR reads its own fragments, not ldmatrix's"
#endif
#define K_LO(t) (2 * (t))
#define K_HI(t) (2 * (t) + 1)
#else
#define K_LO(t) (t)
#define K_HI(t) ((t) + 4)
#endif

/* Two floats of a K-contiguous tile, at an even index. */
static inline float2 pair_at(local const float *p)
{
	return *(local const float2 *)p;
}

static inline void load_a(uint *a, local const float *as, int m, int k, int lane)
{
#if !LT_TA && LT_LDMATRIX
	int q = lane >> 3, r = lane & 7;
	local const float *p = as + KIDX(m + r + (q & 1) * 8, k + (q >> 1) * 4);
	__asm__ __volatile__("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
			     : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
			     : "r"(smem_addr(p)));
	for (int i = 0; i < 4; i++)
		a[i] = to_tf32(as_float(a[i]));
#elif !LT_TA && LT_KPAIR
	int g = lane >> 2, t = lane & 3;
	float2 lo = pair_at(as + KIDX(m + g, k + 2 * t));
	float2 hi = pair_at(as + KIDX(m + g + 8, k + 2 * t));
	a[0] = to_tf32(lo.x);
	a[1] = to_tf32(hi.x);
	a[2] = to_tf32(lo.y);
	a[3] = to_tf32(hi.y);
#else
	int g = lane >> 2, t = lane & 3;
#if LT_TA
#define AT(mm, kk) as[MIDX(kk, mm, LT_BM)]
#else
#define AT(mm, kk) as[KIDX(mm, kk)]
#endif
	a[0] = to_tf32(AT(m + g, k + K_LO(t)));
	a[1] = to_tf32(AT(m + g + 8, k + K_LO(t)));
	a[2] = to_tf32(AT(m + g, k + K_HI(t)));
	a[3] = to_tf32(AT(m + g + 8, k + K_HI(t)));
#undef AT
#endif
}

/* The B fragment (k8 x n8, columns n of the tile) of lane (g, t). */
static inline void load_b(uint *b, local const float *bs, int n, int k, int lane)
{
	int g = lane >> 2, t = lane & 3;
#if LT_TB && LT_KPAIR
	float2 v = pair_at(bs + KIDX(n + g, k + 2 * t));
	b[0] = to_tf32(v.x);
	b[1] = to_tf32(v.y);
#else
#if LT_TB
#define BT(kk, nn) bs[KIDX(nn, kk)]
#else
#define BT(kk, nn) bs[MIDX(kk, nn, LT_BN)]
#endif
	b[0] = to_tf32(BT(k + K_LO(t), n + g));
	b[1] = to_tf32(BT(k + K_HI(t), n + g));
#undef BT
#endif
}

/* The warp's fragments of k-step kk of a stage, and their products into acc. */
static inline void load_fragments(uint a[TM][4], uint b[TN][2], local const float *as,
				  local const float *bs, int kk, int wm0, int wn0, int lane)
{
#pragma unroll
	for (int i = 0; i < TM; i++)
		load_a(a[i], as, wm0 + i * 16, kk, lane);
#pragma unroll
	for (int j = 0; j < TN; j++)
		load_b(b[j], bs, wn0 + j * 8, kk, lane);
}

static inline void multiply_fragments(float acc[TM][TN][4], uint a[TM][4], uint b[TN][2])
{
#pragma unroll
	for (int i = 0; i < TM; i++)
#pragma unroll
		for (int j = 0; j < TN; j++)
			mma_tf32(acc[i][j], a[i], b[j]);
}

/* acc += the warp's LT_WM x LT_WN tile of one stage. */
static inline void multiply_stage(float acc[TM][TN][4], local const float *as,
				  local const float *bs, int wm0, int wn0, int lane)
{
#pragma unroll
	for (int kk = 0; kk < LT_BK; kk += 8) {
		uint a[TM][4], b[TN][2];
		load_fragments(a, b, as, bs, kk, wm0, wn0, lane);
		multiply_fragments(acc, a, b);
	}
}

/* c = alpha acc + beta c (beta == 0: c is not read) where inside M x N. */
static inline void store_c(global float *C, int ldc, int M, int N, int m, int n, float v,
			   float alpha, float beta)
{
	if (m >= M || n >= N)
		return;
	global float *p = C + (size_t)m * (size_t)ldc + (size_t)n;
	*p = beta == 0.0f ? alpha * v : alpha * v + beta * *p;
}

/* Grid: (ceil(N / LT_BN) * THREADS, ceil(M / LT_BM), batch), groups of THREADS. */
__attribute__((reqd_work_group_size(THREADS, 1, 1)))
kernel void gemm_mma_tf32(int M, int N, int K, float alpha, float beta,
			  const global float *a_base, ulong a_off, int lda, ulong stride_a,
			  const global float *b_base, ulong b_off, int ldb, ulong stride_b,
			  global float *c_base, ulong c_off, int ldc, ulong stride_c)
{
	local float as[LT_STAGES * A_TILE] __attribute__((aligned(16)));
	local float bs[LT_STAGES * B_TILE] __attribute__((aligned(16)));
	const int tid = (int)get_local_id(0), lane = tid & 31, warp = tid >> 5;
	const int wm0 = (warp / WARPS_N) * LT_WM, wn0 = (warp % WARPS_N) * LT_WN;
	int gx, gy;
	tile_of_group(LT_GROUP, &gx, &gy);
	const int m0 = gy * LT_BM, n0 = gx * LT_BN;
	const size_t bat = get_group_id(2);
	const global float *A = a_base + a_off + bat * stride_a;
	const global float *B = b_base + b_off + bat * stride_b;
	global float *C = c_base + c_off + bat * stride_c;

	float acc[TM][TN][4];
#pragma unroll
	for (int i = 0; i < TM; i++)
#pragma unroll
		for (int j = 0; j < TN; j++)
			acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

	const int nk = (K + LT_BK - 1) / LT_BK;
#if LT_ITER
	/* Stages wholly inside the matrices (all but the edges') copy without bounds. */
	const int inside_mn = m0 + LT_BM <= M && n0 + LT_BN <= N;
#if LT_TA
	const global float *pa = stage_origin(A, lda, 0, m0, LT_BM, tid);
#else
	const global float *pa = stage_origin(A, lda, m0, 0, LT_BK, tid);
#endif
#if LT_TB
	const global float *pb = stage_origin(B, ldb, n0, 0, LT_BK, tid);
#else
	const global float *pb = stage_origin(B, ldb, 0, n0, LT_BN, tid);
#endif
#define LOAD(s, kt) \
	do { \
		if (inside_mn && ((kt) + 1) * LT_BK <= K) \
			load_stage_inside(as + (s) * A_TILE, bs + (s) * B_TILE, pa, lda, pb, ldb, \
					  (kt) * LT_BK, tid); \
		else \
			load_stage(as + (s) * A_TILE, bs + (s) * B_TILE, A, lda, B, ldb, M, N, K, \
				   m0, n0, (kt) * LT_BK, tid); \
	} while (0)
#else
#define LOAD(s, kt) \
	load_stage(as + (s) * A_TILE, bs + (s) * B_TILE, A, lda, B, ldb, M, N, K, m0, n0, \
		   (kt) * LT_BK, tid)
#endif
	for (int s = 0; s < LT_STAGES - 1; s++) {
		if (s < nk)
			LOAD(s, s);
		copies_commit();
	}
	for (int kt = 0; kt < nk; kt++) {
		copies_wait();
		barrier(CLK_LOCAL_MEM_FENCE);
		/* Every warp is past the stage read last round: refill it. */
		int next = kt + LT_STAGES - 1;
		if (next < nk)
			LOAD(next % LT_STAGES, next);
		copies_commit();
		int s = kt % LT_STAGES;
		multiply_stage(acc, as + s * A_TILE, bs + s * B_TILE, wm0, wn0, lane);
#if !LT_CP_ASYNC
		barrier(CLK_LOCAL_MEM_FENCE);
#endif
	}
#undef LOAD

	const int g = lane >> 2, t = lane & 3;
#pragma unroll
	for (int i = 0; i < TM; i++)
#pragma unroll
		for (int j = 0; j < TN; j++) {
			int m = m0 + wm0 + i * 16 + g, n = n0 + wn0 + j * 8 + 2 * t;
			store_c(C, ldc, M, N, m, n, acc[i][j][0], alpha, beta);
			store_c(C, ldc, M, N, m, n + 1, acc[i][j][1], alpha, beta);
			store_c(C, ldc, M, N, m + 8, n, acc[i][j][2], alpha, beta);
			store_c(C, ldc, M, N, m + 8, n + 1, acc[i][j][3], alpha, beta);
		}
}

/* The plain fp32 reference the tuner holds each candidate to:
 * one thread per element of C, global size (N, M, batch). */
kernel void gemm_reference(int M, int N, int K, float alpha, float beta,
			   const global float *a_base, ulong a_off, int lda, ulong stride_a,
			   const global float *b_base, ulong b_off, int ldb, ulong stride_b,
			   global float *c_base, ulong c_off, int ldc, ulong stride_c)
{
	const int n = (int)get_global_id(0), m = (int)get_global_id(1);
	const size_t bat = get_global_id(2);
	if (m >= M || n >= N)
		return;
	const global float *A = a_base + a_off + bat * stride_a;
	const global float *B = b_base + b_off + bat * stride_b;
	global float *C = c_base + c_off + bat * stride_c;
	float s = 0.0f;
	for (int k = 0; k < K; k++) {
		float x = LT_TA ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
		float y = LT_TB ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
		s += x * y;
	}
	store_c(C, ldc, M, N, m, n, s, alpha, beta);
}
