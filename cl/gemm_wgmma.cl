/* GEMM on NVIDIA Hopper tensor cores (compute capability 9.0) through wgmma.mma_async:
 * bf16 or fp32 operands (as TF32), any transposes, fp32 accumulation. Built after mma.cl and wgmma_ops.cl; the wgmma instructions are PTX
 * comments the host uncomments (wgmma_ops.cl).
 *
 * C[b] = alpha op(A[b]) op(B[b]) + beta C[b], row-major, as gemm_bf16.cl. A work-group of
 * LT_BM / 64 warpgroups computes an LT_BM x LT_BN block of C, each warpgroup 64 rows of it
 * with one m64nLT_BNk wgmma a k-step, its A and B read by the tensor cores straight from
 * local memory. K advances LT_BK at a time through LT_STAGES local buffers filled by
 * cp.async; LT_WAIT wgmma groups are left running while the next stage is waited for.
 *
 * Local tiles are laid out as wgmma's swizzled canonical layouts want them: a K-major tile
 * (K along its rows) has rows of LT_BK elements, in groups of 8 rows, their 16-byte chunks
 * XORed by row (the 32, 64 or 128-byte swizzle of the row's width); an MN-major tile has
 * atoms of 8 k-rows x 64 columns (128 bytes, 128-byte swizzle), atoms along the columns
 * 1024 bytes apart, then the next 8 k-rows.
 *
 * Needs every row of op(A) and op(B), and every batch, to start on 16 bytes (the host
 * checks; LT_VEC other than 4 refuses to build). Build options: LT_BM (64, 128 or 256),
 * LT_BN (64, 128 or 256), LT_BK, LT_STAGES, LT_WAIT, LT_GROUP (mma.cl's grouped raster),
 * LT_TA, LT_TB, LT_TF32, LT_C16 (C is bf16). */

#ifndef LT_BM
#define LT_BM 128
#endif
#ifndef LT_BN
#define LT_BN 128
#endif
#ifndef LT_BK
#define LT_BK 32
#endif
#ifndef LT_STAGES
#define LT_STAGES 3
#endif
#ifndef LT_WAIT
#define LT_WAIT 0
#endif
#ifndef LT_TA
#define LT_TA 0
#endif
#ifndef LT_TB
#define LT_TB 0
#endif
#ifndef LT_TF32
#define LT_TF32 0
#endif
#ifndef LT_C16
#define LT_C16 0
#endif
#ifndef LT_GROUP
#define LT_GROUP 0
#endif

#if defined(LT_VEC) && LT_VEC != 4
#error "every row must start on 16 bytes"
#endif

#if LT_TF32
typedef float etype;
#define ESIZE 4
/* wgmma reads TF32 operands K-major only: an MN-major one is staged through registers,
 * transposed and rounded there (A_STAGED, B_STAGED). */
#define A_STAGED LT_TA
#define B_STAGED (1 - LT_TB)
#else
typedef ushort etype;
#define ESIZE 2
#define A_STAGED 0
#define B_STAGED 0
#endif
#define CHUNK (16 / ESIZE) /* elements in 16 bytes */
#define KSTEP (32 / ESIZE) /* k of one wgmma */
#define WGS (LT_BM / 64)
#define THREADS (WGS * 128)
#define DPER (LT_BN / 2) /* accumulators a thread */

/* wgmma's transpose flags: 1 where the operand is MN-major in local memory */
#if LT_TA && !A_STAGED
#define WG_TA 1
#else
#define WG_TA 0
#endif
#if !LT_TB && !B_STAGED
#define WG_TB 1
#else
#define WG_TB 0
#endif

/* K-major tile rows: KROW bytes, swizzled with KMODE (1: 128 B, 2: 64 B, 3: 32 B) */
#define KROW (LT_BK * ESIZE)
#if KROW == 128
#define KMODE 1
#elif KROW == 64
#define KMODE 2
#elif KROW == 32
#define KMODE 3
#else
#error "LT_BK * element size must be 32, 64 or 128 bytes"
#endif

