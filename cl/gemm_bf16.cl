/* GEMM of bf16 operands on NVIDIA tensor cores through inline PTX: BF16 mma.sync
 * (m16n8k16) with fp32 accumulation, for NVIDIA's OpenCL on devices of compute capability
 * 8.0 and later (cl_gemm_bf16.c builds it nowhere else).
 *
 * C[b] = alpha op(A[b]) op(B[b]) + beta C[b], row-major, the contract of struct lt_gemm in
 * backend.h, with A and B bf16 and C f32 or (LT_C16) bf16, rounded once on store to
 * nearest even. Each product of two bf16 is exact; sums are fp32, one thread summing each C
 * element in a fixed order, so a run gives the same bits every time.
 *
 * Tiling: a work-group computes an LT_BM x LT_BN block of C with (LT_BM / LT_WM) x
 * (LT_BN / LT_WN) warps, each an LT_WM x LT_WN tile of m16n8k16 mma.sync. K advances LT_BK
 * at a time through LT_STAGES buffers in local memory, filled by 16-byte cp.async copies (8
 * bf16) while the previous buffer is multiplied; rows and columns past M, N and K are
 * zeros. Every fragment is read with ldmatrix (.trans where K runs down the tile's rows).
 * Local rows are padded by 8 elements (16 bytes), or with LT_SWIZZLE unpadded with their
 * 16-byte chunks permuted by row (XOR), which fits one more stage in the 48 KiB; either puts
 * the 8 rows an ldmatrix phase reads in 8 different groups of 4 banks.
 *
 * Needs every row of op(A) and op(B), and every batch, to start on 16 bytes (the host
 * checks). Built after mma.cl. Build options: LT_BM, LT_BN, LT_BK, LT_WM, LT_WN,
 * LT_STAGES, LT_SWIZZLE; LT_TA, LT_TB (the transposes); LT_C16 (C is bf16); LT_ITER
 * (stages wholly inside the matrices copied without bounds), LT_GROUP (mma.cl's grouped
 * raster) and LT_FRAG2 (the next k-step's fragments read during this one's products). */

#ifndef LT_BM
#define LT_BM 128
#endif
#ifndef LT_BN
#define LT_BN 128
#endif
#ifndef LT_BK
#define LT_BK 32
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
#ifndef LT_C16
#define LT_C16 0
#endif
#ifndef LT_SWIZZLE
#define LT_SWIZZLE 0
#endif
#ifndef LT_ITER
#define LT_ITER 0
#endif
#ifndef LT_GROUP
#define LT_GROUP 0
#endif
#ifndef LT_FRAG2
#define LT_FRAG2 0
#endif

#define WARPS_M (LT_BM / LT_WM)
#define WARPS_N (LT_BN / LT_WN)
#define THREADS (WARPS_M * WARPS_N * 32)
#define TM (LT_WM / 16) /* m16 tiles of a warp */
#define TN (LT_WN / 8)  /* n8 tiles of a warp (an even number) */
#define KSTEPS (LT_BK / 16) /* k16 steps of a stage */
#if LT_FRAG2 && (KSTEPS < 2 || KSTEPS % 2 || LT_STAGES < 3)
#error "LT_FRAG2 needs an even number of k-steps a stage and three stages"
#endif

/* Where element (r, c) of a local tile lives: KIDX for one with K along its rows (r a row
 * of A or column of B, c the k index), MIDX for one with K down its rows (k, then c of
 * `cols` columns). Padded rows, or with LT_SWIZZLE unpadded rows whose 16-byte chunks are
 * XORed with a function of the row: the (8 / chunks)-row groups that share 128 bytes, or
 * the row itself mod 8. */
#if LT_SWIZZLE
#define PAD 0
#define KCHUNKS (LT_BK / 8)
#define KIDX(r, c) \
	((r) * LT_BK + ((((c) >> 3) ^ (((r) / (8 / KCHUNKS)) & (KCHUNKS - 1))) << 3) + ((c) & 7))
#define MIDX(k, c, cols) ((k) * (cols) + ((((c) >> 3) ^ ((k) & 7)) << 3) + ((c) & 7))
#else
#define PAD 8
#define KIDX(r, c) ((r) * (LT_BK + PAD) + (c))
#define MIDX(k, c, cols) ((k) * ((cols) + PAD) + (c))
#endif

