#!/bin/bash
# Checks local SGD across nodes (--sync local): 2 emulated nodes
# (LLTRAIN_NODE_RANKS) of 2 ranks train the tiny preset's model; bad keys
# a job on one node and ZeRO stage 3 are refused in one line (exit 2); rank 0 sends
# bytes between nodes only at the end of a round; with outer lr 1 and no
# momentum a round's end makes the parameters the mean of the nodes',
# computed here from the nodes' own parameters in a checkpoint taken just
# before it; 2 ranks a node give bitwise the same parameters as one
# process a node with --deterministic, and so do repeats; with H = 1 the
# losses follow synchronous data parallelism's, much nearer than with
# H = 3; a resume in the middle of a round continues bitwise (2 ranks a
# node at ZeRO 1 save, 1 rank a node resumes), and one on 4 nodes runs on
# from the first node's state; overlapped, a resume with a sum under way
# continues bitwise too; bf16 moves halve the bytes; --balance auto runs.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-lsgd.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

mpi_or_stop

prepare_corpus

STEPS=12
base=(--preset tiny --train.seq=64 --train.batch=8 --train.steps=$STEPS
	--train.warmup_steps=2 --data.dir="$tmp/data" --run.eval_every=0
	--run.eval_batches=2 --run.sample_tokens=4 --run.log_every=1 --run.threads=1
	--comm-timeout 120)
final=checkpoints/step_$(printf %08d $STEPS)

