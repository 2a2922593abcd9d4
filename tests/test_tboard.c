/* Tests of the TensorBoard event files (src/io/tboard.h): CRC-32C against
 * the check value and RFC 3720's vectors, the masked CRC, the records and
 * their Event protocol buffers byte for byte against encodings worked out
 * by hand from the message definitions, text made a Markdown code block of
 * valid UTF-8, and the files of a run: the first events of a launch, the
 * older files cut to the resumed step, a torn last record cut off and
 * noted, a damaged record left and noted, and names that sort by launch. */
#include "config.h"
#include "io/tboard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static void test_crc32c(void)
{
	unsigned char zeros[32], ones[32], up[32], down[32];
	for (int i = 0; i < 32; i++) {
		zeros[i] = 0;
		ones[i] = 0xff;
		up[i] = (unsigned char)i;
		down[i] = (unsigned char)(31 - i);
	}
	tap_ok(lt_tboard_crc32c(0, "123456789", 9) == 0xE3069283u,
	       "CRC-32C of \"123456789\" is the check value 0xE3069283");
	tap_ok(lt_tboard_crc32c(0, zeros, 32) == 0x8A9136AAu &&
	       lt_tboard_crc32c(0, ones, 32) == 0x62A8AB43u &&
	       lt_tboard_crc32c(0, up, 32) == 0x46DD794Eu &&
	       lt_tboard_crc32c(0, down, 32) == 0x113FDB5Cu,
	       "RFC 3720's vectors: 32 zeros, 32 0xFF, 0..31 and 31..0");
	tap_ok(lt_tboard_crc32c(0, "", 0) == 0 &&
	       lt_tboard_crc32c(lt_tboard_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u,
	       "the empty input gives 0, and a CRC continues over a second part");
	tap_ok(lt_tboard_masked_crc("123456789", 9) == 0xC78AB0E5u,
	       "the masked CRC rotates right by 15 and adds 0xA282EAD8");
}

static uint64_t le(const unsigned char *p, int bytes)
{
	uint64_t v = 0;
	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Whether rec[0..n) is the record of payload want[0..w): the length and
 * both masked CRCs in their places. */
static int is_record_of(const unsigned char *rec, size_t n, const unsigned char *want, size_t w)
{
	return n == 12 + w + 4 && le(rec, 8) == w &&
	       le(rec + 8, 4) == lt_tboard_masked_crc(rec, 8) && !memcmp(rec + 12, want, w) &&
	       le(rec + 12 + w, 4) == lt_tboard_masked_crc(want, w);
}

static void test_scalars(void)
{
	/* Event { wall_time: 1.5 (1, fixed64), step: 300 (2, varint ac 02),
	 *         summary (5) { value (1) { tag (1): "a/b",
	 *                                   simple_value (2, fixed32): 0.5 } } } */
	static const unsigned char want[] = {
		0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0xac, 0x02,
		0x2a, 0x0c, 0x0a, 0x0a, 0x0a, 0x03, 'a', '/', 'b', 0x15, 0, 0, 0, 0x3f,
	};
	struct lt_tboard_scalar v = { "a/b", 0.5 };
	unsigned char *rec = NULL;
	size_t n = 0;
	tap_ok(lt_tboard_encode_scalars(1.5, 300, &v, 1, &rec, &n) == LT_OK &&
	       is_record_of(rec, n, want, sizeof want),
	       "a scalar's record: length, masked CRCs and the Event's %zu bytes", sizeof want);
	free(rec);

	/* step 0 is left out; two values; NaN stays a quiet NaN (7fc00000) */
	static const unsigned char two[] = {
		0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0x14,
		0x0a, 0x08, 0x0a, 0x01, 'x', 0x15, 0, 0, 0x80, 0xbf,
		0x0a, 0x08, 0x0a, 0x01, 'y', 0x15, 0, 0, 0xc0, 0x7f,
	};
	struct lt_tboard_scalar xy[2] = { { "x", -1.0 }, { "y", NAN } };
	tap_ok(lt_tboard_encode_scalars(0, 0, xy, 2, &rec, &n) == LT_OK &&
	       is_record_of(rec, n, two, sizeof two),
	       "step 0 is left out, two values follow in order, -1 and NaN as floats");
	free(rec);

	/* a step past 2^32 takes a five-byte varint: 2^33 + 1 */
	tap_ok(lt_tboard_encode_scalars(0, (long)((1LL << 33) + 1), NULL, 0, &rec, &n) == LT_OK &&
	       n > 12 + 15 && rec[12 + 9] == 0x10 && rec[12 + 10] == 0x81 && rec[12 + 11] == 0x80 &&
	       rec[12 + 12] == 0x80 && rec[12 + 13] == 0x80 && rec[12 + 14] == 0x20,
	       "step 2^33 + 1 is the varint 81 80 80 80 20");
	free(rec);
}

/* The bytes of the text event at wall time 0, step 2 of tag "t" whose
 * string is block[0..b), into out; returns its length. */
static size_t text_event(const char *block, size_t b, unsigned char *out)
{
	unsigned char tensor[160], value[200], summary[220];
	size_t t = 0, v = 0, s = 0, n = 0;
	/* TensorProto { dtype (1): DT_STRING = 7, tensor_shape (2): {},
	 *               string_val (8): block } */
	tensor[t++] = 0x08, tensor[t++] = 7, tensor[t++] = 0x12, tensor[t++] = 0;
	tensor[t++] = 0x42, tensor[t++] = (unsigned char)b;
	memcpy(tensor + t, block, b), t += b;
	/* Value { tag (1): "t", tensor (8), metadata (9) { plugin_data (1)
	 *         { plugin_name (1): "text" }, data_class (4): TENSOR = 2 } } */
	static const unsigned char meta[] = { 0x4a, 0x0a, 0x0a, 0x06, 0x0a, 0x04, 't', 'e', 'x', 't',
					      0x20, 0x02 };
	value[v++] = 0x0a, value[v++] = 1, value[v++] = 't';
	value[v++] = 0x42, value[v++] = (unsigned char)t;
	memcpy(value + v, tensor, t), v += t;
	memcpy(value + v, meta, sizeof meta), v += sizeof meta;
	summary[s++] = 0x0a, summary[s++] = (unsigned char)v;
	memcpy(summary + s, value, v), s += v;
	static const unsigned char head[] = { 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x02 };
	memcpy(out, head, sizeof head), n = sizeof head;
	out[n++] = 0x2a, out[n++] = (unsigned char)s;
	memcpy(out + n, summary, s);
	return n + s;
}

static int text_is(const char *text, const char *block)
{
	unsigned char want[256], *rec = NULL;
	size_t w = text_event(block, strlen(block), want), n = 0;
	int same = lt_tboard_encode_text(0, 2, "t", text, &rec, &n) == LT_OK &&
		   is_record_of(rec, n, want, w);
	free(rec);
	return same;
}

static void test_text(void)
{
	tap_ok(text_is("a = 1\n\nb\n", "    a = 1\n    \n    b\n"),
	       "text is a string tensor under the text plugin, each line indented four spaces");
	tap_ok(text_is("", ""), "empty text is an empty string");
	tap_ok(text_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "    caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
	       "UTF-8 of two, three and four bytes stays");
	tap_ok(text_is("x\xff(\xc3", "    x\xef\xbf\xbd(\xef\xbf\xbd"),
	       "a stray byte and a sequence cut short become U+FFFD");
	tap_ok(text_is("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80",
		       "    \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
		       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"),
	       "overlong forms, surrogates and code points past U+10FFFF are replaced byte by byte");
}

/* ----------------------------------------------------------- the files */

/* What the test reads back of a file: each record's step, whether it is
 * the file version or a SessionLog START; n = -1 when a record does not
 * check. */
struct events {
	long step[64];
	int version[64], start[64];
	int n;
};

static uint64_t varint(const unsigned char *p, size_t *at)
{
	uint64_t v = 0;
	for (int shift = 0;; shift += 7) {
		unsigned char c = p[(*at)++];
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return v;
	}
}

static void read_event(const unsigned char *p, size_t n, struct events *e)
{
	size_t at = 0;
	int i = e->n++;
	e->step[i] = 0, e->version[i] = e->start[i] = 0;
	while (at < n) {
		uint64_t key = varint(p, &at), len;
		switch (key & 7) {
		case 0:
			len = varint(p, &at);
			if (key >> 3 == 2)
				e->step[i] = (long)len;
			break;
		case 1:
			at += 8;
			break;
		case 2:
			len = varint(p, &at);
			e->version[i] |= key >> 3 == 3 && len == 13 && !memcmp(p + at, "brain.Event:2", 13);
			/* SessionLog { status: START } is 08 01 */
			e->start[i] |= key >> 3 == 7 && len == 2 && p[at] == 0x08 && p[at + 1] == 1;
			at += len;
			break;
		default:
			at += 4;
		}
	}
}

static struct events read_events(const char *path)
{
	struct events e = { .n = 0 };
	size_t size = 0, at = 0;
	unsigned char *f = tap_slurp(path, &size);
	while (f && at + 12 <= size && e.n < 64) {
		uint64_t len = le(f + at, 8);
		if (le(f + at + 8, 4) != lt_tboard_masked_crc(f + at, 8) || at + 16 + len > size ||
		    le(f + at + 12 + len, 4) != lt_tboard_masked_crc(f + at + 12, len)) {
			e.n = -1;
			break;
		}
		read_event(f + at + 12, len, &e);
		at += 16 + len;
	}
	if (!f || (e.n >= 0 && at != size))
		e.n = -1;
	free(f);
	return e;
}

static int steps_are(const struct events *e, int n, const long *steps)
{
	if (e->n != n)
		return 0;
	for (int i = 0; i < n; i++)
		if (e->step[i] != steps[i])
			return 0;
	return 1;
}

/* A launch: opens dir at step, logs steps step+1..last (one scalar and a
 * text at the last), closes; its file's path into path. */
static int launch(const char *dir, long step, long last, struct lt_tboard_notes *notes,
		  char *path, size_t cap)
{
	lt_tboard *tb;
	if (lt_tboard_open(dir, step, notes, &tb) != LT_OK) {
		tap_diag("open: %s", lt_errmsg());
		return 0;
	}
	snprintf(path, cap, "%s", lt_tboard_path(tb));
	enum lt_status st = LT_OK;
	for (long s = step + 1; s <= last && st == LT_OK; s++) {
		struct lt_tboard_scalar v = { "train/loss", 1.0 / (double)s };
		st = lt_tboard_scalars(tb, s, &v, 1);
	}
	if (st == LT_OK)
		st = lt_tboard_text(tb, last, "sample", "once upon a time");
	lt_tboard_close(tb);
	return st == LT_OK;
}

static long file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void test_files(void)
{
	char first[512], second[512], third[512];
	struct lt_tboard_notes notes = { 0 };
	tap_scratch_new("lt_tboard");
	const char *dir = tap_at("run/tb");
	tap_ok(launch(dir, 0, 6, &notes, first, sizeof first) && notes.n == 0,
	       "a launch makes RUN/tb and logs steps 1..6 into %s", first);
	struct events e = read_events(first);
	long fresh[] = { 0, 1, 1, 2, 3, 4, 5, 6, 6 };
	tap_ok(steps_are(&e, 9, fresh) && e.version[0] && e.start[1] && !e.start[2],
	       "it begins with the file version and a SessionLog START at step 1, then the steps");

	tap_ok(launch(dir, 3, 8, &notes, second, sizeof second) && notes.n == 0 &&
	       strcmp(second, first) > 0, "a launch resumed at step 3 writes a file sorting after it");
	e = read_events(first);
	long kept[] = { 0, 1, 1, 2, 3 };
	tap_ok(steps_are(&e, 5, kept), "the older file keeps the steps up to 3 alone");
	e = read_events(second);
	tap_ok(e.n == 8 && e.start[1] && e.step[1] == 4 && e.step[2] == 4 && e.step[7] == 8,
	       "the new one starts at step 4 (SessionLog START) and goes on to 8");

	/* a killed run: the new file ends inside a record */
	long whole = file_size(second);
	FILE *f = fopen(second, "ab");
	int torn = f && fwrite("\x20\0\0\0\0\0\0\0\x01\x02", 1, 10, f) == 10;
	torn = f && fclose(f) == 0 && torn;
	int ran = torn && launch(dir, 8, 9, &notes, third, sizeof third);
	tap_ok(ran && notes.n == 1 && strstr(notes.v[0], "torn") && strstr(notes.v[0], second) &&
	       file_size(second) == whole && strcmp(third, second) > 0,
	       "a torn last record is cut off and noted: %s", notes.n ? notes.v[0] : "(none)");
	lt_tboard_notes_free(&notes);

	/* a damaged record: a payload byte of the third file flipped */
	long size = file_size(third);
	size_t got = 0;
	unsigned char *p = tap_slurp(third, &got);
	if (p) {
		p[40] ^= 0x10;
		tap_write_file(third, p, got);
		free(p);
	}
	ran = launch(dir, 0, 0, &notes, first, sizeof first);
	tap_ok(ran && notes.n == 1 && strstr(notes.v[0], "damaged") && strstr(notes.v[0], third) &&
	       file_size(third) == size,
	       "a damaged record is noted and its file left as it is: %s",
	       notes.n ? notes.v[0] : "(none)");
	lt_tboard_notes_free(&notes);
	tap_ok(!tap_exists(second) && tap_count_entries(dir, "tfevents", 1) == 2,
	       "a fresh start removes the files left with their version alone (the damaged one "
	       "stays)");

	/* a pipe and a directory whose names look like event files */
	int made = mkfifo(tap_at("run/tb/events.out.tfevents.pipe"), 0600) == 0 &&
		   mkdir(tap_at("run/tb/events.out.tfevents.dir"), 0700) == 0;
	ran = made && launch(dir, 0, 0, &notes, first, sizeof first);
	/* readdir's order: the pipe's note is either of the two */
	int pipe_at = notes.n == 2 && strstr(notes.v[1], "tfevents.pipe: not a regular file");
	tap_ok(ran && notes.n == 2 && strstr(notes.v[pipe_at], "tfevents.pipe: not a regular file") &&
	       strstr(notes.v[!pipe_at], "damaged") &&
	       tap_exists(tap_at("run/tb/events.out.tfevents.pipe")),
	       "a pipe is noted and left as it is, a directory passed over: %s",
	       notes.n == 2 ? notes.v[pipe_at] : "(not two notes)");
	lt_tboard_notes_free(&notes);

	tap_write_file(tap_at("run/file"), "x", 1);
	lt_tboard *tb = NULL;
	tap_ok(lt_tboard_open(tap_at("run/file"), 0, &notes, &tb) == LT_ERR_IO && !tb &&
	       strstr(lt_errmsg(), "run/file"), "a directory that is a file: %s", lt_errmsg());
}

int main(void)
{
	tap_plan(22);
	test_crc32c();
	test_scalars();
	test_text();
	test_files();
	return tap_scratch_done();
}
