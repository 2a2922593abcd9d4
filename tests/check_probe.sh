#!/bin/bash
# Checks the planner's probe (lt_probe_ranks) through tests/probe_driver
# on the tiny preset: alone, every figure positive and finite, the thread
# points ascending to the rank's threads, the step no faster than twice
# the GEMM, no links, and within a few seconds; in bf16; on OpenCL, where
# a CPU device (PoCL) counts as gpu 0; then under mpiexec, 2 ranks of one
# node (a link within, none between, the host's memory shared) and of two
# (LLTRAIN_NODE_RANKS=1: a link between, none within) and 3 ranks on
# nodes of 2 and 1, every rank with the same table, and the emulated link
# of LLTRAIN_BENCH_LINK_GBITS bounding what crosses between nodes.
LLTRAIN=${LLTRAIN:-./lltrain}
PROBE=${PROBE:-tests/probe_driver}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-probe.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"

# probe NAME RANKS ARGS...: the driver's tables into $tmp/NAME/rank_R.txt
# (RANKS 0: no launcher), its output in $tmp/NAME.out, the status in rc.
probe() {
	local name=$1 ranks=$2
	shift 2
	rm -rf "$tmp/$name"
	mkdir "$tmp/$name"
	if [ "$ranks" = 0 ]; then
		"$PROBE" --out "$tmp/$name" "$@" >"$tmp/$name.out" 2>&1
	else
		"${launch[@]}" -n "$ranks" "$PROBE" --out "$tmp/$name" "$@" >"$tmp/$name.out" 2>&1 \
			</dev/null
	fi
	rc=$?
}

