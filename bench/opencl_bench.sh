#!/bin/sh
# lltrain's OpenCL training speed and memory next to PyTorch's on the same
# GPU, in one run: 4096^3 GEMMs (fp32; TF32 on tensor cores where the device
# has them; bf16 operands), the 15M, 110M and 1B presets (fp32, AdamW), the 110M preset
# with train.matmul = tf32 and with train.precision = bf16, the 1B preset
# in bf16 with recompute at batch 8 x 2048 tokens (its memory), then a
# per-op profile of the 110M step.
#   bench/opencl_bench.sh [LLTRAIN [DEVICE]]     (defaults ./lltrain, opencl)
# PyTorch's figures need python3 with torch + transformers and a CUDA GPU;
# without them only lltrain's are printed. On an H100 or H200, run it with
# LLTRAIN_GEMM_WGMMA=1 in the environment to measure the wgmma GEMMs.
set -u
LLTRAIN=${1:-./lltrain}
DEVICE=${2:-opencl}
here=$(dirname "$0")
have_torch=no
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
	have_torch=yes
fi

for matmul in fp32 tf32; do
	echo "== gemm 4096^3, $matmul"
	"$LLTRAIN" bench --device "$DEVICE" --gemm 4096 --train.matmul=$matmul ||
		echo "lltrain bench --gemm 4096 failed"
	if [ "$have_torch" = yes ]; then
		python3 "$here/pytorch_reference.py" --gemm 4096 --device cuda --dtype $matmul ||
			echo "pytorch_reference.py --gemm 4096 failed"
	fi
done
echo "== gemm 4096^3, bf16 operands"
"$LLTRAIN" bench --device "$DEVICE" --gemm 4096 --train.precision=bf16 ||
	echo "lltrain bench --gemm 4096 --train.precision=bf16 failed"
if [ "$have_torch" = yes ]; then
	python3 "$here/pytorch_reference.py" --gemm 4096 --device cuda --dtype bf16 ||
		echo "pytorch_reference.py --gemm 4096 --dtype bf16 failed"
fi
for preset in 15M 110M 1B; do
	echo "== preset $preset"
	"$LLTRAIN" bench --preset "$preset" --device "$DEVICE" --steps 5 --sample-tokens 0 ||
		echo "lltrain bench --preset $preset failed"
	if [ "$have_torch" = yes ]; then
		python3 "$here/pytorch_reference.py" --preset "$preset" --device cuda --steps 5 ||
			echo "pytorch_reference.py --preset $preset failed"
	else
		echo "pytorch: skipped (no torch + transformers with CUDA here)"
	fi
done
echo "== preset 110M, train.matmul = tf32"
"$LLTRAIN" bench --preset 110M --device "$DEVICE" --steps 5 --sample-tokens 0 --train.matmul=tf32 ||
	echo "lltrain bench --preset 110M --train.matmul=tf32 failed"
if [ "$have_torch" = yes ]; then
	python3 "$here/pytorch_reference.py" --preset 110M --device cuda --steps 5 --dtype tf32 ||
		echo "pytorch_reference.py --preset 110M --dtype tf32 failed"
fi
echo "== preset 110M, train.precision = bf16"
"$LLTRAIN" bench --preset 110M --device "$DEVICE" --steps 5 --sample-tokens 0 --train.precision=bf16 ||
	echo "lltrain bench --preset 110M --train.precision=bf16 failed"
if [ "$have_torch" = yes ]; then
	python3 "$here/pytorch_reference.py" --preset 110M --device cuda --steps 5 --dtype bf16 ||
		echo "pytorch_reference.py --preset 110M --dtype bf16 failed"
fi
echo "== preset 1B, batch 8 x seq 2048, bf16 with train.recompute = block"
"$LLTRAIN" bench --preset 1B --device "$DEVICE" --steps 3 --sample-tokens 0 --batch 8 --seq 2048 \
	--train.precision=bf16 --train.recompute=block ||
	echo "lltrain bench --preset 1B --train.precision=bf16 --train.recompute=block failed"
if [ "$have_torch" = yes ]; then
	python3 "$here/pytorch_reference.py" --preset 1B --device cuda --steps 3 --dtype bf16 ||
		echo "pytorch_reference.py --preset 1B --dtype bf16 failed"
fi
echo "== profile of the 110M step"
"$LLTRAIN" bench --preset 110M --device "$DEVICE" --steps 3 --sample-tokens 0 --profile
