#!/bin/bash
# Checks `mpiexec -n N lltrain train`: 30 steps of the tiny preset's model
# over 2 and 3 ranks at ZeRO stages 0, 1 and 2 give the single-process
# losses, exchanging through the node's shared memory and through MPI's
# collectives; --deterministic gives bitwise the same parameters for 1, 2 and 3
# ranks, also across a save at 2 ranks and a resume at 3; what each rank
# allocates shrinks with the ranks as the ZeRO stages say; ranks that
# disagree are refused naming the rank and the difference; ranks on
# several nodes (LLTRAIN_NODE_RANKS) sum through each node's memory and
# then between nodes, with the same losses; a damaged newest checkpoint is
# named once, by rank 0, and the run resumes from the one before; a
# stalled rank ends the job naming it, the step and the collective, within
# 60 s also at the default --comm-timeout; a killed rank ends it, and
# --resume auto continues.
LLTRAIN=${LLTRAIN:-./lltrain}
top_srcdir=${top_srcdir:-.}
MPIEXEC=${MPIEXEC:-mpiexec}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-mpi.XXXXXX") || exit 1
trap 'kill -9 $job 2>/dev/null; pkill -9 -f "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
job=
. "$(dirname "$0")/tap.sh"

mpi_or_stop

prepare_corpus

# The tiny preset's model, 30 steps of 10 sequences of 64 tokens (shares of
# 5+5 and 4+3+3 sequences).
STEPS=30
base=(--preset tiny --train.seq=64 --train.batch=10 --train.steps=$STEPS
	--train.warmup_steps=5 --data.dir="$tmp/data" --run.eval_every=0
	--run.eval_batches=2 --run.sample_tokens=4 --run.log_every=10 --run.threads=1)
set -- "${base[@]}"
final=checkpoints/step_$(printf %08d $STEPS)

# seconds_since NS: seconds (to 0.01) since date +%s%N said NS.
seconds_since() {
	awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}

# comm_timeout SECONDS RANKS: the watchdog's limit for runs that should end
# well, of up to RANKS ranks on this machine, whose one-process run took
# SECONDS. The watchdog measures how long a wait has made no progress, and
# then takes a rank for stalled only if it does not answer within 5 s;
# ranks answer from their waits. So it can mistake only a rank that spends
# longer than the limit away from collectives: in its start-up or in one
# step's share of forward and backward, each shorter than the whole
# one-process run of the same work, which the measure takes on this
# machine as it is (sanitizers, a slow device, other load). RANKS ranks
# sharing the machine run at worst RANKS times slower than one alone; the
# limit is 3 times that (the machine's load may grow), and at least the
# default 30 s. A run that hangs by a bug still ends, within a few runs'
# time.
comm_timeout() {
	awk -v s="$1" -v r="$2" 'BEGIN { t = 3 * s * r; print (t < 30 ? 30 : int(t + 1)) }'
}

# 1. The single-process reference, timed for the watchdog's limit.
began=$(date +%s%N)
train ref 0 "$@"
ref_s=$(seconds_since "$began")
ok $rc "30 steps in one process: $(tail -c 300 "$tmp/ref.out")"
set -- "${base[@]}" --comm-timeout "$(comm_timeout "$ref_s" 6)"
echo "# one process took $ref_s s: --comm-timeout $(comm_timeout "$ref_s" 6) for up to 6 CPU ranks"

# 2. 2 and 3 ranks at every stage: the same losses, every rank listed.
for ranks in 2 3; do
	for zero in 0 1 2; do
		name=r${ranks}z$zero
		train $name $ranks "$@" --zero $zero
		ok $rc "$ranks ranks, ZeRO $zero: the run ends well: $(tail -c 300 "$tmp/$name.out")"
		why=$(losses_match ref $name 2>&1)
		ok $? "$ranks ranks, ZeRO $zero: losses within 1e-5 of one process $why"
	done
	grep -q "^rank $((ranks - 1)): host .*, pid [0-9]*, device .*, [0-9]* of 10 sequences" \
		"$tmp/r${ranks}z0.out"
	ok $? "$ranks ranks: rank 0 lists every rank with its host, pid, device and share"