/* Bytes of a stage's tiles */
#define A_BYTES (LT_BM * KROW)
#define B_BYTES (LT_BN * KROW)
#if LT_STAGES * (A_BYTES + B_BYTES) > 49152
#error "the stages do not fit in 48 KiB"
#endif

#if LT_C16
typedef ushort ctype;
#define C_LOAD(p) bf16_widen(*(p))
#define C_STORE(p, v) (*(p) = bf16_round(v))
#else
typedef float ctype;
#define C_LOAD(p) (*(p))
#define C_STORE(p, v) (*(p) = (v))
#endif

/* Byte offset of element (r, k) of a K-major tile. */
static inline uint kmajor_at(int r, int k)
{
	const int rr = r & 7, b = k * ESIZE;
	return (uint)((r >> 3) * (8 * KROW) + rr * KROW +
		      ((((b >> 4) ^ ((rr * KROW) >> 7)) & (KROW / 16 - 1)) << 4) + (b & 15));
}

/* Byte offset of element (k, c) of an MN-major tile of `cols` columns (bf16). */
static inline uint mnmajor_at(int k, int c, int cols)
{
	const int kr = k & 7;
	return (uint)((k >> 3) * (cols / 64 * 1024) + (c >> 6) * 1024 + kr * 128 +
		      (((((c & 63) * 2) >> 4) ^ kr) << 4) + ((c * 2) & 15));
}

/* The wgmma descriptor of a matrix at shared address addr. */
static inline ulong descriptor(uint addr, uint lbo, uint sbo, uint mode)
{
	return (ulong)((addr & 0x3FFFF) >> 4) | ((ulong)(lbo >> 4) << 16) |
	       ((ulong)(sbo >> 4) << 32) | ((ulong)mode << 62);
}

static inline uint smem_addr_e(local const etype *p)
{
	return (uint)(ulong)p;
}

/* 16 bytes at shared address dst = src (bytes of them, the rest zeros); async. */
static inline void copy16(uint dst, const global etype *src, int bytes)
{
	__asm__ __volatile__("cp.async.cg.shared.global [%0], [%1], 16, %2;"
			     :: "r"(dst), "l"(src), "r"(bytes) : "memory");
}

static inline void commit_copies(void)
{
	__asm__ __volatile__("cp.async.commit_group;" ::: "memory");
}

#define PREFETCH (LT_STAGES - 1 - LT_WAIT) /* stages loaded ahead */
#if PREFETCH < 1
#error "LT_STAGES must exceed LT_WAIT + 1"
#endif
#if PREFETCH == 1
#define IN_FLIGHT 0
#elif PREFETCH == 2
#define IN_FLIGHT 1
#elif PREFETCH == 3
#define IN_FLIGHT 2
#else
#error "at most 3 stages ahead"
#endif
/* Waits until the stage PREFETCH - 1 loads back has arrived. */
static inline void wait_copies(void)
{
	__asm__ __volatile__("cp.async.wait_group " LT_STR(IN_FLIGHT) ";" ::: "memory");
}

