#!/bin/bash
# Checks LoRA runs over a base quantized to GGUF blocks (train.lora_base =
# q8_0 or q4_0): the adapters learn, the checkpoint holds the blocks as U8
# tensors as the run holds them, a resumed run is bitwise the uninterrupted
# one, export folds the adapters into the dequantized base (against numpy),
# the refusals are one line each, and the OpenCL backend gives the CPU's
# losses. (check_lora.sh runs its MPI checks over a q8_0 base too.)
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-qlora.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

sed 's/$/\n%/' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus.txt"
"$LLTRAIN" prepare --out "$tmp/data" --vocab 320 --val-fraction 0.2 "$tmp/corpus.txt" \
	>"$tmp/prep.out" 2>&1
ok $? "prepare the test corpus: $(tail -c 200 "$tmp/prep.out")"

STEPS=40
set -- --model.vocab_size=320 --model.dim=64 --model.n_layers=2 --model.n_heads=4 \
	--model.n_kv_heads=2 --model.ffn_dim=128 --model.max_seq=32 --train.seq=32 \
	--train.batch=8 --train.warmup_steps=5 --train.max_minutes=0 --data.dir="$tmp/data" \
	--run.eval_every=0 --run.eval_batches=2 --run.sample_tokens=4 --run.log_every=20 \
	--run.checkpoint_every=20 --run.keep_checkpoints=3 --run.threads=2 \
	--train.lora_rank=8 --train.lora_alpha=16 --train.lora_dropout=0.1 --train.lr=5e-2 \
	--train.lora_base=q4_0
final=checkpoints/step_$(printf %08d $STEPS)

# 1. A q4_0 run: the adapters learn; the checkpoint holds the blocks.
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/A" >"$tmp/A.out" 2>&1
ok $? "a LoRA run over a q4_0 base of $STEPS steps finishes: $(tail -c 200 "$tmp/A.out")"
"${PYTHON3:-python3}" - "$tmp/A/metrics.jsonl" <<'EOF'
import json, sys
loss = [o["loss"] for o in map(json.loads, open(sys.argv[1])) if "loss" in o and "val_loss" not in o]
first, last = sum(loss[:5]) / 5, sum(loss[-10:]) / 10
print("# mean loss of the first 5 steps %.4f, of the last 10 %.4f" % (first, last))
assert last < first - 0.01, (first, last)
EOF
ok $? "the adapters lower the training loss over the frozen q4_0 base"
"${PYTHON3:-python3}" - "$tmp/A/$final/model.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hdr = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
meta = hdr.pop("__metadata__")
assert meta.get("lora_base") == "q4_0", meta
want = {"q_proj": [64, 36], "k_proj": [32, 36], "v_proj": [32, 36], "o_proj": [64, 36],
        "gate_proj": [128, 36], "up_proj": [128, 36], "down_proj": [64, 72]}
for k, v in hdr.items():
    mod = k.split(".")[-2]
    if "lora_" in k or mod not in want:
        assert v["dtype"] == "F32", (k, v)
    else:
        assert v["dtype"] == "U8" and v["shape"] == want[mod], (k, v)
EOF
ok $? "the checkpoint holds each frozen matrix as U8 [rows, 18 bytes per 32 values], lora_base q4_0 in its metadata, the rest F32"

# 2. Resumed: bitwise, in fp32 over q4_0 and in bf16 over q8_0.
"$LLTRAIN" train "$@" --train.steps=$STEPS --run.dir="$tmp/B" \
	--resume "$tmp/A/checkpoints/step_00000020" >"$tmp/B.out" 2>&1 &&
	cmp "$tmp/A/$final/model.safetensors" "$tmp/B/$final/model.safetensors" &&
	cmp "$tmp/A/$final/optimizer.safetensors" "$tmp/B/$final/optimizer.safetensors"
ok $? "a q4_0 run resumed from step 20 ends bitwise as the uninterrupted one: $(tail -c 120 "$tmp/B.out")"
"$LLTRAIN" train "$@" --train.steps=$STEPS --precision bf16 --train.lora_base=q8_0 \
	--run.dir="$tmp/H" >"$tmp/H.out" 2>&1 &&
	"$LLTRAIN" train "$@" --train.steps=$STEPS --precision bf16 --train.lora_base=q8_0 \
		--run.dir="$tmp/H2" --resume "$tmp/H/checkpoints/step_00000020" >"$tmp/H2.out" 2>&1 &&
	cmp "$tmp/H/$final/model.safetensors" "$tmp/H2/$final/model.safetensors" &&
	cmp "$tmp/H/$final/optimizer.safetensors" "$tmp/H2/$final/optimizer.safetensors"
