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
# err_lines (stderr's line count). Under the sanitizers, LeakSanitizer's
# own tracer may fail at exit (a fatal error of the tool, not a leak it
# found): such a run goes again, once, and says so.
run_lltrain() {
	"$LLTRAIN" "$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	if grep -q "LeakSanitizer has encountered a fatal error" "$tmp/err"; then
		echo "# LeakSanitizer's tracer failed ($(head -c 120 "$tmp/err" | head -1)); running again"
		"$LLTRAIN" "$@" >"$tmp/out" 2>"$tmp/err"
		got=$?
	fi
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

# same_losses A B STEPS TOL: the training losses of two runs' metrics.jsonl
# (A the reference) at the same STEPS steps, each within TOL relative to
# A's; prints "worst relative difference X", non-zero when they differ.
same_losses() {
	python3 - "$@" <<'EOF'
import json, sys
def losses(p):
    return {o["step"]: o["loss"] for o in map(json.loads, open(p)) if "val_loss" not in o and "loss" in o}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
steps, tol = int(sys.argv[3]), float(sys.argv[4])
assert len(a) == steps and a.keys() == b.keys(), (len(a), len(b))
worst = max(abs(a[s] - b[s]) / a[s] for s in a)
print("worst relative difference %.2e" % worst)
assert worst <= tol
EOF
}

# mpi_or_stop: sets launch, the command that starts ranks: MPIEXEC with
# LeakSanitizer off in the ranks (under the sanitizer build it cannot name
# the allocations MPI's unloaded plugins leave at MPI_Finalize: their
# stacks are one unknown frame; one-process runs keep it) and, for Open
# MPI, root and more ranks than cores allowed. Where lltrain was built
# without MPI or MPIEXEC is not on PATH, skips one check saying why and
# ends the script.
mpi_or_stop() {
	local why=
	if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
		why="this lltrain was built without MPI (configure found no MPI library)"
	elif ! command -v "$MPIEXEC" >/dev/null; then
		why="no $MPIEXEC on PATH (install mpich)"
	fi
	if [ -n "$why" ]; then
		skip "$why"
		echo "1..$n"
		exit 0
	fi
	launch=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIEXEC")
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		launch+=(--oversubscribe --allow-run-as-root)
	fi
}

# prepare_corpus: the test text, one document a line, prepared into
# $tmp/data (a 320-token vocabulary, a fifth held out); one check.
prepare_corpus() {
	sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
	"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
		>"$tmp/prep.out" 2>&1
	ok $? "prepare the test corpus: $(tail -c 200 "$tmp/prep.out")"
}

# train DIR RANKS ARGS...: a run into $tmp/DIR over RANKS ranks (0: no
# launcher); output in $tmp/DIR.out, status in $rc. Unless expect_failure
# is set for the call, the status is also kept in $tmp/statuses, which the
# last check holds to 0: a run whose losses match can still have crashed
# in its final save, in MPI_Finalize or in a sanitizer report at exit.
train() {
	local dir=$1 ranks=$2
	shift 2
	if [ "$ranks" = 0 ]; then
		"$LLTRAIN" train "$@" --run.dir="$tmp/$dir" >"$tmp/$dir.out" 2>&1
	else
		"${launch[@]}" -n "$ranks" "$LLTRAIN" train "$@" --run.dir="$tmp/$dir" \
			>"$tmp/$dir.out" 2>&1 </dev/null
	fi
	rc=$?
	[ -n "${expect_failure:-}" ] || echo "$dir $rc" >>"$tmp/statuses"
}

# losses_match A B [STEPS [TOL]]: every step's loss of run B within TOL
# (relative; default 1e-5) of A's, over STEPS steps (default $STEPS).
losses_match() {
	awk -v tol="${4:-1e-5}" -F'"loss":' '
		FNR == 1 { file++ }
		/"step":/ && /"loss":/ {
			split($0, s, "\"step\":"); split(s[2], t, ","); step = t[1] + 0
			split($2, l, ","); loss = l[1] + 0
			if (file == 1) { ref[step] = loss; next }
			seen++
			d = loss - ref[step]; if (d < 0) d = -d
			if (!(step in ref) || d > tol * (ref[step] < 0 ? -ref[step] : ref[step])) {
				printf "step %d: %s vs %s\n", step, loss, ref[step]; bad = 1
			}
		}
		END { if (seen != '${3:-$STEPS}') { print seen " steps logged"; bad = 1 }; exit bad }
	' "$tmp/$1/metrics.jsonl" "$tmp/$2/metrics.jsonl"
}

# floats FILE: the f32 values of a safetensors file of the same writer,
# one a line (the header is as long in every run's model file).
floats() {
	local h
	h=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
	od -An -v -f -j $((8 + h)) "$1" | tr -s ' ' '\n' | sed '/^$/d'
}

# params_close A B [TOL]: the final parameters ($final) of run B within
# TOL (default 1e-5) of A's (absolute, or relative where larger than 1);
# says the largest gap.
params_close() {
	[ -f "$tmp/$1/$final" ] && [ -f "$tmp/$2/$final" ] || { echo "no model file"; return 1; }
	paste <(floats "$tmp/$1/$final") <(floats "$tmp/$2/$final") | awk '
		{ n++; d = $1 - $2; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1; if (a > 1) d /= a
		  if (d > most) most = d; if (NF != 2) bad = 1 }
		END { printf "(%d values, largest gap %g)", n, most; exit bad || n < 1000 || most > tol }' \
		tol="${3:-1e-5}"
}

# params_l2 A B [TOL]: the final parameters ($final) of run B within TOL
# (default 1e-5) of A's in relative L2, ||B - A|| / ||A|| over every
# value; says the gap.
params_l2() {
	[ -f "$tmp/$1/$final" ] && [ -f "$tmp/$2/$final" ] || { echo "no model file"; return 1; }
	paste <(floats "$tmp/$1/$final") <(floats "$tmp/$2/$final") | awk '
		{ n++; d = $1 - $2; gap += d * d; size += $1 * $1; if (NF != 2) bad = 1 }
		END { rel = size > 0 ? sqrt(gap / size) : 1
		      printf "(%d values, relative L2 gap %g)", n, rel; exit bad || n < 1000 || rel > tol }' \
		tol="${3:-1e-5}"
}

# resume_at_3 FROM NAME RANKS ARGS...: a copy of run FROM without its
# last checkpoint ($final's directory), resumed into $tmp/NAME by RANKS
# ranks with ${base[@]} and ARGS; says why when it did not resume at step 3.
resume_at_3() {
	local from=$1 name=$2 ranks=$3
	shift 3
	rm -rf "$tmp/$name"
	cp -r "$tmp/$from" "$tmp/$name"
	rm -rf "$tmp/$name/$(dirname "$final")"
	train "$name" "$ranks" "${base[@]}" --resume auto "$@"
	grep -q "resumed from .*step_00000003 at step 3" "$tmp/$name.out" ||
		echo "did not resume at step 3: $(tail -c 300 "$tmp/$name.out")"
}

# wait_for_job: waits up to 60 s for the launcher $job to end (then kills
# it); sets rc to its status and took to the seconds it took.
wait_for_job() {
	local start
	start=$(date +%s)
	for _ in $(seq 600); do
		kill -0 $job 2>/dev/null || break
		sleep 0.1
	done
	kill -0 $job 2>/dev/null && kill -9 $job
	wait $job
	rc=$? took=$(($(date +%s) - start))
}

# stall_rank DIR RANKS R ARGS...: a training job of RANKS ranks into
# $tmp/DIR (output in $tmp/DIR.out) whose rank R is stopped (SIGSTOP) once
# step 3 is logged (within 120 s); waits for the job as wait_for_job does
# (rc, took), then kills the stopped rank (its pid in victim, empty when
# the rank list did not name it).
stall_rank() {
	local dir=$1 ranks=$2 r=$3
	shift 3
	"${launch[@]}" -n "$ranks" "$LLTRAIN" train "$@" --train.steps=100000 \
		--run.dir="$tmp/$dir" >"$tmp/$dir.out" 2>&1 </dev/null &
	job=$!
	for _ in $(seq 600); do
		grep -q '"step":3,' "$tmp/$dir/metrics.jsonl" 2>/dev/null && break
		sleep 0.2
	done
	victim=$(sed -n "s/^rank $r: host .*, pid \([0-9]*\), .*/\1/p" "$tmp/$dir.out")
	# (no pid: nothing is stopped -- kill 0 would stop this script's group)
	[ -n "$victim" ] && kill -STOP "$victim"
	wait_for_job
	[ -n "$victim" ] && kill -9 "$victim" 2>/dev/null
}
