/* What conf.c (reading and writing) and conf_keys.c (the table of keys
 * and the presets) share; private to the two.
 *
 * Ownership: nothing here allocates; the texts are static, and each buf
 * is the caller's. */
#ifndef LT_CONF_IMPL_H
#define LT_CONF_IMPL_H

#include <stddef.h>

#include "conf.h"

/* 2^64 - 1 as a double: an LT_CONF_INT64 key whose max is at least this
 * takes any unsigned 64-bit value (the seed). */
#define LT_CONF_SEED_MAX 18446744073709551615.0
/* Room for one formatted value. */
#define LT_CONF_VALUE_CAP (LT_CONF_PATH_MAX + 64)

/* Whether name[len] is a section of the table. */
int lt_conf_is_section(const char *name, size_t len);
/* "unknown section (expected ...)" or "unknown key (expected ...)" into buf. */
void lt_conf_describe_unknown(const char *section, char *buf, size_t cap);
/* The one-line doc of a section, "" for none. */
const char *lt_conf_section_doc(const char *section);
/* "tiny, 15M, 110M, 1B or 7B" into buf. */
void lt_conf_list_presets(char *buf, size_t cap);

#endif