done
grep -q "^exchange: through the shared memory of the ranks' one node" "$tmp/r3z2.out"
ok $? "ranks of one node exchange through its shared memory: $(grep -m1 '^exchange' "$tmp/r3z2.out")"
grep -q "^exchange: .*each rank summing on a thread of its own beside backward" "$tmp/r3z2.out"
ok $? "CPU ranks of one node sum on a thread of their own at ZeRO 2: $(grep -m1 '^exchange' "$tmp/r3z2.out")"
# 2b. The same through MPI's collectives (--exchange mpi, as across nodes).
for zero in 0 1 2; do
	name=m3z$zero
	train $name 3 "$@" --zero $zero --exchange mpi
	grep -q "^exchange: MPI collectives" "$tmp/$name.out"
	ok $? "3 ranks, ZeRO $zero, --exchange mpi: the run exchanges through MPI: $(tail -c 300 "$tmp/$name.out")"
	why=$(losses_match ref $name 2>&1)
	ok $? "3 ranks, ZeRO $zero, --exchange mpi: losses within 1e-5 of one process $why"
done
# 2c. Too little room in /dev/shm for the shared memory (a private 10 MiB
# mount): the ranks exchange through MPI instead, and say why.
unshare -m bash -c 'mount -t tmpfs -o size=10m tmpfs /dev/shm || exit 99; exec "$@"' _ \
	"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --run.dir="$tmp/shm" >"$tmp/shm.out" 2>&1 </dev/null
rc=$?
if [ $rc = 99 ] || grep -q "unshare: " "$tmp/shm.out"; then
	skip "a small /dev/shm: cannot mount one here ($(head -c 200 "$tmp/shm.out"))"
	skip "a small /dev/shm: its run's losses"
else
	grep -q "^exchange: MPI collectives (/dev/shm has [0-9.]* MiB free, the node's ranks need [0-9.]* MiB)" \
		"$tmp/shm.out"
	ok $(( rc || $? )) "a /dev/shm too small for the shared memory: MPI instead (exit $rc): $(grep -m1 '^exchange' "$tmp/shm.out")"
	why=$(losses_match ref shm 2>&1)
	ok $? "a /dev/shm too small: losses within 1e-5 of one process $why"
fi
# every step's line says what it waited for: exchanges (of which the
# gradient exchange) and slower ranks
awk '/"step":/ && /"loss":/ { n++
	if (!match($0, /"comm_s":[0-9.e-]+/)) { bad = 1; next }; c = substr($0, RSTART + 9, RLENGTH - 9)
	if (!match($0, /"reduce_s":[0-9.e-]+/)) { bad = 1; next }; g = substr($0, RSTART + 11, RLENGTH - 11)
	if (!match($0, /"sync_s":[0-9.e-]+/) || !/"ranks":3/ || g + 0 > c + 0) bad = 1
	if (!match($0, /"update_s":[0-9.e-]+/) || substr($0, RSTART + 11, RLENGTH - 11) + 0 <= 0) bad = 1 }
	END { exit bad || n != '$STEPS' }' "$tmp/r3z2/metrics.jsonl"
ok $? "each step of the 3-rank run logs ranks, comm_s >= reduce_s, sync_s and update_s > 0: $(grep -m1 comm_s "$tmp/r3z2/metrics.jsonl")"
ls "$tmp/r3z1/$final" | grep -c '^optimizer-0000[0-2]-of-00003.safetensors$' | grep -qx 3
ok $? "ZeRO 1 over 3 ranks saves three optimizer shards: $(ls "$tmp/r3z1/$final" | tr '\n' ' ')"

