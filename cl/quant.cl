/* A panel of a GEMM's weight operand converted to the type of its other
 * operand: GGUF's q8_0 and q4_0 blocks dequantized (or f32 and bf16 one into
 * the other) into a dense scratch that the GEMM then reads (cl_gemm.c). Plain
 * OpenCL C 1.2: every work-item makes one value. */

/* The source types, as cl_gemm.c numbers them. */
#define SRC_F32 0
#define SRC_BF16 1
#define SRC_Q8_0 2
#define SRC_Q4_0 3

/* Value i of the weight at s (from its buffer's start, in values). */
static inline float weight_value(global const uchar *s, size_t i, int type)
{
	if (type == SRC_F32)
		return ((global const float *)s)[i];
	if (type == SRC_BF16)
		return bf16_widen(((global const ushort *)s)[i]);
	size_t blk = i / 32, j = i % 32;
	if (type == SRC_Q8_0) {
		global const uchar *b = s + blk * 34;
		return vload_half(0, (global const half *)b) * (float)(char)b[2 + j];
	}
	global const uchar *b = s + blk * 18;
	uchar q = b[2 + j % 16];
	int nib = j < 16 ? (q & 0x0f) : (q >> 4);
	return (float)(nib - 8) * vload_half(0, (global const half *)b);
}

/* d[rows, cols] (dense, from element d_off, f32 or bf16 by d_bf) = the
 * weight's values at (r0 + i) * ldb + c0 + j from value s_off of s. */
kernel void lt_weight_panel(global uchar *d, ulong d_off, int d_bf, global const uchar *s,
			    ulong s_off, int s_type, int ldb, int r0, int c0, int rows, int cols)
{
	size_t j = get_global_id(0), i = get_global_id(1);
	if (j >= (size_t)cols || i >= (size_t)rows)
		return;
	float v = weight_value(s, s_off + (size_t)(r0 + i) * (size_t)ldb + (size_t)c0 + j, s_type);
	store_elem(d, d_off + i * (size_t)cols + j, v, d_bf);
}
