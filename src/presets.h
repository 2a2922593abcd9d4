/* The built-in model presets: tiny, 15M, 110M and 1B, each a model shape
 * with the batch and sequence length it is benchmarked at. */
#ifndef LT_PRESETS_H
#define LT_PRESETS_H

#include "model.h"

struct lt_preset {
	const char *name;
	struct lt_model_config model;
	int batch, seq;
};

/* The preset with this name (case-insensitive), or NULL. */
const struct lt_preset *lt_preset_find(const char *name);
/* The presets in size order, NULL-terminated. */
const struct lt_preset *const *lt_presets(void);

#endif
