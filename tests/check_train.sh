#!/bin/bash
# Checks `lltrain train` as a run: the run directory it writes, resuming
# after SIGKILL bitwise equal to an uninterrupted run, SIGINT and SIGTERM
# saving a checkpoint, non-finite losses skipped then aborting, and the bad
# inputs a run meets (a corrupt shard, a tokenizer of another vocabulary, a
# checkpoint of another shape, a disk that fills during a save).
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-train.XXXXXX") || exit 1
trap 'kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
pid=
. "$(dirname "$0")/tap.sh"

# Waits until FILE exists (up to 60 s); 0 when it does.
wait_for() {
	for _ in $(seq 600); do
		[ -e "$1" ] && return 0
		kill -0 "$pid" 2>/dev/null || { [ -e "$1" ]; return; }
		sleep 0.1
	done
	return 1
}

# A corpus of one document per line of the test text.
sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
	>"$tmp/prep.out" 2>&1
ok $? "prepare the test corpus: $(tail -c 300 "$tmp/prep.out")"

# A small model whose steps take milliseconds.
STEPS=300
set -- --model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4 \
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32 \
	--train.batch=8 --train.warmup_steps=10 --train.max_minutes=0 --data.dir="$tmp/data" \
	--run.eval_every=100 --run.eval_batches=2 --run.sample_tokens=16 --run.log_every=100 \
	--run.checkpoint_every=20 --run.keep_checkpoints=2 --run.threads=2
final=checkpoints/step_$(printf %08d $STEPS)

# 1. An uninterrupted run: the reference.
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/A" >"$tmp/A.out" 2>&1
ok $? "an uninterrupted run of $STEPS steps finishes: $(tail -c 300 "$tmp/A.out")"
for f in config.ini metrics.jsonl "$final/model.safetensors" "$final/optimizer.safetensors" \
	"$final/state.json" "$final/tokenizer.json"; do
	[ -s "$tmp/A/$f" ]
	ok $? "the run directory holds $f"
done
kept=$(ls -d "$tmp"/A/checkpoints/step_* 2>/dev/null | wc -l)
[ "$kept" = 2 ]
ok $? "run.keep_checkpoints=2 keeps 2 checkpoints (found $kept)"
grep -q 'validation loss' "$tmp/A.out" && grep -q -- '--- sample at step' "$tmp/A.out"
ok $? "the run prints its validation loss and a sample"
python3 - "$tmp/A/metrics.jsonl" $STEPS <<'EOF'
import json, sys
steps = {}
evals = 0
for line in open(sys.argv[1]):
    o = json.loads(line)
    if "val_loss" in o:
        evals += 1
        continue
    for k in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "tflops", "elapsed",
              "compute_s", "update_s"):
        assert k in o, "missing %s in %s" % (k, line)
    assert o["compute_s"] > 0 and o["update_s"] > 0, line  # each step updates
    steps[o["step"]] = steps.get(o["step"], 0) + 1
want = int(sys.argv[2])
assert sorted(steps) == list(range(1, want + 1)), "steps logged: %d" % len(steps)
assert evals >= 3, "evaluations logged: %d" % evals
EOF
ok $? "metrics.jsonl holds one line per step with loss, lr, grad norm, tokens/s, TFLOP/s, elapsed, forward + backward and update seconds, and the evaluations"
"$LLTRAIN" train --config "$tmp/A/config.ini" --run.dir="$tmp/A2" --train.steps=3 \
	>"$tmp/A2.out" 2>&1 && cmp -s <(grep -v '^dir = ' "$tmp/A/config.ini") \
	<(sed 's/^steps = 3$/steps = '$STEPS'/' "$tmp/A2/config.ini" | grep -v '^dir = ')
ok $? "the saved config.ini, read back with --config, resolves to the same config"

