#!/bin/bash
# A soak with faults: a 2-rank `lltrain train --deterministic` run that
# checkpoints every CKPT steps is struck by FAULTS faults at random points
# and relaunched with --resume auto after each, then must end with
# parameters bitwise equal to an uninterrupted run's. The faults, drawn by
# a seeded generator (the seed is printed; --seed repeats a soak), each
# kind once per round of the kinds in random order:
#   kill-rank     SIGKILL to one rank: the launcher must end the job
#   kill-all      SIGKILL to every rank at once
#   term-rank0    SIGTERM to rank 0: the ranks save a checkpoint and exit 0
#   term-mpiexec  SIGTERM to the launcher, which passes it on: the same
#   disk-full     a launch under a file size limit (ulimit -f) below the
#                 checkpoint's files: the save fails, the launch ends with
#                 an error, and no checkpoint is lost
#   corrupt       a byte of the newest checkpoint's model.safetensors
#                 flipped between launches: the next resume passes it over
# Every launch must resume from the newest checkpoint that is intact (none
# half-written, none lost), which is what "survived" counts, with a clean
# exit after a SIGTERM and an error (not a crash) after a full disk. Prints
# one line per fault, then the counts of faults injected and survived by
# kind, the launches, the temporaries left in checkpoints/ and the final
# comparison; exits 1 when a fault was not survived, a temporary is left,
# or the parameters differ (the work directory is then kept).
#
#   bench/soak.sh [--faults N] [--seed S] [--steps N] [--dir DIR] [--kinds K,K...] [--keep]
# --faults (default 24), --seed (default: from the clock), --steps (300:
# the run's length), --dir (where the data, the runs and each launch's
# output go; default a temporary directory, removed unless --keep or a
# failure), --kinds (the kinds above, default all). Environment: LLTRAIN
# (./lltrain), MPIEXEC (mpiexec), CKPT (2, checkpoint every CKPT steps),
# ZERO (1, the ZeRO stage: each rank writes its optimizer shard), TIMEOUT
# (120, seconds a launch may take).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
CKPT=${CKPT:-2} ZERO=${ZERO:-1} TIMEOUT=${TIMEOUT:-120}
ALL_KINDS="kill-rank kill-all term-rank0 term-mpiexec disk-full corrupt"
faults=24 seed='' steps=300 dir='' kinds=$ALL_KINDS keep=no
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	echo "usage: bench/soak.sh [--faults N] [--seed S] [--steps N] [--dir DIR] [--kinds K,K...] [--keep]" >&2
	echo "kinds: $ALL_KINDS" >&2
	exit 2
}
# number NAME VALUE: VALUE must be a whole number.
number() {
	[[ $2 =~ ^[0-9]+$ ]] || { echo "soak: $1 '$2': expected a whole number" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
	case $1 in
	--faults) number "$1" "${2:-}"; faults=$2; shift 2 ;;
	--seed) number "$1" "${2:-}"; seed=$2; shift 2 ;;
	--steps) number "$1" "${2:-}"; steps=$2; shift 2 ;;
	--dir) [ -n "${2:-}" ] || usage; dir=$2; shift 2 ;;
	--kinds) [ -n "${2:-}" ] || usage; kinds=${2//,/ }; shift 2 ;;
	--keep) keep=yes; shift ;;
	*) usage ;;
	esac
done
for k in $kinds; do
	[[ " $ALL_KINDS " == *" $k "* ]] || { echo "soak: --kinds: unknown kind '$k' (known: $ALL_KINDS)" >&2; exit 2; }
done
[ "$kinds" != corrupt ] || { echo "soak: --kinds corrupt alone ends no launch: add another kind" >&2; exit 2; }
[ "$steps" -ge $((2 * CKPT + 2)) ] || { echo "soak: --steps $steps: expected at least $((2 * CKPT + 2))" >&2; exit 2; }
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
	echo "soak: $LLTRAIN was built without MPI: the soak needs 2 ranks" >&2
	exit 1
fi
command -v "$MPIEXEC" >/dev/null || { echo "soak: no $MPIEXEC on PATH (install mpich)" >&2; exit 1; }
[ -n "$seed" ] || seed=$(( $(date +%s%N) % 1000000007 ))

