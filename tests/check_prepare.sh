#!/bin/sh
# Checks `lltrain prepare` as a person meets it (TAP): a small corpus
# prepared into the files it promises, each bad input refused with exit
# status 1 (2 for usage) and one line naming the file and the problem, a
# failure that leaves the earlier output as it was, and, where python3 has
# Hugging Face's `tokenizers`, the saved tokenizer.json encoding documents
# of the corpus to the very ids the shards hold.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
PYTHON=${PYTHON3:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-prepare.XXXXXX") || exit 1
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# The corpus: each line of the tiny corpus a document ("%" lines between),
# in a file and again in a directory, beside files a listing skips.
mkdir -p "$tmp/corpus/more"
awk '{ print; print "%" }' "$top_srcdir/tests/data/tiny_corpus.txt" >"$tmp/corpus/a.txt"
awk '{ print "Again: " $0; print "%" }' "$top_srcdir/tests/data/tiny_corpus.txt" \
	>"$tmp/corpus/more/b.txt"
printf 'index bytes\n' >"$tmp/corpus/more/b.dat"
printf 'hidden\n' >"$tmp/corpus/more/.hidden"
docs=$(($(wc -l <"$top_srcdir/tests/data/tiny_corpus.txt") * 2))

"$LLTRAIN" prepare --out "$tmp/data" --vocab 400 --val-fraction 0.1 --shard-tokens 1000 \
	--max-seq 128 "$tmp/corpus/a.txt" "$tmp/corpus/more" >"$tmp/log" 2>&1
rc=$?
[ $rc = 0 ] || sed 's/^/# /' "$tmp/log"
ok "$rc" "prepare on a small corpus succeeds (exit $rc)"
missing=
for f in tokenizer.json tokenizer_config.json prepare.json train_0000.bin train_0001.bin \
	val_0000.bin; do
	[ -f "$tmp/data/$f" ] || missing="$missing $f"
done
[ -z "$missing" ]
ok $? "it writes the tokenizer, prepare.json and the shards (missing:${missing:- none})"
grep -q "documents: *$docs\$" "$tmp/log"
ok $? "the summary counts the $docs documents of 2 files (the .dat and hidden files skipped)"
grep -q '"model_max_length": 128' "$tmp/data/tokenizer_config.json"
ok $? "tokenizer_config.json advertises --max-seq 128"
ls -d "$tmp"/data.* >/dev/null 2>&1
[ $? -ne 0 ]
ok $? "no temporary or set-aside directory is left beside the output"

# Bad inputs. The output directory must survive every one of them.
sum_before=$(cat "$tmp"/data/* | cksum)
expect_brief 1 "$tmp/absent.txt: No such file or directory" "a missing input is named" -- \
	prepare --out "$tmp/data" "$tmp/corpus/a.txt" "$tmp/absent.txt"
expect_brief 1 "$tmp/corpus/a.txt/x: Not a directory" "a file used as a directory is named" -- \
	prepare --out "$tmp/data" "$tmp/corpus/a.txt/x"
if mkfifo "$tmp/fifo" 2>/dev/null; then
	expect_brief 1 "$tmp/fifo: not a regular file or a directory, expected text" \
		"a FIFO is refused, naming it" -- prepare --out "$tmp/data" "$tmp/fifo"
else
	skip "mkfifo is not available here"
fi
expect_brief 1 "/dev/null: not a regular file or a directory" "a device is refused, naming it" -- \
	prepare --out "$tmp/data" /dev/null
cp "$tmp/corpus/a.txt" "$tmp/locked.txt"
chmod 000 "$tmp/locked.txt"
if [ "$(id -u)" = 0 ] || cat "$tmp/locked.txt" >/dev/null 2>&1; then
	skip "running as root, which reads a file of mode 000" \
		"(the FIFO and directory cases above stand in)"
else
	expect_brief 1 "$tmp/locked.txt: Permission denied" "an unreadable input is named" -- \
		prepare --out "$tmp/data" "$tmp/locked.txt"
fi
: >"$tmp/empty.txt"
expect_brief 1 "$tmp/empty.txt: the training corpus is empty: no text (1 file, 0 bytes)" \
	"an empty corpus is refused, naming it" -- prepare --out "$tmp/data" "$tmp/empty.txt"
mkdir "$tmp/nothing"
expect_brief 1 "$tmp/nothing: the training corpus is empty: no text (0 files, 0 bytes)" \
	"a directory without text files is refused, naming it" -- \
	prepare --out "$tmp/data" "$tmp/nothing"
printf '{"model": {"type": "WordPiece"}}' >"$tmp/wordpiece.json"
expect_brief 1 "$tmp/wordpiece.json: model.type is 'WordPiece', expected 'BPE'" \
	"a tokenizer.json that is not BPE is refused, naming it" -- \
	prepare --out "$tmp/data" --tokenizer "$tmp/wordpiece.json" "$tmp/corpus/a.txt"
printf 'not json' >"$tmp/notjson.json"
expect_brief 1 "$tmp/notjson.json: not JSON: line 1" "a --tokenizer file that is not JSON is named" \
	-- prepare --out "$tmp/data" --tokenizer "$tmp/notjson.json" "$tmp/corpus/a.txt"
expect_brief 1 "documents, too few to hold out a fraction 0.01" \
	"too few documents for the validation share is refused" -- \
	prepare --out "$tmp/data" --val-fraction 0.01 "$tmp/corpus/a.txt"
mkdir "$tmp/mine"
echo keep >"$tmp/mine/notes.txt"
expect_brief 1 "$tmp/mine: not empty and holds no prepare.json" \
	"a directory that is not a preparation is not replaced" -- \
	prepare --out "$tmp/mine" "$tmp/corpus/a.txt"
[ "$(cat "$tmp/mine/notes.txt")" = keep ]
ok $? "the refused directory keeps its file"
expect_brief 2 "--vocab 'many': expected an integer in [257, 16777216]" \
	"a non-numeric --vocab is a usage error naming the option" -- \
	prepare --vocab many "$tmp/corpus/a.txt"
expect_brief 2 "--val-fraction '0.9': expected a number in [0, 0.5]" \
	"an out-of-range --val-fraction gives the range" -- \
	prepare --val-fraction 0.9 "$tmp/corpus/a.txt"
expect_brief 2 "--shard-tokens '0': expected an integer in" "--shard-tokens 0 is refused" -- \
	prepare --shard-tokens 0 "$tmp/corpus/a.txt"
expect_brief 2 "expected text files or directories to prepare" "no input is a usage error" -- \
	prepare --out "$tmp/data"
expect_brief 0 "--doc-separator STR" "--help lists the options" -- prepare --help
[ "$(cat "$tmp"/data/* | cksum)" = "$sum_before" ] && ! ls -d "$tmp"/data.* >/dev/null 2>&1
ok $? "after all the failures the prepared directory is as it was, nothing left beside it"

# Hugging Face's library against the shards.
if ! "$PYTHON" -c 'import tokenizers' >/dev/null 2>&1; then
	skip "python3 or its 'tokenizers' package (pip install tokenizers) is missing"
else
	"$PYTHON" - "$tmp/data" "$tmp/corpus/a.txt" "$tmp/corpus/more/b.txt" >"$tmp/py" 2>&1 <<'EOF'
import json, struct, sys
from tokenizers import Tokenizer

out, files = sys.argv[1], sys.argv[2:]
prep = json.load(open(out + "/prepare.json"))
f = prep["val_fraction"]
docs = []
for path in files:
    text = open(path, encoding="utf-8").read()
    cur = []
    for line in text.split("\n")[:-1]:
        if line == "%":
            if cur:
                docs.append("\n".join(cur) + "\n")
            cur = []
        else:
            cur.append(line)

def shard_tokens(name):
    data = open(out + "/" + name, "rb").read()
    assert data[:8] == b"LTTOKENS", name
    vocab, width, eot, count = struct.unpack_from("<IIIQ", data, 12)
    fmt = "<%d%s" % (count, "H" if width == 2 else "I")
    return eot, list(struct.unpack_from(fmt, data, 64))

tok = Tokenizer.from_file(out + "/tokenizer.json")
checked = 0
for split, held_out in (("train", False), ("val", True)):
    ids, eot = [], None
    for name in prep["shards"][split]:
        eot, t = shard_tokens(name)
        ids += t
    mine = [d for i, d in enumerate(docs) if (int((i + 1) * f) > int(i * f)) == held_out]
    start = 0
    for d in mine:
        end = ids.index(eot, start)
        want = tok.encode(d, add_special_tokens=False).ids
        if want != ids[start:end]:
            print("%s document %r: tokenizers %s, shard %s"
                  % (split, d[:40], want[:10], ids[start:start + 10]))
            sys.exit(1)
        start = end + 1
        checked += 1
    if start != len(ids):
        print("%s: %d tokens after the last document" % (split, len(ids) - start))
        sys.exit(1)
print("%d of %d documents match" % (checked, len(docs)))
EOF
	rc=$?
	ok $rc "Hugging Face tokenizers loads tokenizer.json and encodes the corpus" \
		"documents to the shards' ids: $(tail -n 1 "$tmp/py")"
fi

echo "1..$n"
exit $failed