# 3. What each rank holds for training, as its backend allocated it: with
# P parameters over N ranks, stage 0 holds 16P bytes, stage 1 8P + 8P/N and
# stage 2 4P + 12P/N plus its gradient slots (a gradient buffer of G < P
# elements, which the run prints).
state() {
	sed -n 's/.*rank 0 \([0-9]*\) + [0-9]* bytes.*/\1/p' "$tmp/$1.out"
}
elements() {
	sed -n 's/.*gradient buffer \([0-9]*\) of \([0-9]*\) elements.*/\1 \2/p' "$tmp/$1.out"
}
for name in r2z0 r2z1 r2z2 r3z0 r3z1 r3z2; do
	ranks=${name:1:1} zero=${name:3:1} got=$(state $name)
	read -r g p <<<"$(elements $name)"
	case $zero in
	0) want=$((16 * p)) ;;
	1) want=$((8 * p + 8 * p / ranks)) ;;
	*) want=$((4 * p + 4 * g + 12 * p / ranks)) ;;
	esac
	# ranges fall on 16 elements; the rope table and AdamW's scalars add
	# under 1 KiB
	d=$((${got:-0} - want))
	[ -n "$got" ] && [ -n "$g" ] && [ ${d#-} -le $((1024 + 192 * ranks)) ] &&
		if [ $zero = 2 ]; then [ "$g" -lt "$p" ]; else [ "$g" = "$p" ]; fi
	ok $? "$name: rank 0 allocates $got bytes of parameters, gradients and moments, $want expected ($p parameters, gradient buffer $g)"
	# lltrain info's estimate of the same (MiB to one decimal)
	est=$("$LLTRAIN" info --preset tiny --model.vocab_size=320 --ranks $ranks --zero $zero |
		sed -n 's/.*(params \([0-9.]*\), grads \([0-9.]*\), optimizer \([0-9.]*\),.*/\1 + \2 + \3/p')
	awk -v got="${got:-0}" "BEGIN { d = ${est:-1e9} - got / 1048576; exit !(d < 0.2 && d > -0.2) }"
	ok $? "$name: lltrain info --ranks $ranks --zero $zero estimates $est MiB of it"
	# rank 1's part of the node's memory: a copy of its gradient buffer
	# and its shard, each on whole pages; at ZeRO 2, where the ranks sum on
	# threads of their own, room for 4 blocks' gradients (the tiny
	# preset's all 4) instead of the buffer's 2, the rows of the
	# embedding's lookup (all 320 tokens of 192 gradients, and their
	# count and tokens) and a page of the thread's counts
	[ $zero = 0 ] && continue
	shm=$(sed -n 's/.*rank 1 [0-9]* + \([0-9]*\) bytes.*/\1/p' "$tmp/$name.out")
	copy=$g what="a copy of its $g-element gradient buffer" rows=0
	[ $zero = 2 ] && copy=$p what="room for 4 blocks' gradients, the lookup rows, the thread's counts" \
		rows=$((4 * 321 + 4 * 320 * 192 + 4096))
	d=$((${shm:-0} - 4 * copy - 4 * p / ranks - rows))
	[ -n "$shm" ] && [ $d -ge -64 ] && [ $d -le 8192 ]
	ok $? "$name: rank 1 shares $shm bytes of the node's memory: $what and its shard"
done

# 3b. Gradient accumulation: stage 2 exchanges every backward and sums in
# the shard, stage 0 exchanges the last one.
train refa 0 "$@" --train.grad_accum=2
ok $rc "2 micro-batches a step, one process: $(tail -c 300 "$tmp/refa.out")"
for zero in 0 2; do
	train a3z$zero 3 "$@" --train.grad_accum=2 --zero $zero
	why=$(losses_match refa a3z$zero 2>&1)
	ok $? "3 ranks, ZeRO $zero, 2 micro-batches a step: losses within 1e-5 of one process $why"
done
train a3m 3 "$@" --train.grad_accum=2 --zero 2 --exchange mpi
why=$(losses_match refa a3m 2>&1)
ok $? "3 ranks, ZeRO 2 through MPI, 2 micro-batches a step: losses within 1e-5 of one process $why"
# 6 layers: more blocks than a part of the node's memory holds, so that the
# summing threads' ranks reuse a block's room within a backward
train refl 0 "$@" --train.grad_accum=2 --model.n_layers=6 --train.steps=15
ok $rc "6 layers, 2 micro-batches a step, one process: $(tail -c 300 "$tmp/refl.out")"
train a3l 3 "$@" --train.grad_accum=2 --model.n_layers=6 --train.steps=15 --zero 2
why=$(losses_match refl a3l 15 2>&1)
ok $? "3 ranks, ZeRO 2, 6 layers, 2 micro-batches a step: losses within 1e-5 of one process $why"

# 3c. Several nodes: LLTRAIN_NODE_RANKS=2 makes each 2 ranks a node. Each
# node sums through its shared memory, the nodes through MPI: an
# all-reduce at stage 0, a reduce-scatter to the owners' nodes at 1 and 2.
# on_nodes NAME SPEC ZERO HOW WHAT ARGS...: 4 ranks on the nodes of
# LLTRAIN_NODE_RANKS=SPEC at ZeRO stage ZERO; the exchange line must name
# HOW between the 2 nodes, and the losses must be one process's.
on_nodes() {
	local name=$1 spec=$2 zero=$3 how=$4 what=$5
	shift 5
	LLTRAIN_NODE_RANKS=$spec train "$name" 4 "$@" --zero "$zero"
	grep -q "^exchange: through the shared memory of each node's 2 ranks, and MPI collectives between the 2 nodes (gradients: $how)" \
		"$tmp/$name.out"
	ok $? "$what, ZeRO $zero: each node's memory, then MPI ($how): $(grep -m1 '^exchange' "$tmp/$name.out")"
	why=$(losses_match ref "$name" 2>&1)
	ok $? "$what, ZeRO $zero: losses within 1e-5 of one process $why"
}
for zero in 0 1 2; do
	how="reduce-scatter to the owners' nodes"
	[ $zero = 0 ] && how=all-reduce
	on_nodes n4z$zero 2 $zero "$how" "4 ranks on 2 nodes" "$@"
done
LLTRAIN_NODE_RANKS=2 train n6a 6 "$@" --train.grad_accum=2 --zero 2
why=$(losses_match refa n6a 2>&1)
ok $? "6 ranks on 3 nodes, ZeRO 2, 2 micro-batches a step: losses within 1e-5 of one process $why"
LLTRAIN_NODE_RANKS=2 train n3 3 "$@" --zero 1
grep -q "^exchange: MPI collectives (the nodes run different numbers of ranks)" "$tmp/n3.out"
ok $? "nodes of 2 and 1 ranks exchange through MPI, and say why: $(grep -m1 '^exchange' "$tmp/n3.out")"
why=$(losses_match ref n3 2>&1)
ok $? "nodes of 2 and 1 ranks: losses within 1e-5 of one process $why"
# Ranks dealt over the nodes in turn (node 0 runs ranks 0 and 2): no node's
# owners' range is one piece, so the nodes all-reduce whole pieces.
for zero in 1 2; do
	on_nodes d4z$zero 2:dealt $zero "all-reduce, as the nodes' ranks are not consecutive" \
		"4 ranks dealt over 2 nodes" "$@"
done
for bad in two 2:spread; do
	expect_failure=1 LLTRAIN_NODE_RANKS=$bad train nbad 2 "$@"
	[ $rc != 0 ] && grep -q "LLTRAIN_NODE_RANKS=$bad: expected a whole number of ranks, 1 or more, optionally followed by :dealt" "$tmp/nbad.out"
	ok $? "a bad LLTRAIN_NODE_RANKS is refused (exit $rc): $(grep -m1 lltrain: "$tmp/nbad.out")"
done
"${launch[@]}" -n 1 env LLTRAIN_NODE_RANKS=1 "$LLTRAIN" train "$@" --run.dir="$tmp/ndiff" : \
	-n 1 "$LLTRAIN" train "$@" --run.dir="$tmp/ndiff" >"$tmp/ndiff.out" 2>&1 </dev/null
rc=$?
[ $rc != 0 ] && grep -q "LLTRAIN_NODE_RANKS differs between the ranks (here unset)" "$tmp/ndiff.out"
ok $? "ranks that disagree on LLTRAIN_NODE_RANKS are refused (exit $rc): $(grep -m1 lltrain: "$tmp/ndiff.out")"
# OpenCL ranks (PoCL in CI) copy each bucket to the pinned shared memory
# without waiting, and sum it while backward goes on (10 steps: PoCL is
# slow).
if "$LLTRAIN" info 2>/dev/null | grep -q '^  opencl:'; then
	train refa10 0 "$@" --train.grad_accum=2 --train.steps=10
	# the watchdog's limit for OpenCL ranks, from one OpenCL process's
	# start-up (its kernels built, or loaded from the cache this first
	# build fills) and 2 steps: more than a rank's longest stretch away from
	# collectives (PoCL is much slower than the CPU backend)
	began=$(date +%s%N)
	train cl1 0 "$@" --train.grad_accum=2 --train.steps=2 --run.device=opencl
	cl_s=$(seconds_since "$began")
	ok $rc "2 steps in one OpenCL process: $(tail -c 200 "$tmp/cl1.out")"
	clt=(--comm-timeout "$(comm_timeout "$cl_s" 4)")
	echo "# one OpenCL process took $cl_s s: --comm-timeout $(comm_timeout "$cl_s" 4) for up to 4 OpenCL ranks"
	for zero in 0 2; do
		train c2z$zero 2 "$@" "${clt[@]}" --train.grad_accum=2 --train.steps=10 \
			--zero $zero --run.device=opencl
		why=$(losses_match refa10 c2z$zero 10 2>&1)
		ok $? "2 OpenCL ranks, ZeRO $zero, 2 micro-batches a step: losses within 1e-5 of one process $why"
	done
	LLTRAIN_NODE_RANKS=2 train c4n 4 "$@" "${clt[@]}" --train.grad_accum=2 --train.steps=10 \
		--zero 2 --run.device=opencl
	why=$(losses_match refa10 c4n 10 2>&1)
	ok $? "4 OpenCL ranks on 2 nodes, ZeRO 2, 2 micro-batches a step: losses within 1e-5 of one process $why"
	# a mixed job (an MPMD launch): rank 0 on OpenCL, rank 1 on the CPU;
	# at ZeRO 2 with --balance auto, which moves sequences to the faster
	# rank once two comparisons agree (PoCL's rank is several times slower)
	for zero in 0 2; do
		bal=
		[ $zero = 2 ] && bal="--balance auto"
		"${launch[@]}" -n 1 "$LLTRAIN" train "$@" "${clt[@]}" --train.grad_accum=2 \
			--train.steps=10 --zero $zero --run.device=opencl --run.dir="$tmp/x$zero" $bal : \
			-n 1 "$LLTRAIN" train "$@" "${clt[@]}" --train.grad_accum=2 --train.steps=10 \
			--zero $zero --run.device=cpu --run.dir="$tmp/x$zero" $bal \
			>"$tmp/x$zero.out" 2>&1 </dev/null
		rc=$?
		why=$(losses_match refa10 x$zero 10 2>&1)
		ok $(( rc || $? )) "an OpenCL rank and a CPU rank, ZeRO $zero ${bal:+(balance auto) }: losses within 1e-5 of one process (exit $rc) $why"
	done
	# the same job in bf16: the two backends round their bf16 results from
	# f32 values that may differ in the last bits, so a rounding may flip
	# (2^-8): the losses follow one bf16 process's within 1e-3
	train refb10 0 "$@" --train.grad_accum=2 --train.steps=10 --precision bf16
	"${launch[@]}" -n 1 "$LLTRAIN" train "$@" "${clt[@]}" --train.grad_accum=2 \
		--train.steps=10 --zero 2 --precision bf16 --run.device=opencl \
		--run.dir="$tmp/xb" --balance auto : \
		-n 1 "$LLTRAIN" train "$@" "${clt[@]}" --train.grad_accum=2 --train.steps=10 \
		--zero 2 --precision bf16 --run.device=cpu --run.dir="$tmp/xb" --balance auto \
		>"$tmp/xb.out" 2>&1 </dev/null
	rc=$?
	why=$(losses_match refb10 xb 10 1e-3 2>&1)
	ok $(( rc || $? )) "bf16, an OpenCL rank and a CPU rank, ZeRO 2 (balance auto): losses within 1e-3 of one bf16 process (exit $rc) $why"
	grep -q "^balance: .* ms/step before, [0-9]* ms expected$" "$tmp/x2.out"
	ok $? "--balance auto moves sequences between the OpenCL and the CPU rank: $(grep -m1 '^balance' "$tmp/x2.out")"
	# three and four steps after a move (by step 7 of 10, where the next
	# regular comparison is at step 23) the ranks check the new shares,
	# each check printing its line
	awk '/^balance: / { n++; if (/ms expected$/ && !moved) moved = n }
		END { exit !(moved && n >= moved + 2) }' "$tmp/x2.out"
	ok $? "after a move the ranks check the new shares twice: $(grep '^balance' "$tmp/x2.out" | sed -n 2,3p | cut -c 1-160 | tr '\n' ' ')"
else
	for what in "one OpenCL process" "2 OpenCL ranks, ZeRO 0" "2 OpenCL ranks, ZeRO 2" \
		"4 OpenCL ranks on 2 nodes" \
		"an OpenCL rank and a CPU rank, ZeRO 0" "an OpenCL rank and a CPU rank, ZeRO 2" \
		"bf16, an OpenCL rank and a CPU rank" \
		"--balance auto between an OpenCL and a CPU rank" \
		"checks after a move of --balance auto"; do
		skip "$what: this lltrain lists no OpenCL device"
	done
fi

# 4. --deterministic: bitwise the same parameters for 1, 2 and 3 ranks.
train d1 0 "$@" --deterministic
ok $rc "deterministic, one process: $(tail -c 300 "$tmp/d1.out")"
train d2 2 "$@" --deterministic --zero 1
train d3 3 "$@" --deterministic --zero 2
for name in d2 d3; do
	cmp -s "$tmp/d1/$final/model.safetensors" "$tmp/$name/$final/model.safetensors"
	ok $? "deterministic, ${name:1} ranks: parameters bitwise equal to one process's"
done
# train.matmul = tf32 changes nothing on a CPU (no TF32 units): with ZeRO 2
# and --deterministic it gives the fp32 run's parameters bitwise.
train t2 2 "$@" --deterministic --zero 2 --train.matmul=tf32
cmp -s "$tmp/d1/$final/model.safetensors" "$tmp/t2/$final/model.safetensors"
ok $? "train.matmul = tf32 on CPU ranks, ZeRO 2, deterministic: parameters bitwise equal to fp32's"
# --recompute block runs each block's forward again inside backward: over
# 3 ranks with ZeRO 2 it gives one process's parameters without it bitwise.
train r3 3 "$@" --deterministic --zero 2 --recompute block
cmp -s "$tmp/d1/$final/model.safetensors" "$tmp/r3/$final/model.safetensors"
ok $? "--recompute block over 3 ranks, ZeRO 2, deterministic: parameters bitwise equal to one process's without it"
# bf16 (--precision bf16) keeps the same promise: with --deterministic, 2
# ranks at ZeRO 1 and 3 at ZeRO 2 with recompute give one process's bits;
# without it, 2 ranks with --balance auto follow one process's losses.
train b1 0 "$@" --deterministic --precision bf16
ok $rc "bf16, deterministic, one process: $(tail -c 300 "$tmp/b1.out")"
train b2 2 "$@" --deterministic --zero 1 --precision bf16
train b3 3 "$@" --deterministic --zero 2 --precision bf16 --recompute block
for name in b2 b3; do
	cmp -s "$tmp/b1/$final/model.safetensors" "$tmp/$name/$final/model.safetensors"
	ok $? "bf16, deterministic, ${name:1} ranks: parameters bitwise equal to one process's"
done
cmp -s "$tmp/d1/$final/model.safetensors" "$tmp/b1/$final/model.safetensors"
[ $? = 1 ]
ok $? "and the bf16 run's parameters differ from the fp32 run's (bf16 ran)"
# bf16 across a resharding (2 ranks save at step 15, 3 resume) and with
# --balance auto: still one process's bits.
train bs 2 "$@" --deterministic --zero 2 --precision bf16 --run.checkpoint_every=15
rm -rf "$tmp/bs/$final"
train bs 3 "$@" --deterministic --zero 1 --resume auto
grep -q "resumed from .*step_00000015 at step 15" "$tmp/bs.out" &&
	cmp -s "$tmp/b1/$final/model.safetensors" "$tmp/bs/$final/model.safetensors"
ok $? "bf16 saved at 2 ranks, resumed at 3: parameters bitwise equal to one process's"
train bb 2 "$@" --deterministic --precision bf16 --balance auto --dist.balance_every=2
cmp -s "$tmp/b1/$final/model.safetensors" "$tmp/bb/$final/model.safetensors"
ok $? "bf16 with --balance auto, deterministic: parameters bitwise equal to one process's"

# 5. Resharding: a deterministic run over 2 ranks saves at step 15; its
# last checkpoint is removed and 3 ranks resume from step 15: the final
# parameters equal the uninterrupted run's bitwise.
train s2 2 "$@" --deterministic --zero 2 --run.checkpoint_every=15
rm -rf "$tmp/s2/$final"
train s2 3 "$@" --deterministic --zero 1 --resume auto
grep -q "resumed from .*step_00000015 at step 15" "$tmp/s2.out"
ok $? "3 ranks resume the 2-rank run's step 15: $(grep -m1 resumed "$tmp/s2.out")"
cmp -s "$tmp/d1/$final/model.safetensors" "$tmp/s2/$final/model.safetensors"
ok $? "saved at 2 ranks, resumed at 3: parameters bitwise equal to an uninterrupted run"
why=$(losses_match ref s2 2>&1)
ok $? "the resharded run's losses match the reference $why"

# 5b. A damaged newest checkpoint: rank 0 alone names it, in one line, and
# moves it aside; the run resumes from the one before. With every
# checkpoint damaged, rank 0 names each one once and the job fails without
# an abort.
cp -r "$tmp/s2" "$tmp/dmg"
truncate -s 5000 "$tmp/dmg/$final/model.safetensors"
train dmg 2 "$@" --zero 1 --resume auto
[ "$rc" = 0 ] && [ "$(grep -c '^skipped ' "$tmp/dmg.out")" = 1 ] &&
	grep -q "^skipped $tmp/dmg/$final: model.safetensors is 5000 bytes, state.json says [0-9]* (truncated); moved aside to $tmp/dmg/$final.damaged$" "$tmp/dmg.out" &&
	grep -q "resumed from .*step_00000015 at step 15" "$tmp/dmg.out" && [ -d "$tmp/dmg/$final.damaged" ]
ok $? "2 ranks pass over a damaged newest checkpoint, named once, moved aside (exit $rc): $(grep -m1 '^skipped' "$tmp/dmg.out")"
cp -r "$tmp/s2" "$tmp/dmg2"
truncate -s 5000 "$tmp/dmg2/$final/model.safetensors" \
	"$tmp/dmg2/checkpoints/step_00000015/model.safetensors"
expect_failure=1 train dmg2 2 "$@" --zero 1 --resume auto
[ "$rc" = 1 ] && [ "$(grep -c '^skipped ' "$tmp/dmg2.out")" = 2 ] &&
	grep -q "rank 0: $tmp/dmg2: no valid checkpoint" "$tmp/dmg2.out" &&
	! grep -qi "mpi_abort" "$tmp/dmg2.out" && [ ! -e "$tmp/dmg2/$final.damaged" ]
ok $? "every checkpoint damaged: each named once, the run directory named, exit 1 without an abort (exit $rc): $(grep -m1 'no valid' "$tmp/dmg2.out")"

# 6. Ranks that disagree are refused before training, naming the rank and
# the difference (an MPMD launch with another learning rate on rank 1).
"${launch[@]}" -n 1 "$LLTRAIN" train "$@" --run.dir="$tmp/bad" : \
	-n 1 "$LLTRAIN" train "$@" --run.dir="$tmp/bad" --train.lr=0.001 \
	>"$tmp/bad.out" 2>&1 </dev/null
rc=$?
grep -q "rank 1 (host .*) does not agree with rank 0 in \[train\]: 'lr = 0.001' here, 'lr = [0-9.e-]*' on rank 0" \
	"$tmp/bad.out"
ok $(( rc == 0 || $? )) "ranks with different train.lr refused (exit $rc): $(grep -m1 agree "$tmp/bad.out")"
[ ! -d "$tmp/bad/checkpoints" ]
ok $? "the refused run trained nothing (no checkpoints)"

# 7. A stalled rank (SIGSTOP) ends the job within 60 s, naming the rank,
# the step and the collective.
stall_rank stall 3 2 "$@" --comm-timeout 5
[ -n "$victim" ] && [ "$rc" != 0 ] && [ "$took" -le 60 ]
ok $? "a stalled rank ends the job: exit $rc after $took s"
grep -q "step [0-9]*: .* made no progress for 5 s: rank 2 did not answer (died or stalled" \
	"$tmp/stall.out"
ok $? "the message names the step, the collective and rank 2: $(grep -m1 'no progress' "$tmp/stall.out")"

# 7b. At the default --comm-timeout (30 s) too, a stalled rank ends the job
# within 60 s: rank 0 names it once its watchdog gave up, and does not wait
# for it a second time to agree on the failure. At ZeRO 2 with 2
# micro-batches a step, rank 0 waits for rank 1 within backward, in the
# gradient exchange, before the step's agreement.
stall_rank stall30 2 1 "${base[@]}" --zero 2 --train.grad_accum=2
[ -n "$victim" ] && [ "$rc" != 0 ] && [ "$took" -le 60 ]
ok $? "at the default --comm-timeout, a stalled rank (pid $victim) ends the job: exit $rc after $took s"
grep -q "step [0-9]*: .* made no progress for 30 s: rank 1 did not answer (died or stalled" \
	"$tmp/stall30.out"
ok $? "the message names rank 1: $(grep -m1 'no progress' "$tmp/stall30.out")"

# 8. A killed rank (SIGKILL) ends the job within 60 s; --resume auto then
# continues from the last checkpoint.
"${launch[@]}" -n 2 "$LLTRAIN" train "$@" --run.dir="$tmp/kill" --run.checkpoint_every=5 \
	>"$tmp/kill.out" 2>&1 </dev/null &
job=$!
for _ in $(seq 300); do
	[ -d "$tmp/kill/checkpoints/step_00000005" ] && break
	sleep 0.2
done
victim=$(pgrep -f "train .*--run.dir=$tmp/kill" | sort -n | tail -1)
kill -9 "$victim"
wait_for_job
[ "$rc" != 0 ] && [ "$took" -le 60 ]
ok $? "a killed rank ends the job: exit $rc after $took s"
grep -q "pid $victim" "$tmp/kill.out"
ok $? "rank 0's rank list names the killed pid $victim: $(grep -m1 "pid $victim" "$tmp/kill.out")"
train kill 2 "$@" --run.checkpoint_every=5 --resume auto
ok $rc "--resume auto after the abort finishes the run: $(grep -m1 resumed "$tmp/kill.out")"
why=$(losses_match ref kill 2>&1)
ok $? "the resumed run's losses match the reference $why"

# 9. --balance auto measures the ranks and keeps the mathematics, also when
# it compares them again every other step (and may move sequences).
train bal 2 "$@" --balance auto --dist.balance_every=2
ok $rc "--balance auto runs: $(tail -c 200 "$tmp/bal.out")"
grep -q "^balance: sequences per rank of each step of 10: rank 0 [0-9]* (measured [0-9.]* seq/s); rank 1 [0-9]* (measured [0-9.]* seq/s); forward + backward [0-9]* ms/step\(, shares kept\| before, [0-9]* ms expected\)$" "$tmp/bal.out"
ok $? "it prints the shares it measured: $(grep -m1 '^balance' "$tmp/bal.out")"
why=$(losses_match ref bal 2>&1)
ok $? "the balanced run's losses match the reference ($(grep -c '^balance' "$tmp/bal.out") share lines) $why"

# 10. Every run above that should end well exited 0.
bad_runs=$(awk '$2 != 0 { printf "%s (exit %s) ", $1, $2 }' "$tmp/statuses")
runs=$(wc -l <"$tmp/statuses")
[ "$runs" -ge 30 ] && [ -z "$bad_runs" ]
ok $? "all $runs runs that should end well exited 0${bad_runs:+: not $bad_runs}"

echo "1..$n"
exit $failed
