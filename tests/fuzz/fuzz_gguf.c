/* Fuzzes the GGUF reader: the input is a file for lt_gguf_open, and what
 * opens has every key read through every getter, every tensor looked up
 * and read (raw and dequantized), and, where the metadata describe a small
 * LLaMA model, the configuration read and the weights loaded into a model.
 * What opens must keep the reader's promises: each tensor inside the file,
 * after the header, and no two tensors sharing a byte. */
#include "config.h"
#define LT_FUZZ_NAME gguf
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "model.h"

/* Tensors larger than this are looked at but not read. */
#define READ_MAX ((uint64_t)1 << 20)
/* Models of more parameters are not made. */
#define MODEL_MAX ((size_t)1 << 18)

static void read_key(const lt_gguf *g, size_t i)
{
	const char *key = lt_gguf_kv_key(g, i), *s;
	enum lt_gguf_vtype elem;
	size_t len;
	int64_t iv;
	double fv;
	int bv;
	uint64_t count;

	if (!lt_gguf_has(g, key))
		abort(); /* every listed key is found */
	lt_gguf_get_str(g, key, &s, &len);
	lt_gguf_get_int(g, key, &iv);
	lt_gguf_get_float(g, key, &fv);
	lt_gguf_get_bool(g, key, &bv);
	if (lt_gguf_kv_type(g, i, &elem) != LT_GGUF_V_ARRAY ||
	    lt_gguf_get_array(g, key, &elem, &count) != LT_OK)
		return;
	for (uint64_t k = 0; k < count && k < 64; k++) {
		lt_gguf_array_str(g, key, k, &s, &len);
		lt_gguf_array_int(g, key, k, &iv);
		lt_gguf_array_float(g, key, k, &fv);
	}
	lt_gguf_array_str(g, key, count, &s, &len); /* past the end: refused */
}

static void read_tensor(const lt_gguf *g, const struct lt_gguf_tensor *t, uint64_t size)
{
	void *buf;
	if (lt_gguf_tensor_lookup(g, t->name) != t)
		abort(); /* every listed tensor is found by its name */
	if (t->offset < lt_gguf_data_offset(g) || t->offset > size || t->nbytes > size - t->offset)
		abort(); /* a tensor outside the data */
	if (t->nbytes > READ_MAX || t->numel > READ_MAX)
		return;
	if (!(buf = malloc((size_t)t->numel * sizeof(float) + (size_t)t->nbytes + 1)))
		return;
	lt_gguf_read_raw(g, t, buf, (size_t)t->nbytes);
	lt_gguf_read_f32(g, t, buf, (size_t)t->numel);
	lt_gguf_read_f32(g, t, buf, (size_t)t->numel + 1); /* a wrong count: refused */
	free(buf);
}

static void check_apart(const lt_gguf *g)
{
	size_t n = lt_gguf_tensor_count(g);
	for (size_t i = 0; i < n && n <= 256; i++) {
		const struct lt_gguf_tensor *a = lt_gguf_tensor_at(g, i);
		for (size_t j = 0; j < i; j++) {
			const struct lt_gguf_tensor *b = lt_gguf_tensor_at(g, j);
			if (a->nbytes && b->nbytes && a->offset < b->offset + b->nbytes &&
			    b->offset < a->offset + a->nbytes)
				abort(); /* two tensors share bytes */
		}
	}
}

/* The model path: configuration, then (when small) the weights. */
static void load_model(const char *path)
{
	struct lt_model_config c;
	lt_backend *be;
	lt_model *m;
	if (lt_gguf_model_config(path, &c) != LT_OK || lt_model_config_params(&c) > MODEL_MAX ||
	    c.max_seq > 4096)
		return;
	if (lt_backend_new("cpu", 1, &be) != LT_OK)
		return;
	if (lt_model_new(be, &c, &m) == LT_OK) {
		lt_gguf_model_load(path, m);
		lt_model_free(m);
	}
	lt_backend_free(be);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = lt_fuzz_path("model.gguf");
	lt_gguf *g;

	size = lt_fuzz_cap(size);
	lt_fuzz_write(path, data, size);
	if (lt_gguf_open(path, &g) != LT_OK)
		return 0;
	for (size_t i = 0; i < lt_gguf_kv_count(g); i++)
		read_key(g, i);
	check_apart(g);
	for (size_t i = 0; i < lt_gguf_tensor_count(g); i++)
		read_tensor(g, lt_gguf_tensor_at(g, i), size);
	lt_gguf_tensor_lookup(g, "");
	lt_gguf_close(g);
	load_model(path);
	return 0;
}
