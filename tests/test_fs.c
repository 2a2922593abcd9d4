/* Tests of the file-system steps every writer shares (src/io/fs.h):
 * publishing a file replaces it whole and leaves no temporary, a failed
 * publish leaves the old file as it was; publishing a directory with and
 * without an old one, and a failed rename that puts the old one back;
 * rm -rf of nested trees (a link's target survives), of a missing path and
 * of a plain file; and path joins that refuse to truncate. */
#include "config.h"
#include "io/fs.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char dir[4096];

/* A path inside the test's directory (four rotating buffers). */
static const char *at(const char *name)
{
	static char buf[4][4200];
	static int slot;
	slot = (slot + 1) % 4;
	snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, name);
	return buf[slot];
}

static int exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

/* Whether the file at path holds exactly text. */
static int holds(const char *path, const char *text)
{
	size_t n;
	unsigned char *p = tap_slurp(path, &n);
	int same = p && n == strlen(text) && !memcmp(p, text, n);
	free(p);
	return same;
}

/* How many entries of directory d have a name containing part. */
static int count_entries(const char *d, const char *part)
{
	DIR *dd = opendir(d);
	struct dirent *e;
	int n = 0;
	if (!dd)
		return -1;
	while ((e = readdir(dd)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, part))
			n++;
	closedir(dd);
	return n;
}

static int msg_has(const char *text)
{
	return strstr(lt_errmsg(), text) != NULL;
}

static void test_publish_file(void)
{
	mkdir(at("pf"), 0755);
	tap_write_file(at("pf/a.txt"), "old", 3);
	enum lt_status st = lt_fs_publish_file(at("pf/a.txt"), "new text", 8);
	tap_ok(st == LT_OK && holds(at("pf/a.txt"), "new text") &&
	       count_entries(at("pf"), ".tmp") == 0 && count_entries(at("pf"), "") == 1,
	       "publish_file replaces the file and leaves no temporary");

	st = lt_fs_publish_file(at("pf/b.txt"), "", 0);
	tap_ok(st == LT_OK && holds(at("pf/b.txt"), ""), "publish_file writes an empty file");

	st = lt_fs_publish_file(at("missing/a.txt"), "x", 1);
	tap_ok(st == LT_ERR_IO && msg_has(at("missing/a.txt")) && msg_has("cannot create") &&
	       !exists(at("missing")),
	       "publish_file into a missing directory is LT_ERR_IO naming the temporary (%s)",
	       lt_errmsg());

	/* the rename fails: a directory that holds something is where the
	 * file would go */
	mkdir(at("pf/taken"), 0755);
	tap_write_file(at("pf/taken/keep"), "kept", 4);
	st = lt_fs_publish_file(at("pf/taken"), "x", 1);
	tap_ok(st == LT_ERR_IO && msg_has("cannot rename to") && msg_has(at("pf/taken")) &&
	       holds(at("pf/taken/keep"), "kept") && count_entries(at("pf"), ".tmp") == 0,
	       "a publish whose rename fails leaves the old entry and no temporary (%s)",
	       lt_errmsg());

	char *tmp = lt_fs_tmp_new(at("pf/a.txt"));
	tap_ok(tmp && !strcmp(tmp, at("pf/a.txt.tmp")), "tmp_new is PATH.tmp");
	tap_write_file(tmp, "streamed", 8);
	st = lt_fs_publish(tmp, at("pf/a.txt"));
	tap_ok(st == LT_OK && holds(at("pf/a.txt"), "streamed") && !exists(tmp),
	       "publish renames a finished temporary into place");
	st = lt_fs_publish(tmp, at("pf/a.txt"));
	tap_ok(st == LT_ERR_IO && msg_has(tmp) && msg_has("cannot rename to") &&
	       holds(at("pf/a.txt"), "streamed"),
	       "publish of a missing temporary fails and leaves the file (%s)", lt_errmsg());
	free(tmp);
}

