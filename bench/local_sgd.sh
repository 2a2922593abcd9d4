#!/bin/bash
# Local SGD across nodes (--sync local) against synchronous data
# parallelism, on one machine: two nodes emulated by LLTRAIN_NODE_RANKS.
#
# 1. PRESET1 (15M), 2 nodes x RANKS1 (2) ranks, the same tokens for both:
#    the validation loss of local SGD with H = LOCAL_STEPS (20) against
#    synchronous training's (the issue's target: within 3%), and the bytes
#    rank 0 sent between nodes per step (target: 15x fewer or better); then
#    the same with the outer step a plain mean (outer lr 1, no momentum),
#    which a run of few rounds may prefer (see lltrain-train(1)).
# 2. PRESET2 (110M), 2 nodes x RANKS2 (1) rank, the link between them
#    emulated at LINK_GBITS (1) Gbit/s (LLTRAIN_BENCH_LINK_GBITS, a knob for
#    benchmarks only): tokens/s of local SGD (H = LOCAL_STEPS, overlapped)
#    against synchronous training's (target on a GPU machine: 3x or more).
#    The rate counts the steps after the first UNTIMED2 (2) and before the
#    last, whose exchange a run makes once, at its end, unhidden. Both
#    runs pay the link for their bytes alike (a synchronous step sends the
#    gradient's reduce-scatter and the parameters' all-gather, a round the
#    move's all-reduce: 2 x 4 bytes a parameter over 2 nodes each). The
#    defaults (2 x 128 tokens a step, the machine's cores shared among the
#    ranks) make a step's compute on 16 cores well under the 2.8 s the
#    link takes for the 110M preset's 88M parameters, so that the link
#    bounds the synchronous step as it does between GPU nodes; on fewer
#    cores compute bounds both runs and the ratio shrinks toward 1.
# 3. PRESET3 (15M), 2 nodes x 1 rank, the second made slower by SLOW_MS
#    (1000) milliseconds a step (LLTRAIN_BENCH_SLOW_MS, a knob for
#    benchmarks only), the same job tokens for both: rounds of H steps,
#    where the fast node waits for the slow one at every round's end,
#    against rounds of ROUND_S (2) seconds of wall time
#    (dist.round_seconds), where each node takes the steps its speed
#    allows: the job's tokens/s, each node's steps and the validation loss.
#
# Benchmarks print figures; they neither pass nor fail.
#
#   bench/local_sgd.sh [CORPUS]     (default: Debian's fortunes, as train's)
# Environment: LLTRAIN (./lltrain), MPIEXEC (mpiexec), PARTS ("1 2 3"),
# THREADS (a rank's threads: the cores shared evenly among a part's
# ranks), DEVICE (cpu), LOCAL_STEPS (20), STEPS1 (400),
# BATCH1 (8), SEQ1 (256), RANKS1 (2), STEPS2 (42), BATCH2 (2), SEQ2 (128),
# RANKS2 (1), UNTIMED2 (2), LINK_GBITS (1), STEPS3 (60), BATCH3 (8),
# SEQ3 (256), SLOW_MS (1000), ROUND_S (2), DIR (a temporary directory,
# removed at the end unless given).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
PARTS=${PARTS:-1 2 3} DEVICE=${DEVICE:-cpu} H=${LOCAL_STEPS:-20}
STEPS1=${STEPS1:-400} BATCH1=${BATCH1:-8} SEQ1=${SEQ1:-256} RANKS1=${RANKS1:-2}
STEPS2=${STEPS2:-42} BATCH2=${BATCH2:-2} SEQ2=${SEQ2:-128} RANKS2=${RANKS2:-1}
UNTIMED2=${UNTIMED2:-2} LINK_GBITS=${LINK_GBITS:-1}
STEPS3=${STEPS3:-60} BATCH3=${BATCH3:-8} SEQ3=${SEQ3:-256} SLOW_MS=${SLOW_MS:-1000}
ROUND_S=${ROUND_S:-2}
CORPUS=${1:-/usr/share/games/fortunes}
if [ -n "${DIR:-}" ]; then
	tmp=$DIR
	mkdir -p "$tmp" || exit 1
