#!/bin/bash
# Checks local SGD's rounds of wall time (dist.round_seconds): 2 emulated
# nodes (LLTRAIN_NODE_RANKS), the second made slower with
# LLTRAIN_BENCH_SLOW_MS. Rounds of seconds with --deterministic, with
# dist.sync = step, and with a batch the nodes cannot share evenly are
# refused in one line (exit 2); over 2 nodes of 2 ranks with --balance
# auto the slow node takes fewer steps a round than the fast one, bytes
# cross between nodes only at the rounds' ends, the losses are finite and
# fall and the nodes end with the same parameters; a checkpoint at a
# round's end resumes on the same nodes and on 4; a micro-batch trial
# runs before rounds of wall time.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-rounds.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

mpi_or_stop

prepare_corpus

STEPS=24
base=(--preset tiny --train.seq=64 --train.batch=8 --train.steps=$STEPS
	--train.warmup_steps=2 --data.dir="$tmp/data" --run.eval_every=0
	--run.eval_batches=2 --run.sample_tokens=4 --run.log_every=1 --run.threads=1
	--comm-timeout 120)
final=checkpoints/step_$(printf %08d $STEPS)

# slow DIR K ARGS...: 2 nodes of K ranks into $tmp/DIR, the second node's
# ranks 300 ms slower a step; output in $tmp/DIR.out, status in $rc.
slow() {
	local dir=$1 k=$2
	shift 2
	LLTRAIN_NODE_RANKS=$k "${launch[@]}" -n "$k" "$LLTRAIN" train "$@" \
		--run.dir="$tmp/$dir" : -n "$k" env LLTRAIN_BENCH_SLOW_MS=300 "$LLTRAIN" train \
		"$@" --run.dir="$tmp/$dir" >"$tmp/$dir.out" 2>&1 </dev/null
	rc=$?
}

# 1. Refusals, one line each, exit 2, before any training.
refused() {
	local what=$1 want=$2
	shift 2
	"$@" >"$tmp/bad.out" 2>&1 </dev/null
	local got=$?
	[ $got = 2 ] && [ "$(grep -c 'lltrain: train:' "$tmp/bad.out")" = 1 ] &&
		grep -q "$want" "$tmp/bad.out" && ! grep -q '^step ' "$tmp/bad.out"
	ok $? "$what is refused in one line (exit $got): $(grep -m1 lltrain: "$tmp/bad.out")"
}
refused "rounds of seconds with --deterministic" "dist.round_seconds = 1 with dist.deterministic" \
	env LLTRAIN_NODE_RANKS=1 "${launch[@]}" -n 2 "$LLTRAIN" train "${base[@]}" --sync local \
	--dist.round_seconds=1 --deterministic --run.dir="$tmp/bad"
refused "rounds of seconds with synchronous steps" "dist.round_seconds = 1 with dist.sync = step" \
	"$LLTRAIN" train "${base[@]}" --dist.round_seconds=1 --run.dir="$tmp/bad"
refused "a batch of 9 over 2 nodes" "train.batch = 9: each of the 2 nodes" \
	env LLTRAIN_NODE_RANKS=1 "${launch[@]}" -n 2 "$LLTRAIN" train "${base[@]}" --sync local \
	--dist.round_seconds=1 --train.batch=9 --run.dir="$tmp/bad"

# 2. 2 nodes of 2 ranks, rounds of 1 s, the second node slower.
rounds=(--sync local --dist.round_seconds=1 --zero 1)
slow u 2 "${base[@]}" "${rounds[@]}" --balance auto
ok $rc "2 nodes x 2 ranks, rounds of 1 s, one node slower: the run ends well: $(tail -c 120 "$tmp/u.out")"
grep -q "^local SGD: 2 nodes of 2 ranks, an outer Nesterov step every 1 s of wall time" "$tmp/u.out" &&
	grep -q "^round: steps per node [0-9]* [0-9]*; job step 0 to [0-9]*/$STEPS$" "$tmp/u.out" &&
	grep -q "^round: steps per node [0-9]* [0-9]*; job step [0-9]* to $STEPS/$STEPS$" "$tmp/u.out"