# 2. SIGKILL mid-way, then --resume auto: bitwise the uninterrupted run.
#    metrics.jsonl is a pipe with a small buffer, read line by line, so the
#    run cannot get far ahead of the reader: it is killed after step 50 (with
#    a checkpoint at 40, maybe 60) however fast the machine. The lines it
#    wrote are kept as the file would have held them.
mkdir -p "$tmp/B"
mkfifo "$tmp/B/metrics.jsonl"
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/B" >"$tmp/B.out" 2>&1 &
pid=$!
python3 - "$tmp/B/metrics.jsonl" $pid <<'EOF'
import fcntl, json, os, signal, sys
path, pid = sys.argv[1], int(sys.argv[2])
lines = []
with open(path) as f:
    fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    for line in f:
        lines.append(line)
        if json.loads(line).get("step") == 50 and "val_loss" not in line:
            os.kill(pid, signal.SIGKILL)
            lines.extend(f.readlines())
            break
os.unlink(path)
open(path, "w").writelines(lines)
EOF
wait $pid 2>/dev/null
killed=$?
[ "$killed" = 137 ] && [ ! -e "$tmp/B/$final" ] && [ -e "$tmp/B/checkpoints/step_00000040" ]
ok $? "a run killed with SIGKILL after step 50 (exit $killed) left its step-40 checkpoint and no final one"
expect 0 "resumed from" "--resume auto continues the killed run" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/B" --resume auto
cmp "$tmp/A/$final/model.safetensors" "$tmp/B/$final/model.safetensors" &&
	cmp "$tmp/A/$final/optimizer.safetensors" "$tmp/B/$final/optimizer.safetensors"
ok $? "the resumed run's final parameters and moments are bitwise the uninterrupted run's"
python3 - "$tmp/A/metrics.jsonl" "$tmp/B/metrics.jsonl" <<'EOF'
import json, sys
def losses(p):
    return [(o["step"], o["loss"]) for o in map(json.loads, open(p)) if "val_loss" not in o]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert a == b, "step losses differ"
EOF
ok $? "the resumed run's metrics.jsonl has each step once, with the uninterrupted run's losses"

# 3. SIGINT and SIGTERM save a checkpoint and exit 0.
for sig in INT TERM; do
	"$LLTRAIN" train "$@" --train.steps=100000 --run.dir="$tmp/$sig" >"$tmp/$sig.out" 2>&1 &
	pid=$!
	wait_for "$tmp/$sig/checkpoints/step_00000020" && sleep 0.3
	kill -$sig $pid
	wait $pid
	status=$?
	saved=$(ls -d "$tmp/$sig"/checkpoints/step_* 2>/dev/null | tail -1)
	[ "$status" = 0 ] && grep -q "saving a checkpoint" "$tmp/$sig.out" &&
		[ -s "$saved/state.json" ] && [ "$saved" != "$tmp/$sig/checkpoints/step_00000020" ]
	ok $? "SIG$sig saves a checkpoint at the step it arrived ($(basename "$saved")) and exits 0 (exit $status)"
done
pid=

# 4. Bad inputs, each one line naming the file and the problem.
ck="$tmp/A/$final"
expect 1 "the model expects" "a checkpoint of another shape is refused, naming the tensor" -- \
	train "$@" --model.dim=96 --run.dir="$tmp/A" --resume "$ck"
cp -r "$tmp/data" "$tmp/badhead"
printf 'XXXXXXXX' | dd of="$tmp/badhead/train_0000.bin" conv=notrunc 2>/dev/null
expect 1 "badhead/train_0000.bin: not a token shard" "a shard with a wrong header is refused, naming it" -- \
	train "$@" --data.dir="$tmp/badhead" --run.dir="$tmp/C" --train.steps=2
"$LLTRAIN" prepare --out "$tmp/data2" --vocab 300 --val-fraction 0.2 "$tmp/corpus.txt" >/dev/null 2>&1
cp -r "$tmp/data" "$tmp/mixed"
cp "$tmp/data2/tokenizer.json" "$tmp/mixed/tokenizer.json"
expect 1 "train_0000.bin: vocabulary 320, the tokenizer has" \
	"shards of another vocabulary than the tokenizer are refused" -- \
	train "$@" --data.dir="$tmp/mixed" --run.dir="$tmp/D" --train.steps=2
expect 1 "holds checkpoints of an earlier run" "a new run over an old one is refused" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/A"
expect 1 "No such file or directory" "--resume of a missing checkpoint names it" -- \
	train "$@" --run.dir="$tmp/E" --resume "$tmp/nowhere"

