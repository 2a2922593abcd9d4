/* What every kernel program starts with (cl_program.c puts it first): the bf16 rule of
 * src/backend.h, and the arrays whose elements an op's caller may give as f32 or bf16.
 *
 * Such an array comes to a kernel as three arguments (global uchar *base, ulong off, int bf):
 * the buffer, the offset of the array's first element in elements of its type, and bf, 1 for
 * bf16 (a ushort holding a float's upper half) or 0 for f32. Arithmetic is float whatever the
 * storage: a load widens exactly, a store rounds once, to nearest even.
 *
 * A kernel puts its loops over such arrays in BODY functions of their bf flags and calls them
 * with literal zeros when every array is f32 (with a literal one too where one array is
 * bf16): the f32 path then compiles to the plain float loads and stores it had before bf16,
 * and a mixture of types runs a copy that tests each array's flag, the same for every
 * work-item. Barriers stay in the kernel itself, outside those calls: PoCL hangs on a
 * barrier inside a branch, even one that every work-item takes. */

/* Always inlined, so that literal flags fold away in the caller's copy. */
#define BODY static inline __attribute__((always_inline))

/* The bfloat16 nearest to f, ties to even (a NaN stays a NaN, quiet), and the float a
 * bfloat16 stands for. */
static inline ushort bf16_round(float f)
{
	uint u = as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (ushort)((u >> 16) | 0x0040u);
	return (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_widen(ushort h)
{
	return as_float((uint)h << 16);
}

/* The address of element i of an array at p whose elements are bf16 (bf 1) or f32 (bf 0). */
#define ELEM_AT(p, i, bf) ((p) + ((size_t)(i) << (2 - (bf))))

/* Element i of the array at p, as a float. */
static inline float load_elem(global const uchar *p, size_t i, int bf)
{
	return bf ? bf16_widen(((global const ushort *)p)[i]) : ((global const float *)p)[i];
}

/* Element i of the array at p = v (rounded when bf16). */
static inline void store_elem(global uchar *p, size_t i, float v, int bf)
{
	if (bf)
		((global ushort *)p)[i] = bf16_round(v);
	else
		((global float *)p)[i] = v;
}
