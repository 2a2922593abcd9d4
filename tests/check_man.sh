#!/bin/sh
# Checks the man pages: each is clean under groff -ww, and every long option
# a subcommand's source accepts is documented on that subcommand's page.
src=${top_srcdir:-.}
pages="$src/man/lltrain.1"
for c in "$src"/src/cmd_*.c; do
	cmd=$(basename "$c" .c | sed 's/^cmd_//')
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
	out=$(groff -ww -z -man "$p" 2>&1)
	[ -z "$out" ]; ok $? "$(basename "$p") is clean under groff -ww -z -man${out:+: $out}"
done
for c in "$src"/src/cmd_*.c; do
	cmd=$(basename "$c" .c | sed 's/^cmd_//')
	page="$src/man/lltrain-$cmd.1"
	for opt in $(grep -o '{ "[a-z-]*", \(required\|no\)_argument' "$c" | sed 's/{ "\([a-z-]*\)".*/\1/' | sort -u); do
		grep -q "B.*\\\\-\\\\-$(echo "$opt" | sed 's/-/\\\\-/g')" "$page" 2>/dev/null
		ok $? "lltrain $cmd --$opt is documented in $(basename "$page")"
	done
done
echo "1..$n"
exit $failed