else
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-local-sgd.XXXXXX") || exit 1
	trap 'rm -rf "$tmp"' EXIT
fi
began=$(date +%s)

"$LLTRAIN" prepare --out "$tmp/data" "$CORPUS" >"$tmp/prepare.out" 2>&1 ||
	{ tail -3 "$tmp/prepare.out"; exit 1; }

# run NAME PRESET NODE_RANKS STEPS BATCH SEQ ARGS...: 2 nodes of NODE_RANKS
# ranks train into $tmp/NAME; its output in $tmp/NAME.out.
run() {
	local name=$1 preset=$2 k=$3 steps=$4 batch=$5 seq=$6
	local threads=${THREADS:-$(($(nproc) / (2 * k) > 0 ? $(nproc) / (2 * k) : 1))}
	shift 6
	rm -rf "${tmp:?}/$name"
	LLTRAIN_NODE_RANKS=$k "$MPIEXEC" -n $((2 * k)) "$LLTRAIN" train --preset "$preset" \
		--train.steps="$steps" --train.batch="$batch" --train.seq="$seq" \
		--train.max_minutes=0 --data.dir="$tmp/data" --run.dir="$tmp/$name" \
		--run.eval_every=0 --run.sample_tokens=1 --run.checkpoint_every=0 \
		--run.threads="$threads" --run.device="$DEVICE" --comm-timeout 3600 "$@" \
		>"$tmp/$name.out" 2>&1 </dev/null ||
		{ echo "$name failed:"; tail -3 "$tmp/$name.out"; exit 1; }
}

# slow NAME STEPS BATCH SEQ ARGS...: 2 nodes of a rank each train the
# 15M preset into $tmp/NAME, the second SLOW_MS slower a step.
slow() {
	local name=$1 steps=$2 batch=$3 seq=$4
	local threads=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
	shift 4
	rm -rf "${tmp:?}/$name"
	local args=(train --preset 15M --train.steps="$steps" --train.batch="$batch"
		--train.seq="$seq" --train.max_minutes=0 --data.dir="$tmp/data"
		--run.dir="$tmp/$name" --run.eval_every=0 --run.sample_tokens=1
		--run.checkpoint_every=0 --run.threads="$threads" --run.device="$DEVICE"
		--comm-timeout 3600 "$@")
	LLTRAIN_NODE_RANKS=1 "$MPIEXEC" -n 1 "$LLTRAIN" "${args[@]}" : \
		-n 1 env LLTRAIN_BENCH_SLOW_MS="$SLOW_MS" "$LLTRAIN" "${args[@]}" \
		>"$tmp/$name.out" 2>&1 </dev/null ||
		{ echo "$name failed:"; tail -3 "$tmp/$name.out"; exit 1; }
}

# figures METRICS FIRST LAST: the final validation loss, rank 0's bytes
# between nodes per step, and tokens/s over steps FIRST+1 .. LAST.
figures() {
	python3 - "$@" <<'EOF'
import json, sys
js = list(map(json.loads, open(sys.argv[1])))
first, last = int(sys.argv[2]), int(sys.argv[3])
steps = {j["step"]: j for j in js if "loss" in j}
val = [j["val_loss"] for j in js if "val_loss" in j][-1]
xb = sum(j.get("xnode_bytes", 0) for j in steps.values()) / len(steps)
a, b = steps[first], steps[last]
rate = (b["tokens"] - a["tokens"]) / (b["elapsed"] - a["elapsed"])
print(f"{val:.4f} {xb:.0f} {rate:.1f}")
EOF
}

