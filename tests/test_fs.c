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

static const char *dir; /* the scratch directory */

/* Whether the file at path holds exactly text. */
static int holds(const char *path, const char *text)
{
	size_t n;
	unsigned char *p = tap_slurp(path, &n);
	int same = p && n == strlen(text) && !memcmp(p, text, n);
	free(p);
	return same;
}

static int msg_has(const char *text)
{
	return strstr(lt_errmsg(), text) != NULL;
}

static void test_publish_file(void)
{
	mkdir(tap_at("pf"), 0755);
	tap_write_file(tap_at("pf/a.txt"), "old", 3);
	enum lt_status st = lt_fs_publish_file(tap_at("pf/a.txt"), "new text", 8);
	tap_ok(st == LT_OK && holds(tap_at("pf/a.txt"), "new text") &&
	       tap_count_entries(tap_at("pf"), ".tmp", 1) == 0 && tap_count_entries(tap_at("pf"), "", 1) == 1,
	       "publish_file replaces the file and leaves no temporary");

	st = lt_fs_publish_file(tap_at("pf/b.txt"), "", 0);
	tap_ok(st == LT_OK && holds(tap_at("pf/b.txt"), ""), "publish_file writes an empty file");

	st = lt_fs_publish_file(tap_at("missing/a.txt"), "x", 1);
	tap_ok(st == LT_ERR_IO && msg_has(tap_at("missing/a.txt")) && msg_has("cannot create") &&
	       !tap_exists(tap_at("missing")),
	       "publish_file into a missing directory is LT_ERR_IO naming the temporary (%s)",
	       lt_errmsg());

	/* the rename fails: a directory that holds something is where the
	 * file would go */
	mkdir(tap_at("pf/taken"), 0755);
	tap_write_file(tap_at("pf/taken/keep"), "kept", 4);
	st = lt_fs_publish_file(tap_at("pf/taken"), "x", 1);
	tap_ok(st == LT_ERR_IO && msg_has("cannot rename to") && msg_has(tap_at("pf/taken")) &&
	       holds(tap_at("pf/taken/keep"), "kept") && tap_count_entries(tap_at("pf"), ".tmp", 1) == 0,
	       "a publish whose rename fails leaves the old entry and no temporary (%s)",
	       lt_errmsg());

	char *tmp = lt_fs_tmp_new(tap_at("pf/a.txt"));
	tap_ok(tmp && !strcmp(tmp, tap_at("pf/a.txt.tmp")), "tmp_new is PATH.tmp");
	tap_write_file(tmp, "streamed", 8);
	st = lt_fs_publish(tmp, tap_at("pf/a.txt"));
	tap_ok(st == LT_OK && holds(tap_at("pf/a.txt"), "streamed") && !tap_exists(tmp),
	       "publish renames a finished temporary into place");
	st = lt_fs_publish(tmp, tap_at("pf/a.txt"));
	tap_ok(st == LT_ERR_IO && msg_has(tmp) && msg_has("cannot rename to") &&
	       holds(tap_at("pf/a.txt"), "streamed"),
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
	mkdir(tap_at("pd"), 0755);
	make_dir_with(tap_at("pd/.tmp1"), "f", "one");
	enum lt_status st = lt_fs_publish_dir(tap_at("pd/.tmp1"), tap_at("pd/final"), tap_at("pd/.aside"));
	tap_ok(st == LT_OK && holds(tap_at("pd/final/f"), "one") && !tap_exists(tap_at("pd/.tmp1")) &&
	       !tap_exists(tap_at("pd/.aside")),
	       "publish_dir without an old directory renames the new one into place");

	make_dir_with(tap_at("pd/.tmp2"), "g", "two");
	st = lt_fs_publish_dir(tap_at("pd/.tmp2"), tap_at("pd/final"), tap_at("pd/.aside"));
	tap_ok(st == LT_OK && holds(tap_at("pd/final/g"), "two") && !tap_exists(tap_at("pd/final/f")) &&
	       !tap_exists(tap_at("pd/.tmp2")) && !tap_exists(tap_at("pd/.aside")),
	       "publish_dir over an old directory replaces it whole and removes the old one");

	/* the temporary is missing: its rename fails after the old one went
	 * aside, which must come back */
	st = lt_fs_publish_dir(tap_at("pd/.tmp3"), tap_at("pd/final"), tap_at("pd/.aside"));
	tap_ok(st == LT_ERR_IO && msg_has(tap_at("pd/.tmp3")) && msg_has("cannot rename to") &&
	       holds(tap_at("pd/final/g"), "two") && !tap_exists(tap_at("pd/.aside")),
	       "a failed rename puts the old directory back (%s)", lt_errmsg());

	/* the old one cannot go aside: nothing changes */
	make_dir_with(tap_at("pd/.tmp4"), "h", "four");
	make_dir_with(tap_at("pd/.aside"), "stale", "s");
	st = lt_fs_publish_dir(tap_at("pd/.tmp4"), tap_at("pd/final"), tap_at("pd/.aside"));
	tap_ok(st == LT_ERR_IO && msg_has("cannot move the old copy aside") &&
	       holds(tap_at("pd/final/g"), "two") && holds(tap_at("pd/.tmp4/h"), "four"),
	       "an old directory that cannot be moved aside leaves both as they were (%s)",
	       lt_errmsg());
}

static void test_remove_tree(void)
{
	mkdir(tap_at("keep"), 0755);
	tap_write_file(tap_at("keep/target"), "t", 1);
	mkdir(tap_at("rt"), 0755);
	mkdir(tap_at("rt/a"), 0755);
	mkdir(tap_at("rt/a/b"), 0755);
	mkdir(tap_at("rt/a/b/c"), 0755);
	tap_write_file(tap_at("rt/top"), "1", 1);
	tap_write_file(tap_at("rt/a/b/c/deep"), "2", 1);
	mkdir(tap_at("rt/a/empty"), 0755);
	int linked = symlink(tap_at("keep"), tap_at("rt/a/link_dir")) == 0 &&
		     symlink(tap_at("keep/target"), tap_at("rt/a/b/link_file")) == 0;
	enum lt_status st = lt_fs_remove_tree(tap_at("rt"));
	tap_ok(linked && st == LT_OK && !tap_exists(tap_at("rt")) && holds(tap_at("keep/target"), "t"),
	       "remove_tree removes a nested tree; the targets of its links survive");

	st = lt_fs_remove_tree(tap_at("never/was"));
	tap_ok(st == LT_OK, "remove_tree of a missing path is no error");

	tap_write_file(tap_at("plain"), "p", 1);
	st = lt_fs_remove_tree(tap_at("plain"));
	tap_ok(st == LT_OK && !tap_exists(tap_at("plain")), "remove_tree removes a plain file");

	mkdir(tap_at("slash"), 0755);
	tap_write_file(tap_at("slash/x"), "x", 1);
	st = lt_fs_remove_tree(tap_at("slash/"));
	tap_ok(st == LT_OK && !tap_exists(tap_at("slash")), "remove_tree of DIR/ removes DIR");

	symlink(tap_at("keep"), tap_at("alink"));
	st = lt_fs_remove_tree(tap_at("alink"));
	tap_ok(st == LT_OK && !tap_exists(tap_at("alink")) && holds(tap_at("keep/target"), "t"),
	       "remove_tree of a link removes the link alone");

	st = lt_fs_remove_tree(tap_at("keep/.."));
	tap_ok(st == LT_ERR_ARG && tap_exists(tap_at("keep/target")),
	       "remove_tree refuses a path that ends in '..' (%s)", lt_errmsg());

	/* discard: the tree goes, the writer's error stays, also when the
	 * removal itself fails */
	make_dir_with(tap_at("failed"), "part", "p");
	lt_errmsg_set("disk full while writing part");
	lt_fs_discard(tap_at("failed"));
	int gone = !tap_exists(tap_at("failed")) && !strcmp(lt_errmsg(), "disk full while writing part");
	lt_fs_discard(tap_at("keep/.."));
	tap_ok(gone && tap_exists(tap_at("keep/target")) &&
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
	enum lt_status absent = lt_fs_output_dir(tap_at("od-none"), 0, &files);
	int none = absent == LT_OK && files == 0;
	mkdir(tap_at("od-empty"), 0755);
	enum lt_status empty = lt_fs_output_dir(tap_at("od-empty"), 0, &files);
	int nothing = empty == LT_OK && files == 0;
	make_dir_with(tap_at("od-full"), "f", "x");
	enum lt_status full = lt_fs_output_dir(tap_at("od-full"), 0, &files);
	tap_ok(none && nothing && full == LT_OK && files == 1,
	       "output_dir: absent and empty hold no files, a directory with one does");
	symlink(tap_at("od-full"), tap_at("od-link"));
	enum lt_status link_as_is = lt_fs_output_dir(tap_at("od-link"), 0, &files);
	int refused = link_as_is == LT_ERR_ARG && msg_has("exists and is not a directory");
	enum lt_status followed = lt_fs_output_dir(tap_at("od-link"), 1, &files);
	tap_ok(refused && followed == LT_OK && files == 1 &&
	       lt_fs_output_dir(tap_at("od-full/f"), 1, &files) == LT_ERR_ARG,
	       "output_dir: a link is a directory only when followed; a file never is");
}

int main(void)
{
	dir = tap_scratch_new("lt_fs");
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