/* Sizes (elements) of one stage of the local tiles. */
#if LT_TA
#define A_TILE (LT_BK * (LT_BM + PAD))
#define A_AT(k, m) MIDX(k, m, LT_BM)
#else
#define A_TILE (LT_BM * (LT_BK + PAD))
#define A_AT(k, m) KIDX(m, k)
#endif
#if LT_TB
#define B_TILE (LT_BN * (LT_BK + PAD))
#define B_AT(k, n) KIDX(n, k)
#else
#define B_TILE (LT_BK * (LT_BN + PAD))
#define B_AT(k, n) MIDX(k, n, LT_BN)
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

static inline uint smem_addr16(local const ushort *p)
{
	return (uint)(ulong)p;
}

/* dst[0 .. bytes/2) = src[...], the rest of the 16 bytes zeros; async. */
static inline void copy16_bf16(local ushort *dst, const global ushort *src, int bytes)
{
	__asm__ __volatile__("cp.async.cg.shared.global [%0], [%1], 16, %2;"
			     :: "r"(smem_addr16(dst)), "l"(src), "r"(bytes) : "memory");
}

static inline void commit_copies(void)
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
#else
#error "LT_STAGES is 2 to 4"
#endif
static inline void wait_copies(void)
{
	__asm__ __volatile__("cp.async.wait_group " LT_STR(IN_FLIGHT) ";" ::: "memory");
}

/* The local index of element (r, c) of a tile: KIDX where K runs along its rows (kmajor),
 * else MIDX for a tile of `cols` columns. */
static inline int tile_index(int kmajor, int cols, int r, int c)
{
	return kmajor ? KIDX(r, c) : MIDX(r, c, cols);
}

/* Copies rows [r0, r0 + R) x columns [c0, c0 + L) of the global matrix src (rows x cols,
 * leading dimension ld) into dst, laid out by tile_index (kmajor: the columns are k),
 * zeros outside the matrix. */
static inline void load_tile(local ushort *dst, int kmajor, const global ushort *src, int ld,
			     int rows, int cols, int r0, int c0, int R, int L, int tid)
{
	const int per_row = L / 8;
	for (int i = tid; i < R * per_row; i += THREADS) {
		int r = i / per_row, c = (i - r * per_row) * 8;
		int gr = r0 + r, gc = c0 + c;
		int left = cols - gc;
		int bytes = gr < rows && left > 0 ? (left >= 8 ? 16 : left * 2) : 0;
		const global ushort *p = bytes ? src + (size_t)gr * (size_t)ld + (size_t)gc : src;
		copy16_bf16(dst + tile_index(kmajor, L, r, c), p, bytes);
	}
}

/* One stage: the LT_BK-wide slices of op(A) (rows m0..) and op(B) (columns n0..) at k0. */
static inline void load_stage(local ushort *as, local ushort *bs, const global ushort *A,
			      int lda, const global ushort *B, int ldb, int M, int N, int K,
			      int m0, int n0, int k0, int tid)
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

/* A thread's copies of one tile of R rows x L columns: rows r + j * (THREADS / (L / 8)),
 * j < copies, of the 16-byte column chunk at c. Used where the whole stage lies inside
 * the matrices, so no copy needs a bound: base points at the thread's first element in
 * global memory for k0 = 0, step is the global distance of THREADS / (L / 8) rows. */
#define PER_ROW(L) ((L) / 8)
#define RSTEP(L) (THREADS / PER_ROW(L))
#define COPIES(R, L) ((R) / RSTEP(L))
#if LT_ITER && (THREADS % PER_ROW(LT_BM) || THREADS % PER_ROW(LT_BN) || \
		THREADS % PER_ROW(LT_BK) || LT_BK % RSTEP(LT_BM) || LT_BK % RSTEP(LT_BN) || \
		LT_BM % RSTEP(LT_BK) || LT_BN % RSTEP(LT_BK))
#error "LT_ITER needs every tile's rows to split evenly over the threads"
#endif

static inline void copy_inside(local ushort *dst, int kmajor, const global ushort *p,
			       size_t step, int r, int c, int R, int L)
{
#pragma unroll
	for (int j = 0; j < COPIES(R, L); j++)
		copy16_bf16(dst + tile_index(kmajor, L, r + j * RSTEP(L), c), p + (size_t)j * step,
			    16);
}