# train DIR NODE_RANKS RANKS ARGS...: RANKS ranks, LLTRAIN_NODE_RANKS=NODE_RANKS
# of them a node, into $tmp/DIR; output in $tmp/DIR.out, status in $rc.
train() {
	local dir=$1 k=$2 ranks=$3
	shift 3
	LLTRAIN_NODE_RANKS=$k "${launch[@]}" -n "$ranks" "$LLTRAIN" train "$@" \
		--run.dir="$tmp/$dir" >"$tmp/$dir.out" 2>&1 </dev/null
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
refused "local sync in one process" "the job's 1 rank runs on one node" \
	"$LLTRAIN" train "${base[@]}" --sync local --run.dir="$tmp/bad"
refused "local sync over 2 ranks of one node" "the job's 2 ranks run on one node" \
	"${launch[@]}" -n 2 "$LLTRAIN" train "${base[@]}" --sync local --run.dir="$tmp/bad"
refused "H = 0" "dist.local_steps '0': expected an integer in \[1, 1000000\]" \
	"$LLTRAIN" train "${base[@]}" --sync local --dist.local_steps=0 --run.dir="$tmp/bad"
refused "an outer lr of 0" "dist.outer_lr '0': expected a number in (0, 10\]" \
	"$LLTRAIN" train "${base[@]}" --sync local --dist.outer_lr=0 --run.dir="$tmp/bad"
refused "an outer momentum of 1" "dist.outer_momentum '1': expected a number in \[0, 1)" \
	"$LLTRAIN" train "${base[@]}" --sync local --dist.outer_momentum=1 --run.dir="$tmp/bad"
refused "local sync with ZeRO stage 3" "dist.sync = local with dist.zero = 3" \
	env LLTRAIN_NODE_RANKS=1 "${launch[@]}" -n 2 "$LLTRAIN" train "${base[@]}" --sync local \
	--zero 3 --run.dir="$tmp/bad"

# 2. 2 nodes of 2 ranks, H = 4: bytes cross only at the rounds' ends.
train l4 2 4 "${base[@]}" --sync local --dist.local_steps=4
ok $rc "2 nodes x 2 ranks, H = 4: the run ends well: $(tail -c 200 "$tmp/l4.out")"
train s4 2 4 "${base[@]}"
ok $rc "2 nodes x 2 ranks, synchronous: the run ends well"
python3 - "$tmp/l4/metrics.jsonl" "$tmp/s4/metrics.jsonl" <<'EOF'
import json, sys
def steps(path):
    return [j for j in map(json.loads, open(path)) if "loss" in j]
local, sync = steps(sys.argv[1]), steps(sys.argv[2])
crossed = [j["step"] for j in local if j.get("xnode_bytes", 0) > 0]
lb = sum(j["xnode_bytes"] for j in local)
sb = sum(j.get("xnode_bytes", 0) for j in sync)
print(f"# local: bytes at steps {crossed}, {lb / len(local):.0f} a step; synchronous "
      f"{sb / len(sync):.0f} a step, {sb / lb:.2f}x as many")
ok = crossed == [4, 8, 12] and all(j["outer_s"] > 0 for j in local if j["step"] in crossed)
sys.exit(0 if ok and sb >= 0.99 * 4 * lb else 1)
EOF
ok $? "rank 0 sends between nodes only at steps 4, 8, 12, and H = 4 times fewer bytes than synchronous (to 1%)"
grep -q "^step 4/12 .*between nodes [0-9.]* MB, outer [0-9.]* ms" "$tmp/l4.out"
ok $? "the progress line shows the bytes between nodes and the outer step: $(grep -m1 '^step 4/' "$tmp/l4.out" | tail -c 120)"

# 3. The mean of the nodes: with outer lr 1 and momentum 0, step 8 ends the
# round of run m (H = 8); run c (H = 100, 9 steps, a constant rate so that
# both runs step alike) saves at step 8, before any exchange, each node's
# parameters. Their mean must be m's parameters.
mean=(--sync local --dist.outer_lr=1 --dist.outer_momentum=0 --train.schedule=constant
	--deterministic)
train m 2 4 "${base[@]}" "${mean[@]}" --train.steps=8 --dist.local_steps=8
train c 2 4 "${base[@]}" "${mean[@]}" --train.steps=9 --dist.local_steps=100 \
	--run.checkpoint_every=8
python3 - "$tmp/m/checkpoints/step_00000008" "$tmp/c/checkpoints/step_00000008" <<'EOF'
import array, json, struct, sys
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = array.array("f", data[a:b])
    return out
m = tensors(sys.argv[1] + "/model.safetensors")
n0 = tensors(sys.argv[2] + "/model.safetensors")
n1 = tensors(sys.argv[2] + "/node-1-model.safetensors")
worst, moved = 0.0, 0.0
for name, want in m.items():
    for x, a, b in zip(want, n0[name], n1[name]):
        mid = (a + b) / 2
        worst = max(worst, abs(x - mid))
        moved = max(moved, abs(a - b))
print(f"# largest difference from the nodes' mean {worst:.3g}; the nodes differ by up to {moved:.3g}")
sys.exit(0 if worst <= 1e-6 and moved > 1e-3 else 1)
EOF
ok $? "outer lr 1, momentum 0: the round's end gives the mean of the nodes' parameters (within 1e-6)"

# 4. --deterministic: one process a node is the reference for two.
det=(--sync local --dist.local_steps=4 --deterministic --zero 1)
train d22 2 4 "${base[@]}" "${det[@]}"
train d21 1 2 "${base[@]}" "${det[@]}"
train d22b 2 4 "${base[@]}" "${det[@]}"
cmp -s "$tmp/d22/$final/model.safetensors" "$tmp/d21/$final/model.safetensors"
ok $? "--deterministic: 2 nodes x 2 ranks give bitwise one process a node's parameters"
cmp -s "$tmp/d22/$final/model.safetensors" "$tmp/d22b/$final/model.safetensors"
ok $? "--deterministic: a repeat gives bitwise the same parameters"

# 5. H = 1, outer lr 1, momentum 0 against synchronous data parallelism.
# Each node takes an AdamW step on its own mean gradient and the nodes
# average the results, where synchronous training takes one AdamW step on
# the mean gradient: the two agree as far as AdamW's division by the root
# of the second moment is the same for every node. A large epsilon (1)
# makes that division nearly linear, so the losses must agree closely,
# and far better than with H = 3.
lin=(--deterministic --train.eps=1 --train.lr=0.5 --train.min_lr=0.5 --train.schedule=constant
	--train.grad_clip=0)
train h1 2 4 "${base[@]}" "${lin[@]}" --sync local --dist.local_steps=1 --dist.outer_lr=1 \
	--dist.outer_momentum=0
train h3 2 4 "${base[@]}" "${lin[@]}" --sync local --dist.local_steps=3 --dist.outer_lr=1 \
	--dist.outer_momentum=0
train dp 2 4 "${base[@]}" "${lin[@]}"
python3 - "$tmp/dp/metrics.jsonl" "$tmp/h1/metrics.jsonl" "$tmp/h3/metrics.jsonl" <<'EOF'
import json, sys
def losses(path):
    return [j["loss"] for j in map(json.loads, open(path)) if "loss" in j]
dp, h1, h3 = (losses(p) for p in sys.argv[1:])
d1 = max(abs(a - b) / a for a, b in zip(dp, h1))
d3 = max(abs(a - b) / a for a, b in zip(dp, h3))
print(f"# largest relative difference from synchronous: H = 1 {d1:.2e}, H = 3 {d3:.2e}")
sys.exit(0 if len(h1) == len(dp) == 12 and d1 < 1e-3 and d3 > 5 * d1 else 1)
EOF
ok $? "H = 1, outer lr 1, momentum 0: losses within 1e-3 of synchronous training's, 5x nearer than H = 3's"

# 6. Resume in the middle of a round: saved at step 6 of rounds of 4 by 2
# ranks a node at ZeRO 1, resumed by 1 rank a node: bitwise run d22's.
train r 2 4 "${base[@]}" "${det[@]}" --run.checkpoint_every=6
ls "$tmp/r/checkpoints/step_00000006" | grep -q '^node-1-optimizer-00001-of-00002.safetensors$' &&
	grep -q '"outer.safetensors"' "$tmp/r/checkpoints/step_00000006/state.json"
ok $? "a checkpoint in the middle of a round holds the outer state and the other node's moments"
rm -rf "$tmp/r/$final"
train r 1 2 "${base[@]}" "${det[@]}" --run.checkpoint_every=6 --resume auto
grep -q "resumed from .*step_00000006 at step 6" "$tmp/r.out" &&
	cmp -s "$tmp/d22/$final/model.safetensors" "$tmp/r/$final/model.safetensors"
ok $? "resumed at step 6 of a round of 4, on 1 rank a node: parameters bitwise an uninterrupted run's"

# 7. Resume on another number of nodes: 4 nodes of 1 rank go on from the
# first node's state.
rm -rf "$tmp/r/$final"
train r 1 4 "${base[@]}" "${det[@]}" --run.checkpoint_every=6 --resume auto
[ $rc = 0 ] && grep -q "local SGD: the checkpoint's 2 nodes are 4 now" "$tmp/r.out" &&
	grep -q "validation loss" "$tmp/r.out"
ok $? "resumed on 4 nodes instead of 2: $(grep -m1 'local SGD:' "$tmp/r.out")"

# 8. Overlapped (dist.outer_overlap): a round's sum lands at the next
# round's end. Saved at step 4 of rounds of 3, with the sum of the round
# ended at step 3 under way, by 2 ranks a node; resumed by 1 rank a node:
# bitwise an uninterrupted run.
ov=(--sync local --dist.local_steps=3 --deterministic --dist.outer_overlap=true)
train o 2 4 "${base[@]}" "${ov[@]}" --zero 1
ok $rc "overlapped, 2 nodes x 2 ranks: the run ends well: $(grep -m1 'validation loss' "$tmp/o.out")"
train ob 2 4 "${base[@]}" "${ov[@]}" --zero 1 --run.checkpoint_every=4
rm -rf "$tmp/ob/$final" "$tmp/ob/checkpoints/step_00000008"
train ob 1 2 "${base[@]}" "${ov[@]}" --run.checkpoint_every=4 --resume auto
grep -q "resumed from .*step_00000004 at step 4" "$tmp/ob.out" &&
	[ -f "$tmp/ob/checkpoints/step_00000004/node-1-base.safetensors" ] &&
	cmp -s "$tmp/o/$final/model.safetensors" "$tmp/ob/$final/model.safetensors"
ok $? "overlapped, resumed at step 4 with a sum under way: parameters bitwise an uninterrupted run's"
train p 2 4 "${base[@]}" --sync local --dist.local_steps=3 --deterministic --zero 1
cmp -s "$tmp/o/$final/model.safetensors" "$tmp/p/$final/model.safetensors"
[ $? = 1 ]
ok $? "overlapped and plain runs of the same rounds differ (the outer step lands a round later)"

# 9. Moves as bf16 (dist.outer_dtype): half the bytes between nodes, a
# validation loss within 0.1% of fp32's, bitwise across repeats.
train bf 2 4 "${base[@]}" "${det[@]}" --dist.outer_dtype=bf16
train bf2 2 4 "${base[@]}" "${det[@]}" --dist.outer_dtype=bf16
python3 - "$tmp/bf/metrics.jsonl" "$tmp/d22/metrics.jsonl" <<'EOF2'
import json, sys
def run(path):
    js = list(map(json.loads, open(path)))
    return (sum(j.get("xnode_bytes", 0) for j in js if "loss" in j),
            [j["val_loss"] for j in js if "val_loss" in j][-1])
(b16, v16), (b32, v32) = run(sys.argv[1]), run(sys.argv[2])
print(f"# bf16: {b16:.0f} bytes, validation loss {v16:.5f}; fp32: {b32:.0f} bytes, {v32:.5f}")
sys.exit(0 if abs(b32 / b16 - 2) < 0.01 and abs(v16 - v32) < 1e-3 * v32 else 1)
EOF2
ok $? "bf16 moves: half the bytes between nodes, validation loss within 0.1% of fp32's"
cmp -s "$tmp/bf/$final/model.safetensors" "$tmp/bf2/$final/model.safetensors"
ok $? "bf16 moves, --deterministic: a repeat gives bitwise the same parameters"

# 10. --balance auto: shares follow the ranks' speed, each node's move
# weighted by its tokens; overlapped and in bf16 at once.
train ba 2 4 "${base[@]}" --sync local --dist.local_steps=4 --balance auto \
	--dist.outer_overlap=true --dist.outer_dtype=bf16
[ $rc = 0 ] && grep -q "^balance: " "$tmp/ba.out" && grep -q "validation loss" "$tmp/ba.out"
ok $? "--balance auto with overlapped bf16 local SGD ends well: $(grep -m1 '^balance:' "$tmp/ba.out" | tail -c 80)"

echo "1..$n"
exit $failed
