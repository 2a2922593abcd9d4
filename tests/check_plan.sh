#!/bin/bash
# Checks `lltrain plan`: on a described cluster of 8 GPUs of 24 GiB the 7B
# preset's plan holds the layout the tensor-parallel memory plan found
# (tp 2 x dp 4, ZeRO 3, bf16, recompute), its memory need equal to lltrain
# info's estimate of that layout, and the best few are the fastest of
# those that fit; 8 GPUs of 8 GiB cannot hold it, and the plan says by how
# much, in one line, exit 1; settings given stay fixed (dist.tp, the
# micro-batch split through train.grad_accum); a cluster of GPUs and CPU
# nodes shares batches by speed, in whole sequences (a far slower CPU rank
# still computes one a micro-batch), and also tries the GPUs alone; CPU nodes
# are planned as several ranks of fewer threads; more bandwidth never
# makes a step slower; descriptions and links that cannot be read are
# refused in one line naming the place, exit 2; under mpiexec the ranks
# of the launch measure themselves and the links, and with --launch only
# their own layout is planned; train --plan auto applies the plan, keeps
# a ZeRO stage given, and refuses a model that fits no layout before the
# run starts; under --deterministic it keeps tp and precision as given
# (the layouts left give the same bits), and two runs end in the same
# checkpoint bitwise; a --plan auto run resumed under --plan auto plans
# anew (another layout, the checkpoint's stages split again), continues
# its steps at the same global batch with finite losses; an OpenCL rank
# beside a CPU rank trains under --plan auto, sharing the batch by speed
# (balance auto), and with --deterministic is refused in one line (skipped
# without an OpenCL device).
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-plan.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# jq-like queries of a --jsonl file: python3 -c over its objects
layouts() {
	python3 - "$@" <<'EOF'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
v = [json.loads(l) for l in open(path)]
ok = eval(expr, {"v": v, "fit": [o for o in v if o["fits"]]})

sys.exit(0 if ok is True else 1)
EOF
}

expect 0 "best:" "the 7B preset on 8 GPUs of 24 GiB has a plan" -- \
	plan --preset 7B --train.batch=8 --devices 8x24GiB@100TFLOPs --jsonl "$tmp/7b.jsonl"
has "mpiexec -n 8 lltrain train --dist.tp=" "the plan prints the launch that runs the best"
layouts "$tmp/7b.jsonl" 'any(o["dp"] == 4 and o["tp"] == 2 and o["zero"] == 3 and o["precision"] == "bf16" and o["recompute"] and o["micro"] == 2 for o in fit)'
ok $? "tp 2 x dp 4, ZeRO 3, bf16, recompute fits on 8 GPUs of 24 GiB"
layouts "$tmp/7b.jsonl" 'all(a["step_s"] <= b["step_s"] for a, b in zip(fit, fit[1:])) and v[:len(fit)] == fit'
ok $? "the layouts that fit come first, fastest first"
layouts "$tmp/7b.jsonl" 'not any(o["dp"] == 8 and o["zero"] == 0 and o["fits"] for o in v)'
ok $? "eight whole copies of the 7B model's training state do not fit"

# the planner's need is lltrain info's estimate of the same layout
"$LLTRAIN" info --preset 7B --ranks 8 --tp 2 --zero 3 --train.precision=bf16 \
	--train.recompute=block --train.batch=8 --threads 1 >"$tmp/info" 2>&1