static inline void wg_fence(void)
{
	__asm__ __volatile__("//LTWG:wgmma.fence.sync.aligned;\n" ::: "memory");
}
static inline void wg_commit(void)
{
	__asm__ __volatile__("//LTWG:wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
#define WG_WAIT(n) __asm__ __volatile__("//LTWG:wgmma.wait_group.sync.aligned " LT_STR(n) ";\n" ::: "memory")
/* cp.async's writes made visible to wgmma's reads (the async proxy) */
static inline void proxy_fence(void)
{
	__asm__ __volatile__("//LTWG:fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* A K-major tile of R rows: rows r0.. of src (rows x K, leading dimension ld), k0..k0+LT_BK.
 * Where round: the thread's chunks are TF32-rounded (after they arrived). */
static inline void load_kmajor(uint dst, const global etype *src, int ld, int rows, int K,
			       int r0, int k0, int R, int tid)
{
	const int per_row = LT_BK / CHUNK;
	for (int i = tid; i < R * per_row; i += THREADS) {
		int r = i / per_row, k = (i - r * per_row) * CHUNK;
		int gr = r0 + r, gk = k0 + k, left = K - gk;
		int bytes = gr < rows && left > 0 ? (left >= CHUNK ? 16 : left * ESIZE) : 0;
		const global etype *p = bytes ? src + (size_t)gr * (size_t)ld + (size_t)gk : src;
		copy16(dst + kmajor_at(r, k), p, bytes);
	}
}

/* An MN-major tile: k-rows k0..k0+LT_BK of src (K x cols, leading dimension ld), columns
 * c0..c0+C. */
static inline void load_mnmajor(uint dst, const global etype *src, int ld, int K, int cols,
				int k0, int c0, int C, int tid)
{
	const int per_row = C / CHUNK;
	for (int i = tid; i < LT_BK * per_row; i += THREADS) {
		int k = i / per_row, c = (i - k * per_row) * CHUNK;
		int gk = k0 + k, gc = c0 + c, left = cols - gc;
		int bytes = gk < K && left > 0 ? (left >= CHUNK ? 16 : left * ESIZE) : 0;
		const global etype *p = bytes ? src + (size_t)gk * (size_t)ld + (size_t)gc : src;
		copy16(dst + mnmajor_at(k, c, C), p, bytes);
	}
}

/* The cp.async copies of one stage (the operands not staged through registers). */
static inline void load_stage(uint as, uint bs, const global etype *A, int lda,
			      const global etype *B, int ldb, int M, int N, int K, int m0, int n0,
			      int k0, int tid)
{
#if LT_TA && !A_STAGED
	load_mnmajor(as, A, lda, K, M, k0, m0, LT_BM, tid);
#elif !LT_TA
	load_kmajor(as, A, lda, M, K, m0, k0, LT_BM, tid);
#endif
#if LT_TB
	load_kmajor(bs, B, ldb, N, K, n0, k0, LT_BN, tid);
#elif !B_STAGED
	load_mnmajor(bs, B, ldb, K, N, k0, n0, LT_BN, tid);
#endif
}

#if LT_TF32
/* A staged tile of R (LT_BM or LT_BN) MN-major columns: a thread's quads, each 4 k of one
 * column read from 4 rows of global memory (a warp's 32 columns side by side), TF32-rounded
 * and stored as one 16-byte chunk of the K-major tile (conflict-free: the 8 rows a phase
 * writes fall in 8 different chunks of 128 bytes). */
#define QUADS(R) ((R) * (LT_BK / 4) / THREADS)
#if (A_STAGED && (LT_BM * (LT_BK / 4)) % THREADS) || (B_STAGED && (LT_BN * (LT_BK / 4)) % THREADS)
#error "a staged tile's quads must split evenly over the threads"
#endif

static inline void stage_load(uint4 *v, const global etype *src, int ld, int K, int cols, int k0,
			      int c0, int R, int tid)
{
#pragma unroll
	for (int j = 0; j < QUADS(R); j++) {
		int i = tid + j * THREADS, c = i % R, k = k0 + i / R * 4, gc = c0 + c;
		uint e[4];
#pragma unroll
		for (int q = 0; q < 4; q++)
			e[q] = gc < cols && k + q < K
				       ? to_tf32(src[(size_t)(k + q) * (size_t)ld + (size_t)gc])
				       : 0u;
		v[j] = (uint4)(e[0], e[1], e[2], e[3]);
	}
}

static inline void stage_store(local uint *tile, const uint4 *v, int R, int tid)
{
#pragma unroll
	for (int j = 0; j < QUADS(R); j++) {
		int i = tid + j * THREADS;
		*(local uint4 *)(tile + kmajor_at(i % R, i / R * 4) / 4) = v[j];
	}
}

/* The thread's own cp.async chunks of a stage, rounded to TF32 in place (wgmma drops the
 * 13 low bits: adding bit 12 first rounds to nearest, ties away, as to_tf32 in mma.cl). */
static inline void round_tile(local uint *base, int R, int tid)
{
	const int per_row = LT_BK / CHUNK;
	for (int i = tid; i < R * per_row; i += THREADS) {
		int r = i / per_row, k = (i - r * per_row) * CHUNK;
		local uint4 *p = (local uint4 *)(base + kmajor_at(r, k) / 4);
		*p = *p + (uint4)(0x1000u);
	}
}
#endif

/* The wgmma of the tile's width (wgmma_ops.cl) */
#define WGMMA2(kind, n) wgmma_##kind##_n##n
#define WGMMA1(kind, n) WGMMA2(kind, n)
#define BF16_FORM2(ta, tb) bf16_t##ta##tb
#define BF16_FORM(ta, tb) BF16_FORM2(ta, tb)
#if LT_TF32
#define WGMMA WGMMA1(tf32, LT_BN)
#else
#define WGMMA WGMMA1(BF16_FORM(WG_TA, WG_TB), LT_BN)
#endif

/* The descriptors of k-step j of a stage: warpgroup w's 64 rows of A, all of B. */
static inline ulong a_desc(uint as, int w, int j)
{
#if WG_TA
	return descriptor(as + (uint)w * 1024u + (uint)j * 2u * (LT_BM / 64 * 1024), 1024,
			  LT_BM / 64 * 1024, 1);
#else
	return descriptor(as + (uint)w * 64u * KROW + (uint)j * 32u, 16, 8 * KROW, KMODE);
#endif
}

static inline ulong b_desc(uint bs, int j)
{
#if WG_TB
	return descriptor(bs + (uint)j * 2u * (LT_BN / 64 * 1024), 1024, LT_BN / 64 * 1024, 1);
#else
	return descriptor(bs + (uint)j * 32u, 16, 8 * KROW, KMODE);
#endif
}

/* c = alpha v + beta c (beta == 0: c is not read) where inside M x N. */
static inline void store_c(global ctype *C, int ldc, int M, int N, int m, int n, float v,
			   float alpha, float beta)
{
	if (m >= M || n >= N)
		return;
	global ctype *p = C + (size_t)m * (size_t)ldc + (size_t)n;
	C_STORE(p, beta == 0.0f ? alpha * v : alpha * v + beta * C_LOAD(p));
}

/* Grid: (ceil(N / LT_BN) * THREADS, ceil(M / LT_BM), batch), groups of THREADS. */
__attribute__((reqd_work_group_size(THREADS, 1, 1)))
kernel void gemm_wgmma(int M, int N, int K, float alpha, float beta,
		       const global etype *a_base, ulong a_off, int lda, ulong stride_a,
		       const global etype *b_base, ulong b_off, int ldb, ulong stride_b,
		       global ctype *c_base, ulong c_off, int ldc, ulong stride_c)
{
	local uint smem[LT_STAGES * (A_BYTES + B_BYTES) / 4] __attribute__((aligned(1024)));
	const int tid = (int)get_local_id(0), lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
	int gx, gy;
	tile_of_group(LT_GROUP, &gx, &gy);
	const int m0 = gy * LT_BM, n0 = gx * LT_BN;
	const size_t bat = get_group_id(2);
	const global etype *A = a_base + a_off + bat * stride_a;
	const global etype *B = b_base + b_off + bat * stride_b;
	global ctype *C = c_base + c_off + bat * stride_c;
	const uint base = smem_addr((local const float *)smem);
#define AS(s) (base + (uint)(s) * (A_BYTES + B_BYTES))
#define BS(s) (AS(s) + A_BYTES)

	float d[DPER];
#pragma unroll
	for (int i = 0; i < DPER; i++)
		d[i] = 0.0f;

	const int nk = (K + LT_BK - 1) / LT_BK;
#if A_STAGED
	uint4 va[QUADS(LT_BM)];
#define LOAD_A(kt) stage_load(va, A, lda, K, M, (kt) * LT_BK, m0, LT_BM, tid)
#define STORE_A(s) stage_store(smem + (AS(s) - base) / 4, va, LT_BM, tid)
#else
#define LOAD_A(kt)
#define STORE_A(s)
#endif
#if B_STAGED
	uint4 vb[QUADS(LT_BN)];
#define LOAD_B(kt) stage_load(vb, B, ldb, K, N, (kt) * LT_BK, n0, LT_BN, tid)
#define STORE_B(s) stage_store(smem + (BS(s) - base) / 4, vb, LT_BN, tid)
#else
#define LOAD_B(kt)
#define STORE_B(s)
#endif
	for (int s = 0; s < PREFETCH; s++) {
		if (s < nk) {
			load_stage(AS(s), BS(s), A, lda, B, ldb, M, N, K, m0, n0, s * LT_BK, tid);
			LOAD_A(s);
			LOAD_B(s);
			STORE_A(s);
			STORE_B(s);
		}
		commit_copies();
	}
	for (int kt = 0; kt < nk; kt++) {
		const int s = kt % LT_STAGES, next = kt + PREFETCH;
		/* Staged operands: the loads of the stage PREFETCH ahead start first, and are
		 * stored while this stage's wgmma runs. */
		if (next < nk) {
			LOAD_A(next);
			LOAD_B(next);
		}
		wait_copies();
#if LT_TF32 && !A_STAGED
		round_tile(smem + (AS(s) - base) / 4, LT_BM, tid);
#endif
#if LT_TF32 && !B_STAGED
		round_tile(smem + (BS(s) - base) / 4, LT_BN, tid);
#endif
		proxy_fence();
		barrier(CLK_LOCAL_MEM_FENCE);
		/* The buffer PREFETCH stages ahead was last read LT_WAIT + 1 rounds ago: free. */
		if (next < nk)
			load_stage(AS(next % LT_STAGES), BS(next % LT_STAGES), A, lda, B, ldb, M, N,
				   K, m0, n0, next * LT_BK, tid);
		commit_copies();
		wg_fence();
#pragma unroll
		for (int j = 0; j < LT_BK / KSTEP; j++)
			WGMMA(d, a_desc(AS(s), wg, j), b_desc(BS(s), j));
		wg_commit();
		if (next < nk) {
			STORE_A(next % LT_STAGES);
			STORE_B(next % LT_STAGES);
		}
		WG_WAIT(LT_WAIT);
	}
	WG_WAIT(0);
#undef LOAD_A
#undef LOAD_B
#undef STORE_A
#undef STORE_B

	/* Warp q of the warpgroup holds rows 16q + g and 16q + g + 8, lane (g, t) columns
	 * 8i + 2t and 8i + 2t + 1 of n8 block i. */
	const int g = lane >> 2, t = lane & 3;
	const int row = m0 + wg * 64 + (warp & 3) * 16 + g;
#pragma unroll
	for (int i = 0; i < LT_BN / 8; i++) {
		const int col = n0 + i * 8 + 2 * t;
		store_c(C, ldc, M, N, row, col, d[4 * i + 0], alpha, beta);
		store_c(C, ldc, M, N, row, col + 1, d[4 * i + 1], alpha, beta);
		store_c(C, ldc, M, N, row + 8, col, d[4 * i + 2], alpha, beta);
		store_c(C, ldc, M, N, row + 8, col + 1, d[4 * i + 3], alpha, beta);
	}
#undef AS
#undef BS
}
