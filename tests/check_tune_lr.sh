#!/bin/bash
# Checks `lltrain tune-lr`, the learning-rate range test, and train.lr =
# auto: the curve's JSON Lines, the exponential rise of the rate, the
# suggestion inside the range, the stop at divergence, a run directory's
# checkpoint left as it was, bad options refused, a run trained at the
# suggested rate and its resumption without a second test, and the test
# over MPI ranks (bitwise the one-process curve when deterministic; a
# tensor-parallel pair; a pipeline of two stages).
LLTRAIN=${LLTRAIN:-./lltrain}
MPIEXEC=${MPIEXEC:-mpiexec}
top_srcdir=${top_srcdir:-.}
PYTHON3=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-tune-lr.XXXXXX") || exit 1
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
pid=
. "$(dirname "$0")/tap.sh"

prepare_corpus
# A small model whose steps take milliseconds.
base=(--model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32
	--train.batch=8 --train.max_minutes=0 --data.dir="$tmp/data" --run.threads=2
	--run.log_every=10 --run.sample_tokens=8 --run.eval_batches=2)

# curve FILE MIN MAX STEPS STOPPED: every line of FILE is JSON; the steps
# run 1, 2, ... with each rate the one before times the same factor, the
# first MIN and (all steps run) the last MAX; each smoothed loss is the
# bias-corrected average of the losses so far; the last line says STOPPED
# ("diverged": before the last step, "steps": all of them run) and
# suggests a rate in [MIN, MAX]. Prints the steps and the suggestion.
curve() {
	"$PYTHON3" - "$@" <<'EOF'
import json, math, sys
path, lo, hi, steps, stopped = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lines = [json.loads(l) for l in open(path)]
*points, last = lines
assert [p["step"] for p in points] == list(range(1, len(points) + 1)), "steps out of order"
for p in points:
    assert set(p) == {"step", "lr", "loss", "smoothed"}, p
factor = (hi / lo) ** (1 / (steps - 1))
assert abs(points[0]["lr"] / lo - 1) < 1e-6, points[0]
for a, b in zip(points, points[1:]):
    assert abs(b["lr"] / a["lr"] / factor - 1) < 1e-5, (a, b, factor)
w, avg = last["smooth"], 0.0
for i, p in enumerate(points, 1):
    avg = (1 - w) * avg + w * p["loss"]
    assert abs(p["smoothed"] / (avg / (1 - (1 - w) ** i)) - 1) < 1e-6, (p, avg)
assert last["stopped"] == stopped, last
if stopped == "diverged":
    assert len(points) < steps and points[-1]["smoothed"] > last["diverge"] * min(
        p["smoothed"] for p in points[:-1]), len(points)
else:
    assert len(points) == steps and abs(points[-1]["lr"] / hi - 1) < 1e-6, (len(points), points[-1])
s = last["suggested_lr"]
assert s is not None and lo <= s <= hi, last
print("%d steps, suggested %g" % (len(points), s))
EOF
}

# 1. A test over 80 steps: the plot, the line, the curve.
"$LLTRAIN" tune-lr "${base[@]}" --run.dir="$tmp/t" --steps 80 --min-lr 1e-5 --max-lr 0.3 \
	>"$tmp/t.out" 2>&1
ok $? "tune-lr runs: $(tail -c 300 "$tmp/t.out")"
grep -q '^suggested lr: [0-9.e-]*$' "$tmp/t.out" && grep -q '^ *[0-9.]* |' "$tmp/t.out" &&
	grep -q '^ *+[-+]*$' "$tmp/t.out" && grep -q '\^ suggested' "$tmp/t.out"
ok $? "it prints the plot with its axes and the suggestion, then 'suggested lr: X'"
got=$(curve "$tmp/t/lr_find.jsonl" 1e-5 0.3 80 steps 2>&1)
ok $? "the curve parses line by line, the rate rises by one factor a step from --min-lr to --max-lr, the suggestion lies in the range: $got"
[ "$(ls -A "$tmp/t")" = lr_find.jsonl ]
ok $? "the run directory holds the curve alone: $(ls -A "$tmp/t" | tr '\n' ' ')"
suggested=$(sed -n 's/^suggested lr: //p' "$tmp/t.out")
"$PYTHON3" -c "import json,sys; s=json.loads(open(sys.argv[1]).readlines()[-1])['suggested_lr']; sys.exit(abs(s/float(sys.argv[2])-1) > 2e-3)" \
	"$tmp/t/lr_find.jsonl" "$suggested"
ok $? "the printed suggestion is the curve's ($suggested)"

# 2. A rate that ends at 10 diverges: the test stops there, before its
#    last step (the loss's weight in the average, --smooth, raised so that
#    the average follows it in a few steps).
"$LLTRAIN" tune-lr "${base[@]}" --run.dir="$tmp/d" --steps 60 --min-lr 1e-3 --max-lr 10 \
	--smooth 0.2 --out "$tmp/d.jsonl" >"$tmp/d.out" 2>&1
