#!/bin/bash
# Checks LoRA runs of `lltrain train`: a run with adapters lowers the loss,
# its checkpoint holds the adapters under PEFT's names beside the frozen
# base, a run resumed from it is bitwise the uninterrupted one (fp32 and
# bf16, with dropout), a checkpoint of adapters of another rank is refused
# in one line naming the tensor and both shapes, and over MPI 2 ranks at
# ZeRO 1 give one process's losses (bitwise with --deterministic, at ZeRO 0 too, also
# resumed at another rank count and stage, and with --balance auto moving
# sequences between the ranks), as does a mixed job of an OpenCL rank and
# a CPU rank at ZeRO 2 with --balance auto; the MPI checks run over an f32
# base and over one in q8_0 blocks (train.lora_base).
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-lora.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
	>"$tmp/prep.out" 2>&1
ok $? "prepare the test corpus: $(tail -c 300 "$tmp/prep.out")"

STEPS=60
set -- --model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4 \
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32 \
	--train.batch=8 --train.warmup_steps=5 --train.max_minutes=0 --data.dir="$tmp/data" \
	--run.eval_every=0 --run.eval_batches=2 --run.sample_tokens=4 --run.log_every=20 \
	--run.checkpoint_every=20 --run.keep_checkpoints=3 --run.threads=2 \
	--train.lora_rank=8 --train.lora_alpha=16 --train.lora_dropout=0.1 --train.lr=5e-2
final=checkpoints/step_$(printf %08d $STEPS)

# 1. A run with adapters: the loss goes down, the checkpoint holds them.
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/A" >"$tmp/A.out" 2>&1
ok $? "a LoRA run of $STEPS steps finishes: $(tail -c 300 "$tmp/A.out")"
python3 - "$tmp/A/metrics.jsonl" <<'EOF'
import json, sys
loss = [o["loss"] for o in map(json.loads, open(sys.argv[1])) if "loss" in o and "val_loss" not in o]
first, last = sum(loss[:5]) / 5, sum(loss[-10:]) / 10
print("# mean loss of the first 5 steps %.4f, of the last 10 %.4f" % (first, last))
assert last < first - 0.01, (first, last)
EOF
ok $? "the adapters lower the training loss (the base's random weights frozen)"
grep -q "gradient buffer 16384 of 16384 elements" "$tmp/A.out"
ok $? "the trainable buffer holds only the adapters, 2 layers x 8 x ((64+64) + 2 (64+32) + (64+64) + 3 (64+128)) = 16384: $(grep -m1 '^memory' "$tmp/A.out")"
python3 - "$tmp/A/$final/model.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hdr = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
hdr.pop("__metadata__", None)
a = hdr["model.layers.1.self_attn.k_proj.lora_A.weight"]
bb = hdr["model.layers.1.self_attn.k_proj.lora_B.weight"]
assert a["shape"] == [8, 64] and bb["shape"] == [32, 8], (a, bb)
assert hdr["model.layers.1.mlp.down_proj.weight"]["shape"] == [64, 128]
assert len([k for k in hdr if "lora_" in k]) == 2 * 7 * 2, len(hdr)
EOF
ok $? "the checkpoint holds the adapters (lora_A [r, in], lora_B [out, r]) and the frozen base"

"$LLTRAIN" export "$tmp/A" --out "$tmp/A.hf" >"$tmp/export.out" 2>&1
rc=$?
python3 - "$tmp/A/$final/model.safetensors" "$tmp/A.hf/model.safetensors" <<'EOF'
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in hdr.items()}
ck, ex = tensors(sys.argv[1]), tensors(sys.argv[2])
base = {k for k in ck if "lora_" not in k}
assert set(ex) == base, sorted(set(ex) ^ base)
changed = [k for k in base if ex[k] != ck[k]]
assert sorted(changed) == sorted(k for k in base if k.endswith("_proj.weight")), changed
EOF
ok $(( rc || $? )) "export folds the adapters into the base: the HF file holds the base's names, every adapted matrix changed, the rest as they were: $(tail -c 200 "$tmp/export.out")"

# 2. Resumed from step 40 in another directory: bitwise the same.
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/B" \
	--resume "$tmp/A/checkpoints/step_00000040" >"$tmp/B.out" 2>&1 &&
	cmp "$tmp/A/$final/model.safetensors" "$tmp/B/$final/model.safetensors" &&
	cmp "$tmp/A/$final/optimizer.safetensors" "$tmp/B/$final/optimizer.safetensors"