# value NAME RANK KEY: rank RANK's KEY in rank 0's table of run NAME
# (links: RANK "links").
value() {
	awk -v r="$2" -v k="$3" '
		($1 == "rank" && $2 == r ":") || ($1 == "links:" && r == "links") {
			for (i = 2; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' \
		"$tmp/$1/rank_0.txt"
}

# sane NAME RANK: rank RANK's figures in run NAME are what a rank measures:
# positive and finite, thread points ascending with the last at its
# threads and the step's figure; says why not.
sane() {
	awk -v r="$2" '
		$1 == "rank" && $2 == r ":" {
			for (i = 3; i < NF; i += 2) v[$i] = $(i + 1)
			found = 1 }
		function pos(k) { if (!(v[k] + 0 > 0) || v[k] ~ /nan|inf/) { printf "%s %s; ", k, v[k]; bad = 1 } }
		END {
			if (!found) { print "no line for rank " r; exit 1 }
			pos("mem"); pos("gemm_f32"); pos("gemm_bf16"); pos("step_f32")
			pos("threads"); pos("cores")
			if (v["gpu"] == 0) {
				n = split(v["points"], p, ",")
				for (i = 1; i <= n; i++) {
					split(p[i], tf, ":")
					if (i > 1 && tf[1] + 0 <= last) { print "points not ascending; "; bad = 1 }
					if (!(tf[2] + 0 > 0)) { print "point " p[i] " not positive; "; bad = 1 }
					last = tf[1] + 0
				}
				if (last != v["threads"] || tf[2] != v["step_f32"]) {
					print "last point " p[n] " is not the threads and the step; "; bad = 1 }
			}
			exit bad }' "$tmp/$1/rank_0.txt"
}

# below NAME RANK: rank RANK's step in run NAME is below twice its GEMM's
# speed (a step is GEMMs and more); says why not. Only at one thread: on a
# loaded machine an OpenMP team may lose its cores during one figure.
below() {
	local step gemm
	step=$(value "$1" "$2" step_f32) gemm=$(value "$1" "$2" gemm_f32)
	awk -v s="$step" -v g="$gemm" 'BEGIN { exit !(s < 2 * g) }' ||
		echo "rank $2's step $step FLOP/s against the GEMM's $gemm"
}

# same_tables NAME RANKS: every rank of run NAME wrote rank 0's table.
same_tables() {
	for r in $(seq 1 $(($2 - 1))); do
		cmp -s <(tail -n +2 "$tmp/$1/rank_0.txt") <(tail -n +2 "$tmp/$1/rank_$r.txt") ||
			{ echo "rank $r's table differs from rank 0's"; return 1; }
	done
}

# took NAME: the seconds rank 0's probe took.
took() { sed -n '1s/.*took \([0-9.]*\) s/\1/p' "$tmp/$1/rank_0.txt"; }

positive() { awk -v x="$1" 'BEGIN { exit !(x + 0 > 0) }'; }
zero() { awk -v x="$1" 'BEGIN { exit !(x + 0 == 0) }'; }

# 1. One rank, no launcher.
probe one 0 --threads 1
ok $rc "one rank without a launcher: $(tail -c 300 "$tmp/one.out")"
sed 's/^/# /' "$tmp/one/rank_0.txt"
why="$(sane one 0)$(below one 0)"
[ -z "$why" ]
ok $? "one rank's figures are positive, its step below twice its GEMM $why"
[ "$(value one 0 node)" = 0 ] && zero "$(value one links within_bw)" &&
	zero "$(value one links between_bw)" && zero "$(value one links allreduce_bw)"
ok $? "one rank: node 0 and every link 0"
awk -v t="$(took one)" 'BEGIN { exit !(t > 0 && t < 10) }'
ok $? "the tiny preset's probe takes a few seconds ($(took one) s)"
zero "$(value one 0 step_bf16)"
ok $? "without --bf16 the bf16 step is not timed"

probe two 0 --threads 2
sed 's/^/# /' "$tmp/two/rank_0.txt"
why=$(sane two 0)
[ $rc = 0 ] && [ "$(value two 0 points | sed 's/:[^,]*//g')" = 1,2 ] && [ -z "$why" ]
ok $? "at 2 threads the step is also timed at 1: points $(value two 0 points) $why"

probe bf16 0 --bf16
positive "$(value bf16 0 step_bf16)" && positive "$(value bf16 0 gemm_bf16)"
ok $? "--bf16 times the step in bf16 ($(value bf16 0 step_bf16) FLOP/s, fp32 $(value bf16 0 step_f32))"

probe long 0 --seq 4096
[ $rc = 1 ] && grep -q "max_seq 128" "$tmp/long.out"
ok $? "a sequence beyond the model's max_seq is refused: $(tail -c 200 "$tmp/long.out")"

# 2. OpenCL: "opencl" opens the first GPU, else the first device; the
# probe's gpu says which kind it was.
if "$LLTRAIN" info --preset tiny | grep -q "built without the OpenCL backend"; then
	skip "this lltrain was built without the OpenCL backend"
else
	probe cl 0 --device opencl --seconds 0.1
	ok $rc "one rank on OpenCL: $(tail -c 300 "$tmp/cl.out")"
	sed 's/^/# /' "$tmp/cl/rank_0.txt"
	want=0
	"$LLTRAIN" info --preset tiny | grep -q "^  opencl:[0-9.]* .*(GPU;" && want=1
	why=$(sane cl 0)
	[ "$(value cl 0 gpu)" = $want ] && [ -z "$why" ]
	ok $? "OpenCL: gpu $(value cl 0 gpu) (want $want: a CPU device counts as a CPU) $why"
fi

# 3. Ranks under mpiexec.
mpi_or_stop

probe node 2 --threads 1
ok $rc "2 ranks on one node: $(tail -c 300 "$tmp/node.out")"
sed 's/^/# /' "$tmp/node/rank_0.txt"
why=$(same_tables node 2)
ok $? "2 ranks on one node: both got the same table $why"
why="$(sane node 0)$(sane node 1)$(below node 0)$(below node 1)"
[ -z "$why" ]
ok $? "2 ranks on one node: both ranks' figures are sane $why"
positive "$(value node links within_bw)" && positive "$(value node links within_lat)" &&
	zero "$(value node links between_bw)" && zero "$(value node links between_lat)" &&
	positive "$(value node links allreduce_bw)"
ok $? "one node: a link within, none between, an all-reduce"
awk -v a="$(value node 0 mem)" -v b="$(value node 1 mem)" -v one="$(value one 0 mem)" \
	'BEGIN { exit !(a < 0.75 * one && b < 0.75 * one) }'
ok $? "the node's 2 CPU ranks share its memory ($(value node 0 mem), alone $(value one 0 mem))"
awk -v t="$(took node)" 'BEGIN { exit !(t > 0 && t < 20) }'
ok $? "2 ranks, timing in turns: $(took node) s"

LLTRAIN_NODE_RANKS=1 probe nodes 2 --threads 1
ok $rc "2 ranks on 2 nodes (LLTRAIN_NODE_RANKS=1): $(tail -c 300 "$tmp/nodes.out")"
sed 's/^/# /' "$tmp/nodes/rank_0.txt"
why=$(same_tables nodes 2)
ok $? "2 nodes: both ranks got the same table $why"
[ "$(value nodes 0 node)" = 0 ] && [ "$(value nodes 1 node)" = 1 ] &&
	positive "$(value nodes links between_bw)" && positive "$(value nodes links between_lat)" &&
	zero "$(value nodes links within_bw)" && zero "$(value nodes links within_lat)"
ok $? "2 nodes: nodes 0 and 1, a link between, none within"

# Nodes of different sizes (2 ranks and 1), which lt_dist_nodes does not
# number: the probe numbers them by their first ranks.
LLTRAIN_NODE_RANKS=2 probe uneven 3 --threads 1 --seconds 0.1
why=$(same_tables uneven 3)
[ $rc = 0 ] && [ -z "$why" ] &&
	[ "$(value uneven 0 node) $(value uneven 1 node) $(value uneven 2 node)" = "0 0 1" ] &&
	positive "$(value uneven links within_bw)" && positive "$(value uneven links between_bw)"
ok $? "nodes of 2 ranks and 1: nodes $(value uneven 0 node) $(value uneven 1 node) $(value uneven 2 node), links within and between $why"

LLTRAIN_NODE_RANKS=1 LLTRAIN_BENCH_LINK_GBITS=1 probe slow 2 --threads 1
bw=$(value slow links between_bw) ar=$(value slow links allreduce_bw)
[ $rc = 0 ] && positive "$bw" && positive "$ar" &&
	awk -v b="$bw" -v a="$ar" 'BEGIN { exit !(b <= 1.25e8 && a <= 1.25e8 * 1.05) }'
ok $? "an emulated 1 Gbit/s link bounds the bandwidth between nodes ($bw) and the all-reduce ($ar)"

echo "1..$n"
exit $failed