# A disk that fills during a save: a file size limit makes the write fail.
cp -r "$tmp/B/$final" "$tmp/before"
(ulimit -f 200; exec "$LLTRAIN" train "$@" --train.steps=$((STEPS + 20)) --run.dir="$tmp/B" \
	--resume auto) >"$tmp/full.out" 2>&1
status=$?
[ "$status" = 1 ] && grep -q "\(model\|optimizer\)\.safetensors: .*File too large" "$tmp/full.out"
ok $? "a save that runs out of room fails with exit 1 and a message naming the write: $(grep lltrain: "$tmp/full.out" | head -1)"
cmp -s "$tmp/before/model.safetensors" "$tmp/B/$final/model.safetensors" &&
	cmp -s "$tmp/before/optimizer.safetensors" "$tmp/B/$final/optimizer.safetensors" &&
	! ls -d "$tmp"/B/checkpoints/.tmp* >/dev/null 2>&1
ok $? "the previous checkpoint is intact and no temporary directory is left"

# A real full disk: a small tmpfs in a private mount namespace, where the
# system allows one.
mkdir -p "$tmp/small"
if unshare -rm true 2>/dev/null; then
	used=$(du -sk "$tmp/B" | cut -f1)
	unshare -rm bash -c '
		t=$1 lltrain=$2 final=$3
		mount -t tmpfs -o size=$(($4 + 300))k tmpfs "$t/small" || exit 3
		cp -r "$t/B" "$t/small/B" || exit 3
		shift 4
		"$lltrain" train "$@" --resume auto >"$t/enospc.out" 2>&1
		echo $? >"$t/enospc.status"
		cmp -s "$t/before/model.safetensors" "$t/small/B/$final/model.safetensors" &&
			! ls -d "$t"/small/B/checkpoints/.tmp* >/dev/null 2>&1
		' sh "$tmp" "$LLTRAIN" "$final" "$used" "$@" --train.steps=$((STEPS + 20)) \
		--run.dir="$tmp/small/B"
	intact=$?
	status=$(cat "$tmp/enospc.status" 2>/dev/null)
	[ "$status" = 1 ] && grep -q "No space left on device" "$tmp/enospc.out"
	ok $? "a save onto a full file system fails with exit 1, naming the write: $(grep lltrain: "$tmp/enospc.out" | head -1)"
	ok $intact "after the full-disk failure the previous checkpoint is intact, no temporary left"
else
	skip "no private mount namespace here (unshare -rm refused) for a small tmpfs"
	skip "no private mount namespace here (unshare -rm refused) for a small tmpfs"
fi

