/* TensorBoard event files: CRC-32C, the protocol buffer encoding of the
 * Event messages lltrain writes, the records, and the trimming of older
 * files when a run resumes. */
#include "config.h"
#include "io/tboard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/fs.h"

/* What TensorBoard looks for in a name, and what its writers begin with. */
#define EVENTS_MARK "tfevents"
#define EVENTS_PREFIX "events.out.tfevents."
/* The record format and Event message version TensorBoard reads. */
#define FILE_VERSION "brain.Event:2"

struct lt_tboard {
	int fd;           /* appending */
	char *path;
};

/* --------------------------------------------------------------- CRC-32C */

/* The table of the reflected Castagnoli polynomial, made on first use (the
 * writer is one thread's). */
static const uint32_t *crc_table(void)
{
	static uint32_t table[256];
	static int made;
	if (!made) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
			table[i] = c;
		}
		made = 1;
	}
	return table;
}

uint32_t lt_tboard_crc32c(uint32_t crc, const void *p, size_t n)
{
	const uint32_t *table = crc_table();
	const unsigned char *b = p;
	crc = ~crc;
	for (size_t i = 0; i < n; i++)
		crc = table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

uint32_t lt_tboard_masked_crc(const void *p, size_t n)
{
	uint32_t c = lt_tboard_crc32c(0, p, n);
	return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

/* ------------------------------------------------- protocol buffer bytes */

/* A growing byte buffer; a failed allocation sets nomem and later puts do
 * nothing, so that an encoder checks once, at its end. */
struct buf {
	unsigned char *p;
	size_t n, cap;
	int nomem;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->nomem)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->n + n)
			cap *= 2;
		unsigned char *q = realloc(b->p, cap);
		if (!q) {
			b->nomem = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

/* Base 128, least significant group first, the high bit on all but the
 * last byte. */
static void put_varint(struct buf *b, uint64_t v)
{
	unsigned char out[10];
	size_t n = 0;
	do {
		out[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		out[n] |= v ? 0x80 : 0;
		n++;
	} while (v);
	put(b, out, n);
}

/* Wire types: 0 varint, 1 eight bytes, 2 length-delimited, 5 four bytes. */
enum wire { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2, WIRE_FIXED32 = 5 };

static void put_key(struct buf *b, int field, enum wire w)
{
	put_varint(b, (uint64_t)field << 3 | (uint64_t)w);
}

static void put_varint_field(struct buf *b, int field, uint64_t v)
{
	put_key(b, field, WIRE_VARINT);
	put_varint(b, v);
}

static void put_bytes_field(struct buf *b, int field, const void *p, size_t n)
{
	put_key(b, field, WIRE_BYTES);
	put_varint(b, n);
	put(b, p, n);
}

static void put_string_field(struct buf *b, int field, const char *s)
{
	put_bytes_field(b, field, s, strlen(s));
}

/* A sub-message: its bytes as a length-delimited field. */
static void put_message_field(struct buf *b, int field, const struct buf *m)
{
	b->nomem |= m->nomem;
	put_bytes_field(b, field, m->p, m->n);
}

/* Little-endian, whatever the host's order. */
static void put_le(struct buf *b, uint64_t v, int bytes)
{
	unsigned char out[8];
	for (int i = 0; i < bytes; i++)
		out[i] = (unsigned char)(v >> (8 * i));
	put(b, out, (size_t)bytes);
}

static void put_double_field(struct buf *b, int field, double v)
{
	uint64_t bits;
	memcpy(&bits, &v, sizeof bits);
	put_key(b, field, WIRE_FIXED64);
	put_le(b, bits, 8);
}

static void put_float_field(struct buf *b, int field, float v)
{
	uint32_t bits;
	memcpy(&bits, &v, sizeof bits);
	put_key(b, field, WIRE_FIXED32);
	put_le(b, bits, 4);
}

/* ------------------------------------------------------------ the events */

/* Field numbers of the messages written (tensorboard/compat/proto). */
enum {
	EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5,
	EVENT_SESSION_LOG = 7,
	SESSION_LOG_STATUS = 1, SESSION_LOG_START = 1,
	SUMMARY_VALUE = 1,
	VALUE_TAG = 1, VALUE_SIMPLE = 2, VALUE_TENSOR = 8, VALUE_METADATA = 9,
	METADATA_PLUGIN_DATA = 1, METADATA_DATA_CLASS = 4, DATA_CLASS_TENSOR = 2,
	PLUGIN_DATA_NAME = 1,
	TENSOR_DTYPE = 1, TENSOR_SHAPE = 2, TENSOR_STRING_VAL = 8, DT_STRING = 7,
};

/* An Event's head: its wall time and its step (a zero step is left out,
 * as protocol buffers leave out defaults). */
static void put_event_head(struct buf *e, double wall_time, long step)
{
	put_double_field(e, EVENT_WALL_TIME, wall_time);
	if (step)
		put_varint_field(e, EVENT_STEP, (uint64_t)(int64_t)step);
}

/* The framed record of payload e: length, its masked CRC, the payload and
 * the payload's masked CRC. Frees e's bytes. */
static enum lt_status frame(struct buf *e, unsigned char **rec, size_t *len)
{
	struct buf r = { 0 };
	unsigned char head[8];
	for (int i = 0; i < 8; i++)
		head[i] = (unsigned char)((uint64_t)e->n >> (8 * i));
	put(&r, head, 8);
	put_le(&r, lt_tboard_masked_crc(head, 8), 4);
	put(&r, e->p, e->n);
	put_le(&r, lt_tboard_masked_crc(e->p, e->n), 4);
	r.nomem |= e->nomem;
	free(e->p);
	if (r.nomem) {
		free(r.p);
		lt_errmsg_set("cannot allocate a TensorBoard event");
		return LT_ERR_NOMEM;
	}
	*rec = r.p;
	*len = r.n;
	return LT_OK;
}

enum lt_status lt_tboard_encode_scalars(double wall_time, long step,
					const struct lt_tboard_scalar *v, size_t n,
					unsigned char **rec, size_t *len)
{
	struct buf e = { 0 }, summary = { 0 };
	for (size_t i = 0; i < n; i++) {
		struct buf value = { 0 };
		put_string_field(&value, VALUE_TAG, v[i].tag);
		put_float_field(&value, VALUE_SIMPLE, (float)v[i].value);
		put_message_field(&summary, SUMMARY_VALUE, &value);
		free(value.p);
	}
	put_event_head(&e, wall_time, step);
	put_message_field(&e, EVENT_SUMMARY, &summary);
	free(summary.p);
	return frame(&e, rec, len);
}

/* The length of the UTF-8 sequence at s[0..n), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are not). */
static size_t utf8_length(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len = c < 0x80 ? 1 : c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3
		   : c >= 0xf0 && c < 0xf5 ? 4 : 0;
	if (len == 0 || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) ||
	    (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
		return 0;
	return len;
}

/* text as a Markdown code block: four spaces before every line, and
 * U+FFFD for each byte that does not begin a UTF-8 sequence. */
static void put_code_block(struct buf *b, const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t n = strlen(text);
	int line_start = 1;
	for (size_t i = 0; i < n;) {
		if (line_start)
			put(b, "    ", 4);
		size_t len = utf8_length(s + i, n - i);
		if (len)
			put(b, s + i, len);
		else
			put(b, "\xef\xbf\xbd", 3);
		line_start = s[i] == '\n';
		i += len ? len : 1;
	}
}

enum lt_status lt_tboard_encode_text(double wall_time, long step, const char *tag,
				     const char *text, unsigned char **rec, size_t *len)
{
	struct buf e = { 0 }, summary = { 0 }, value = { 0 }, meta = { 0 }, plugin = { 0 },
		   tensor = { 0 }, shape = { 0 }, block = { 0 };
	put_string_field(&plugin, PLUGIN_DATA_NAME, "text");
	put_message_field(&meta, METADATA_PLUGIN_DATA, &plugin);
	put_varint_field(&meta, METADATA_DATA_CLASS, DATA_CLASS_TENSOR);
	put_code_block(&block, text);
	put_varint_field(&tensor, TENSOR_DTYPE, DT_STRING);
	put_message_field(&tensor, TENSOR_SHAPE, &shape);  /* no dimensions: a scalar */
	put_bytes_field(&tensor, TENSOR_STRING_VAL, block.p, block.n);
	tensor.nomem |= block.nomem;
	put_string_field(&value, VALUE_TAG, tag);
	put_message_field(&value, VALUE_TENSOR, &tensor);
	put_message_field(&value, VALUE_METADATA, &meta);
	put_message_field(&summary, SUMMARY_VALUE, &value);
	put_event_head(&e, wall_time, step);
	put_message_field(&e, EVENT_SUMMARY, &summary);
	free(summary.p);
	free(value.p);
	free(meta.p);
	free(plugin.p);
	free(tensor.p);
	free(block.p);
	return frame(&e, rec, len);
}

/* The first event of a file: the record format's version. */
static enum lt_status encode_file_version(double wall_time, unsigned char **rec, size_t *len)
{
	struct buf e = { 0 };
	put_event_head(&e, wall_time, 0);
	put_string_field(&e, EVENT_FILE_VERSION, FILE_VERSION);
	return frame(&e, rec, len);
}

/* SessionLog START at step: TensorBoard forgets what it holds of this step
 * and later ones (the steps a resumed run logs again). */
static enum lt_status encode_session_start(double wall_time, long step, unsigned char **rec,
					   size_t *len)
{
	struct buf e = { 0 }, log = { 0 };
	put_varint_field(&log, SESSION_LOG_STATUS, SESSION_LOG_START);
	put_event_head(&e, wall_time, step);
	put_message_field(&e, EVENT_SESSION_LOG, &log);
	free(log.p);
	return frame(&e, rec, len);
}

/* --------------------------------------------------------------- notes */

void lt_tboard_notes_free(struct lt_tboard_notes *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i]);
	free(k->v);
	k->v = NULL;
	k->n = 0;
}

static void note(struct lt_tboard_notes *k, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends a line to k; a note that cannot be allocated is dropped with
 * the rest of the allocation failure's consequences (none for the run). */
static void note(struct lt_tboard_notes *k, const char *fmt, ...)
{
	char line[LT_FS_PATH_MAX + 256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	char **v = k ? realloc(k->v, (k->n + 1) * sizeof *v) : NULL;
	if (!v)
		return;
	k->v = v;
	if ((v[k->n] = strdup(line)) != NULL)
		k->n++;
}

/* ------------------------------------------------- the older files' ends */

/* Reads the next varint of p[*at..n); 0 when it runs past n or 10 bytes. */
static int get_varint(const unsigned char *p, size_t n, size_t *at, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 70 && *at < n; shift += 7) {
		unsigned char c = p[(*at)++];
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return 1;
	}
	return 0;
}

/* The step of an Event payload (0 when it has none), and whether it holds
 * a file version; 0 when the payload is no protocol buffer. */
static int event_step(const unsigned char *p, size_t n, int64_t *step, int *is_version)
{
	size_t at = 0;
	*step = 0;
	*is_version = 0;
	while (at < n) {
		uint64_t key, v;
		if (!get_varint(p, n, &at, &key))
			return 0;
		switch (key & 7) {
		case WIRE_VARINT:
			if (!get_varint(p, n, &at, &v))
				return 0;
			if (key >> 3 == EVENT_STEP)
				*step = (int64_t)v;
			break;
		case WIRE_FIXED64:
		case WIRE_FIXED32:
			v = (key & 7) == WIRE_FIXED64 ? 8 : 4;
			if (n - at < v)
				return 0;
			at += v;
			break;
		case WIRE_BYTES:
			if (!get_varint(p, n, &at, &v) || v > n - at)
				return 0;
			*is_version |= key >> 3 == EVENT_FILE_VERSION;
			at += v;
			break;
		default:
			return 0;
		}
	}
	return 1;
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* How a file's records end: where the kept part ends, and why there. */
enum record_end { END_FILE, END_STEP, END_TORN, END_DAMAGED };

struct scan {
	off_t keep;          /* bytes kept: whole records of steps up to the step */
	off_t first_end;     /* where its first record ends */
	int only_version;    /* the kept records hold the file version alone */
};

/* Reads f's next record from offset at (of a file of size bytes) into
 * *payload (grown as needed): END_FILE with *n set when it is whole and
 * checks, END_TORN when the file ends inside it, END_DAMAGED when a CRC
 * fails or it cannot be read. */
static enum record_end read_record(FILE *f, off_t at, off_t size, unsigned char **payload,
				   size_t *cap, size_t *n)
{
	unsigned char head[12], crc[4];
	if (size - at < 12)
		return END_TORN;
	if (fread(head, 1, 12, f) != 12)
		return END_DAMAGED;
	if (lt_tboard_masked_crc(head, 8) != get_le32(head + 8))
		return END_DAMAGED;
	uint64_t len = (uint64_t)get_le32(head) | (uint64_t)get_le32(head + 4) << 32;
	if (len > (uint64_t)(size - at - 12) || (uint64_t)(size - at - 12) - len < 4)
		return END_TORN;
	if (len > *cap) {
		unsigned char *p = realloc(*payload, (size_t)len);
		if (!p)
			return END_DAMAGED;
		*payload = p;
		*cap = (size_t)len;
	}
	if (fread(*payload, 1, (size_t)len, f) != len || fread(crc, 1, 4, f) != 4 ||
	    lt_tboard_masked_crc(*payload, (size_t)len) != get_le32(crc))
		return END_DAMAGED;
	*n = (size_t)len;
	return END_FILE;
}

/* Walks f's records: how much of it holds whole, intact records of steps up
 * to `step`, and why it stops there. */
static enum record_end scan_records(FILE *f, off_t size, long step, struct scan *s)
{
	unsigned char *payload = NULL;
	size_t cap = 0, n = 0;
	enum record_end end = END_FILE;
	*s = (struct scan){ .only_version = 1 };
	while (s->keep < size) {
		int64_t at_step;
		int is_version;
		end = read_record(f, s->keep, size, &payload, &cap, &n);
		if (end == END_FILE && !event_step(payload, n, &at_step, &is_version))
			end = END_DAMAGED;
		if (end != END_FILE)
			break;
		if (at_step > step) {
			end = END_STEP;
			break;
		}
		s->keep += (off_t)(12 + n + 4);
		s->first_end = s->first_end ? s->first_end : s->keep;
		s->only_version &= is_version;
	}
	free(payload);
	return s->keep < size ? end : END_FILE;
}

/* Cuts path to its records of steps up to `step`: removed when nothing but
 * its file version would stay; a damaged record stops the cut (the file is
 * left as it is from there, and noted), and what cannot be opened or is no
 * regular file is noted and left (a directory quietly). */
static enum lt_status trim_file(const char *path, long step, struct lt_tboard_notes *notes)
{
	struct stat sb;
	errno = 0;
	FILE *f = fopen(path, "r+b");
	if (!f || fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
		/* not ours to cut: TensorBoard's purge at the new file's START
		 * still hides its later steps */
		if (errno != EISDIR)
			note(notes, "%s: %s; left as it is", path,
			     f ? "not a regular file" : strerror(errno));
		if (f)
			fclose(f);
		return LT_OK;
	}
	struct scan s;
	enum record_end end = scan_records(f, sb.st_size, step, &s);
	int bad = 0;
	if (end == END_DAMAGED)
		note(notes, "%s: the record at byte %lld is damaged (a CRC-32C or its event does "
		     "not check); the file is left as it is from there", path, (long long)s.keep);
	else if (end == END_TORN)
		note(notes, "%s: cut off a torn last record at byte %lld (a run stopped while "
		     "writing it)", path, (long long)s.keep);
	if (end == END_STEP || end == END_TORN)
		bad = ftruncate(fileno(f), s.keep) != 0 || fsync(fileno(f)) != 0;
	if (fclose(f) != 0)
		bad = 1;
	if (bad) {
		lt_errmsg_set("%s: cannot cut the file to the steps up to %ld: %s", path, step,
			      strerror(errno));
		return LT_ERR_IO;
	}
	if (end != END_DAMAGED && (s.keep == 0 || (s.keep == s.first_end && s.only_version)) &&
	    unlink(path) != 0) {
		lt_errmsg_set("%s: cannot remove: %s", path, strerror(errno));
		return LT_ERR_IO;
	}
	return LT_OK;
}

/* The time in a writer's name, events.out.tfevents.TIME.*; -1 for others. */
static long long name_time(const char *name)
{
	size_t k = strlen(EVENTS_PREFIX);
	if (strncmp(name, EVENTS_PREFIX, k) != 0 || name[k] < '0' || name[k] > '9')
		return -1;
	return strtoll(name + k, NULL, 10);
}

/* Trims every event file of dir (see trim_file) and finds the latest time
 * in their names. */
static enum lt_status trim_dir(const char *dir, long step, struct lt_tboard_notes *notes,
			       long long *latest)
{
	DIR *d = opendir(dir);
	if (!d) {
		lt_errmsg_set("%s: cannot list: %s", dir, strerror(errno));
		return LT_ERR_IO;
	}
	enum lt_status st = LT_OK;
	struct dirent *e;
	*latest = -1;
	while (st == LT_OK && (e = readdir(d)) != NULL) {
		if (!strstr(e->d_name, EVENTS_MARK))
			continue;
		char *path = lt_fs_join_new(dir, e->d_name);
		if (!path) {
			lt_errmsg_set("cannot allocate a path in %s", dir);
			st = LT_ERR_NOMEM;
			break;
		}
		long long t = name_time(e->d_name);
		*latest = t > *latest ? t : *latest;
		st = trim_file(path, step, notes);
		free(path);
	}
	closedir(d);
	return st;
}

/* ------------------------------------------------------------ the writer */

static double wall_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Appends the n bytes of rec; 0, or errno. A write that stops partway is
 * cut back off a regular file, so that the file keeps whole records. */
static int append(lt_tboard *tb, const unsigned char *rec, size_t n)
{
	struct stat sb;
	int regular = fstat(tb->fd, &sb) == 0 && S_ISREG(sb.st_mode);
	for (size_t done = 0; done < n;) {
		ssize_t w = write(tb->fd, rec + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int err = w < 0 ? errno : EIO;
			/* a torn record that cannot be cut off stays; err says why */
			int cut = done && regular ? ftruncate(tb->fd, sb.st_size) : 0;
			(void)cut;
			return err;
		}
		done += (size_t)w;
	}
	return 0;
}

/* Writes an encoded record (st: the encoder's status) and frees it. */
static enum lt_status write_record(lt_tboard *tb, enum lt_status st, unsigned char *rec,
				   size_t n)
{
	if (st != LT_OK)
		return st;
	int err = append(tb, rec, n);
	free(rec);
	if (err) {
		lt_errmsg_set("%s: write failed: %s", tb->path, strerror(err));
		return LT_ERR_IO;
	}
	return LT_OK;
}

enum lt_status lt_tboard_scalars(lt_tboard *tb, long step, const struct lt_tboard_scalar *v,
				 size_t n)
{
	unsigned char *rec = NULL;
	size_t len = 0;
	enum lt_status st = lt_tboard_encode_scalars(wall_seconds(), step, v, n, &rec, &len);
	return write_record(tb, st, rec, len);
}

enum lt_status lt_tboard_text(lt_tboard *tb, long step, const char *tag, const char *text)
{
	unsigned char *rec = NULL;
	size_t len = 0;
	enum lt_status st = lt_tboard_encode_text(wall_seconds(), step, tag, text, &rec, &len);
	return write_record(tb, st, rec, len);
}

/* The new file's name: events.out.tfevents.TIME.HOST.PID, its TIME after
 * every older file's so that it sorts after them (TensorBoard reads a
 * directory's files in the order of their names). */
static char *new_file_path(const char *dir, long long latest)
{
	char host[256] = "", name[LT_FS_PATH_MAX];
	long long now = (long long)time(NULL);
	if (gethostname(host, sizeof host - 1) != 0 || !host[0])
		strcpy(host, "localhost");
	for (char *c = host; *c; c++)
		if (*c == '/')
			*c = '_';
	snprintf(name, sizeof name, EVENTS_PREFIX "%010lld.%s.%ld", now > latest ? now : latest + 1,
		 host, (long)getpid());
	return lt_fs_join_new(dir, name);
}

/* Creates the file and writes its first events. */
static enum lt_status start_file(lt_tboard *tb, long step)
{
	unsigned char *rec = NULL;
	size_t len = 0;
	double now = wall_seconds();
	tb->fd = open(tb->path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (tb->fd < 0) {
		lt_errmsg_set("%s: cannot create: %s", tb->path, strerror(errno));
		return LT_ERR_IO;
	}
	enum lt_status st = encode_file_version(now, &rec, &len);
	if ((st = write_record(tb, st, rec, len)) != LT_OK)
		return st;
	st = encode_session_start(now, step + 1, &rec, &len);
	return write_record(tb, st, rec, len);
}

enum lt_status lt_tboard_open(const char *dir, long step, struct lt_tboard_notes *notes,
			      lt_tboard **out)
{
	long long latest;
	enum lt_status st = lt_fs_make_dirs(dir);
	*out = NULL;
	if (st == LT_OK)
		st = trim_dir(dir, step, notes, &latest);
	if (st != LT_OK)
		return st;
	lt_tboard *tb = calloc(1, sizeof *tb);
	if (!tb || !(tb->path = new_file_path(dir, latest))) {
		free(tb);
		lt_errmsg_set("cannot allocate the TensorBoard writer of %s", dir);
		return LT_ERR_NOMEM;
	}
	if ((st = start_file(tb, step)) != LT_OK) {
		lt_tboard_close(tb);
		return st;
	}
	*out = tb;
	return LT_OK;
}

enum lt_status lt_tboard_trim(const char *dir, long step, struct lt_tboard_notes *notes)
{
	long long latest;
	return lt_fs_is_dir(dir) ? trim_dir(dir, step, notes, &latest) : LT_OK;
}

void lt_tboard_close(lt_tboard *tb)
{
	if (!tb)
		return;
	if (tb->fd >= 0)
		close(tb->fd);
	free(tb->path);
	free(tb);
}

const char *lt_tboard_path(const lt_tboard *tb)
{
	return tb->path;
}
