/* Files embedded in the binary at build time (src/embed.sh). */
#ifndef LT_EMBED_H
#define LT_EMBED_H

#include <stddef.h>

struct lt_embedded {
	const char *name;   /* the file's base name, e.g. "tiny.conf" */
	const char *text;   /* its bytes, NUL-terminated */
	size_t len;
};

/* The files of data/presets, ending with a NULL name. */
extern const struct lt_embedded lt_embedded_presets[];
/* The OpenCL kernel sources of cl/ (built with the OpenCL backend only). */
extern const struct lt_embedded lt_embedded_kernels[];

#endif