# The work directory, and what is removed or kept at the exit.
if [ -n "$dir" ]; then
	mkdir -p "$dir" && [ -z "$(ls -A "$dir")" ] || { echo "soak: --dir $dir: expected an empty or new directory" >&2; exit 2; }
	keep=given
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-soak.XXXXXX") || exit 1
fi
dir=$(cd "$dir" && pwd)
job='' pids=() failed=0
cleanup() {
	[ -n "$job" ] && kill -9 "$job" 2>/dev/null
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
	if [ "$keep" = no ] && [ "$failed" = 0 ]; then
		rm -rf "$dir"
	elif [ "$keep" != given ]; then
		echo "soak: the work directory is kept: $dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The generator: a 64-bit LCG (the shell's own arithmetic wraps), the same
# on every machine; rand N sets r to a number in [0, N) (never called in
# a subshell, which would lose the state).
rng=$seed
rand() {
	rng=$(( rng * 6364136223846793005 + 1442695040888963407 ))
	r=$(( ((rng >> 33) & 0x7fffffff) % $1 ))
}

# The launcher; Open MPI wants root and oversubscription allowed. Ranks
# run without the leak check of a sanitizer build (MPI's plugins leave
# allocations at MPI_Finalize that it cannot name).
launch=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIEXEC")
if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
	launch+=(--oversubscribe --allow-run-as-root)
fi

# A corpus of one document per line of the test text, and a model whose
# steps take milliseconds and whose checkpoint files are 100-250 KB.
sed 's/$/\n%/' "$here/tests/data/tiny_corpus.txt" >"$dir/corpus.txt"
"$LLTRAIN" prepare --out "$dir/data" --vocab 320 --val-fraction 0.2 "$dir/corpus.txt" \
	>"$dir/prepare.out" 2>&1 || { cat "$dir/prepare.out"; failed=1; exit 1; }
args=(--preset tiny --model.dim=32 --model.n_layers=2 --model.n_heads=2 --model.n_kv_heads=2
	--model.ffn_dim=64 --train.seq=32 --train.batch=4 --train.steps="$steps"
	--train.warmup_steps=5 --train.max_minutes=0 --data.dir="$dir/data" --run.eval_every=0
	--run.eval_batches=1 --run.sample_tokens=1 --run.log_every=50 --run.threads=1
	--run.checkpoint_every="$CKPT" --run.keep_checkpoints=3 --comm-timeout 30
	--deterministic --zero "$ZERO")
export OMP_NUM_THREADS=1
final=checkpoints/step_$(printf %08d "$steps")

echo "lltrain soak: seed $seed, $faults faults ($kinds), $steps steps, 2 ranks, ZeRO $ZERO," \
	"a checkpoint every $CKPT steps, $MPIEXEC $("$MPIEXEC" --version 2>&1 |
	grep -m1 -iE 'version|open' | tr -s ' ' | sed 's/^ //'), in $dir"

# The reference: the same run without faults.
"${launch[@]}" -n 2 "$LLTRAIN" train "${args[@]}" --run.dir="$dir/ref" >"$dir/ref.out" 2>&1 </dev/null
if [ $? != 0 ] || [ ! -f "$dir/ref/$final/model.safetensors" ]; then
	echo "soak: the uninterrupted reference run failed:"
	tail -5 "$dir/ref.out"
	failed=1
	exit 1
fi

run=$dir/run ckdir=$dir/run/checkpoints
mkdir -p "$ckdir"
: >"$dir/corrupted"

# intact_newest: the step of the newest checkpoint of the run that no
# corrupt fault has touched since it was written (-1 when none): what
# --resume auto must take. A damaged one that train set aside
# (step_N.damaged) is no checkpoint.
intact_newest() {
	local d s sum
	for d in $(ls -d "$ckdir"/step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9] 2>/dev/null |
		   sort -r); do
		s=$((10#${d##*/step_}))
		sum=$(cksum <"$d/model.safetensors" 2>/dev/null)
		grep -qxF "$d $sum" "$dir/corrupted" || { echo "$s"; return; }
	done
	echo -1
}

# intact_count: how many of the run's checkpoints no corrupt fault has touched.
intact_count() {
	local d n=0
	for d in $(ls -d "$ckdir"/step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9] 2>/dev/null); do
		grep -qxF "$d $(cksum <"$d/model.safetensors" 2>/dev/null)" "$dir/corrupted" ||
			n=$((n + 1))
	done
	echo "$n"
}

# last_step: the newest step this launch wrote to the run's metrics.jsonl
# (past byte $mark; -1 when none yet).
last_step() {
	local s
	s=$(tail -c +$((mark + 1)) "$run/metrics.jsonl" 2>/dev/null | tail -n 3 |
		sed -n 's/^{"step":\([0-9]*\),"loss".*/\1/p' | tail -1)
	echo "${s:--1}"
}