# 5. A checkpoint whose weights are NaN: every step is skipped and logged,
#    and the run stops after train.max_bad_steps of them.
cp -r "$tmp/A" "$tmp/N"
python3 - "$tmp/N/$final" <<'EOF'
import json, struct, sys, zlib
d = sys.argv[1]
p = d + "/model.safetensors"
b = bytearray(open(p, "rb").read())
hl = struct.unpack("<Q", b[:8])[0]
hdr = json.loads(b[8:8 + hl])
name = "model.norm.weight"
lo, hi = hdr[name]["data_offsets"]
b[8 + hl + lo:8 + hl + hi] = struct.pack("<f", float("nan")) * ((hi - lo) // 4)
open(p, "wb").write(b)
s = json.load(open(d + "/state.json"))
s["files"]["model.safetensors"]["crc32"] = "%08x" % zlib.crc32(bytes(b))
json.dump(s, open(d + "/state.json", "w"))
EOF
expect 1 "3 steps in a row had a non-finite loss" "non-finite losses are skipped, then the run aborts" -- \
	train "$@" --train.steps=$((STEPS + 10)) --train.max_bad_steps=3 --run.dir="$tmp/N" --resume auto
[ "$(grep -c '"skipped":true' "$tmp/N/metrics.jsonl")" = 3 ]
ok $? "each skipped step is logged in metrics.jsonl"

# 6. Using the trained model: sample and eval on its checkpoint.
expect 0 "tokens/s" "sample generates from the run's newest checkpoint" -- \
	sample --max-tokens 12 --seed 3 "$tmp/A"
long=$(head -c 2000 "$top_srcdir/tests/data/tiny_corpus.txt")
expect 1 "exceeds the context of 32 tokens" "a prompt longer than the context is refused" -- \
	sample --prompt "$long" "$tmp/A"
"$LLTRAIN" eval --json "$tmp/A" >"$tmp/eval.json" 2>"$tmp/eval.err"
ok $? "eval --json runs on the run's checkpoint: $(cat "$tmp/eval.err")"
python3 - "$tmp/eval.json" "$tmp/A/metrics.jsonl" <<'EOF'
import json, math, sys
e = json.load(open(sys.argv[1]))
last = [o for o in map(json.loads, open(sys.argv[2])) if "val_loss" in o][-1]
assert abs(e["loss"] - last["val_loss"]) <= 1e-4 * last["val_loss"], (e, last)
assert abs(e["perplexity"] - math.exp(e["loss"])) <= 1e-6 * e["perplexity"], e
EOF
ok $? "eval's loss equals the run's final validation loss, perplexity = exp(loss)"
expect 1 "vocabulary" "eval on a shard of another vocabulary is refused" -- \
	eval --data "$tmp/data2/val_0000.bin" "$tmp/A"

# 7. bf16: a run resumed from its checkpoint is bitwise the uninterrupted
#    one, as in fp32; checkpoints hold fp32 weights, so a run resumes in the
#    other precision; a precision that does not exist is one line.
"$LLTRAIN" train "$@" --precision bf16 --train.steps=60 --run.dir="$tmp/H" >"$tmp/H.out" 2>&1
ok $? "a bf16 run of 60 steps finishes: $(tail -c 300 "$tmp/H.out")"
expect 0 "resumed from" "a bf16 run resumes from its step-40 checkpoint in another directory" -- \
	train "$@" --train.steps=60 --run.dir="$tmp/H2" --resume "$tmp/H/checkpoints/step_00000040"
cmp "$tmp/H/checkpoints/step_00000060/model.safetensors" \
	"$tmp/H2/checkpoints/step_00000060/model.safetensors" &&
	cmp "$tmp/H/checkpoints/step_00000060/optimizer.safetensors" \
		"$tmp/H2/checkpoints/step_00000060/optimizer.safetensors" &&
	grep -qx 'precision = bf16' "$tmp/H2/config.ini"
ok $? "the resumed bf16 run's final parameters and moments are bitwise the uninterrupted run's"
python3 - "$tmp/H/checkpoints/step_00000060/model.safetensors" <<'EOF2'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hdr = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
hdr.pop("__metadata__", None)
assert {v["dtype"] for v in hdr.values()} == {"F32"}, hdr
EOF2
ok $? "a bf16 run's checkpoint holds F32 master weights"
expect 0 "resumed from" "the bf16 checkpoint resumes in fp32" -- \
	train "$@" --train.steps=80 --run.dir="$tmp/H3" --precision fp32 \
	--resume "$tmp/H/checkpoints/step_00000060"
grep -qx 'precision = fp32' "$tmp/H3/config.ini"
ok $? "the fp32 resume records precision = fp32 in its config.ini"
expect 0 "resumed from" "an fp32 checkpoint resumes in bf16" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/H4" --precision bf16 \
	--resume "$tmp/A/checkpoints/step_00000280"
python3 - "$tmp/A/metrics.jsonl" "$tmp/H4/metrics.jsonl" <<'EOF2'
import json, sys
def losses(p):
    return {o["step"]: o["loss"] for o in map(json.loads, open(p)) if "val_loss" not in o}
a, h = losses(sys.argv[1]), losses(sys.argv[2])
steps = [s for s in h if s > 280]
assert len(steps) == 20, steps
worst = max(abs(h[s] - a[s]) / a[s] for s in steps)
print("# worst relative difference of the 20 bf16 step losses from fp32's: %.4f" % worst)
assert worst < 0.05, worst
EOF2
ok $? "the 20 steps resumed in bf16 have losses within 5% of the fp32 run's"
expect_brief 2 "train.precision 'fp16': expected one of fp32 or bf16" \
	"an unknown precision is one line naming the key and the choices" -- \
	train "$@" --precision fp16 --train.steps=1 --run.dir="$tmp/H5"
[ ! -e "$tmp/H5" ]
ok $? "and the refused run wrote nothing"

echo "1..$n"
exit $failed
