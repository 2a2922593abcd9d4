/* Tests of the run directory's layout (src/io/rundir.h): checkpoint names
 * given and read back, the temporaries of a save and their aside names,
 * the optimizer files' names, where a damaged checkpoint is moved aside to,
 * and the paths built from them, which are
 * refused rather than truncated when they do not fit. */
#include "config.h"
#include "io/rundir.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"

static void test_steps(void)
{
	char name[LT_RUNDIR_NAME_MAX];
	lt_rundir_step_name(42, name);
	tap_ok(!strcmp(name, "step_00000042") && lt_rundir_step_of(name) == 42,
	       "step 42 is step_00000042 and reads back");
	lt_rundir_step_name(123456789, name);
	tap_ok(!strcmp(name, "step_123456789") && lt_rundir_step_of(name) == 123456789,
	       "a step of 9 digits keeps them all and reads back");
	tap_ok(lt_rundir_step_of("step_0000001") < 0 && lt_rundir_step_of("step_0000000x") < 0 &&
	       lt_rundir_step_of("stp_00000001") < 0 && lt_rundir_step_of("step") < 0 &&
	       lt_rundir_step_of("step_99999999999") < 0,
	       "short, non-digit, misspelled and out-of-range names are not steps");
}

static void test_temporaries(void)
{
	char name[LT_RUNDIR_NAME_MAX], prefix[LT_RUNDIR_NAME_MAX], aside[LT_RUNDIR_NAME_MAX];
	lt_rundir_temp_name(7, 1234, name);
	lt_rundir_temp_prefix(7, prefix);
	tap_ok(!strcmp(name, ".tmp-step_00000007-1234") && !strncmp(name, prefix, strlen(prefix)),
	       "the temporary of step 7 tagged 1234 begins with the step's prefix (%s)", prefix);
	tap_ok(lt_rundir_aside_name(name, aside, sizeof aside) == LT_OK &&
	       !strcmp(aside, ".tmp-step_00000007-1234-old") && lt_rundir_is_temp_name(aside) &&
	       lt_rundir_is_temp_name(name) && !lt_rundir_is_temp_name("step_00000007") &&
	       lt_rundir_step_of(name) < 0,
	       "temporaries and their asides are temporaries' names, not steps");
	tap_ok(lt_rundir_aside_name(name, aside, 10) == LT_ERR_ARG,
	       "an aside name that does not fit is refused (%s)", lt_errmsg());
	lt_rundir_temp_name(LONG_MAX, LONG_MIN, name);
	tap_ok(lt_rundir_aside_name(name, aside, sizeof aside) == LT_OK,
	       "the longest temporary's aside fits LT_RUNDIR_NAME_MAX (%s)", aside);
}

static void test_optim_names(void)
{
	char name[LT_RUNDIR_NAME_MAX];
	lt_rundir_optim_name(0, 1, name);
	tap_ok(!strcmp(name, LT_RUNDIR_OPTIM) && lt_rundir_is_optim_name(name),
	       "one rank writes optimizer.safetensors");
	lt_rundir_optim_name(2, 3, name);
	tap_ok(!strcmp(name, "optimizer-00002-of-00003.safetensors") &&
	       lt_rundir_is_optim_name(name), "rank 2 of 3 writes %s", name);
	tap_ok(!lt_rundir_is_optim_name("optimizer-3-of-4.safetensors") &&
	       !lt_rundir_is_optim_name("optimizer-00003-of-00003.safetensors") &&
	       !lt_rundir_is_optim_name("optimizer-00000-of-00001.safetensors") &&
	       !lt_rundir_is_optim_name(LT_RUNDIR_MODEL),
	       "names not spelled as written, a rank out of range and other files are not "
	       "optimizer files");
}

static void test_paths(void)
{
	char out[64];
	tap_ok(lt_rundir_checkpoints("runs/a", out, sizeof out) == LT_OK &&
	       !strcmp(out, "runs/a/checkpoints"), "checkpoints of runs/a: %s", out);
	tap_ok(lt_rundir_checkpoint("runs/a", 20, out, sizeof out) == LT_OK &&
	       !strcmp(out, "runs/a/checkpoints/step_00000020"), "step 20 of runs/a: %s", out);
	tap_ok(lt_rundir_checkpoint("runs/a", 20, out, 20) == LT_ERR_ARG &&
	       strstr(lt_errmsg(), "path too long"),
	       "a checkpoint path that does not fit is refused (%s)", lt_errmsg());
	tap_ok(lt_rundir_of_checkpoint("runs/a/checkpoints/step_00000020", out, sizeof out) ==
	       LT_OK && !strcmp(out, "runs/a"), "the run of runs/a/checkpoints/step_00000020");
	tap_ok(lt_rundir_of_checkpoint("/r/checkpoints/step_00000020//", out, sizeof out) ==
	       LT_OK && !strcmp(out, "/r"), "trailing slashes are no names: %s", out);
	tap_ok(lt_rundir_of_checkpoint("step_00000020", out, sizeof out) == LT_OK &&
	       !strcmp(out, "step_00000020/../.."), "a bare checkpoint name: %s", out);
	tap_ok(lt_rundir_of_checkpoint("runs/a/checkpoints/step_00000020", out, 4) == LT_ERR_ARG,
	       "a run path that does not fit is refused (%s)", lt_errmsg());
}

static void test_damaged_paths(void)
{
	char out[64];
	tap_ok(lt_rundir_damaged_path("r/checkpoints/step_00000140", 1, out, sizeof out) == LT_OK &&
	       !strcmp(out, "r/checkpoints/step_00000140.damaged") &&
	       lt_rundir_step_of("step_00000140.damaged") < 0 &&
	       !lt_rundir_is_temp_name("step_00000140.damaged"),
	       "a damaged checkpoint goes aside to %s, neither a step nor a temporary", out);
	tap_ok(lt_rundir_damaged_path("r/checkpoints/step_00000140/", 3, out, sizeof out) == LT_OK &&
	       !strcmp(out, "r/checkpoints/step_00000140.damaged-3") &&
	       lt_rundir_step_of("step_00000140.damaged-3") < 0,
	       "its third try, trailing slash dropped: %s", out);
	tap_ok(lt_rundir_damaged_path("r/checkpoints/step_00000140", 1, out, 20) == LT_ERR_ARG,
	       "a path that does not fit is refused (%s)", lt_errmsg());
}

int main(void)
{
	tap_plan(20);
	test_steps();
	test_temporaries();
	test_optim_names();
	test_paths();
	test_damaged_paths();
	return tap_done();
}