ok $? "a LoRA run resumed from step 40 ends bitwise as the uninterrupted one: $(tail -c 200 "$tmp/B.out")"
"$LLTRAIN" train "$@" --train.steps=$STEPS --precision bf16 --run.dir="$tmp/H" >"$tmp/H.out" 2>&1 &&
	"$LLTRAIN" train "$@" --train.steps=$STEPS --precision bf16 --run.dir="$tmp/H2" \
		--resume "$tmp/H/checkpoints/step_00000040" >"$tmp/H2.out" 2>&1 &&
	cmp "$tmp/H/$final/model.safetensors" "$tmp/H2/$final/model.safetensors" &&
	cmp "$tmp/H/$final/optimizer.safetensors" "$tmp/H2/$final/optimizer.safetensors"
ok $? "in bf16 too: $(tail -c 200 "$tmp/H2.out")"
python3 - "$tmp/H/$final/model.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hdr = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
hdr.pop("__metadata__", None)
for k, v in hdr.items():
    assert v["dtype"] == ("F32" if "lora_" in k else "BF16"), (k, v)
EOF
ok $? "a bf16 LoRA checkpoint holds the base as the run does, in BF16, and the adapters in F32"

# 3. Adapters of another rank: one line naming the tensor and both shapes.
expect_brief 1 "lora_A.weight has shape [8, 64], the model expects [4, 64]" \
	"a checkpoint with adapters of another rank is refused naming the tensor and both shapes" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/C" --train.lora_rank=4 \
	--resume "$tmp/A/checkpoints/step_00000040"
expect_brief 1 "train.lora_targets = 'q,x': 'x' is not a target" \
	"an unknown target is refused in one line naming the key" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/C" --train.lora_targets=q,x

# 3b. From a pretrained model (train.init): a plain run's weights become the frozen base,
# the adapters start as lltrain draws them, and they learn; a run that has adapters is
# no base to start from.
"$LLTRAIN" train "$@" --train.lora_rank=0 --train.steps=20 --run.dir="$tmp/P" >"$tmp/P.out" 2>&1 &&
	"$LLTRAIN" train "$@" --init "$tmp/P" --train.steps=20 --run.dir="$tmp/Q" >"$tmp/Q.out" 2>&1
ok $? "a LoRA run starts from a plain run's weights (--init): $(tail -c 200 "$tmp/Q.out")"
python3 - "$tmp/Q/metrics.jsonl" <<'EOF'
import json, sys
steps = [o for o in map(json.loads, open(sys.argv[1])) if "loss" in o and "val_loss" not in o]
print("# first grad norm %.4g; loss %.4f -> %.4f" % (steps[0]["grad_norm"], steps[0]["loss"],
                                                   steps[-1]["loss"]))
assert steps[0]["grad_norm"] > 0 and steps[-1]["loss"] < steps[0]["loss"]
EOF
ok $? "its adapters have gradients from the first step and lower the loss"
expect_brief 1 "holds LoRA adapter model.layers.0.self_attn.q_proj.lora_A.weight" \
	"--init from a run with adapters is refused in one line" -- \
	train "$@" --init "$tmp/A" --train.steps=2 --run.dir="$tmp/R"

# 4. Under MPI.
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI' || ! command -v "$MPIEXEC" >/dev/null; then
	for base in f32 q8_0; do
		for what in "2 ranks at ZeRO 1" "--deterministic at 2 ranks" "ZeRO 0" "resharded" \
			"--balance auto at 2 ranks" "an OpenCL rank and a CPU rank"; do
			skip "$base base: $what: no MPI build or no $MPIEXEC on PATH"
		done
	done
	echo "1..$n"
	exit $failed
fi
launch=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$MPIEXEC")
if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
	launch+=(--oversubscribe --allow-run-as-root)
