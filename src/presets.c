/* The built-in model presets. */
#include "config.h"
#include "presets.h"

#include <stddef.h>
#include <strings.h>

/* tiny trains in minutes on two cores; 15M and 110M have the shapes of the
 * llama2.c "stories" models (15M with a tied head); 1B the TinyLlama shape. */
static const struct lt_preset tiny = {
	.name = "tiny",
	.model = { .vocab_size = 4096, .dim = 192, .n_layers = 4, .n_heads = 6, .n_kv_heads = 6,
		   .ffn_dim = 512, .max_seq = 128, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 1 },
	.batch = 16, .seq = 128,
};
static const struct lt_preset p15m = {
	.name = "15M",
	.model = { .vocab_size = 32000, .dim = 288, .n_layers = 6, .n_heads = 6, .n_kv_heads = 6,
		   .ffn_dim = 768, .max_seq = 256, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 1 },
	.batch = 8, .seq = 256,
};
static const struct lt_preset p110m = {
	.name = "110M",
	.model = { .vocab_size = 32000, .dim = 768, .n_layers = 12, .n_heads = 12, .n_kv_heads = 12,
		   .ffn_dim = 2048, .max_seq = 1024, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 1 },
	.batch = 8, .seq = 1024,
};
static const struct lt_preset p1b = {
	.name = "1B",
	.model = { .vocab_size = 32000, .dim = 2048, .n_layers = 22, .n_heads = 32, .n_kv_heads = 4,
		   .ffn_dim = 5632, .max_seq = 2048, .rope_theta = 10000.0f, .norm_eps = 1e-5f, .tied = 0 },
	.batch = 4, .seq = 2048,
};

static const struct lt_preset *const all[] = { &tiny, &p15m, &p110m, &p1b, NULL };

const struct lt_preset *const *lt_presets(void)
{
	return all;
}

const struct lt_preset *lt_preset_find(const char *name)
{
	for (int i = 0; all[i]; i++)
		if (!strcasecmp(all[i]->name, name))
			return all[i];
	return NULL;
}