if [[ " $PARTS " == *" 1 "* ]]; then
	echo "== 1. 15M, 2 nodes x $RANKS1 ranks, $STEPS1 steps of $BATCH1 x $SEQ1 tokens"
	run sync1 15M "$RANKS1" "$STEPS1" "$BATCH1" "$SEQ1"
	run local1 15M "$RANKS1" "$STEPS1" "$BATCH1" "$SEQ1" --sync local --dist.local_steps="$H"
	run mean1 15M "$RANKS1" "$STEPS1" "$BATCH1" "$SEQ1" --sync local --dist.local_steps="$H" \
		--dist.outer_lr=1 --dist.outer_momentum=0
	read -r vs bs _ <<<"$(figures "$tmp/sync1/metrics.jsonl" 1 "$STEPS1")"
	read -r vl bl _ <<<"$(figures "$tmp/local1/metrics.jsonl" 1 "$STEPS1")"
	read -r vm _ _ <<<"$(figures "$tmp/mean1/metrics.jsonl" 1 "$STEPS1")"
	awk -v vs="$vs" -v vl="$vl" -v vm="$vm" -v bs="$bs" -v bl="$bl" -v h="$H" 'BEGIN {
		printf "synchronous:        validation loss %.4f, %.2f MB between nodes a step (rank 0)\n", vs, bs / 1e6
		printf "local SGD, H = %-4d  validation loss %.4f (%+.2f%%), %.2f MB a step: %.1fx fewer\n",
			h, vl, 100 * (vl - vs) / vs, bl / 1e6, bs / bl
		printf "  outer step a mean validation loss %.4f (%+.2f%%)\n", vm, 100 * (vm - vs) / vs }'
fi

if [[ " $PARTS " == *" 2 "* ]]; then
	echo "== 2. 110M, 2 nodes x $RANKS2 rank(s), a $LINK_GBITS Gbit/s link between them (emulated), $STEPS2 steps of $BATCH2 x $SEQ2 tokens"
	export LLTRAIN_BENCH_LINK_GBITS=$LINK_GBITS
	run sync2 110M "$RANKS2" "$STEPS2" "$BATCH2" "$SEQ2"
	run local2 110M "$RANKS2" "$STEPS2" "$BATCH2" "$SEQ2" --sync local \
		--dist.local_steps="$H" --dist.outer_overlap=true
	unset LLTRAIN_BENCH_LINK_GBITS
	read -r _ bs rs <<<"$(figures "$tmp/sync2/metrics.jsonl" "$UNTIMED2" $((STEPS2 - 1)))"
	read -r _ bl rl <<<"$(figures "$tmp/local2/metrics.jsonl" "$UNTIMED2" $((STEPS2 - 1)))"
	awk -v rs="$rs" -v rl="$rl" -v bs="$bs" -v bl="$bl" -v h="$H" 'BEGIN {
		printf "synchronous:                    %8.1f tokens/s, %.1f MB between nodes a step (rank 0)\n", rs, bs / 1e6
		printf "local SGD, H = %-3d overlapped:  %8.1f tokens/s, %.1f MB a step: %.2fx the tokens/s\n",
			h, rl, bl / 1e6, rl / rs }'
fi
if [[ " $PARTS " == *" 3 "* ]]; then
	echo "== 3. 15M, 2 nodes x 1 rank, the second $SLOW_MS ms slower a step, $STEPS3 job steps of $BATCH3 x $SEQ3 tokens"
	slow steps3 "$STEPS3" "$BATCH3" "$SEQ3" --sync local --dist.local_steps="$H"
	slow timed3 "$STEPS3" "$BATCH3" "$SEQ3" --sync local --dist.round_seconds="$ROUND_S"
	for name in steps3 timed3; do
		python3 - "$tmp/$name/metrics.jsonl" "$tmp/$name.out" "$name" \
			$((STEPS3 * BATCH3 * SEQ3)) <<'EOF'
import json, re, sys
js = list(map(json.loads, open(sys.argv[1])))
steps = [j for j in js if "loss" in j]
val = [j["val_loss"] for j in js if "val_loss" in j][-1]
rounds = [tuple(map(int, m.group(1).split())) for m in
          re.finditer(r"^round: steps per node ([\d ]+);", open(sys.argv[2]).read(), re.M)]
last = steps[-1]
rate = int(sys.argv[4]) / last["elapsed"]  # the job's tokens over its time
what = {"steps3": "rounds of steps:  ", "timed3": "rounds of seconds:"}[sys.argv[3]]
nodes = (", steps per node " + " ".join(str(sum(r[i] for r in rounds))
                                         for i in range(len(rounds[0]))) if rounds else "")
print(f"{what} {rate:8.1f} tokens/s over {last['elapsed']:.1f} s, validation loss {val:.4f}{nodes}")
EOF
	done
fi
echo "took $(($(date +%s) - began)) s on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