/* The stage at k0 when it lies wholly inside op(A) and op(B); pa and pb point at the
 * thread's first elements at k0 = 0 (see stage_origin). */
static inline void load_stage_inside(local ushort *as, local ushort *bs, const global ushort *pa,
				     int lda, const global ushort *pb, int ldb, int k0, int tid)
{
#if LT_TA
	copy_inside(as, 0, pa + (size_t)k0 * lda, (size_t)RSTEP(LT_BM) * lda,
		    tid / PER_ROW(LT_BM), tid % PER_ROW(LT_BM) * 8, LT_BK, LT_BM);
#else
	copy_inside(as, 1, pa + k0, (size_t)RSTEP(LT_BK) * lda, tid / PER_ROW(LT_BK),
		    tid % PER_ROW(LT_BK) * 8, LT_BM, LT_BK);
#endif
#if LT_TB
	copy_inside(bs, 1, pb + k0, (size_t)RSTEP(LT_BK) * ldb, tid / PER_ROW(LT_BK),
		    tid % PER_ROW(LT_BK) * 8, LT_BN, LT_BK);
#else
	copy_inside(bs, 0, pb + (size_t)k0 * ldb, (size_t)RSTEP(LT_BN) * ldb,
		    tid / PER_ROW(LT_BN), tid % PER_ROW(LT_BN) * 8, LT_BK, LT_BN);
#endif
}

/* Where the thread's first copy of a tile of L columns reads, at k0 = 0: row r0 + tid /
 * (L / 8), column c0 + its chunk, of a matrix of leading dimension ld. */
static inline const global ushort *stage_origin(const global ushort *src, int ld, int r0, int c0,
					       int L, int tid)
{
	return src + (size_t)(r0 + tid / PER_ROW(L)) * (size_t)ld + (size_t)(c0 + tid % PER_ROW(L) * 8);
}

/* Four 8x8 bf16 matrices, one row address per lane (lanes 8i .. 8i+7: matrix i). */
static inline void ldmatrix4(uint *r, local const ushort *p)
{
	__asm__ __volatile__("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
			     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
			     : "r"(smem_addr16(p)));
}

static inline void ldmatrix4_trans(uint *r, local const ushort *p)
{
	__asm__ __volatile__("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
			     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
			     : "r"(smem_addr16(p)));
}

/* The A fragment of the m16 x k16 block at rows m, k index kk of the stage: lane (g, t)
 * gets (a[g][2t..2t+1], a[g+8][2t..], a[g][2t+8..], a[g+8][2t+8..]). */
static inline void load_a(uint *a, local const ushort *as, int m, int kk, int lane)
{
#if LT_TA
	int k = kk + (lane & 7) + ((lane >> 4) << 3), c = m + ((lane >> 3) & 1) * 8;
	ldmatrix4_trans(a, as + A_AT(k, c));
#else
	int r = m + (lane & 15), k = kk + (lane >> 4) * 8;
	ldmatrix4(a, as + A_AT(k, r));
#endif
}

/* The B fragments of two n8 x k16 blocks at columns n and n + 8: lane (g, t) gets
 * (b[2t..2t+1][g], b[2t+8..][g]) of each, in b[0..1] and b[2..3]. */
static inline void load_b2(uint *b, local const ushort *bs, int n, int kk, int lane)
{
#if LT_TB
	int r = n + (lane & 7) + ((lane >> 4) << 3), k = kk + ((lane >> 3) & 1) * 8;
	ldmatrix4(b, bs + B_AT(k, r));
#else
	int k = kk + (lane & 7) + (((lane >> 3) & 1) << 3), c = n + (lane >> 4) * 8;
	ldmatrix4_trans(b, bs + B_AT(k, c));
#endif
}

