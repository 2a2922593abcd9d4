/* Fuzzes the safetensors reader: the input is a file for lt_st_open, and
 * whatever opens has every tensor read back through each converting
 * reader, a range, its raw bytes and its metadata looked up. What opens
 * must keep the reader's promises: each tensor's bytes inside the file,
 * after the header, and no two tensors sharing a byte. */
#include "config.h"
#define LT_FUZZ_NAME safetensors
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

/* Tensors larger than this are looked at but not read (the file is at most
 * LT_FUZZ_MAX_INPUT bytes, so a valid tensor is never larger anyway). */
#define READ_MAX ((uint64_t)1 << 20)

static void read_tensor(const lt_st *st, const struct lt_st_info *ti)
{
	const struct lt_st_info *found;
	size_t n = (size_t)ti->numel;
	void *buf;

	if (lt_st_lookup(st, ti->name) != ti || lt_st_find(st, ti->name, &found) != LT_OK || found != ti)
		abort(); /* every listed tensor is found by its name */
	if (ti->nbytes > READ_MAX || ti->numel > READ_MAX)
		return;
	if (!(buf = malloc(n * sizeof(double) + ti->nbytes + 1)))
		return;
	lt_st_read_f32(st, ti->name, buf, n);
	lt_st_read_f64(st, ti->name, buf, n);
	lt_st_read_i32(st, ti->name, buf, n);
	lt_st_read_raw(st, ti->name, buf, (size_t)ti->nbytes);
	if (n > 0)
		lt_st_read_f32_range(st, ti->name, n / 2, n - n / 2, buf);
	lt_st_read_f32_range(st, ti->name, n, 1, buf); /* past the end: refused */
	lt_st_read_f32(st, ti->name, buf, n + 1);      /* a wrong count: refused */
	free(buf);
}

/* The validated layout: every tensor after the 8-byte length and the
 * header, inside the file, apart from every other. */
static void check_layout(const lt_st *st, uint64_t size)
{
	size_t n = lt_st_count(st);
	for (size_t i = 0; i < n; i++) {
		const struct lt_st_info *a = lt_st_at(st, i);
		if (a->offset < 10 || a->offset > size || a->nbytes > size - a->offset)
			abort(); /* a tensor outside the data */
		for (size_t j = 0; j < i && n <= 256; j++) {
			const struct lt_st_info *b = lt_st_at(st, j);
			if (a->nbytes && b->nbytes && a->offset < b->offset + b->nbytes &&
			    b->offset < a->offset + a->nbytes)
				abort(); /* two tensors share bytes */
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = lt_fuzz_path("model.safetensors");
	lt_st *st;

	size = lt_fuzz_cap(size);
	lt_fuzz_write(path, data, size);
	if (lt_st_open(path, &st) != LT_OK)
		return 0;
	check_layout(st, size);
	for (size_t i = 0; i < lt_st_count(st); i++)
		read_tensor(st, lt_st_at(st, i));
	for (size_t i = 0; i < lt_st_meta_count(st); i++) {
		const char *k, *v;
		lt_st_meta_at(st, i, &k, &v);
		if (!lt_st_meta(st, k))
			abort();
	}
	lt_st_lookup(st, "");
	lt_st_close(st);
	return 0;
}
