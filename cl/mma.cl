/* The inline-PTX helpers of the tensor-core kernels (gemm_mma.cl, attention_mma.cl), built
 * before each of them (cl_program.c): TF32 rounding, the m16n8k8 TF32 mma.sync, shared-memory
 * addresses and the warp shuffles. For NVIDIA's OpenCL on compute capability 8.0 and later. */

#define LT_STR2(x) #x
#define LT_STR(x) LT_STR2(x)

/* The 32-bit shared-memory address of a local pointer, as PTX wants it. */
static inline uint smem_addr(local const float *p)
{
	return (uint)(ulong)p;
}

/* x rounded to TF32 (round to nearest, ties away), as the bits mma.sync reads. */
static inline uint to_tf32(float x)
{
	uint r;
	__asm__ __volatile__("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
	return r;
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
