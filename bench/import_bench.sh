#!/bin/sh
# A 1B-class model imported from Hugging Face's format and fine-tuned:
# bench/make_hf_model.py writes a random model of TinyLlama-1.1B's shape
# (bf16 safetensors, 2.2 GB), then lltrain bench imports it with
# --train.init and times full fine-tuning against LoRA (rank 16, every
# target), printing tokens/s, peak memory and trainable parameters.
#   bench/import_bench.sh [LLTRAIN [DEVICE [SHAPE [BATCH [SEQ]]]]]
#       (defaults ./lltrain, opencl, 1B, 4, 2048; a 24 GB GPU or more)
# Memory is lltrain's peak device memory on an OpenCL device and the
# process's peak RSS on the CPU. Takes a few minutes on a GPU.
set -u
LLTRAIN=${1:-./lltrain}
DEVICE=${2:-opencl}
SHAPE=${3:-1B}
BATCH=${4:-4}
SEQ=${5:-2048}
here=$(dirname "$0")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-import.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

python3 "$here/make_hf_model.py" "$tmp/model" --shape "$SHAPE" || exit 1
# field LABEL FILE: the first number after "LABEL:" in FILE.
field() {
	awk -v label="$1" 'index($0, label ":") == 1 {
		sub(/^[^:]*: */, ""); print $1 + 0; exit }' "$2"
}
memory() {
	case $DEVICE in
	cpu) field "peak RSS" "$1" ;;
	*) field "peak device mem" "$1" ;;
	esac
}

for mode in full lora; do
	case $mode in
	full) extra="" ;;
	lora) extra="--train.lora_rank=16 --train.lora_alpha=32 --train.lora_targets=q,k,v,o,gate,up,down" ;;
	esac
	for rc in none block; do
		echo "== $SHAPE imported, $mode fine-tuning, bf16, recompute $rc, batch $BATCH x seq $SEQ"
		# shellcheck disable=SC2086
		if ! "$LLTRAIN" bench --device "$DEVICE" --train.init="$tmp/model" --steps 3 \
			--sample-tokens 0 --batch "$BATCH" --seq "$SEQ" --train.precision=bf16 \
			--train.recompute=$rc $extra >"$tmp/out" 2>&1; then
			tail -3 "$tmp/out"
			echo "$mode, recompute $rc: did not run (above)"
			continue
		fi
		grep -E '^(model|LoRA|step time|tokens/s|peak)' "$tmp/out"
		echo "result: $mode recompute=$rc tokens/s $(field tokens/s "$tmp/out")" \
			"peak MiB $(memory "$tmp/out")"
	done
done

