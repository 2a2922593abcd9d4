#!/bin/sh
# Checks the man pages: each is clean under groff -ww, every long option a
# subcommand's source accepts is documented on that subcommand's page
# (src/cmd/cmd_tune_lr.c: man/lltrain-tune-lr.1), and
# every configuration key that `lltrain info --keys` prints has its entry in
# lltrain.conf(5) with the same type and default (and no entry names a key
# that does not exist).
src=${top_srcdir:-.}
LLTRAIN=${LLTRAIN:-./lltrain}
pages="$src/man/lltrain.1 $src/man/lltrain.conf.5"
for c in "$src"/src/cmd/cmd_*.c; do
	cmd=$(basename "$c" .c | sed 's/^cmd_//; s/_/-/g')
	pages="$pages $src/man/lltrain-$cmd.1"
done
n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi; }
if ! command -v groff >/dev/null 2>&1; then
	echo "1..0 # SKIP groff is not installed (Debian: groff-base)"
	exit 0
fi
for p in $pages; do
	if [ ! -f "$p" ]; then ok 1 "$(basename "$p") exists"; continue; fi
	out=$(LC_ALL=C groff -ww -z -man "$p" 2>&1)
	[ -z "$out" ]; ok $? "$(basename "$p") is clean under groff -ww -z -man${out:+: $out}"
done
for c in "$src"/src/cmd/cmd_*.c; do
	cmd=$(basename "$c" .c | sed 's/^cmd_//; s/_/-/g')
	page="$src/man/lltrain-$cmd.1"
	# the rows of the option tables ({ .name = "seed", ...), getopt rows
	# ({ "resume", required_argument, ...), the rows of aliases that stand
	# for a config key ({ "--zero", "dist.zero", 1 }), which getopt never
	# sees, and --help, which every command takes
	for opt in $( (grep -o '{ \.name = "[a-z-]*"' "$c" | sed 's/.*"\([a-z-]*\)"/\1/'
		grep -o '{ "[a-z-]*", \(required\|no\)_argument' "$c" |
		sed 's/{ "\([a-z-]*\)".*/\1/'
		grep -o '{ "--[a-z-]*", "[a-z]*\.[a-z_]*"' "$c" | sed 's/{ "--\([a-z-]*\)".*/\1/'
		echo help) |
		sort -u); do
		grep -q "B.*\\\\-\\\\-$(echo "$opt" | sed 's/-/\\\\-/g')" "$page" 2>/dev/null
		ok $? "lltrain $cmd --$opt is documented in $(basename "$page")"
	done
done

# lltrain.conf(5) documents each key as a tagged paragraph whose tag line is
#   .BR section.key " (TYPE, default DEFAULT)"
# with DEFAULT as `info --keys` prints it ("empty" for "", - as \-).
conf="$src/man/lltrain.conf.5"
keys=$("$LLTRAIN" info --keys 2>&1)
st=$?
[ "$st" = 0 ] && [ "$(printf '%s\n' "$keys" | grep -c '^[a-z]*\.[a-z_]* ')" -ge 40 ]
ok $? "lltrain info --keys lists the configuration keys (exit $st)"
[ "$st" = 0 ] || keys=
tags=$(awk 'prev == ".TP" && $1 == ".BR" { print } { prev = $0 }' "$conf" 2>/dev/null)
while read -r key type def rest; do
	[ -n "$key" ] || continue
	if [ "$def" = '""' ]; then def=empty; fi
	want=".BR $key \" ($type, default $(printf '%s' "$def" | sed 's/-/\\-/g'))\""
	printf '%s\n' "$tags" | grep -qxF -- "$want"
	ok $? "$key ($type, default $def) has its entry in lltrain.conf.5"
done <<EOF
$keys
EOF
for tag in $(printf '%s\n' "$tags" | awk '$2 ~ /^(model|train|data|run|dist)\./ { print $2 }'); do
	printf '%s\n' "$keys" | grep -q "^$tag "
	ok $? "lltrain.conf.5's entry $tag is a key of lltrain info --keys"
done
echo "1..$n"
exit $failed
