#!/bin/sh
# Times `lltrain prepare --vocab 4096` on about 2 MB of text: the fortune
# cookies of Debian's fortunes package (/usr/share/games/fortunes, the text
# files only, repeated if they hold less), else the files named as
# arguments. Prints the tokenizer training time and the encoding speed per
# core against their limits, and exits 1 when a limit is missed.
#
#   sh bench/prepare_bench.sh [TEXT_FILE...]      (LLTRAIN=path/to/lltrain)
LLTRAIN=${LLTRAIN:-./lltrain}
FORTUNES=/usr/share/games/fortunes
WANT_BYTES=2000000
TOKENIZER_LIMIT=30
ENCODE_LIMIT=2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-prepare-bench.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

if [ $# -gt 0 ]; then
	sources="$*"
	what="the files named"
elif [ -d "$FORTUNES" ]; then
	sources=$(find "$FORTUNES" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' ! -name '.*' |
		LC_ALL=C sort)
	what="$FORTUNES (text files, sorted)"
else
	echo "prepare_bench: no text: install Debian's fortunes package or name text files" >&2
	exit 1
fi
[ -n "$sources" ] || { echo "prepare_bench: $what: no text files" >&2; exit 1; }

# Concatenate the sources, again and again until there is enough, then cut.
: >"$tmp/corpus.txt"
rounds=0
while [ "$(wc -c <"$tmp/corpus.txt")" -lt "$WANT_BYTES" ]; do
	# shellcheck disable=SC2086
	cat $sources >>"$tmp/corpus.txt" || exit 1
	rounds=$((rounds + 1))
	if [ "$(wc -c <"$tmp/corpus.txt")" -eq 0 ]; then
		echo "prepare_bench: $what: the files are empty" >&2
		exit 1
	fi
done
head -c "$WANT_BYTES" "$tmp/corpus.txt" >"$tmp/text.txt"
threads=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 1)}
echo "corpus: $WANT_BYTES bytes of $what, concatenated $rounds time(s) and cut"
echo "threads: $threads (OMP_NUM_THREADS)"

OMP_NUM_THREADS=$threads "$LLTRAIN" prepare --vocab 4096 --out "$tmp/out" "$tmp/text.txt" \
	>"$tmp/log" 2>&1
rc=$?
sed 's/^/  /' "$tmp/log"
if [ $rc -ne 0 ]; then
	echo "prepare_bench: lltrain prepare failed (exit $rc)" >&2
	exit 1
fi

tok_s=$(sed -n 's/^ *tokenizer: *trained in \([0-9.]*\) s.*/\1/p' "$tmp/log")
mbs=$(sed -n 's/^ *encoding: *[0-9.]* s, \([0-9.]*\) MB\/s.*/\1/p' "$tmp/log")
if [ -z "$tok_s" ] || [ -z "$mbs" ]; then
	echo "prepare_bench: cannot read the timings from lltrain's summary" >&2
	exit 1
fi
per_core=$(awk -v m="$mbs" -v t="$threads" 'BEGIN { printf "%.2f", m / t }')
echo "tokenizer training: $tok_s s (limit $TOKENIZER_LIMIT s)"
echo "encoding: $per_core MB/s per core (limit $ENCODE_LIMIT)"
awk -v s="$tok_s" -v e="$per_core" -v ls="$TOKENIZER_LIMIT" -v le="$ENCODE_LIMIT" \
	'BEGIN { exit !(s <= ls && e >= le) }' || {
	echo "prepare_bench: a limit is missed"
	exit 1
}
