#!/bin/bash
# Checks `lltrain train` on a faulty machine: a run directory that is
# read-only (all of it at a resume, or its checkpoints), metrics.jsonl on a
# full disk (/dev/full) or past a file size limit (lltrain ignores SIGXFSZ,
# so the write fails with EFBIG and is reported), a training shard
# truncated mid-run, and under MPI a full disk on rank 0: each stops the
# run with one line naming the file and what failed, a non-zero exit, the
# checkpoint already on disk byte for byte (and `lltrain eval` of it
# works), and metrics.jsonl in whole lines. A training shard removed
# mid-run is no fault: its open file still holds the data, and the run ends
# as an undisturbed one.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-faults.XXXXXX") || exit 1
trap 'kill -9 $pid 2>/dev/null; chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
pid=
. "$(dirname "$0")/tap.sh"

# A corpus of one document per line of the test text.
sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
	>"$tmp/prep.out" 2>&1
ok $? "prepare the test corpus: $(tail -c 200 "$tmp/prep.out")"

# A small model whose steps take milliseconds; a checkpoint every 20 steps.
set -- --model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4 \
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32 \
	--train.batch=8 --train.warmup_steps=10 --train.max_minutes=0 --data.dir="$tmp/data" \
	--run.eval_every=100 --run.eval_batches=2 --run.sample_tokens=16 --run.log_every=100 \
	--run.checkpoint_every=20 --run.keep_checkpoints=5 --run.threads=2
ck=checkpoints/step_00000020

# The run every fault resumes from (a copy of it): 20 steps, one checkpoint.
"$LLTRAIN" train "$@" --train.steps=20 --run.dir="$tmp/A" >"$tmp/A.out" 2>&1
ok $? "20 steps to start from: $(tail -c 200 "$tmp/A.out")"

# copy_run NAME: $tmp/NAME, a copy of that run.
copy_run() {
	rm -rf "${tmp:?}/$1"
	cp -a "$tmp/A" "$tmp/$1"
}

# one_error NAME REGEX: the run NAME's stderr ($tmp/NAME.err) is exactly one
# line, which matches REGEX (grep's basic syntax) as a whole.
one_error() {
	[ "$(wc -l <"$tmp/$1.err")" = 1 ] && grep -qx -- "$2" "$tmp/$1.err"
}

# kept NAME [CHECKPOINT]: the run NAME keeps the checkpoint (default the
# start's) byte for byte, no temporary directory, and lltrain eval of it
# works (on the test corpus: a run's own data may be the fault); every line
# of its metrics.jsonl is whole JSON.
kept() {
	local from=${2:-$tmp/A/$ck}
	diff -r "$from" "$tmp/$1/$ck" >/dev/null &&
		! ls -d "$tmp/$1"/checkpoints/.tmp* >/dev/null 2>&1 &&
		"$LLTRAIN" eval --max-batches 2 --data "$tmp/data" "$tmp/$1/$ck" >"$tmp/$1.eval" 2>&1 &&
		grep -q "perplexity" "$tmp/$1.eval" &&
		python3 - "$tmp/$1/metrics.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    json.loads(line)
EOF
}

# 1. metrics.jsonl on a full disk: /dev/full fails every write with ENOSPC.
copy_run full
rm "$tmp/full/metrics.jsonl"
ln -s /dev/full "$tmp/full/metrics.jsonl"
"$LLTRAIN" train "$@" --train.steps=60 --run.dir="$tmp/full" --resume auto \
	>"$tmp/full.out" 2>"$tmp/full.err"
rc=$?
one_error full "lltrain: train: $tmp/full/metrics.jsonl: write failed: No space left on device"
ok $(( $? || rc != 1 )) "metrics.jsonl on a full disk: exit $rc, one line: $(head -c 300 "$tmp/full.err")"
rm "$tmp/full/metrics.jsonl"
: >"$tmp/full/metrics.jsonl"
kept full
ok $? "after the full disk the step-20 checkpoint is intact and evaluates: $(tail -c 200 "$tmp/full.eval")"

# 2. metrics.jsonl past a file size limit (ulimit -f, in KiB): the append
# that crosses it fails with EFBIG, as lltrain ignores SIGXFSZ (whose
# default action would kill it with a core). No checkpoint is due before.
copy_run fsize
size=$(stat -c %s "$tmp/fsize/metrics.jsonl")
(ulimit -f $((size / 1024 + 4)) && exec "$LLTRAIN" train "$@" --train.steps=100000 \
	--run.checkpoint_every=100000 --run.dir="$tmp/fsize" --resume auto) \
	>"$tmp/fsize.out" 2>"$tmp/fsize.err"