# start_launch N [LIMIT_KB]: launch N in the background into $out, under
# a file size limit of LIMIT_KB KiB when given (MPICH's UCX then leaves
# out its shared-memory transport, which writes through files that the
# limit would stop at MPI_Init); sets job and expect (the step it must
# resume from).
start_launch() {
	out=$dir/launch-$(printf %03d "$1").out
	expect=$(intact_newest)
	mark=$(stat -c %s "$run/metrics.jsonl" 2>/dev/null || echo 0)
	if [ -n "${2:-}" ]; then
		(ulimit -f "$2" && exec env UCX_TLS=^posix "${launch[@]}" -n 2 "$LLTRAIN" train \
			"${args[@]}" --run.dir="$run" --resume auto) >"$out" 2>&1 </dev/null &
	else
		"${launch[@]}" -n 2 "$LLTRAIN" train "${args[@]}" --run.dir="$run" --resume auto \
			>"$out" 2>&1 </dev/null &
	fi
	job=$! pids=() began=$(date +%s)
}

# job_running: whether the launch still runs (within TIMEOUT s; past it,
# the launch and its ranks are killed and reported).
job_running() {
	kill -0 "$job" 2>/dev/null || return 1
	[ $(($(date +%s) - began)) -le "$TIMEOUT" ] && return 0
	echo "  launch ran past $TIMEOUT s: killed"
	kill -9 "$job" "${pids[@]}" 2>/dev/null
	timed_out=1
	return 1
}

# await_start: waits for the launch's resume line and the ranks' pids;
# sets resumed (the step resumed from, -1 for a new run, empty when the
# launch ended first) and pids.
await_start() {
	local line
	resumed=
	while job_running; do
		line=$(grep -m1 -E '^(resumed from .* at step [0-9]+|resume: no checkpoint)' "$out")
		if [ -n "$line" ] && grep -q '^rank 1: .*pid [0-9]' "$out"; then
			break
		fi
		sleep 0.02
	done
	line=$(grep -m1 -E '^(resumed from .* at step [0-9]+|resume: no checkpoint)' "$out")
	case $line in
	resumed*) resumed=${line##* } ;;
	resume:*) resumed=-1 ;;
	esac
	mapfile -t pids < <(sed -n 's/^rank [01]: .*pid \([0-9]*\),.*/\1/p' "$out")
}

# await_end: waits for the launch to end; sets rc (its status) and took
# (its seconds since the fault).
await_end() {
	local t0
	t0=$(date +%s%N)
	while job_running; do sleep 0.05; done
	wait "$job"
	rc=$?
	took=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	# no rank outlives the launcher
	for p in "${pids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			echo "  rank pid $p outlived the launcher: killed"
			kill -9 "$p"
			timed_out=1
		fi
	done
	job=
}

# strike KIND: waits for a random step of this launch (spread so that the
# faults left, and the last launch, fit in the steps left), a random few
# ms more, then the fault; sets at (the step it struck at, empty when the
# run ended first) and what (the fault's words).
strike() {
	local left=$1 span target p
	span=$(( (steps - resumed - 1) / (left + 2) ))
	[ "$span" -ge 1 ] || span=1
	rand "$span"
	target=$((resumed + 1 + r))
	at=
	while job_running; do
		[ "$(last_step)" -ge "$target" ] && break
		sleep 0.01
	done
	kill -0 "$job" 2>/dev/null || return 0
	rand 20
	sleep "0.0$(printf %02d "$r")"
	at=$(last_step)
	case $kind in
	kill-rank) rand 2; p=$r; what="SIGKILL to rank $p"; kill -9 "${pids[$p]}" ;;
	kill-all) what="SIGKILL to both ranks"; kill -9 "${pids[@]}" ;;
	term-rank0) what="SIGTERM to rank 0"; kill -TERM "${pids[0]}" ;;
	term-mpiexec) what="SIGTERM to the launcher"; kill -TERM "$job" ;;
	esac 2>/dev/null || at=
}

