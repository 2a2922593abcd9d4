/* The inline-PTX helpers of the tensor-core kernels (gemm_mma.cl, attention_mma.cl), built
 * before each of them (cl_program.c): TF32 rounding, the m16n8k8 TF32 mma.sync, shared-memory
 * addresses and the warp shuffles. For NVIDIA's OpenCL on compute capability 8.0 and later. */

#define LT_STR2(x) #x
#define LT_STR(x) LT_STR2(x)

/* The tile of C (column gx, row gy of the grid's first two dimensions) this work-group
 * computes. Work-groups start in order of their id; with group > 1 that order runs down
 * `group` rows of tiles at a time, column after column, so the tiles running at once share
 * columns of B as well as rows of A in the cache. */
static inline void tile_of_group(int group, int *gx, int *gy)
{
	int x = (int)get_group_id(0), y = (int)get_group_id(1);
	if (group > 1) {
		const int nx = (int)get_num_groups(0), ny = (int)get_num_groups(1);
		const int id = y * nx + x, band = group * nx, first = id / band * group;
		const int rows = min(ny - first, group), in = id % band;
		y = first + in % rows;
		x = in / rows;
	}
	*gx = x;
	*gy = y;
}

/* The 32-bit shared-memory address of a local pointer, as PTX wants it. */
static inline uint smem_addr(local const float *p)
{
	return (uint)(ulong)p;
}

/* x as the TF32 mma.sync reads it, rounded to nearest with ties away from zero, as
 * cvt.rna.tf32.f32 rounds: half a TF32 unit (bit 12) is added to the magnitude, and
 * mma.sync ignores the 13 low bits. On an H200 this gave the same errors as cvt.rna at
 * 4096^3 in every layout, and 6-22% more TFLOP/s than cvt.rna's instructions. (A NaN whose
 * payload lies only in the 13 low bits is read as an infinity; any NaN or infinity
 * makes the products non-finite either way.) */
static inline uint to_tf32(float x)
{
	return as_uint(x) + 0x1000u;
}

/* d[16x8] += a[16x8] b[8x8], one warp: the m16n8k8 TF32 fragments, lane (g, t) = (lane / 4,
 * lane % 4) holding a = (a[g][t], a[g+8][t], a[g][t+4], a[g+8][t+4]), b = (b[t][g],
 * b[t+4][g]) and d = (d[g][2t], d[g][2t+1], d[g+8][2t], d[g+8][2t+1]). */
static inline void mma_tf32(float *d, const uint *a, const uint *b)
{
	__asm__ __volatile__(
		"mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
		"{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
		: "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		: "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* x of lane `from` of the warp (every lane takes part). */
static inline float lane_value(float x, int from)
{
	uint r;
	__asm__ __volatile__("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;"
			     : "=r"(r) : "r"(as_uint(x)), "r"(from));
	return as_float(r);
}

/* x of the lane whose index differs from this one's by the bits of mask. */
static inline float lane_xor(float x, int mask)
{
	uint r;
	__asm__ __volatile__("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"
			     : "=r"(r) : "r"(as_uint(x)), "r"(mask));
	return as_float(r);
}