ok $? "a bf16 run over q8_0 too: $(tail -c 120 "$tmp/H2.out")"

# 3. Export: the adapters folded into the dequantized base.
"$LLTRAIN" export "$tmp/A" --out "$tmp/A.hf" >"$tmp/export.out" 2>&1
rc=$?
why=$("${PYTHON3:-python3}" - "$tmp/A/$final/model.safetensors" "$tmp/A.hf/model.safetensors" 2>&1 <<'EOF'
import json, struct, sys
try:
    import numpy as np
except ImportError:
    print("SKIP numpy is not installed")
    sys.exit(0)
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    dt = {"F32": np.float32, "U8": np.uint8}
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=dt[v["dtype"]]).reshape(v["shape"]) for k, v in hdr.items()}
def q4_0(raw):  # GGUF's Q4_0: an f16 scale, then 16 bytes of two nibbles
    blocks = raw.reshape(-1, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
    q = blocks[:, 2:]
    v = np.concatenate([(q & 15).astype(np.float64), (q >> 4).astype(np.float64)], axis=1) - 8
    return (v * d).reshape(raw.shape[0], -1)
ck, ex = tensors(sys.argv[1]), tensors(sys.argv[2])
worst = 0.0
for k, w in ex.items():
    assert w.dtype == np.float32, k
    if ck[k].dtype == np.uint8:
        a = ck[k.replace(".weight", ".lora_A.weight")].astype(np.float64)
        b = ck[k.replace(".weight", ".lora_B.weight")].astype(np.float64)
        want = q4_0(ck[k]) + 16 / 8 * b @ a
        worst = max(worst, float(np.max(np.abs(w - want)) / np.max(np.abs(want))))
    else:
        assert np.array_equal(w, ck[k]), k
print("worst relative difference %.2e" % worst)
assert worst < 1e-6
EOF
)
case $why in
SKIP*) skip "export folds the adapters into the dequantized q4_0 base: ${why#SKIP }" ;;
*) ok $(( rc || $? )) "export folds the adapters into the dequantized q4_0 base (numpy's dequantization of the blocks + (alpha/r) B A): $why" ;;
esac

# 4. Refusals, one line each.
expect_brief 1 "train.lora_base = q4_0 needs train.lora_rank > 0" \
	"a quantized base without adapters is refused in one line" -- \
	train "$@" --train.steps=2 --run.dir="$tmp/C" --train.lora_rank=0
expect_brief 1 "model.ffn_dim = 100 is not a multiple of 32" \
	"a matrix whose input is not whole blocks is refused in one line" -- \
	train "$@" --train.steps=2 --run.dir="$tmp/C" --model.ffn_dim=100
expect_brief 1 "is not the q8_0 blocks the run holds" \
	"resuming a q4_0 checkpoint as a q8_0 run is refused in one line" -- \
	train "$@" --train.steps=$STEPS --run.dir="$tmp/C" --train.lora_base=q8_0 \
	--resume "$tmp/A/checkpoints/step_00000020"

# 5. OpenCL (PoCL in CI): the CPU's losses.
if "$LLTRAIN" info --preset tiny 2>&1 | grep -q "^backend opencl: unavailable\|built without the OpenCL"; then
	skip "OpenCL against the CPU: no OpenCL backend here"
else
	"$LLTRAIN" train "$@" --train.steps=10 --train.lora_dropout=0 --run.dir="$tmp/cpu" \
		>"$tmp/cpu.out" 2>&1 &&
		"$LLTRAIN" train "$@" --train.steps=10 --train.lora_dropout=0 --run.device=opencl \
			--run.dir="$tmp/cl" >"$tmp/cl.out" 2>&1
	rc=$?
	why=$(same_losses "$tmp/cpu/metrics.jsonl" "$tmp/cl/metrics.jsonl" 10 1e-4)
	ok $(( rc || $? )) "a q4_0 run on OpenCL gives the CPU's losses within 1e-4 over 10 steps: $why $(tail -c 100 "$tmp/cl.out")"
fi

echo "1..$n"
exit $failed