ok $? "tune-lr up to a rate of 10 runs: $(tail -c 200 "$tmp/d.out")"
got=$(curve "$tmp/d.jsonl" 1e-3 10 60 diverged 2>&1)
ok $? "it stops at divergence, and --out takes the curve: $got"
[ ! -e "$tmp/d/lr_find.jsonl" ]
ok $? "nothing goes to the run directory's default curve with --out"

# 3. A range where the loss does not fall: no suggestion, one line, exit 1;
#    the curve says so.
expect_brief 1 "the smoothed loss fell by less than 1% after the first 3 of 30 steps" \
	"a test whose loss never falls fails, saying why" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/n" --steps 30 --min-lr 1e-8 --max-lr 1e-7
grep -q '"suggested_lr": null, "stopped": "steps"' "$tmp/n/lr_find.jsonl"
ok $? "its curve is written, with no suggestion"

# SIGINT stops the test after a step: the curve so far, exit 0, nothing
# saved.
"$LLTRAIN" tune-lr "${base[@]}" --run.dir="$tmp/i" --steps 1000000 --max-lr 1e-3 \
	>"$tmp/i.out" 2>&1 &
pid=$!
for _ in $(seq 600); do
	grep -q '^model: ' "$tmp/i.out" && break
	sleep 0.1
done
sleep 1
kill -INT $pid
wait $pid
rc=$?
[ $rc = 0 ] && grep -q '"stopped": "interrupted"' "$tmp/i/lr_find.jsonl" &&
	[ "$(ls -A "$tmp/i")" = lr_find.jsonl ]
ok $? "SIGINT stops the test: exit $rc, the curve so far, nothing else written: $(tail -c 200 "$tmp/i.out")"

# 4. A run directory with a checkpoint: nothing of it changes, from a
#    fresh start or from the checkpoint.
"$LLTRAIN" train "${base[@]}" --run.dir="$tmp/r" --train.steps=4 >"$tmp/r.out" 2>&1
ok $? "a run of 4 steps leaves a checkpoint: $(tail -c 200 "$tmp/r.out")"
sums() { (cd "$tmp/r" && find . -type f ! -name lr_find.jsonl | LC_ALL=C sort | xargs sha256sum); }
sums >"$tmp/before"
"$LLTRAIN" tune-lr "${base[@]}" --run.dir="$tmp/r" --steps 30 >"$tmp/f.out" 2>&1
ok $? "tune-lr runs beside another run's checkpoint: $(tail -c 200 "$tmp/f.out")"
! grep -q 'resumed from' "$tmp/f.out"
ok $? "without --resume it starts from the fresh initialisation"
"$LLTRAIN" tune-lr "${base[@]}" --run.dir="$tmp/r" --steps 30 --resume auto >"$tmp/g.out" 2>&1
ok $? "tune-lr --resume auto runs: $(tail -c 200 "$tmp/g.out")"
grep -q 'resumed from .*step_00000004 at step 4' "$tmp/g.out"
ok $? "--resume auto starts from the checkpoint"
sums | cmp -s - "$tmp/before"
ok $? "every file of the run directory is as it was (checksums), checkpoint, config.ini, metrics.jsonl and tb/ alike"
[ -s "$tmp/r/lr_find.jsonl" ] && [ "$(find "$tmp/r" -type f | wc -l)" = $(($(wc -l <"$tmp/before") + 1)) ]
ok $? "the curve is the one file added"

# 5. Bad options: one line naming the option, exit 2.
expect_brief 2 "--max-lr 0.5: expected a rate above --min-lr 1" "--min-lr above --max-lr is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --min-lr 1 --max-lr 0.5
expect_brief 2 "--max-lr 0.01: expected a rate above --min-lr 0.01" "--min-lr equal to --max-lr is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --min-lr 0.01 --max-lr 0.01
expect_brief 2 "--steps '5': expected an integer in [10, 1000000]" "fewer than 10 steps are refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --steps 5
expect_brief 2 "--min-lr 'tiny': expected a number in [0, 10]" "a rate that is no number is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --min-lr tiny
expect_brief 2 "--min-lr 0: expected a rate above 0" "a rate of 0 is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --min-lr 0
expect_brief 2 "--smooth 1: expected a weight in (0, 1)" "a smoothing weight of 1 is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --smooth 1
expect_brief 2 "--diverge 1: expected a factor above 1" "a divergence factor of 1 is refused" -- \
	tune-lr "${base[@]}" --run.dir="$tmp/bad" --diverge 1
[ ! -e "$tmp/bad" ]
ok $? "a refused command writes nothing"

