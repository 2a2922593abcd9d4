#!/bin/sh
# bf16 against fp32 in one run: the 15M preset's training tokens/s in each
# precision and their ratio; then the 110M preset at batch 8 x 1024 tokens,
# the peak memory of bf16 with train.recompute = block against fp32 without
# it, measured and estimated, and their ratios.
#   bench/precision_bench.sh [LLTRAIN [DEVICE [THREADS]]]
#                                  (defaults ./lltrain, cpu, 2)
# Memory is the process's peak RSS on the CPU and lltrain's peak device
# memory on an OpenCL device; each configuration runs in its own process.
set -u
LLTRAIN=${1:-./lltrain}
DEVICE=${2:-cpu}
THREADS=${3:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-precision.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# first_number LABEL FILE: the first number after "LABEL:" in FILE.
first_number() {
	awk -v label="$1" 'index($0, label ":") == 1 {
		sub(/^[^:]*: */, ""); print $1 + 0; exit }' "$2"
}
# estimate FILE: the estimate of peak memory that bench printed, in MiB.
estimate() {
	sed -n 's/^peak RSS:.*(estimate \([0-9.]*\) MiB.*/\1/p' "$1" | head -1
}
# measured FILE: the peak memory bench measured, in MiB.
measured() {
	case $DEVICE in
	cpu) first_number "peak RSS" "$1" ;;
	*) first_number "peak device mem" "$1" ;;
	esac
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b; else print "n/a" }'
}

"$LLTRAIN" info 2>/dev/null | grep -E '^(backend|  gemm|  bf16)' || true
for p in fp32 bf16; do
	echo "== preset 15M, $p, $THREADS threads"
	"$LLTRAIN" bench --preset 15M --device "$DEVICE" --threads "$THREADS" --steps 5 \
		--sample-tokens 0 --train.precision=$p >"$tmp/15M.$p" 2>&1 ||
		echo "lltrain bench --preset 15M --train.precision=$p failed"
	cat "$tmp/15M.$p"
done
f=$(first_number tokens/s "$tmp/15M.fp32")
b=$(first_number tokens/s "$tmp/15M.bf16")
echo "15M tokens/s: fp32 $f, bf16 $b, bf16 / fp32 = $(ratio "$b" "$f")"

for run in fp32:none bf16:block; do
	p=${run%:*} r=${run#*:}
	echo "== preset 110M, batch 8 x seq 1024, $p, recompute $r"
	"$LLTRAIN" bench --preset 110M --device "$DEVICE" --threads "$THREADS" --batch 8 \
		--seq 1024 --steps 1 --sample-tokens 0 --train.precision=$p \
		--train.recompute=$r >"$tmp/110M.$p" 2>&1 ||
		echo "lltrain bench --preset 110M --train.precision=$p failed"
	cat "$tmp/110M.$p"
done
mf=$(measured "$tmp/110M.fp32") mb=$(measured "$tmp/110M.bf16")
ef=$(estimate "$tmp/110M.fp32") eb=$(estimate "$tmp/110M.bf16")
echo "110M B8 T1024 peak memory, MiB: fp32 + none $mf (estimate $ef), bf16 + block $mb" \
	"(estimate $eb)"
echo "110M bf16 + block / fp32 + none: measured $(ratio "$mb" "$mf"), estimated $(ratio "$eb" "$ef")"
