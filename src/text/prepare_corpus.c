/* Data preparation's corpus (see prepare_impl.h): lists the input files,
 * then streams them through in blocks, handing on documents, or pieces of
 * long ones cut where no pre-token can span the cut. */
#include "config.h"
#include "text/prepare.h"
#include "text/prepare_impl.h"
#include "io/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------- the corpus */

void lt_corpus_free(struct lt_corpus *c)
{
	for (int i = 0; i < c->n; i++)
		free(c->files[i].path);
	free(c->files);
}

static enum lt_status corpus_add(struct lt_corpus *c, const char *path)
{
	if (c->n == c->cap) {
		int ncap = c->cap ? 2 * c->cap : 16;
		struct lt_corpus_file *grown = realloc(c->files, (size_t)ncap * sizeof *grown);
		if (!grown) {
			lt_errmsg_set("cannot allocate the list of %d corpus files", ncap);
			return LT_ERR_NOMEM;
		}
		c->files = grown;
		c->cap = ncap;
	}
	if (!(c->files[c->n].path = lt_prepare_copy_string(path)))
		return LT_ERR_NOMEM;
	c->files[c->n].bytes = c->files[c->n].docs = 0;
	c->n++;
	return LT_OK;
}

static int compare_files(const void *a, const void *b)
{
	return strcmp(((const struct lt_corpus_file *)a)->path, ((const struct lt_corpus_file *)b)->path);
}

/* Names a directory holds that are not text: hidden files, and the fortune
 * index files (*.dat) and their links (*.u8). */
static int is_skipped_name(const char *name)
{
	size_t n = strlen(name);
	return name[0] == '.' || (n > 4 && !strcmp(name + n - 4, ".dat")) ||
	       (n > 3 && !strcmp(name + n - 3, ".u8"));
}

/* Fails unless path opens for reading (O_NONBLOCK: a FIFO must not hang). */
static enum lt_status check_readable(const char *path)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		lt_errmsg_set("%s: %s", path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	close(fd);
	return LT_OK;
}

/* The regular files directly inside dir, sorted by name. */
static enum lt_status add_directory(struct lt_corpus *c, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	enum lt_status st = LT_OK;
	int first = c->n;
	if (!d) {
		lt_errmsg_set("%s: cannot list the directory: %s", dir, strerror(errno));
		return LT_ERR_IO;
	}
	while (st == LT_OK && (e = readdir(d))) {
		struct stat sb;
		if (is_skipped_name(e->d_name))
			continue;
		char *path = lt_fs_join_new(dir, e->d_name);
		if (!path) {
			st = LT_ERR_NOMEM;
			break;
		}
		/* links to files count; subdirectories, FIFOs and dangling links do not */
		if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) &&
		    (st = check_readable(path)) == LT_OK)
			st = corpus_add(c, path);
		free(path);
	}
	closedir(d);
	if (c->n - first > 1)
		qsort(c->files + first, (size_t)(c->n - first), sizeof *c->files, compare_files);
	return st;
}

enum lt_status lt_corpus_list(const struct lt_prepare_opts *o, struct lt_corpus *c)
{
	c->name = o->inputs[0];
	c->more_inputs = o->n_inputs - 1;
	for (int i = 0; i < o->n_inputs; i++) {
		const char *in = o->inputs[i];
		struct stat sb;
		enum lt_status st;
		if (stat(in, &sb) != 0) {
			int err = errno;
			lt_errmsg_set("%s: %s", in, strerror(err));
			return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
		}
		if (S_ISDIR(sb.st_mode))
			st = add_directory(c, in);
		else if (!S_ISREG(sb.st_mode)) {
			lt_errmsg_set("%s: not a regular file or a directory, expected text",
				      in);
			st = LT_ERR_IO;
		} else if ((st = check_readable(in)) == LT_OK)
			st = corpus_add(c, in);
		if (st != LT_OK)
			return st;
	}
	return LT_OK;
}

void lt_corpus_prefix_errmsg(const struct lt_corpus *c)
{
	if (c->more_inputs)
		lt_errmsg_prefix("%s (and %d more input%s)", c->name, c->more_inputs,
				 c->more_inputs > 1 ? "s" : "");
	else
		lt_errmsg_prefix("%s", c->name);
}

/* ------------------------------------------------- documents in blocks */

/* Reads one file after another into buf and hands on their documents. */
struct scanner {
	const char *sep;      /* a line equal to it (or to it and '\r') ends a document */
	size_t sep_len;       /* 0: each file is one document */
	char *buf;
	size_t cap;
	lt_segment_fn fn;
	void *ctx;
	/* the file being read */
	const char *path;
	size_t have, start, scan;
	uint64_t doc_bytes;   /* of the current document, handed on already */
	uint64_t docs;
};

static int is_separator(const struct scanner *sc, const char *line, size_t n)
{
	if (n > 0 && line[n - 1] == '\r')
		n--;
	return n == sc->sep_len && !memcmp(line, sc->sep, n);
}

