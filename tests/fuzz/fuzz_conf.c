/* Fuzzes the INI configuration reader: lt_conf_apply_file on the input as
 * a file, over the defaults, as --config FILE reads it. A failed apply must
 * leave the configuration as it was; one that succeeds is checked
 * (lt_conf_check), written out as INI and read back, which must give every
 * key the same value (lt_conf_write's promise). */
#include "config.h"
#define LT_FUZZ_NAME conf
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"

/* 1 when every key has the same value in a and b. */
static int same(const struct lt_conf *a, const struct lt_conf *b)
{
	char x[LT_CONF_PATH_MAX + 64], y[LT_CONF_PATH_MAX + 64];
	for (const struct lt_conf_key *k = lt_conf_keys(); k->name; k++) {
		lt_conf_format(a, k, x, sizeof x);
		lt_conf_format(b, k, y, sizeof y);
		if (strcmp(x, y) != 0)
			return 0;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = lt_fuzz_path("config.ini");
	struct lt_conf c, before, back;
	char *text = NULL;

	lt_fuzz_write(path, data, lt_fuzz_cap(size));
	lt_conf_defaults(&c);
	before = c;
	if (lt_conf_apply_file(&c, path) != LT_OK) {
		if (!same(&c, &before))
			abort(); /* a failed apply changed the configuration */
		return 0;
	}
	lt_conf_check(&c);
	lt_conf_preset_of(&c);
	if (lt_conf_to_string(&c, &text) != LT_OK)
		return 0;
	lt_conf_defaults(&back);
	if (lt_conf_apply_string(&back, text, "written") != LT_OK || !same(&c, &back))
		abort(); /* what lt_conf_write wrote does not read back the same */
	free(text);
	return 0;
}