/* Makes directory path holding one file, name, with text. */
static void make_dir_with(const char *path, const char *name, const char *text)
{
	char file[4400];
	mkdir(path, 0755);
	snprintf(file, sizeof file, "%s/%s", path, name);
	tap_write_file(file, text, strlen(text));
}

static void test_publish_dir(void)
{
	mkdir(at("pd"), 0755);
	make_dir_with(at("pd/.tmp1"), "f", "one");
	enum lt_status st = lt_fs_publish_dir(at("pd/.tmp1"), at("pd/final"), at("pd/.aside"));
	tap_ok(st == LT_OK && holds(at("pd/final/f"), "one") && !exists(at("pd/.tmp1")) &&
	       !exists(at("pd/.aside")),
	       "publish_dir without an old directory renames the new one into place");

	make_dir_with(at("pd/.tmp2"), "g", "two");
	st = lt_fs_publish_dir(at("pd/.tmp2"), at("pd/final"), at("pd/.aside"));
	tap_ok(st == LT_OK && holds(at("pd/final/g"), "two") && !exists(at("pd/final/f")) &&
	       !exists(at("pd/.tmp2")) && !exists(at("pd/.aside")),
	       "publish_dir over an old directory replaces it whole and removes the old one");

	/* the temporary is missing: its rename fails after the old one went
	 * aside, which must come back */
	st = lt_fs_publish_dir(at("pd/.tmp3"), at("pd/final"), at("pd/.aside"));
	tap_ok(st == LT_ERR_IO && msg_has(at("pd/.tmp3")) && msg_has("cannot rename to") &&
	       holds(at("pd/final/g"), "two") && !exists(at("pd/.aside")),
	       "a failed rename puts the old directory back (%s)", lt_errmsg());

	/* the old one cannot go aside: nothing changes */
	make_dir_with(at("pd/.tmp4"), "h", "four");
	make_dir_with(at("pd/.aside"), "stale", "s");
	st = lt_fs_publish_dir(at("pd/.tmp4"), at("pd/final"), at("pd/.aside"));
	tap_ok(st == LT_ERR_IO && msg_has("cannot move the old copy aside") &&
	       holds(at("pd/final/g"), "two") && holds(at("pd/.tmp4/h"), "four"),
	       "an old directory that cannot be moved aside leaves both as they were (%s)",
	       lt_errmsg());
}

static void test_remove_tree(void)
{
	mkdir(at("keep"), 0755);
	tap_write_file(at("keep/target"), "t", 1);
	mkdir(at("rt"), 0755);
	mkdir(at("rt/a"), 0755);
	mkdir(at("rt/a/b"), 0755);
	mkdir(at("rt/a/b/c"), 0755);
	tap_write_file(at("rt/top"), "1", 1);
	tap_write_file(at("rt/a/b/c/deep"), "2", 1);
	mkdir(at("rt/a/empty"), 0755);
	int linked = symlink(at("keep"), at("rt/a/link_dir")) == 0 &&
		     symlink(at("keep/target"), at("rt/a/b/link_file")) == 0;
	enum lt_status st = lt_fs_remove_tree(at("rt"));
	tap_ok(linked && st == LT_OK && !exists(at("rt")) && holds(at("keep/target"), "t"),
	       "remove_tree removes a nested tree; the targets of its links survive");

	st = lt_fs_remove_tree(at("never/was"));
	tap_ok(st == LT_OK, "remove_tree of a missing path is no error");

	tap_write_file(at("plain"), "p", 1);
	st = lt_fs_remove_tree(at("plain"));
	tap_ok(st == LT_OK && !exists(at("plain")), "remove_tree removes a plain file");

	mkdir(at("slash"), 0755);
	tap_write_file(at("slash/x"), "x", 1);
	st = lt_fs_remove_tree(at("slash/"));
	tap_ok(st == LT_OK && !exists(at("slash")), "remove_tree of DIR/ removes DIR");

	symlink(at("keep"), at("alink"));
	st = lt_fs_remove_tree(at("alink"));
	tap_ok(st == LT_OK && !exists(at("alink")) && holds(at("keep/target"), "t"),
	       "remove_tree of a link removes the link alone");

	st = lt_fs_remove_tree(at("keep/.."));
	tap_ok(st == LT_ERR_ARG && exists(at("keep/target")),
	       "remove_tree refuses a path that ends in '..' (%s)", lt_errmsg());

	/* discard: the tree goes, the writer's error stays, also when the
	 * removal itself fails */
	make_dir_with(at("failed"), "part", "p");
	lt_errmsg_set("disk full while writing part");
	lt_fs_discard(at("failed"));
	int gone = !exists(at("failed")) && !strcmp(lt_errmsg(), "disk full while writing part");
	lt_fs_discard(at("keep/.."));
	tap_ok(gone && exists(at("keep/target")) &&
	       !strcmp(lt_errmsg(), "disk full while writing part"),
	       "discard removes a failed writer's tree and keeps its error (%s)", lt_errmsg());
}

