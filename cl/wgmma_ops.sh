#!/bin/sh
# Writes wgmma_ops.cl (committed; run again only to change it): the wgmma.mma_async
# wrappers of gemm_wgmma.cl, one per operand type and width n, whose register lists are
# too long to write by hand.
out=${1:-wgmma_ops.cl}
{
printf '%s\n' '/* wgmma.mma_async of one warpgroup, d[64 x n] += a[64 x k] b[k x n], a and b read from'
printf '%s\n' ' * shared memory through the descriptors da and db; d is the m64nN accumulator fragment.'
printf '%s\n' ' * Each instruction is a PTX comment marked //LTWG: that the host uncomments in the'
printf '%s\n' ' * compiled PTX before building it for sm_90a (cl_program.c): the OpenCL compiler targets'
printf '%s\n' ' * sm_90, which has no wgmma. In wgmma_bf16_tXY_nN, X and Y are the transpose flags of A'
printf '%s\n' ' * and B (1: MN-major in shared memory). Written by wgmma_ops.sh. */'
for form in bf16_t00 bf16_t01 bf16_t10 bf16_t11 tf32; do
	for n in 64 128 256; do
		r=$((n / 2))
		case $form in
		bf16_t*)
			shape="k16.f32.bf16.bf16"
			flags=${form#bf16_t}
			tail=", 1, 1, ${flags%?}, ${flags#?}"
			;;
		*)
			shape="k8.f32.tf32.tf32"
			tail=', 1, 1'
			;;
		esac
		regs=$(i=0; while [ $i -lt $r ]; do printf '%%%d' $i; [ $i -lt $((r - 1)) ] && printf ', '; i=$((i + 1)); done)
		printf '\nstatic inline void wgmma_%s_n%d(float *d, ulong da, ulong db)\n{\n' $form $n
		printf '\t__asm__ __volatile__(\n'
		printf '\t\t"//LTWG:{\\n"\n'
		printf '\t\t"//LTWG:.reg .pred p;\\n"\n'
		printf '\t\t"//LTWG:setp.ne.b32 p, %%%d, 0;\\n"\n' $((r + 2))
		printf '\t\t"//LTWG:wgmma.mma_async.sync.aligned.m64n%d%s "\n' $n "$shape"
		printf '\t\t"{%s}, "\n' "$regs"
		printf '\t\t"%%%d, %%%d, p%s;\\n"\n' $r $((r + 1)) "$tail"
		printf '\t\t"//LTWG:}\\n"\n'
		printf '\t\t:'
		i=0
		while [ $i -lt $r ]; do
			[ $((i % 8)) = 0 ] && printf '\n\t\t  '
			printf '"+f"(d[%d])' $i
			[ $i -lt $((r - 1)) ] && printf ', '
			i=$((i + 1))
		done
		printf '\n\t\t: "l"(da), "l"(db), "r"(1) : "memory");\n}\n'
	done
done
} | sed 's/[ ]*$//' > "$out"