# corrupt: flips a random byte of the newest checkpoint's
# model.safetensors (one not yet corrupted, older ones left intact) and
# records it; 1 when there is none with an intact one older than it to
# resume from (a run whose every checkpoint is damaged is refused, not
# restarted: train says so and stops).
corrupt() {
	local s d f size off byte
	s=$(intact_newest)
	[ "$s" -ge 0 ] && [ "$(intact_count)" -ge 2 ] || return 1
	d=$ckdir/step_$(printf %08d "$s") f=$d/model.safetensors
	size=$(stat -c %s "$f")
	rand "$size"
	off=$r
	byte=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
	printf "$(printf '\\%03o' $((byte ^ 0xff)))" |
		dd of="$f" bs=1 seek="$off" count=1 conv=notrunc 2>/dev/null
	echo "$d $(cksum <"$f")" >>"$dir/corrupted"
	what="byte $off of step $s's model.safetensors flipped"
}

# disk_limit: sets limit to a file size limit in KiB above what the run's other files
# reach before its next save (metrics.jsonl grows by about 300 bytes a
# step) and below the checkpoint's biggest file, chosen at random.
disk_limit() {
	local lo hi biggest
	biggest=$(stat -c %s "$dir/ref/$final"/*.safetensors | sort -n | tail -1)
	lo=$(( ($(stat -c %s "$run/metrics.jsonl" 2>/dev/null || echo 0) + 300 * (CKPT + 2) + 8192) / 1024 ))
	hi=$(( biggest / 1024 - 1 ))
	[ "$lo" -lt "$hi" ] || lo=$((hi / 2))
	rand $((hi - lo))
	limit=$((lo + r))
}

# The deck: each kind once per round, shuffled (Fisher-Yates).
read -r -a kind_list <<<"$kinds"
deck=()
while [ ${#deck[@]} -lt "$faults" ]; do
	round=("${kind_list[@]}")
	for ((i = ${#round[@]} - 1; i > 0; i--)); do
		rand $((i + 1))
		j=$r
		t=${round[$i]} round[$i]=${round[$j]} round[$j]=$t
	done
	deck+=("${round[@]}")
done
deck=("${deck[@]:0:$faults}")
declare -A injected survived
for k in $ALL_KINDS; do injected[$k]=0 survived[$k]=0; done

# check_resume: the launch resumed from the newest intact checkpoint;
# prints why not and returns 1 otherwise.
check_resume() {
	if [ -z "$resumed" ]; then
		echo "  the launch ended before resuming (exit $rc): $(grep -m1 'lltrain' "$out" | cut -c 1-200)"
		return 1
	fi
	if [ "$resumed" != "$expect" ]; then
		echo "  resumed from step $resumed, but the newest intact checkpoint is step $expect"
		return 1
	fi
}

# pending: the faults (number, kind, and 0 or 1 for the verdict so far)
# whose survival the next launch's resume decides.
pending=()
# settle: the launch just started decides the pending faults.
settle() {
	local p num k ok resume_ok=0
	[ ${#pending[@]} -gt 0 ] || return 0
	check_resume || resume_ok=1
	for p in "${pending[@]}"; do
		read -r num k ok <<<"$p"
		if [ "$ok" = 0 ] && [ "$resume_ok" = 0 ]; then
			survived[$k]=$((survived[$k] + 1))
			echo "  -> fault $num ($k) survived: the next launch resumed from step $resumed, the newest intact checkpoint"
		else
			echo "  -> fault $num ($k) NOT survived"
			failed=1
		fi
	done
	pending=()
}

# from: where the launch began, in words.
from() {
	case $resumed in
	'') echo "nowhere: it ended first" ;;
	-1) echo "a new run" ;;
	*) echo "step $resumed" ;;
	esac
}

# swap_later I: swaps deck[I] (a corruption with nothing yet to corrupt:
# fewer than two intact checkpoints)
# with the next fault of another kind; 1 when there is none.
swap_later() {
	local j t
	for ((j = $1 + 1; j < ${#deck[@]}; j++)); do
		[ "${deck[$j]}" = corrupt ] && continue
		t=${deck[$1]} deck[$1]=${deck[$j]} deck[$j]=$t
		return 0
	done
	return 1
}

launches=0 missed=0
for ((i = 0; i < ${#deck[@]}; i++)); do
	n=$((i + 1))
	[ "${deck[$i]}" = corrupt ] && [ "$(intact_count)" -lt 2 ] && swap_later "$i"
	kind=${deck[$i]}
	left=$((faults - n))
	timed_out=0
	if [ "$kind" = corrupt ]; then
		if ! corrupt; then
			echo "fault $n: corrupt: no checkpoint yet to corrupt with an intact one" \
				"older than it: not injected"
			missed=$((missed + 1))
			continue
		fi
		echo "fault $n: corrupt: $what"
		injected[$kind]=$((injected[$kind] + 1))
		pending+=("$n $kind 0")
		continue
	fi
	launches=$((launches + 1))
	if [ "$kind" = disk-full ]; then
		disk_limit
		start_launch "$launches" "$limit"
		await_start
		# (a launch that died before resuming leaves them to the next)
		[ -z "$resumed" ] || settle
		await_end
		why=$(grep -m1 'File too large' "$out" || grep -m1 '^lltrain' "$out")
		echo "fault $n: disk-full: a launch under ulimit -f $limit (KiB) from $(from)" \
			"ended with exit $rc: $(cut -c 1-220 <<<"${why:-no message}")"
		injected[$kind]=$((injected[$kind] + 1))
		# an error, not a crash nor a finished run
		ok=0
		if [ "$rc" = 0 ] || [ "$rc" -gt 128 ] || [ -z "$why" ] || [ "$timed_out" = 1 ]; then
			echo "  a full disk should end the launch with an error message"
			ok=1
		fi
		pending+=("$n $kind $ok")
		continue
	fi
	start_launch "$launches"
	await_start
	settle
	if [ -z "$resumed" ]; then
		await_end
		echo "fault $n: $kind: the launch ended before it started training (exit $rc):" \
			"$(tail -3 "$out" | tr '\n' ' ' | cut -c 1-300)"
		failed=1
		break
	fi
	strike "$left"
	[ -z "$at" ] || await_end
	# a SIGTERM after the last step: the run had finished its loop
	if [ -n "$at" ] && [[ $kind == term-* ]] && [ "$rc" = 0 ] &&
		! grep -q '^terminated at step' "$out" && [ -d "$run/$final" ]; then
		at=
	fi
	if [ -z "$at" ]; then
		[ -z "$job" ] || await_end
		echo "fault $n: $kind: the run finished (exit $rc) before the fault struck: it and the $((faults - n)) after it not injected"
		missed=$((missed + faults - n + 1))
		break
	fi
	injected[$kind]=$((injected[$kind] + 1))
	echo "fault $n: $kind: $what at step $at (from $(from)): the job ended in $took s, exit $rc"
	ok=$timed_out
	case $kind in
	term-*)
		# a clean stop: exit 0 with a checkpoint of the step it stopped at
		stop=$(sed -n 's/^terminated at step \([0-9]*\): saving a checkpoint/\1/p' "$out" | tail -1)
		if [ "$rc" != 0 ] || [ -z "$stop" ] || [ ! -d "$ckdir/step_$(printf %08d "$stop")" ]; then
			echo "  SIGTERM should save a checkpoint and exit 0: exit $rc," \
				"$(grep -m1 -E '^(terminated|lltrain)' "$out" | cut -c 1-200)"
			ok=1
		fi ;;
	*)
		[ "$rc" != 0 ] || { echo "  a killed rank should fail the job, not exit 0"; ok=1; } ;;
	esac
	pending+=("$n $kind $ok")
done

# The last launch: no fault; it must finish the run.
launches=$((launches + 1))
timed_out=0
start_launch "$launches"
await_start
settle
await_end
[ "$rc" = 0 ] && [ "$timed_out" = 0 ] || { echo "the last launch failed (exit $rc): $(tail -3 "$out" | tr '\n' ' ')"; failed=1; }
stale=$(find "$ckdir" -maxdepth 1 -name '.tmp-*' | wc -l)
[ "$stale" = 0 ] || failed=1

echo
printf '%-14s %9s %9s\n' kind injected survived
tot_i=0 tot_s=0
for k in $ALL_KINDS; do
	printf '%-14s %9d %9d\n' "$k" "${injected[$k]}" "${survived[$k]}"
	tot_i=$((tot_i + injected[$k])) tot_s=$((tot_s + survived[$k]))
done
printf '%-14s %9d %9d\n' total "$tot_i" "$tot_s"
echo "faults not injected: $missed; launches: $launches; temporaries left in checkpoints/: $stale"
if cmp -s "$dir/ref/$final/model.safetensors" "$run/$final/model.safetensors"; then
	echo "final parameters: bitwise equal to the uninterrupted run's ($final/model.safetensors)"
else
	echo "final parameters: DIFFER from the uninterrupted run's ($final/model.safetensors)"
	failed=1
fi
[ "$tot_i" = "$tot_s" ] && [ "$missed" = 0 ] || failed=1
echo "seed $seed: $([ "$failed" = 0 ] && echo passed || echo FAILED)"
exit "$failed"