static void test_join(void)
{
	char out[16];
	enum lt_status st = lt_fs_join(out, sizeof out, "dir", "name");
	tap_ok(st == LT_OK && !strcmp(out, "dir/name"), "join gives dir/name");
	st = lt_fs_join(out, sizeof out, "dir", "name67890ab");
	tap_ok(st == LT_OK && !strcmp(out, "dir/name67890ab"), "join fills the buffer exactly");
	st = lt_fs_join(out, sizeof out, "directory", "name.bin");
	tap_ok(st == LT_ERR_ARG && msg_has("directory/name.bin: path too long") &&
	       msg_has("at most 15 bytes"),
	       "join refuses to truncate, naming the whole path (%s)", lt_errmsg());

	char *p = lt_fs_join_new("a/b", "c.txt");
	tap_ok(p && !strcmp(p, "a/b/c.txt"), "join_new gives dir/name in new memory");
	free(p);

	static const char *const cases[][3] = {
		{ "a/b/c", "a/b", "c" }, { "a/b//", "a", "b" }, { "name", ".", "name" },
		{ "/top", "/", "top" }, { "/", "/", "" }, { "x//y", "x", "y" },
	};
	char d[64], n[64];
	int right = 1;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		right &= lt_fs_split(cases[i][0], d, n, sizeof d) == LT_OK &&
			 !strcmp(d, cases[i][1]) && !strcmp(n, cases[i][2]);
		if (!right) {
			tap_diag("split '%s': '%s' and '%s'", cases[i][0], d, n);
			break;
		}
	}
	tap_ok(right, "split gives the directory and the last name, trailing slashes dropped");
}

static void test_output_dir(void)
{
	int files = -1;
	enum lt_status absent = lt_fs_output_dir(at("od-none"), 0, &files);
	int none = absent == LT_OK && files == 0;
	mkdir(at("od-empty"), 0755);
	enum lt_status empty = lt_fs_output_dir(at("od-empty"), 0, &files);
	int nothing = empty == LT_OK && files == 0;
	make_dir_with(at("od-full"), "f", "x");
	enum lt_status full = lt_fs_output_dir(at("od-full"), 0, &files);
	tap_ok(none && nothing && full == LT_OK && files == 1,
	       "output_dir: absent and empty hold no files, a directory with one does");
	symlink(at("od-full"), at("od-link"));
	enum lt_status link_as_is = lt_fs_output_dir(at("od-link"), 0, &files);
	int refused = link_as_is == LT_ERR_ARG && msg_has("exists and is not a directory");
	enum lt_status followed = lt_fs_output_dir(at("od-link"), 1, &files);
	tap_ok(refused && followed == LT_OK && files == 1 &&
	       lt_fs_output_dir(at("od-full/f"), 1, &files) == LT_ERR_ARG,
	       "output_dir: a link is a directory only when followed; a file never is");
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/lt_fs_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp %s: %s\n", dir, strerror(errno));
		return 1;
	}
	tap_plan(25);
	test_publish_file();
	test_publish_dir();
	test_remove_tree();
	test_join();
	test_output_dir();
	if (lt_fs_remove_tree(dir) != LT_OK)
		tap_diag("cannot remove %s: %s", dir, lt_errmsg());
	return tap_done();
}
