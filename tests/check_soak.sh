#!/bin/bash
# Checks bench/soak.sh's short form: 6 faults over 80 steps of a 2-rank
# deterministic run (every kind once: SIGKILL to one rank and to both,
# SIGTERM to rank 0 and to the launcher, a full disk during a save, a
# corrupted checkpoint), each survived by --resume auto, and the final
# parameters bitwise equal to an uninterrupted run's. The seed changes from
# run to run and is printed; SOAK_SEED=S repeats one.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-soakcheck.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/tap.sh"
KINDS="kill-rank kill-all term-rank0 term-mpiexec disk-full corrupt"
FAULTS=6

skip_all() {
	for k in $KINDS; do skip "$k faults: $*"; done
	skip "the soak's final parameters: $*"
	echo "1..$n"
	exit 0
}
if ! "$LLTRAIN" info 2>/dev/null | grep -q '^build:.*MPI'; then
	skip_all "this lltrain was built without MPI (configure found no MPI library)"
fi
command -v "$MPIEXEC" >/dev/null || skip_all "no $MPIEXEC on PATH (install mpich)"

seed=${SOAK_SEED:-$(( $(date +%s%N) % 1000000007 ))}
LLTRAIN=$LLTRAIN MPIEXEC=$MPIEXEC bash "$top_srcdir/bench/soak.sh" --faults $FAULTS --steps 80 \
	--seed "$seed" --dir "$tmp/soak" >"$tmp/soak.out" 2>&1
status=$?
sed 's/^/# /' "$tmp/soak.out"
for k in $KINDS; do
	read -r inj surv < <(awk -v k="$k" '$1 == k { print $2, $3 }' "$tmp/soak.out")
	[ "${inj:-0}" -ge 1 ] && [ "$inj" = "$surv" ]
	ok $? "seed $seed: $k faults injected ${inj:-?}, survived ${surv:-?}"
done
grep -q "^faults not injected: 0; .*temporaries left in checkpoints/: 0$" "$tmp/soak.out" &&
	grep -q "^final parameters: bitwise equal" "$tmp/soak.out" && [ $status = 0 ]
ok $? "seed $seed: all $FAULTS faults injected, no temporary left, final parameters bitwise equal to an uninterrupted run's (exit $status): $(grep -E '^(faults not|final param)' "$tmp/soak.out" | tr '\n' ' ')"
echo "1..$n"
exit $failed