ok $? "a line at each round's end gives each node's steps: $(grep -m1 '^round:' "$tmp/u.out")"
python3 - "$tmp/u.out" "$tmp/u/metrics.jsonl" <<'EOF'
import json, math, re, sys
rounds = [tuple(map(int, m.groups())) for m in
          re.finditer(r"^round: steps per node (\d+) (\d+);", open(sys.argv[1]).read(), re.M)]
fast, slow = sum(r[0] for r in rounds), sum(r[1] for r in rounds)
steps = [j for j in map(json.loads, open(sys.argv[2])) if "loss" in j]
losses = [j["loss"] for j in steps]
ends = [j for j in steps if j.get("outer_s", 0) > 0]
crossed = [j for j in steps if j.get("xnode_bytes", 0) > 0]
print(f"# {len(rounds)} rounds, steps per node {rounds}: fast {fast}, slow {slow}; "
      f"losses {losses[0]:.3f} -> {losses[-1]:.3f}; bytes crossed at {len(crossed)} steps")
ok = (len(rounds) >= 2 and fast >= 1.5 * slow and len(steps) == fast
      and all(math.isfinite(x) for x in losses)
      and sum(losses[-3:]) < sum(losses[:3]) - 0.3
      and len(ends) == len(rounds) and crossed == ends)
sys.exit(0 if ok else 1)
EOF
ok $? "the slow node takes fewer steps a round, bytes cross only at the rounds' ends, the losses fall"
cmp -s "$tmp/u/$final/model.safetensors" "$tmp/u/$final/node-1-model.safetensors"
ok $? "both nodes end with the same parameters"
grep -q "validation loss" "$tmp/u.out"
ok $? "the run ends with a validation loss: $(grep -m1 'validation loss' "$tmp/u.out")"

# A micro-batch trial (like a range test) ties the nodes' steps for its
# one step; the run then goes on in rounds of wall time.
LLTRAIN_NODE_RANKS=1 "${launch[@]}" -n 2 "$LLTRAIN" train "${base[@]}" --sync local \
	--dist.round_seconds=0.5 --train.micro_batch=auto --train.steps=4 \
	--run.dir="$tmp/mb" >"$tmp/mb.out" 2>&1 </dev/null
[ $? = 0 ] && grep -q "^round: steps per node" "$tmp/mb.out" && grep -q "validation loss" "$tmp/mb.out"
ok $? "rounds of wall time with train.micro_batch = auto: $(grep -m1 -i 'micro' "$tmp/mb.out")"

# 3. Checkpoints at the rounds' ends, resumed on the same nodes (1 rank
# each) and on 4 nodes, which go on from the saved job position.
rounds=(--sync local --dist.round_seconds=0.5 --zero 1)
slow c 1 "${base[@]}" "${rounds[@]}" --run.checkpoint_every=6
saved=$(ls "$tmp/c/checkpoints" | grep -v "$(basename "$final")" | tail -1)
[ $rc = 0 ] && [ -n "$saved" ] && [ -f "$tmp/c/checkpoints/$saved/outer.safetensors" ]
ok $? "checkpoints at the rounds' ends hold the outer state: ${saved:-none}"
cp -r "$tmp/c" "$tmp/c4"
rm -rf "$tmp/c/$final" "$tmp/c4/$final"
slow c 1 "${base[@]}" "${rounds[@]}" --run.checkpoint_every=6 --resume auto
[ $rc = 0 ] && grep -q "resumed from .*$saved at step $((10#${saved#step_}))" "$tmp/c.out" &&
	cmp -s "$tmp/c/$final/model.safetensors" "$tmp/c/$final/node-1-model.safetensors"
ok $? "resumed from $saved on the same nodes: the run ends, the nodes agree"
LLTRAIN_NODE_RANKS=1 "${launch[@]}" -n 4 "$LLTRAIN" train "${base[@]}" "${rounds[@]}" \
	--run.checkpoint_every=6 --resume auto --run.dir="$tmp/c4" >"$tmp/c4.out" 2>&1 </dev/null
[ $? = 0 ] && grep -q "local SGD: the checkpoint's 2 nodes are 4 now" "$tmp/c4.out" &&
	grep -q "^round: steps per node [0-9]* [0-9]* [0-9]* [0-9]*; job step $((10#${saved#step_})) to" "$tmp/c4.out" &&
	grep -q "validation loss" "$tmp/c4.out"
ok $? "resumed from $saved on 4 nodes: goes on from the saved job position"

echo "1..$n"
exit $failed