rc=$?
one_error fsize "lltrain: train: $tmp/fsize/metrics.jsonl: write failed: File too large"
ok $(( $? || rc != 1 )) "metrics.jsonl past the file size limit: exit $rc (not SIGXFSZ's 153), one line: $(head -c 300 "$tmp/fsize.err")"
cmp -s -n "$size" "$tmp/A/metrics.jsonl" "$tmp/fsize/metrics.jsonl" &&
	[ "$(stat -c %s "$tmp/fsize/metrics.jsonl")" -gt "$size" ] && kept fsize
ok $? "metrics.jsonl keeps its earlier lines and whole new ones; the step-20 checkpoint is intact and evaluates"

# 3. A read-only run directory. Root writes whatever the permissions say:
# as root the directory is a read-only bind mount in a private mount
# namespace, or, without one, lltrain runs as nobody.
if [ "$(id -u)" != 0 ]; then
	ro_how=chmod
elif unshare -rm true 2>/dev/null; then
	ro_how=mount
elif chmod a+rx "$tmp" && setpriv --reuid=65534 --regid=65534 --clear-groups \
	"$LLTRAIN" --version >/dev/null 2>&1; then
	ro_how=nobody
else
	ro_how=
fi

# read_only RUN DIR CMD...: runs CMD with DIR (RUN or a directory in it)
# read-only, for lltrain as it sees it, and the rest of RUN writable; 99
# when it could not be made so.
read_only() {
	local run=$1 dir=$2
	shift 2
	case $ro_how in
	mount)
		unshare -rm sh -c 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" ||
			exit 99; shift; exec "$@"' sh "$dir" "$@"
		;;
	chmod | nobody)
		if [ $ro_how = nobody ]; then
			chown -R 65534:65534 "$run" || return 99
		fi
		chmod -R a-w "$dir" || return 99
		if [ $ro_how = nobody ]; then
			setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
		else
			"$@"
		fi
		local rc=$?
		chmod -R u+w "$dir"
		return $rc
		;;
	esac
}

if [ -n "$ro_how" ]; then
	# 3a. All of it, at a resume: the first write (config.ini) fails.
	copy_run ro
	read_only "$tmp/ro" "$tmp/ro" "$LLTRAIN" train "$@" --train.steps=60 --run.dir="$tmp/ro" \
		--resume auto >"$tmp/ro.out" 2>"$tmp/ro.err"
	rc=$?
	one_error ro "lltrain: train: $tmp/ro/config\.ini\.[0-9]*\.tmp: cannot create: \(Read-only file system\|Permission denied\)"
	ok $(( $? || rc != 1 )) "a read-only run directory ($ro_how): exit $rc, one line: $(head -c 300 "$tmp/ro.err")"
	cmp -s "$tmp/A/metrics.jsonl" "$tmp/ro/metrics.jsonl" && cmp -s "$tmp/A/config.ini" \
		"$tmp/ro/config.ini" && kept ro
	ok $? "the read-only run directory is as it was; its checkpoint evaluates"
	# 3b. Its checkpoints only: 20 more steps, then the save fails.
	copy_run rock
	read_only "$tmp/rock" "$tmp/rock/checkpoints" "$LLTRAIN" train "$@" --train.steps=60 \
		--run.dir="$tmp/rock" --resume auto >"$tmp/rock.out" 2>"$tmp/rock.err"
	rc=$?
	one_error rock "lltrain: train: $tmp/rock/checkpoints/\.tmp-step_00000040-[0-9]*: cannot create the directory: \(Read-only file system\|Permission denied\)"
	ok $(( $? || rc != 1 )) "read-only checkpoints: the save at step 40 fails with exit $rc, one line: $(head -c 300 "$tmp/rock.err")"
	grep -q '"step":40,' "$tmp/rock/metrics.jsonl" && kept rock
	ok $? "the 20 steps are logged; the step-20 checkpoint is intact and evaluates"
else
	for what in "a read-only run directory" "its checkpoint" "read-only checkpoints" \
		"their checkpoint"; do
		skip "$what: running as root, with neither a private mount namespace (unshare -rm) nor setpriv to run as nobody"
	done
fi

