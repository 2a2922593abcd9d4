/* TensorBoard event files: RUN/tb/events.out.tfevents.* written for
 * `tensorboard --logdir RUN/tb`, each a sequence of records (the payload's
 * length as 8 bytes little-endian, its masked CRC-32C, the payload, the
 * payload's masked CRC-32C) whose payload is an Event protocol buffer:
 * scalars as Summary simple values, text as a string tensor under the text
 * plugin's metadata.
 *
 * A launch writes a file of its own, which sorts after the older ones and
 * begins with the file version and a SessionLog START at the first step it
 * trains. Before that, the older files keep only what was logged up to the
 * step the run resumes from (a torn last record, the end of a killed run,
 * is cut off), so that the curves continue without a duplicate step, for
 * TensorBoard and for any reader of the files; the START makes a
 * TensorBoard that had already loaded the dropped steps forget them.
 *
 * Ownership: lt_tboard_open returns a writer the caller closes
 * (lt_tboard_close, NULL allowed); the other functions borrow their
 * arguments; a struct lt_tboard_notes owns its lines, released by
 * lt_tboard_notes_free; the encoders return a malloc'd record the caller
 * frees. */
#ifndef LT_TBOARD_H
#define LT_TBOARD_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct lt_tboard lt_tboard;

/* What an open passed over in the older files (a torn last record cut
 * off, a damaged record left where it is), one line each naming the file
 * and the byte. The caller zeroes it; lt_tboard_open appends. */
struct lt_tboard_notes {
	char **v;
	size_t n;
};
void lt_tboard_notes_free(struct lt_tboard_notes *k);  /* and zeroes it; NULL allowed */

/* One scalar of an event: tag (say "train/loss") and its value, written
 * as a float (a NaN stays NaN). */
struct lt_tboard_scalar {
	const char *tag;
	double value;
};

/* Makes dir (and its parents) when missing, keeps in its event files only
 * the records of steps up to `step` (a file left with nothing past its file
 * version is removed), and opens a new file starting at step + 1. Errors:
 * LT_ERR_IO naming the directory or file and the reason. */
enum lt_status lt_tboard_open(const char *dir, long step, struct lt_tboard_notes *notes,
			      lt_tboard **out);
void lt_tboard_close(lt_tboard *tb);
/* Cuts dir's event files to the steps up to `step` as lt_tboard_open does,
 * opening no file of its own: a resumed run that writes none leaves no
 * step there that it trains again. A missing dir is no error. */
enum lt_status lt_tboard_trim(const char *dir, long step, struct lt_tboard_notes *notes);
/* The path of the file being written. */
const char *lt_tboard_path(const lt_tboard *tb);

/* One event holding n scalars at step. Each record goes to the file in
 * one write; a write that fails (LT_ERR_IO "PATH: write failed: REASON")
 * leaves no part of its record behind in a regular file. */
enum lt_status lt_tboard_scalars(lt_tboard *tb, long step, const struct lt_tboard_scalar *v,
				 size_t n);
/* One event holding text under tag at step, for the Text tab: as a
 * Markdown code block (each line indented four spaces), so that it shows
 * as written, with any byte that is not UTF-8 replaced by U+FFFD. */
enum lt_status lt_tboard_text(lt_tboard *tb, long step, const char *tag, const char *text);

/* The encoding, for tests. CRC-32C (Castagnoli, reflected 0x82F63B78) of
 * p[0..n) continued from crc (0 to begin: "123456789" gives 0xE3069283). */
uint32_t lt_tboard_crc32c(uint32_t crc, const void *p, size_t n);
/* The record format's masked CRC: ((c >> 15) | (c << 17)) + 0xA282EAD8. */
uint32_t lt_tboard_masked_crc(const void *p, size_t n);
/* The whole record of an event at wall_time (seconds since the epoch) and
 * step holding n scalars, or holding text under tag as lt_tboard_text
 * writes it, in a new buffer of *len bytes. */
enum lt_status lt_tboard_encode_scalars(double wall_time, long step,
					const struct lt_tboard_scalar *v, size_t n,
					unsigned char **rec, size_t *len);
enum lt_status lt_tboard_encode_text(double wall_time, long step, const char *tag,
				     const char *text, unsigned char **rec, size_t *len);

#endif