want=$(sed -n 's/.*(training memory \([0-9.]*\) GiB).*/\1/p' "$tmp/info" | tail -1)
got=$(python3 -c '
import json, sys
for o in map(json.loads, open(sys.argv[1])):
    if (o["dp"], o["tp"], o["pp"], o["zero"], o["precision"], o["recompute"], o["micro"]) == (4, 2, 1, 3, "bf16", True, 2):
        print("%.2f" % (o["mem_need"] / 2**30))' "$tmp/7b.jsonl")
[ -n "$want" ] && [ "$want" = "$got" ]
ok $? "the plan's memory of tp 2 x dp 4 ZeRO 3 is info's: $got GiB, info $want GiB"

expect_brief 1 "no layout fits: the closest needs" "8 GPUs of 8 GiB cannot hold the 7B preset" -- \
	plan --preset 7B --train.batch=8 --devices 8x8GiB@100TFLOPs
has_match "short by [0-9.]* GiB" "the refusal names the shortfall"

expect 0 "tp fixed" "a given dist.tp stays fixed" -- \
	plan --preset 110M --dist.tp=2 --devices 4x24GiB@50TFLOPs --jsonl "$tmp/tp.jsonl"
layouts "$tmp/tp.jsonl" 'len(v) > 0 and all(o["tp"] == 2 for o in v)'
ok $? "every layout searched has tp 2"
expect 0 "micro-batch fixed" "a given train.grad_accum fixes the split" -- \
	plan --preset 110M --train.batch=8 --train.grad_accum=2 --devices 4x24GiB@50TFLOPs \
	--jsonl "$tmp/ga.jsonl"
layouts "$tmp/ga.jsonl" 'len(v) > 0 and all(o["accum"] == 2 and o["micro"] * o["dp"] == 8 for o in v)'
ok $? "every layout searched keeps 2 micro-batches of 8 sequences"

expect 0 "best:" "GPUs with CPU nodes beside them have a plan" -- \
	plan --preset 15M --devices 2x24GiB@50TFLOPs,2xcpu8@1TFLOPs --jsonl "$tmp/mix.jsonl"
layouts "$tmp/mix.jsonl" 'all(o["balance_auto"] for o in v if o["cpu_ranks_per_node"] and not o["gpus_only"] and o["dp"] > 1 and o["tp"] * o["pp"] == 1)'
ok $? "data-parallel layouts of GPUs and CPU ranks share the batch by speed"
layouts "$tmp/mix.jsonl" 'any(o["gpus_only"] for o in fit) and any(o["cpu_ranks_per_node"] == 2 and o["cpu_threads"] == 4 for o in v)'
ok $? "the GPUs alone and CPU nodes of 2 ranks x 4 threads are both searched"

# a CPU node far slower than the GPU still computes one sequence of every
# micro-batch under --balance auto: the plan counts it, so the GPU alone wins
"$LLTRAIN" plan --preset 15M --devices 1x24GiB@400TFLOPs,1xcpu8@0.5TFLOPs --train.batch=64 \
	--train.grad_accum=4 --jsonl "$tmp/slowcpu.jsonl" >/dev/null 2>&1
layouts "$tmp/slowcpu.jsonl" 'fit[0]["gpus_only"] and all(o["step_s"] > 4 * fit[0]["step_s"] for o in fit if o["balance_auto"])'
ok $? "a far slower CPU rank's sequence a micro-batch is counted: the GPU alone plans first"

expect 0 "best:" "a CPU node has a plan" -- \
	plan --preset 15M --devices cpu16@1TFLOPs --jsonl "$tmp/cpu.jsonl"
layouts "$tmp/cpu.jsonl" 'fit[0]["cpu_ranks_per_node"] > 1'
ok $? "on a 16-core node the best layout runs several ranks of fewer threads"

# more bandwidth never slows a step
"$LLTRAIN" plan --preset 110M --devices 2x2x24GiB@50TFLOPs --link-between 1Gbit \
	--jsonl "$tmp/slow.jsonl" >/dev/null 2>&1
"$LLTRAIN" plan --preset 110M --devices 2x2x24GiB@50TFLOPs --link-between 100Gbit \
	--jsonl "$tmp/fast.jsonl" >/dev/null 2>&1
python3 - "$tmp/slow.jsonl" "$tmp/fast.jsonl" <<'EOF'
import json, sys
key = lambda o: (o["dp"], o["tp"], o["pp"], o["zero"], o["precision"], o["recompute"], o["micro"])
slow = {key(o): o["step_s"] for o in map(json.loads, open(sys.argv[1]))}
fast = {key(o): o["step_s"] for o in map(json.loads, open(sys.argv[2]))}
assert slow.keys() == fast.keys() and len(slow) > 10
assert all(fast[k] <= slow[k] for k in slow)
assert any(fast[k] < slow[k] * 0.9 for k in slow)
EOF
ok $? "a faster network never makes a layout slower, and speeds up some"

expect_brief 2 "at character 12" "a speed without a unit is refused" -- \
	plan --devices 8x24GiB@100
has "expected a speed unit" "the refusal says what was expected"
expect_brief 2 "expected a memory size" "an empty item is refused" -- \
	plan --devices "8x24GiB@1TFLOPs,,"
expect_brief 2 "expected a core count" "a CPU of no cores is refused" -- \
	plan --devices "4xcpu0@1TFLOPs"
expect_brief 2 "link '10Gbitt'" "an unreadable link is refused" -- \
	plan --devices 1x1GiB@1TFLOPs --link-between 10Gbitt
expect_brief 2 "--margin" "a margin out of range is refused" -- \
	plan --devices 1x1GiB@1TFLOPs --margin 2

# the ranks of a launch
mpi_or_stop
"${launch[@]}" -n 2 "$LLTRAIN" plan --train.seq=64 --jsonl "$tmp/launch.jsonl" \
	>"$tmp/out" 2>&1 </dev/null
got=$?
[ $got = 0 ] && grep -q "^  rank 1 on .*a block [0-9.]*, the head" "$tmp/out" &&
	grep -q "^links: within a node [0-9.]* GB/s" "$tmp/out"
ok $? "under mpiexec the ranks measure themselves and the links (exit $got): $(head -c 300 "$tmp/out")"
layouts "$tmp/launch.jsonl" 'len(fit) > 0 and any(o["cpu_ranks_per_node"] != 2 for o in v)'
ok $? "other ranks per node than the launch's are planned too"
"${launch[@]}" -n 2 "$LLTRAIN" plan --train.seq=64 --launch --jsonl "$tmp/own.jsonl" \
	>"$tmp/out" 2>&1 </dev/null
layouts "$tmp/own.jsonl" 'len(fit) > 0 and all(o["ranks"] == 2 and o["cpu_ranks_per_node"] == 2 for o in v)'
ok $? "with --launch only the launch's 2 ranks are planned"

prepare_corpus
"${launch[@]}" -n 2 "$LLTRAIN" train --plan auto --dist.zero=1 --train.steps=2 \
	--data.dir="$tmp/data" --run.dir="$tmp/auto" --run.sample_tokens=4 >"$tmp/out" 2>&1 </dev/null
got=$?
chosen=$(sed -n 's/^plan auto: \(dp [0-9]* x tp [0-9]* x pp [0-9]*, ZeRO [0-9]\).*/\1/p' "$tmp/out")
tp=$(sed -n 's/^tp = //p' "$tmp/auto/config.ini") zero=$(sed -n 's/^zero = //p' "$tmp/auto/config.ini")
[ $got = 0 ] && [ -n "$chosen" ] && [ "$zero" = 1 ] &&
	printf '%s\n' "$chosen" | grep -q "tp $tp x.*ZeRO 1"
ok $? "train --plan auto applies the plan ($chosen; config.ini tp $tp, zero $zero) and keeps the given ZeRO 1 (exit $got)"
# --deterministic: the plan may choose only among layouts that give the
# same bits (dp, pp, ZeRO, recompute, the micro-batch split), never
# another tp or precision from the probe's timings; two runs of one
# command end in the same checkpoint, bitwise
"${launch[@]}" -n 2 "$LLTRAIN" plan --train.seq=64 --launch --dist.deterministic=true \
	--jsonl "$tmp/det.jsonl" >"$tmp/out" 2>&1 </dev/null
got=$?
[ $got = 0 ] && grep -q "; tp fixed.*; precision fixed" "$tmp/out" &&
	layouts "$tmp/det.jsonl" 'len(fit) > 1 and all(o["tp"] == 1 and o["precision"] == "fp32" for o in v)'
ok $? "under --deterministic every layout searched keeps tp 1 and fp32 (exit $got): $(grep -m1 ' layouts, ' "$tmp/out")"
# (a global batch of 4 sequences and one thread a rank keep the runs short)
small=(--train.seq=64 --train.batch=4 --run.threads=1 --data.dir="$tmp/data" --run.sample_tokens=4)
det=(--plan auto --deterministic --train.steps=2 "${small[@]}")
for i in 1 2; do
	"${launch[@]}" -n 2 "$LLTRAIN" train "${det[@]}" --run.dir="$tmp/det$i" \
		>"$tmp/det$i.out" 2>&1 </dev/null
	echo $? >"$tmp/det$i.rc"
done
final=checkpoints/step_00000002/model.safetensors
loss() { grep '"step":2,' "$tmp/$1/metrics.jsonl" | grep -o '"loss":[^,]*'; }
[ "$(cat "$tmp/det1.rc" "$tmp/det2.rc")" = "$(printf '0\n0')" ] &&
	grep -q "^plan auto: dp [0-9]* x tp 1 x pp [0-9]*, ZeRO [0-9], fp32" "$tmp/det1.out" &&
	cmp -s "$tmp/det1/$final" "$tmp/det2/$final" && [ -n "$(loss det1)" ] &&
	[ "$(loss det1)" = "$(loss det2)" ]
ok $? "two --plan auto --deterministic runs end in the same parameters and loss, bitwise ($(loss det1), $(loss det2); $(grep -h '^plan auto:' "$tmp/det1.out" "$tmp/det2.out" | cut -d';' -f1 | tr '\n' '/'))"

# a resumed run plans again: the checkpoint is layout-free, so a resume
# may run another layout, and the stages of the checkpoint's own (1 + 3
# blocks, given by hand) are split anew unless given again; the global
# batch stays the options' 4 sequences (the checkpoint holds the plan's
# split, 1 x 4, under which train.batch = 4 given again made 16)
res=(--plan auto --model.tied=false "${small[@]}" --run.dir="$tmp/res" --run.checkpoint_every=1)
"${launch[@]}" -n 2 "$LLTRAIN" train "${res[@]}" --dist.pp=2 --dist.pp_layers=1,3 \
	--train.steps=1 >"$tmp/res1.out" 2>&1 </dev/null
got=$?
"${launch[@]}" -n 2 "$LLTRAIN" train "${res[@]}" --dist.pp=2 --resume auto --train.steps=2 \
	>"$tmp/res2.out" 2>&1 </dev/null
got2=$?
"${launch[@]}" -n 2 "$LLTRAIN" train "${res[@]}" --resume auto --train.steps=3 \
	>"$tmp/res3.out" 2>&1 </dev/null
got3=$?
python3 -c '
import json, math, sys
v = [o for o in map(json.loads, open(sys.argv[1])) if "loss" in o and "val_loss" not in o]
steps = [o["step"] for o in v]
print(steps, "tokens", [o["tokens"] for o in v])
sys.exit(0 if steps == [1, 2, 3] and all(math.isfinite(o["loss"]) for o in v) and
         [o["tokens"] for o in v] == [256, 512, 768] else 1)
' "$tmp/res/metrics.jsonl" >"$tmp/steps" 2>&1
steps_ok=$?
[ "$got $got2 $got3" = "0 0 0" ] && [ $steps_ok = 0 ] &&
	grep -q "stage 0 blocks 0-0 and the embedding" "$tmp/res1.out" &&
	grep -q "resumed from .*step_00000001 at step 1" "$tmp/res2.out" &&
	grep -q "^plan auto: dp 1 x tp 1 x pp 2" "$tmp/res2.out" &&
	! grep -q "stage 0 blocks 0-0" "$tmp/res2.out" &&
	grep -q "resumed from .*step_00000002 at step 2" "$tmp/res3.out" &&
	grep -q "^plan auto: " "$tmp/res3.out"
ok $? "a --plan auto run resumed twice with --plan auto continues at steps 2 and 3, 4 sequences a step, finite losses, each planning anew (exit $got $got2 $got3; steps $(tr -d '\n' <"$tmp/steps"); $(grep -h '^plan auto:\|^pipeline: [0-9]' "$tmp/res2.out" "$tmp/res3.out" | cut -c1-90 | tr '\n' '/'))"

# an OpenCL rank (PoCL) beside a CPU rank: the plan sees their unequal
# speeds and shares the batch by them (--balance auto); under
# --deterministic it refuses, as which device sums a sequence changes its
# bits and the timings choose that
if "$LLTRAIN" info 2>/dev/null | grep -q '^  opencl:'; then
	mixed=(--plan auto --train.steps=2 "${small[@]}" --comm-timeout 300)
	"${launch[@]}" -n 1 "$LLTRAIN" train "${mixed[@]}" --run.device=opencl --run.dir="$tmp/mix" : \
		-n 1 "$LLTRAIN" train "${mixed[@]}" --run.device=cpu --run.dir="$tmp/mix" \
		>"$tmp/mix.out" 2>&1 </dev/null
	got=$?
	[ $got = 0 ] && grep -aq "^plan auto: dp 2 .*, balance auto;" "$tmp/mix.out" &&
		grep -q "^balance = auto" "$tmp/mix/config.ini" &&
		grep -q '"step":2,"loss":' "$tmp/mix/metrics.jsonl"
	ok $? "an OpenCL rank and a CPU rank under --plan auto train, sharing the batch by speed (exit $got): $(grep -a '^plan auto:\|^balance:' "$tmp/mix.out" | tr '\n' '/')"
	"${launch[@]}" -n 1 "$LLTRAIN" train "${mixed[@]}" --deterministic --run.device=opencl \
		--run.dir="$tmp/mixd" : -n 1 "$LLTRAIN" train "${mixed[@]}" --deterministic \
		--run.device=cpu --run.dir="$tmp/mixd" >"$tmp/out" 2>"$tmp/err" </dev/null
	got=$?
	[ $got = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] &&
		grep -q "plan auto with --deterministic: ranks 0 and 1 compute on different devices" "$tmp/err" &&
		[ ! -d "$tmp/mixd/checkpoints" ]
	ok $? "--plan auto --deterministic on an OpenCL and a CPU rank is refused in one line (exit $got): $(head -c 300 "$tmp/err")"
else
	skip "an OpenCL rank beside a CPU rank under --plan auto: no OpenCL device (lltrain info lists none)"
	skip "--plan auto --deterministic on an OpenCL and a CPU rank: no OpenCL device (lltrain info lists none)"
fi

# 1024 blocks of dim 1024: some 200 GB of training state, quick to probe
"${launch[@]}" -n 2 "$LLTRAIN" train --plan auto --model.dim=1024 --model.n_heads=8 \
	--model.n_kv_heads=8 --model.ffn_dim=2816 --model.n_layers=1024 --train.steps=1 \
	--data.dir="$tmp/data" --run.dir="$tmp/huge" --train.seq=64 >"$tmp/out" 2>&1 </dev/null
got=$?
[ $got = 1 ] && grep -q "plan auto: no layout of these 2 ranks fits: the closest needs" "$tmp/out" &&
	[ ! -d "$tmp/huge/checkpoints" ]
ok $? "a model no layout of the launch holds is refused before the run starts (exit $got): $(head -c 300 "$tmp/out")"
expect_brief 2 "--plan 'best': expected auto" "--plan takes auto alone" -- train --plan best

echo "1..$n"
exit $failed