fi
# Every check of this section runs over each frozen base: the default
# (f32) and GGUF q8_0 blocks (train.lora_base).
mpi_checks() {
	local base=$1 rc rc2 why began limit
	shift
	set -- "$@" --train.lora_base=$base
	# (a rate at which 30 steps do not amplify the sums' rounding past 1e-5)
	set -- "$@" --train.lora_dropout=0 --train.lr=3e-3 --run.threads=1 --train.steps=30 --run.checkpoint_every=10
	"$LLTRAIN" train "$@" --run.dir="$tmp/$base-one" >"$tmp/$base-one.out" 2>&1
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --zero 1 --run.dir="$tmp/$base-two" >"$tmp/$base-two.out" 2>&1 </dev/null
	rc=$?
	why=$(same_losses "$tmp/$base-one/metrics.jsonl" "$tmp/$base-two/metrics.jsonl" 30 1e-5)
	ok $(( rc || $? )) "$base base: 2 ranks at ZeRO 1 give one process's LoRA losses within 1e-5 (exit $rc): $why"
	"$LLTRAIN" train "$@" --deterministic --run.dir="$tmp/$base-d1" >"$tmp/$base-d1.out" 2>&1 &&
		"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --deterministic --zero 1 --run.dir="$tmp/$base-d2" \
			>"$tmp/$base-d2.out" 2>&1 </dev/null &&
		cmp "$tmp/$base-d1/checkpoints/step_00000030/model.safetensors" \
			"$tmp/$base-d2/checkpoints/step_00000030/model.safetensors"
	ok $? "$base base: --deterministic: 2 ranks at ZeRO 1 end bitwise as one process: $(tail -c 200 "$tmp/$base-d2.out")"
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --deterministic --zero 0 --run.dir="$tmp/$base-z0" \
		>"$tmp/$base-z0.out" 2>&1 </dev/null &&
		cmp "$tmp/$base-d1/checkpoints/step_00000030/model.safetensors" \
			"$tmp/$base-z0/checkpoints/step_00000030/model.safetensors"
	ok $? "$base base: --deterministic: 2 ranks at ZeRO 0 end bitwise as one process too"
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --deterministic --zero 2 --run.dir="$tmp/$base-d3" \
		--resume "$tmp/$base-d2/checkpoints/step_00000020" >"$tmp/$base-d3.out" 2>&1 </dev/null &&
		cmp "$tmp/$base-d1/checkpoints/step_00000030/model.safetensors" \
			"$tmp/$base-d3/checkpoints/step_00000030/model.safetensors" &&
		"$LLTRAIN" train "$@" --deterministic --run.dir="$tmp/$base-d4" \
			--resume "$tmp/$base-d2/checkpoints/step_00000020" >"$tmp/$base-d4.out" 2>&1 &&
		cmp "$tmp/$base-d1/checkpoints/step_00000030/optimizer.safetensors" \
			"$tmp/$base-d4/checkpoints/step_00000030/optimizer.safetensors"
	ok $? "$base base: resharded: ZeRO 1 over 2 ranks resumed at ZeRO 2 and at 1 process, bitwise: $(tail -c 200 "$tmp/$base-d3.out")"
	# --balance auto compares the ranks every 2 steps and moves sequences
	# between them; with --deterministic the adapters stay one process's bits.
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --deterministic --zero 2 --balance auto \
		--dist.balance_every=2 --run.dir="$tmp/$base-b2" >"$tmp/$base-b2.out" 2>&1 </dev/null &&
		grep -q '^balance: ' "$tmp/$base-b2.out" &&
		cmp "$tmp/$base-d1/checkpoints/step_00000030/model.safetensors" \
			"$tmp/$base-b2/checkpoints/step_00000030/model.safetensors"
	ok $? "$base base: --balance auto at 2 ranks, ZeRO 2, deterministic: the adapters end bitwise as one process's ($(grep -c '^balance: ' "$tmp/$base-b2.out") share lines)"

	# A mixed job (an MPMD launch): rank 0 on OpenCL (PoCL in CI), rank 1 on
	# the CPU, ZeRO 2, --balance auto, which moves sequences to the faster
	# CPU rank; the losses follow one process's. The watchdog's limit comes
	# from one OpenCL process of the same work (see check_mpi.sh).
	if ! "$LLTRAIN" info 2>/dev/null | grep -q '^  opencl:'; then
		skip "$base base: an OpenCL rank and a CPU rank: this lltrain lists no OpenCL device"
	else
		set -- "$@" --train.steps=10 --train.grad_accum=2
		"$LLTRAIN" train "$@" --run.dir="$tmp/$base-m1" >"$tmp/$base-m1.out" 2>&1
		began=$(date +%s)
		"$LLTRAIN" train "$@" --run.device=opencl --run.dir="$tmp/$base-mc" >"$tmp/$base-mc.out" 2>&1
		limit=$(( ($(date +%s) - began + 1) * 6 ))
		[ $limit -lt 30 ] && limit=30
		"${launch[@]}" -n 1 "$LLTRAIN" train "$@" --zero 2 --balance auto --dist.balance_every=2 \
			--comm-timeout $limit --run.device=opencl --run.dir="$tmp/$base-mx" : \
			-n 1 "$LLTRAIN" train "$@" --zero 2 --balance auto --dist.balance_every=2 \
			--comm-timeout $limit --run.device=cpu --run.dir="$tmp/$base-mx" >"$tmp/$base-mx.out" 2>&1 </dev/null
		rc=$?
		why=$(same_losses "$tmp/$base-m1/metrics.jsonl" "$tmp/$base-mx/metrics.jsonl" 10 1e-5)
		rc2=$?
		grep -q "^balance: .* ms/step before, [0-9]* ms expected$" "$tmp/$base-mx.out"
		ok $(( rc || rc2 || $? )) "$base base: an OpenCL rank and a CPU rank, ZeRO 2, --balance auto: LoRA losses within 1e-5 of one process's (exit $rc): $why; $(grep -m1 '^balance' "$tmp/$base-mx.out" | cut -c 1-200)"
	fi
}
mpi_checks_all() {
	for base in f32 q8_0; do
		mpi_checks $base "$@"
	done
}
mpi_checks_all "$@"

echo "1..$n"
exit $failed
