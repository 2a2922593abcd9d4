#!/bin/sh
# The two ends of `make fuzz` around the build of tests/fuzz/fuzz.mk:
#   run.sh probe            fails unless $FUZZ_CC builds a libFuzzer program
#                           with ASan and UBSan (clang and libclang-rt-dev)
#   run.sh run NAME...      fuzzes each harness fuzz-build/fuzz_NAME for
#                           $FUZZ_SECONDS seconds on a copy of its seeds in
#                           tests/fuzz/NAME/ (and with tests/fuzz/NAME.dict,
#                           its dictionary, where there is one), prints its
#                           executions and coverage, and fails when any
#                           harness crashed, leaked, hung or tripped a
#                           sanitizer.
# New inputs go to fuzz-build/corpus/NAME (the copy), crashing ones to
# fuzz-build/artifacts/, libFuzzer's output to fuzz-build/NAME.log;
# nothing is written into tests/fuzz/.
set -u
top_srcdir=${top_srcdir:-.}
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
B=fuzz-build
# The harnesses write each input to a scratch file (and the corpus harness
# a whole prepared directory, fsyncs included): in memory when it can be.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
	TMPDIR=/dev/shm
	export TMPDIR
fi

probe() {
	if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
		echo "make fuzz: $FUZZ_CC not found: install clang and libclang-rt-dev (or set FUZZ_CC)" >&2
		return 1
	fi
	mkdir -p "$B" || return 1
	printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
		>"$B/probe.c"
	if ! "$FUZZ_CC" -fsanitize=fuzzer,address,undefined -o "$B/probe" "$B/probe.c" \
		>"$B/probe.log" 2>&1; then
		cat "$B/probe.log" >&2
		echo "make fuzz: $FUZZ_CC cannot build a libFuzzer program with ASan and UBSan:" \
			"install libclang-rt-dev (libFuzzer and the sanitizer runtimes)" >&2
		return 1
	fi
	rm -f "$B/probe" "$B/probe.c" "$B/probe.log"
}

# fuzz NAME: one harness's run; prints one line, returns its status.
fuzz() {
	name=$1 prog=$B/fuzz_$1 seeds=$top_srcdir/tests/fuzz/$1 corpus=$B/corpus/$1
	log=$B/$1.log
	if [ ! -x "$prog" ] || [ ! -d "$seeds" ]; then
		echo "fuzz_$name: FAIL: $prog or $seeds is missing"
		return 1
	fi
	rm -rf "$corpus" && mkdir -p "$corpus" "$B/artifacts" || return 1
	cp "$seeds"/* "$corpus"/ || return 1
	dict=
	[ -f "$seeds.dict" ] && dict=-dict=$seeds.dict
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
	LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$top_srcdir/tests/lsan.supp:print_suppressions=0} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} OMP_NUM_THREADS=1 \
		"$prog" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-use_value_profile=1 $dict -artifact_prefix="$B/artifacts/$name-" "$corpus" \
		>"$log" 2>&1
	rc=$?
	done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
	if [ "$rc" -ne 0 ] || [ -z "$done_line" ]; then
		echo "fuzz_$name: FAIL (exit $rc); the end of $log:"
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written|^    #[0-9]' "$log" | head -40
		return 1
	fi
	execs=$(echo "$done_line" | sed -n 's/^#\([0-9]*\).*/\1/p')
	echo "fuzz_$name: $execs executions in ${FUZZ_SECONDS} s: $done_line"
}

case ${1:-} in
probe)
	probe
	;;
run)
	shift
	failed=0
	for name in "$@"; do
		fuzz "$name" || failed=$((failed + 1))
	done
	if [ "$failed" -gt 0 ]; then
		echo "make fuzz: $failed of $# harnesses failed (inputs in $B/artifacts/)"
		exit 1
	fi
	echo "make fuzz: all $# harnesses ran ${FUZZ_SECONDS} s each without a finding"
	;;
*)
	echo "usage: $0 probe | run NAME..." >&2
	exit 2
	;;
esac