# 6. train --train.lr=auto: the test, then the run at its suggestion.
"$LLTRAIN" train "${base[@]}" --run.dir="$tmp/a" --train.lr=auto --train.steps=20 \
	--train.warmup_steps=5 >"$tmp/a.out" 2>&1
ok $? "train --train.lr=auto runs: $(tail -c 300 "$tmp/a.out")"
"$PYTHON3" - "$tmp/a" <<'EOF'
import json, re, sys
run = sys.argv[1]
suggested = json.loads(open(run + "/lr_find.jsonl").readlines()[-1])["suggested_lr"]
lr = float(re.search(r"^lr = (.*)$", open(run + "/config.ini").read(), re.M).group(1))
steps = [json.loads(l) for l in open(run + "/metrics.jsonl")]
peak = [o["lr"] for o in steps if o.get("step") == 5 and "lr" in o][0]
assert abs(lr / suggested - 1) < 1e-6, (lr, suggested)
assert abs(peak / suggested - 1) < 1e-6, (peak, suggested)
EOF
ok $? "config.ini holds the suggested rate, and the run reached it at the warmup's end"
grep -q '^train.lr = auto: training at the suggested ' "$tmp/a.out" && grep -q '^suggested lr: ' "$tmp/a.out"
ok $? "the run prints the test's suggestion and says it trains at it"
cp "$tmp/a/lr_find.jsonl" "$tmp/a.curve"
"$LLTRAIN" train "${base[@]}" --run.dir="$tmp/a" --train.lr=auto --train.steps=24 \
	--train.warmup_steps=5 --resume auto >"$tmp/a2.out" 2>&1
ok $? "a resumed run with train.lr = auto runs: $(tail -c 200 "$tmp/a2.out")"
grep -q "the checkpoint's $(sed -n 's/^lr = //p' "$tmp/a/config.ini" | cut -c1-6)" "$tmp/a2.out" &&
	! grep -q '^tune-lr:' "$tmp/a2.out" && cmp -s "$tmp/a/lr_find.jsonl" "$tmp/a.curve"
ok $? "it takes the checkpoint's rate without a second test"
state=$(ls -d "$tmp"/a/checkpoints/step_* | tail -1)/state.json
sed -i 's/\\nlr = [0-9.e-]*\\n/\\nlr = auto\\n/' "$state"
expect_brief 1 "names none: give --train.lr" "a checkpoint whose config says lr = auto is refused on resuming" -- \
	train "${base[@]}" --run.dir="$tmp/a" --train.steps=30 --resume auto

# 7. Over MPI: two data-parallel ranks give the one process's curve
#    bitwise when deterministic; a tensor-parallel pair and a pipeline of
#    two stages run too.
mpi_or_stop
"$LLTRAIN" tune-lr "${base[@]}" --deterministic --run.threads=1 --run.dir="$tmp/m1" --steps 30 \
	>"$tmp/m1.out" 2>&1
ok $? "a deterministic test in one process: $(tail -c 200 "$tmp/m1.out")"
"${launch[@]}" -n 2 "$LLTRAIN" tune-lr "${base[@]}" --deterministic --run.threads=1 \
	--run.dir="$tmp/m2" --steps 30 >"$tmp/m2.out" 2>&1 </dev/null
ok $? "the same test over 2 ranks: $(tail -c 300 "$tmp/m2.out")"
cmp "$tmp/m1/lr_find.jsonl" "$tmp/m2/lr_find.jsonl" >/dev/null
ok $? "their curves and suggestions are the same, byte for byte"
"${launch[@]}" -n 2 "$LLTRAIN" tune-lr "${base[@]}" --tp 2 --run.threads=1 --run.dir="$tmp/m3" \
	--steps 30 --max-lr 0.1 >"$tmp/m3.out" 2>&1 </dev/null
got=$(curve "$tmp/m3/lr_find.jsonl" 1e-6 0.1 30 steps 2>&1)
ok $? "a test over a tensor-parallel pair runs and writes its curve: $got $(tail -c 200 "$tmp/m3.out")"
rm -rf "$tmp/m4"
"${launch[@]}" -n 2 "$LLTRAIN" tune-lr "${base[@]}" --pp 2 --model.tied=false --train.grad_accum=2 \
	--balance auto --run.threads=1 --run.dir="$tmp/m4" --steps 30 --max-lr 0.1 \
	>"$tmp/m4.out" 2>&1 </dev/null
got=$(curve "$tmp/m4/lr_find.jsonl" 1e-6 0.1 30 steps 2>&1) && [ "$(ls -A "$tmp/m4")" = lr_find.jsonl ]
ok $? "a test over a pipeline of 2 stages (--balance auto) runs and writes the curve alone: $got $(tail -c 200 "$tmp/m4.out")"
echo "1..$n"
exit $failed