# shard_fault NAME WHAT: a run of 60 steps into $tmp/NAME on a copy of the
# data, whose training shard meets WHAT (rm or truncate) once step 25 is
# logged; the step-20 checkpoint is copied to $tmp/NAME.ck first. Its
# metrics.jsonl is a pipe with a small buffer read line by line, so the run
# cannot get far ahead of the fault however fast the machine; the lines
# are kept as the file would have held them. Sets rc.
shard_fault() {
	local name=$1 what=$2
	shift 2
	rm -rf "${tmp:?}/$name" "$tmp/$name.data"
	cp -a "$tmp/data" "$tmp/$name.data"
	mkdir -p "$tmp/$name"
	mkfifo "$tmp/$name/metrics.jsonl"
	"$LLTRAIN" train "$@" --train.steps=60 --data.dir="$tmp/$name.data" \
		--run.dir="$tmp/$name" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	pid=$!
	python3 - "$tmp/$name" "$tmp/$name.data/train_0000.bin" "$what" <<'EOF'
import fcntl, json, os, shutil, sys
run, shard, what = sys.argv[1:]
path = run + "/metrics.jsonl"
lines = []
with open(path) as f:
    fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    for line in f:
        lines.append(line)
        if json.loads(line).get("step") == 25 and "val_loss" not in line:
            shutil.copytree(run + "/checkpoints/step_00000020", run + ".ck")
            if what == "rm":
                os.unlink(shard)
            else:
                os.truncate(shard, 100)
            lines.extend(f.readlines())
            break
os.unlink(path)
open(path, "w").writelines(lines)
EOF
	wait $pid
	rc=$?
	pid=
}

# 4. The training shard removed mid-run: the run goes on from its open
# file and ends as an undisturbed run does.
"$LLTRAIN" train "$@" --train.steps=60 --run.dir="$tmp/ref" >"$tmp/ref.out" 2>&1
ok $? "60 undisturbed steps: $(tail -c 200 "$tmp/ref.out")"
shard_fault gone rm "$@"
[ $rc = 0 ] && [ ! -e "$tmp/gone.data/train_0000.bin" ] && [ -d "$tmp/gone.ck" ] &&
	python3 - "$tmp/ref/metrics.jsonl" "$tmp/gone/metrics.jsonl" <<'EOF'
import json, sys
def losses(p):
    return [(o["step"], o["loss"]) for o in map(json.loads, open(p)) if "val_loss" not in o]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == 60 and a == b, "step losses differ"
EOF
ok $? "a training shard removed after step 25: the run ends well (exit $rc) with the undisturbed losses"

# 5. The training shard truncated mid-run: the next batch's read fails.
shard_fault cut truncate "$@"
one_error cut "lltrain: train: $tmp/cut\.data/train_0000\.bin: ends at byte 100, [0-9]* bytes when opened: the shard was truncated while in use"
ok $(( $? || rc != 1 )) "a training shard truncated after step 25: exit $rc, one line: $(head -c 300 "$tmp/cut.err")"
grep -q '"step":25,' "$tmp/cut/metrics.jsonl" && ! grep -q '"step":60,' "$tmp/cut/metrics.jsonl" &&
	kept cut "$tmp/cut.ck"
ok $? "the steps before are logged; the step-20 checkpoint is intact and evaluates"

# 6. Under MPI, rank 0's metrics.jsonl on a full disk ends the whole job
# (rank 1 would otherwise wait in the next step's collectives).
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
	skip "2 ranks, a full disk on rank 0: this lltrain was built without MPI"
	skip "2 ranks, a full disk on rank 0: the checkpoint"
elif ! command -v "$MPIEXEC" >/dev/null; then
	skip "2 ranks, a full disk on rank 0: no $MPIEXEC on PATH (install mpich)"
	skip "2 ranks, a full disk on rank 0: the checkpoint"
else
	# as check_mpi.sh launches: no leak check, Open MPI told root is fine
	launch=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIEXEC")
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		launch+=(--oversubscribe --allow-run-as-root)
	fi
	copy_run mfull
	rm "$tmp/mfull/metrics.jsonl"
	ln -s /dev/full "$tmp/mfull/metrics.jsonl"
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --run.threads=1 --train.steps=100000 \
		--run.dir="$tmp/mfull" --resume auto >"$tmp/mfull.out" 2>"$tmp/mfull.err" </dev/null &
	job=$! pid=$!
	wait_for_job
	pid=
	# the launcher may add a line of its own about the abort
	[ "$rc" != 0 ] && [ $took -le 60 ] && [ "$(grep -c '^lltrain:' "$tmp/mfull.err")" = 1 ] &&
		grep -qx "lltrain: train: rank 0: $tmp/mfull/metrics.jsonl: write failed: No space left on device" \
			"$tmp/mfull.err"
	ok $? "2 ranks, rank 0's metrics.jsonl on a full disk: the job ends (exit $rc after $took s): $(grep -m1 '^lltrain:' "$tmp/mfull.err")"
	rm "$tmp/mfull/metrics.jsonl"
	: >"$tmp/mfull/metrics.jsonl"
	kept mfull
	ok $? "the 2-rank job keeps the step-20 checkpoint intact, and it evaluates"
fi

echo "1..$n"
exit $failed
