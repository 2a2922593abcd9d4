/* Times the tokenizer: trains a byte-level BPE vocabulary on text files (by
 * default the fortunes corpus), or loads one (-t: a tokenizer.json or a
 * GGUF file), and prints the training time and the single-thread encoding
 * speed. */
#include "config.h"
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#endif
#include "text/tokenizer.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FORTUNES_DIR "/usr/share/games/fortunes"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), k = strlen(tail);
	return n >= k && strcmp(s + n - k, tail) == 0;
}

/* The fortune files: regular files without .dat or .u8, sorted. */
static char **fortune_files(int *n)
{
	DIR *d = opendir(FORTUNES_DIR);
	struct dirent *e;
	char **v = NULL;
	int cap = 0;

	*n = 0;
	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		struct stat sb;
		char path[4096];
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".dat") || ends_with(e->d_name, ".u8"))
			continue;
		snprintf(path, sizeof path, "%s/%s", FORTUNES_DIR, e->d_name);
		if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
			continue;
		if (*n == cap) {
			char **nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		if (!(v[*n] = strdup(path)))
			break;
		(*n)++;
	}
	closedir(d);
	if (v)
		qsort(v, (size_t)*n, sizeof *v, cmp_str);
	return v;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f)
		return NULL;
	do {
		if (n == cap) {
			char *nb = realloc(buf, cap = cap ? 2 * cap : 65536);
			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got > 0);
	fclose(f);
	*len = n;
	return buf;
}

/* Encodes every document of the files (a fortune: the text between lines
 * holding a single '%'; a file without such lines is one document) with
 * the end-of-text id after each; returns the bytes encoded. */
static size_t encode_all(lt_tokenizer *tok, char **text, const size_t *len, int nfiles, lt_ids *ids)
{
	size_t bytes = 0;
	int i;

	ids->n = 0;
	for (i = 0; i < nfiles; i++) {
		const char *s = text[i], *end = s + len[i];
		while (s < end) {
			const char *sep = s, *next;
			size_t n;
			for (;;) {
				sep = memchr(sep, '%', (size_t)(end - sep));
				if (!sep || ((sep == text[i] || sep[-1] == '\n') && (sep + 1 == end || sep[1] == '\n')))
					break;
				sep++;
			}
			if (!sep)
				sep = end;
			next = sep < end ? sep + 2 : end;
			n = (size_t)(sep - s);
			if (n && (lt_tokenizer_encode(tok, s, n, ids) != LT_OK ||
					(lt_tokenizer_eot_id(tok) >= 0 && lt_tokenizer_append_eot(tok, ids) != LT_OK))) {
				fprintf(stderr, "tokenizer_bench: encode: %s\n", lt_errmsg());
				exit(1);
			}
			bytes += n;
			s = next;
		}
	}
	return bytes;
}

int main(int argc, char **argv)
{
	struct lt_tokenizer_train_opts opts = { .vocab_size = 4096, .min_frequency = 0 };
	const char *save_dir = NULL, *tok_path = NULL;
	char **files, **text;
	size_t *len, bytes = 0, enc_bytes = 0;
	int nfiles, i, pass, passes = 5, argi = 1;
	lt_tokenizer *tok;
	lt_ids ids = { 0 };
	enum lt_status st;
	double t0, t_train, t_cold = 0, t_warm = 0;

	while (argi < argc && argv[argi][0] == '-') {
		if (!strcmp(argv[argi], "-v") && argi + 1 < argc) {
			opts.vocab_size = atoi(argv[argi + 1]);
			argi += 2;
		} else if (!strcmp(argv[argi], "-t") && argi + 1 < argc) {
			tok_path = argv[argi + 1];
			argi += 2;
		} else if (!strcmp(argv[argi], "-o") && argi + 1 < argc) {
			save_dir = argv[argi + 1];
			argi += 2;
		} else {
			fprintf(stderr, "usage: tokenizer_bench [-v VOCAB_SIZE | -t TOKENIZER] [-o SAVE_DIR] [FILE...]\n"
					"  default files: the text files of %s\n", FORTUNES_DIR);
			return 2;
		}
	}
	if (argi < argc) {
		files = argv + argi;
		nfiles = argc - argi;
	} else if (!(files = fortune_files(&nfiles)) || nfiles == 0) {
		fprintf(stderr, "tokenizer_bench: no files given and none found in %s (install fortunes)\n",
				FORTUNES_DIR);
		return 1;
	}
	text = calloc((size_t)nfiles, sizeof *text);
	len = calloc((size_t)nfiles, sizeof *len);
	if (!text || !len)
		return 1;
	for (i = 0; i < nfiles; i++) {
		if (!(text[i] = read_file(files[i], &len[i]))) {
			fprintf(stderr, "tokenizer_bench: cannot read %s\n", files[i]);
			return 1;
		}
		bytes += len[i];
	}

	t0 = now();
	st = tok_path ? lt_tokenizer_load(tok_path, &tok)
		: lt_tokenizer_train_files((const char *const *)files, nfiles, &opts, &tok);
	t_train = now() - t0;
	if (st != LT_OK) {
		fprintf(stderr, "tokenizer_bench: %s: %s: %s\n", tok_path ? "loading" : "training",
				lt_status_str(st), lt_errmsg());
		return 1;
	}
	/* Pass 0 starts from an empty cache; the later ones reuse it. */
	for (pass = 0; pass < passes; pass++) {
		t0 = now();
		enc_bytes = encode_all(tok, text, len, nfiles, &ids);
		if (pass == 0)
			t_cold = now() - t0;
		else
			t_warm += now() - t0;
	}
	printf("corpus:    %d files, %zu bytes (%.2f MB)\n", nfiles, bytes, bytes / 1e6);
	if (tok_path)
		printf("loading:   %.3f s for %d ids (%d merges) of %s\n", t_train, lt_tokenizer_vocab_size(tok),
				lt_tokenizer_n_merges(tok), tok_path);
	else
		printf("training:  %.3f s for %d ids (%d merges), vocab_size asked %d\n", t_train,
				lt_tokenizer_vocab_size(tok), lt_tokenizer_n_merges(tok), opts.vocab_size);
	printf("encoding:  %zu bytes of documents -> %zu ids (%.2f bytes/id)\n", enc_bytes, ids.n,
			(double)enc_bytes / (double)ids.n);
	printf("encode:    %.1f MB/s first pass (cold cache), %.1f MB/s over %d more passes, one thread\n",
			enc_bytes / 1e6 / t_cold, enc_bytes / 1e6 * (passes - 1) / t_warm, passes - 1);
	if (save_dir) {
		if ((st = lt_tokenizer_save(tok, save_dir, 1024)) != LT_OK) {
			fprintf(stderr, "tokenizer_bench: save: %s: %s\n", lt_status_str(st), lt_errmsg());
			return 1;
		}
		printf("saved:     %s/tokenizer.json\n", save_dir);
	}
	lt_ids_free(&ids);
	lt_tokenizer_free(tok);
	for (i = 0; i < nfiles; i++)
		free(text[i]);
	free(text);
	free(len);
	if (argi >= argc) {
		for (i = 0; i < nfiles; i++)
			free(files[i]);
		free(files);
	}
	return 0;
}
