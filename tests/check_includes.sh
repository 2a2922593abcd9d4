#!/bin/bash
# Checks the include rule of HACKING.md from the #include lines of every
# source file: each room includes only the rooms below it, nothing includes
# cmd, the backends include only the interface, and MPI, OpenCL and BLAS
# headers stay in the rooms that own them. A made-up tree with one breach
# of each kind shows that the check finds them.
top_srcdir=${top_srcdir:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-includes.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# room_of FILE: the room a source file (relative to the top) lives in.
room_of() {
	case $1 in
	src/cmd/*) echo cmd ;;
	src/train/*) echo train ;;
	src/io/*) echo io ;;
	src/text/*) echo text ;;
	src/dist/*) echo dist ;;
	src/*/*) echo unknown ;;
	src/*) echo core ;;
	cpu/*) echo cpu ;;
	cl/*) echo cl ;;
	tests/*) echo tests ;;
	bench/*) echo bench ;;
	*) echo unknown ;;
	esac
}

# header_room TOP NAME: the room of a quoted #include name.
header_room() {
	case $2 in
	config.h) echo build ;;
	cmd/* | train/* | io/* | text/* | dist/*) echo "${2%%/*}" ;;
	*/*) echo unknown ;;
	*)
		if [ -f "$1/src/$2" ]; then echo core
		elif [ -f "$1/cpu/$2" ]; then echo cpu
		elif [ -f "$1/cl/$2" ]; then echo cl
		elif [ -f "$1/tests/$2" ]; then echo tests
		else echo unknown
		fi ;;
	esac
}

# allowed FILE ROOM HEADER HEADER_ROOM: 0 when the rule lets FILE (in ROOM)
# include HEADER (in HEADER_ROOM).
allowed() {
	local file=$1 room=$2 h=$3 hroom=$4
	[ "$hroom" = build ] && return 0
	[ "$hroom" = "$room" ] && return 0
	case $room:$hroom in
	core:cpu | core:cl) [ "$file" = src/backend.c ] ;;  # the registry
	io:core | text:core | text:io | dist:core) return 0 ;;
	train:core | train:io | train:text | train:dist) return 0 ;;
	cmd:*) [ "$hroom" != unknown ] ;;
	cpu:core | cl:core)
		case $h in backend.h | status.h | embed.h) return 0 ;; esac
		return 1 ;;
	cl:io) [ "$file" = cl/cl_program.c ] && [ "$h" = io/fs.h ] ;;  # the kernel cache
	tests:* | bench:*) [ "$hroom" != cmd ] && [ "$hroom" != unknown ] ;;
	*) return 1 ;;
	esac
}

# system_allowed ROOM HEADER: 0 when ROOM may include <HEADER>.
system_allowed() {
	case $2 in
	mpi.h) [ "$1" = dist ] ;;
	CL/* | clblast*) [ "$1" = cl ] ;;
	cblas.h | dnnl* | oneapi/dnnl/*) [ "$1" = cpu ] ;;
	*) return 0 ;;
	esac
}

# breaches TOP: one line "FILE: includes HEADER (ROOM -> ROOM)" per breach
# in the tree at TOP.
breaches() {
	local top=$1 f room line h hroom
	# (not the Python checks' virtual environment, which a build in the
	# source tree puts under tests/)
	(cd "$top" && find src cpu cl tests bench -path tests/python-env -prune -o \
		-name '*.[ch]' -print 2>/dev/null | LC_ALL=C sort) |
	while read -r f; do
		room=$(room_of "$f")
		while read -r line; do
			case $line in
			*'"'*)
				h=${line#*\"}
				h=${h%%\"*}
				hroom=$(header_room "$top" "$h")
				allowed "$f" "$room" "$h" "$hroom" ||
					echo "$f: includes \"$h\" ($room -> $hroom)" ;;
			*'<'*)
				h=${line#*<}
				h=${h%%>*}
				system_allowed "$room" "$h" || echo "$f: includes <$h> ($room)" ;;
			esac
		done < <(grep -E '^[[:space:]]*#[[:space:]]*include' "$top/$f")
	done
}

# The tree itself.
n_files=$(cd "$top_srcdir" && find src cpu cl -name '*.[ch]' | wc -l)
[ "$n_files" -gt 40 ]
ok $? "the check reads the sources ($n_files files under src, cpu and cl)"
found=$(breaches "$top_srcdir")
[ -z "$found" ]
ok $? "every #include follows the rule of HACKING.md${found:+: $(echo "$found" | head -20 | tr '\n' ';')}"

# A made-up tree: one allowed include and one breach of each kind.
mkdir -p "$tmp/src/io" "$tmp/src/dist" "$tmp/src/cmd" "$tmp/cpu" "$tmp/cl" "$tmp/tests"
for h in model.h backend.h; do : >"$tmp/src/$h"; done
: >"$tmp/src/io/fs.h"; : >"$tmp/src/dist/zero.h"; : >"$tmp/src/cmd/cmd.h"
printf '#include "config.h"\n#include "io/fs.h"\n' >"$tmp/src/model.c"
printf '#include "model.h"\n#include "dist/zero.h"\n' >"$tmp/src/io/ok.c"
printf '#include "cmd/cmd.h"\n' >"$tmp/src/dist/zero.c"
printf '#include "model.h"\n#include "backend.h"\n' >"$tmp/cpu/cpu_ops.c"
printf '#include <mpi.h>\n' >"$tmp/src/io/mpi_user.c"
printf '#include "nowhere.h"\n' >"$tmp/tests/test_x.c"
found=$(breaches "$tmp")
expect='src/dist/zero.c: includes "cmd/cmd.h" (dist -> cmd)
src/io/mpi_user.c: includes <mpi.h> (io)
src/io/ok.c: includes "dist/zero.h" (io -> dist)
src/model.c: includes "io/fs.h" (core -> io)
cpu/cpu_ops.c: includes "model.h" (cpu -> core)
tests/test_x.c: includes "nowhere.h" (tests -> unknown)'
[ "$(echo "$found" | LC_ALL=C sort)" = "$(echo "$expect" | LC_ALL=C sort)" ]
ok $? "a made-up tree's six breaches are found, and nothing else: $(echo "$found" | tr '\n' ';')"

echo "1..$n"
exit $failed
