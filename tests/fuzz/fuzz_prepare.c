/* Fuzzes the reader of prepare.json, the prepared-data description:
 * lt_prepare_is_done, which training asks before it prepares a corpus, on
 * a directory holding the input as prepare.json beside a tokenizer.json,
 * two shards (train_0000.bin, val_0000.bin) and a subdirectory. */
#include "config.h"
#define LT_FUZZ_NAME prepare
#include "fuzz.h"

#include "text/prepare.h"

static const char *setup(void)
{
	static const char *dir;
	if (!dir) {
		dir = lt_fuzz_dir("data");
		lt_fuzz_dir("data/sub");
		lt_fuzz_write(lt_fuzz_path("data/tokenizer.json"), "{}", 2);
		lt_fuzz_write(lt_fuzz_path("data/train_0000.bin"), "", 0);
		lt_fuzz_write(lt_fuzz_path("data/val_0000.bin"), "", 0);
	}
	return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *dir = setup();
	lt_fuzz_write(lt_fuzz_path("data/prepare.json"), data, lt_fuzz_cap(size));
	lt_prepare_is_done(dir);
	return 0;
}
