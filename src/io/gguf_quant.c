/* GGUF tensor types: their names, block layouts, the dequantization to
 * float of F32, F16, BF16, Q8_0, Q4_0 and Q4_1 blocks and the quantization
 * of floats into F32, F16, BF16, Q8_0 and Q4_0 ones (see gguf.h). */
#include "config.h"
#include "io/gguf.h"
#include "backend.h"
#include "io/gguf_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- types ---- */

static const struct {
	const char *name;
	uint32_t values, bytes;
} types[] = {
	[LT_GGUF_F32] = { "F32", 1, 4 },    [LT_GGUF_F16] = { "F16", 1, 2 },
	[LT_GGUF_Q4_0] = { "Q4_0", 32, 18 }, [LT_GGUF_Q4_1] = { "Q4_1", 32, 20 },
	[LT_GGUF_Q5_0] = { "Q5_0", 32, 22 }, [LT_GGUF_Q5_1] = { "Q5_1", 32, 24 },
	[LT_GGUF_Q8_0] = { "Q8_0", 32, 34 }, [LT_GGUF_Q8_1] = { "Q8_1", 32, 36 },
	[LT_GGUF_Q2_K] = { "Q2_K", 256, 84 }, [LT_GGUF_Q3_K] = { "Q3_K", 256, 110 },
	[LT_GGUF_Q4_K] = { "Q4_K", 256, 144 }, [LT_GGUF_Q5_K] = { "Q5_K", 256, 176 },
	[LT_GGUF_Q6_K] = { "Q6_K", 256, 210 }, [LT_GGUF_Q8_K] = { "Q8_K", 256, 292 },
	[LT_GGUF_I8] = { "I8", 1, 1 },       [LT_GGUF_I16] = { "I16", 1, 2 },
	[LT_GGUF_I32] = { "I32", 1, 4 },     [LT_GGUF_I64] = { "I64", 1, 8 },
	[LT_GGUF_F64] = { "F64", 1, 8 },     [LT_GGUF_BF16] = { "BF16", 1, 2 },
};
#define NTYPES (sizeof types / sizeof types[0])

const char *lt_gguf_type_name(uint32_t type)
{
	static _Thread_local char buf[32];
	if (type < NTYPES && types[type].name)
		return types[type].name;
	snprintf(buf, sizeof buf, "type %" PRIu32, type);
	return buf;
}

uint32_t lt_gguf_block_values(uint32_t type)
{
	return type < NTYPES ? types[type].values : 0;
}

uint32_t lt_gguf_block_bytes(uint32_t type)
{
	return type < NTYPES ? types[type].bytes : 0;
}

int lt_gguf_can_dequantize(uint32_t type)
{
	return type == LT_GGUF_F32 || type == LT_GGUF_F16 || type == LT_GGUF_BF16 ||
	       type == LT_GGUF_Q8_0 || type == LT_GGUF_Q4_0 || type == LT_GGUF_Q4_1;
}

/* ---- dequantization ---- */

/* Q4_1: an f16 scale d and an f16 minimum m, then 16 bytes of nibbles in
 * Q4_0's order, each q * d + m. */
static void dequant_q4_1(const unsigned char *b, float *out)
{
	float d = lt_half_to_f32(lt_gguf_load_le16(b)), m = lt_half_to_f32(lt_gguf_load_le16(b + 2));
	for (int j = 0; j < 16; j++) {
		out[j] = (float)(b[4 + j] & 0x0f) * d + m;
		out[j + 16] = (float)(b[4 + j] >> 4) * d + m;
	}
}

enum lt_status lt_gguf_dequantize(uint32_t type, const void *src, size_t nbytes, float *dst,
				  size_t n)
{
	const unsigned char *p = src;
	uint32_t bv = lt_gguf_block_values(type), bb = lt_gguf_block_bytes(type);
	if (!lt_gguf_can_dequantize(type)) {
		lt_errmsg_set("cannot dequantize tensors of type %s (F32, F16, BF16, Q8_0, Q4_0 or "
			      "Q4_1 expected)", lt_gguf_type_name(type));
		return LT_ERR_ARG;
	}
	if (n % bv != 0 || nbytes / bb != n / bv || nbytes % bb != 0) {
		lt_errmsg_set("%s: %zu values in %zu bytes: expected whole blocks of %" PRIu32
			      " values in %" PRIu32 " bytes", lt_gguf_type_name(type), n, nbytes, bv, bb);
		return LT_ERR_ARG;
	}
	for (size_t i = 0, blk = 0; i < n; i += bv, blk += bb) {
		switch (type) {
		case LT_GGUF_F32: dst[i] = lt_gguf_bits_to_float(lt_gguf_load_le32(p + blk)); break;
		case LT_GGUF_F16: dst[i] = lt_half_to_f32(lt_gguf_load_le16(p + blk)); break;
		case LT_GGUF_BF16: dst[i] = lt_gguf_bits_to_float((uint32_t)lt_gguf_load_le16(p + blk) << 16); break;
		case LT_GGUF_Q8_0: lt_dtype_dequantize(LT_Q8_0, p + blk, dst + i, 32); break;
		case LT_GGUF_Q4_0: lt_dtype_dequantize(LT_Q4_0, p + blk, dst + i, 32); break;
		default: dequant_q4_1(p + blk, dst + i); break;
		}
	}
	return LT_OK;
}

/* ---- quantization ---- */

static void store_le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

int lt_gguf_can_quantize(uint32_t type)
{
	return type == LT_GGUF_F32 || type == LT_GGUF_F16 || type == LT_GGUF_BF16 ||
	       type == LT_GGUF_Q8_0 || type == LT_GGUF_Q4_0;
}

enum lt_status lt_gguf_quantize(uint32_t type, const float *src, size_t n, void *dst,
				size_t nbytes)
{
	unsigned char *p = dst;
	uint32_t bv = lt_gguf_block_values(type), bb = lt_gguf_block_bytes(type);
	if (!lt_gguf_can_quantize(type)) {
		lt_errmsg_set("cannot quantize into %s (F32, F16, BF16, Q8_0 or Q4_0 expected)",
			      lt_gguf_type_name(type));
		return LT_ERR_ARG;
	}
	if (n % bv != 0 || nbytes % bb != 0 || nbytes / bb != n / bv) {
		lt_errmsg_set("%s: %zu values into %zu bytes: expected whole blocks of %" PRIu32
			      " values in %" PRIu32 " bytes", lt_gguf_type_name(type), n, nbytes, bv, bb);
		return LT_ERR_ARG;
	}
	for (size_t i = 0, blk = 0; i < n; i += bv, blk += bb) {
		uint32_t bits;
		switch (type) {
		case LT_GGUF_F32:
			memcpy(&bits, &src[i], sizeof bits);
			for (int k = 0; k < 4; k++)
				p[blk + k] = (unsigned char)(bits >> 8 * k);
			break;
		case LT_GGUF_F16: store_le16(p + blk, lt_half_from_f32(src[i])); break;
		case LT_GGUF_BF16: store_le16(p + blk, lt_bf16_from_f32(src[i])); break;
		case LT_GGUF_Q8_0: lt_dtype_quantize(LT_Q8_0, src + i, p + blk, 32); break;
		default: lt_dtype_quantize(LT_Q4_0, src + i, p + blk, 32); break;
		}
	}
	return LT_OK;
}