/* d[16x8] += a[16x16] b[16x8], one warp, fragments as above. */
static inline void mma_bf16(float *d, const uint *a, const uint *b)
{
	__asm__ __volatile__(
		"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		"{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
		: "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		: "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* The warp's fragments of k-step kk of a stage, and their products into acc. */
static inline void load_fragments(uint a[TM][4], uint b[TN][2], local const ushort *as,
				  local const ushort *bs, int kk, int wm0, int wn0, int lane)
{
#pragma unroll
	for (int i = 0; i < TM; i++)
		load_a(a[i], as, wm0 + i * 16, kk, lane);
#pragma unroll
	for (int j = 0; j < TN; j += 2)
		load_b2(&b[j][0], bs, wn0 + j * 8, kk, lane);
}

static inline void multiply_fragments(float acc[TM][TN][4], uint a[TM][4], uint b[TN][2])
{
#pragma unroll
	for (int i = 0; i < TM; i++)
#pragma unroll
		for (int j = 0; j < TN; j++)
			mma_bf16(acc[i][j], a[i], b[j]);
}

/* acc += the warp's LT_WM x LT_WN tile of one stage. */
static inline void multiply_stage(float acc[TM][TN][4], local const ushort *as,
				  local const ushort *bs, int wm0, int wn0, int lane)
{
#pragma unroll
	for (int kk = 0; kk < LT_BK; kk += 16) {
		uint a[TM][4], b[TN][2];
		load_fragments(a, b, as, bs, kk, wm0, wn0, lane);
		multiply_fragments(acc, a, b);
	}
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
kernel void gemm_mma_bf16(int M, int N, int K, float alpha, float beta,
			  const global ushort *a_base, ulong a_off, int lda, ulong stride_a,
			  const global ushort *b_base, ulong b_off, int ldb, ulong stride_b,
			  global ctype *c_base, ulong c_off, int ldc, ulong stride_c)
{
	local ushort as[LT_STAGES * A_TILE] __attribute__((aligned(16)));
	local ushort bs[LT_STAGES * B_TILE] __attribute__((aligned(16)));
	const int tid = (int)get_local_id(0), lane = tid & 31, warp = tid >> 5;
	const int wm0 = (warp / WARPS_N) * LT_WM, wn0 = (warp % WARPS_N) * LT_WN;
	int gx, gy;
	tile_of_group(LT_GROUP, &gx, &gy);
	const int m0 = gy * LT_BM, n0 = gx * LT_BN;
	const size_t bat = get_group_id(2);
	const global ushort *A = a_base + a_off + bat * stride_a;
	const global ushort *B = b_base + b_off + bat * stride_b;
	global ctype *C = c_base + c_off + bat * stride_c;

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
	const global ushort *pa = stage_origin(A, lda, 0, m0, LT_BM, tid);
#else
	const global ushort *pa = stage_origin(A, lda, m0, 0, LT_BK, tid);
#endif
#if LT_TB
	const global ushort *pb = stage_origin(B, ldb, n0, 0, LT_BK, tid);
#else
	const global ushort *pb = stage_origin(B, ldb, 0, n0, LT_BN, tid);
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
		commit_copies();
	}
#if LT_FRAG2
	/* The fragments of the next k-step are read while this one multiplies; the barrier
	 * that lets the next stage be read comes before the stage's last fragments are. */
	uint fa[2][TM][4], fb[2][TN][2];
	wait_copies();
	barrier(CLK_LOCAL_MEM_FENCE);
	load_fragments(fa[0], fb[0], as, bs, 0, wm0, wn0, lane);
	int rs = 0, ws = LT_STAGES - 1;
	for (int kt = 0; kt < nk; kt++) {
#pragma unroll
		for (int q = 0; q < KSTEPS; q++) {
			if (q == KSTEPS - 1)
				rs = rs == LT_STAGES - 1 ? 0 : rs + 1;
			load_fragments(fa[(q + 1) & 1], fb[(q + 1) & 1], as + rs * A_TILE,
				       bs + rs * B_TILE, (q + 1) % KSTEPS * 16, wm0, wn0, lane);
			if (q == 0) {
				int next = kt + LT_STAGES - 1;
				if (next < nk)
					LOAD(ws, next);
				commit_copies();
				ws = ws == LT_STAGES - 1 ? 0 : ws + 1;
			}
			multiply_fragments(acc, fa[q & 1], fb[q & 1]);
			if (q == KSTEPS - 2) {
				wait_copies();
				barrier(CLK_LOCAL_MEM_FENCE);
			}
		}
	}
#else
	for (int kt = 0; kt < nk; kt++) {
		wait_copies();
		barrier(CLK_LOCAL_MEM_FENCE);
		/* Every warp is past the stage read last round: refill it. */
		int next = kt + LT_STAGES - 1;
		if (next < nk)
			LOAD(next % LT_STAGES, next);
		commit_copies();
		int s = kt % LT_STAGES;
		multiply_stage(acc, as + s * A_TILE, bs + s * B_TILE, wm0, wn0, lane);
	}
#endif
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
