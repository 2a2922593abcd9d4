# The shell side of lltrain's TAP checks, sourced by tests/check_*.sh: the
# check counter, and the checks the command-line scripts share. A script
# sets LLTRAIN and tmp (a scratch directory) first, and ends with
# `echo "1..$n"; exit $failed`.
n=0 failed=0

# ok RC DESCRIPTION...: one check, passed when RC is 0.
ok() {
	rc=$1
	shift
	n=$((n + 1))
	if [ "$rc" = 0 ]; then
		echo "ok $n - $*"
	else
		echo "not ok $n - $*"
		failed=1
	fi
}

# skip WHY...: one check skipped, saying why.
skip() {
	n=$((n + 1))
	echo "ok $n # SKIP $*"
}

# run_lltrain ARGS...: runs lltrain with stdout in $tmp/out, stderr in
# $tmp/err and then appended to $tmp/out; sets got (the exit status) and
# err_lines (stderr's line count).
run_lltrain() {
	"$LLTRAIN" "$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	err_lines=$(wc -l <"$tmp/err")
	cat "$tmp/err" >>"$tmp/out"
}

# expect STATUS TEXT DESCRIPTION -- ARGS...: runs lltrain ARGS and checks
# the exit status and that its output holds TEXT.
expect() {
	want=$1 text=$2 what=$3
	shift 4
	run_lltrain "$@"
	if [ "$got" = "$want" ] && grep -qF -- "$text" "$tmp/out"; then
		ok 0 "$what (exit $got)"
	else
		ok 1 "$what: exit $got (want $want), output: $(head -c 600 "$tmp/out")"
	fi
}

# expect_brief: as expect, and stderr is at most one line.
expect_brief() {
	want=$1 text=$2 what=$3
	shift 4
	run_lltrain "$@"
	if [ "$got" = "$want" ] && [ "$err_lines" -le 1 ] && grep -qF -- "$text" "$tmp/out"; then
		ok 0 "$what (exit $got)"
	else
		ok 1 "$what: exit $got (want $want), output: $(head -c 600 "$tmp/out")"
	fi
}

# has TEXT DESCRIPTION: the last output holds TEXT.
has() {
	if grep -qF -- "$1" "$tmp/out"; then
		ok 0 "$2"
	else
		ok 1 "$2: no '$1' in: $(head -c 600 "$tmp/out")"
	fi
}

# has_match REGEX DESCRIPTION: a line of the last output matches REGEX
# (grep's basic syntax).
has_match() {
	if grep -q -- "$1" "$tmp/out"; then
		ok 0 "$2"
	else
		ok 1 "$2: nothing matches '$1' in: $(head -c 600 "$tmp/out")"
	fi
}

# one_line DESCRIPTION: the last output is exactly one line.
one_line() {
	lines=$(wc -l <"$tmp/out")
	if [ "$lines" -eq 1 ]; then
		ok 0 "$1 is one line"
	else
		ok 1 "$1 is $lines lines: $(head -c 600 "$tmp/out")"
	fi
}