static int is_ascii_space(unsigned char c)
{
	return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* The last place p in (0, limit) where buf[p-1] is a printable ASCII
 * non-space and buf[p] whitespace, or 0. */
static size_t find_safe_cut(const char *buf, size_t limit)
{
	for (size_t p = limit; p-- > 1;) {
		unsigned char c = (unsigned char)buf[p - 1];
		if (c > 0x20 && c < 0x7f && is_ascii_space((unsigned char)buf[p]))
			return p;
	}
	return 0;
}

/* Ends the current document at buf[end]; empty documents are dropped. */
static enum lt_status end_document(struct scanner *sc, size_t end)
{
	size_t len = end - sc->start;
	enum lt_status st = LT_OK;
	if (sc->doc_bytes + len > 0) {
		st = sc->fn(sc->ctx, sc->buf + sc->start, len, 1);
		sc->docs++;
	}
	sc->doc_bytes = 0;
	return st;
}

/* Hands on the separator-free lines in buf: each separator ends a document. */
static enum lt_status split_lines(struct scanner *sc, int *mid_line)
{
	char *nl;
	while (sc->scan < sc->have &&
	       (nl = memchr(sc->buf + sc->scan, '\n', sc->have - sc->scan))) {
		size_t eol = (size_t)(nl - sc->buf);
		if (!*mid_line && is_separator(sc, sc->buf + sc->scan, eol - sc->scan)) {
			enum lt_status st = end_document(sc, sc->scan);
			if (st != LT_OK)
				return st;
			sc->start = eol + 1;
		}
		sc->scan = eol + 1;
		*mid_line = 0;
	}
	return LT_OK;
}

/* The buffer is full of one unfinished document: hands on its head up to a
 * safe cut, or doubles the buffer when there is none. */
static enum lt_status pass_on_head(struct scanner *sc, int *mid_line)
{
	/* A line longer than a separator line cannot be one. */
	int line_known = !sc->sep_len || *mid_line || sc->have - sc->scan > sc->sep_len + 1;
	size_t cut = find_safe_cut(sc->buf, line_known ? sc->have : sc->scan);
	if (cut == 0) {
		char *grown = realloc(sc->buf, 2 * sc->cap);
		if (!grown) {
			lt_errmsg_set("%s: cannot allocate %zu bytes for a stretch of text without "
				      "spaces", sc->path, 2 * sc->cap);
			return LT_ERR_NOMEM;
		}
		sc->buf = grown;
		sc->cap *= 2;
		return LT_OK;
	}
	enum lt_status st = sc->fn(sc->ctx, sc->buf, cut, 0);
	sc->doc_bytes += cut;
	memmove(sc->buf, sc->buf + cut, sc->have - cut);
	sc->have -= cut;
	if (cut > sc->scan) {
		sc->scan = 0;
		*mid_line = 1;
	} else {
		sc->scan -= cut;
	}
	return st;
}

/* Reads the file in blocks, handing on its documents; *bytes gets its size. */
static enum lt_status scan_file(struct scanner *sc, const char *path, uint64_t *bytes,
				uint64_t *docs)
{
	enum lt_status st = LT_OK;
	int mid_line = 0, eof = 0;
	FILE *f = fopen(path, "rb");
	if (!f) {
		int err = errno;
		lt_errmsg_set("%s: %s", path, strerror(err));
		return err == ENOENT ? LT_ERR_NOTFOUND : LT_ERR_IO;
	}
	sc->path = path;
	sc->have = sc->start = sc->scan = 0;
	sc->doc_bytes = sc->docs = 0;
	*bytes = 0;
	while (st == LT_OK) {
		size_t want = sc->cap - sc->have;
		size_t got = fread(sc->buf + sc->have, 1, want, f);
		if (got < want && ferror(f)) {
			lt_errmsg_set("%s: cannot read at byte %" PRIu64 ": %s", path, *bytes + got,
				      strerror(errno));
			st = LT_ERR_IO;
			break;
		}
		eof = got < want;
		sc->have += got;
		*bytes += got;
		if (sc->sep_len && (st = split_lines(sc, &mid_line)) != LT_OK)
			break;
		if (!sc->sep_len)
			sc->scan = sc->have;
		if (eof) {
			size_t end = sc->have;
			if (sc->sep_len && !mid_line &&
			    is_separator(sc, sc->buf + sc->scan, sc->have - sc->scan))
				end = sc->scan;
			st = end_document(sc, end);
			break;
		}
		if (sc->start > 0) {
			memmove(sc->buf, sc->buf + sc->start, sc->have - sc->start);
			sc->have -= sc->start;
			sc->scan -= sc->start;
			sc->start = 0;
		}
		if (sc->have == sc->cap)
			st = pass_on_head(sc, &mid_line);
	}
	fclose(f);
	*docs = sc->docs;
	return st;
}

enum lt_status lt_corpus_scan(struct lt_corpus *c, const char *sep, size_t block, lt_segment_fn fn,
			      void *ctx, uint64_t *bytes, uint64_t *docs)
{
	struct scanner sc = { .sep = sep, .sep_len = strlen(sep),
			      .cap = block ? block : LT_PREPARE_READ_BLOCK, .fn = fn, .ctx = ctx };
	enum lt_status st = LT_OK;
	*bytes = *docs = 0;
	if (!(sc.buf = malloc(sc.cap))) {
		lt_errmsg_set("cannot allocate %zu bytes to read the corpus", sc.cap);
		return LT_ERR_NOMEM;
	}
	for (int i = 0; i < c->n && st == LT_OK; i++) {
		struct lt_corpus_file *cf = &c->files[i];
		st = scan_file(&sc, cf->path, &cf->bytes, &cf->docs);
		*bytes += cf->bytes;
		*docs += cf->docs;
	}
	free(sc.buf);
	return st;
}
