#!/bin/sh
# Checks the OpenCL backend from the command line: device listing and
# choice, --device auto's fallback, and the one-line errors for a missing
# platform or device, a kernel that does not build, and an allocation the
# device refuses. CI always has an OpenCL device (PoCL on the CPU).
LLTRAIN=${LLTRAIN:-./lltrain}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-opencl.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
if "$LLTRAIN" info --preset tiny | grep -q "built without the OpenCL backend"; then
	echo "1..0 # SKIP this lltrain was built without the OpenCL backend (configure found no OpenCL + CLBlast)"
	exit 0
fi
. "$(dirname "$0")/tap.sh"
small="--preset tiny --steps 1 --batch 2 --seq 16 --sample-tokens 4"

expect 0 "opencl:0.0" "info lists the OpenCL devices by P.D" -- info --preset tiny
expect 0 "backend opencl:" "info opens the OpenCL backend" -- info --preset tiny
XDG_CACHE_HOME=$tmp/cache expect 0 "tokens/s:" "bench trains on opencl:0.0 (with --profile)" -- bench $small --device opencl:0.0 --profile
cp "$tmp/out" "$tmp/profiled"
# The compiled programs are cached, and a damaged cache file is rebuilt.
set -- "$tmp"/cache/lltrain/kernels-*.bin
[ -s "$1" ]
ok $? "the compiled programs are cached under XDG_CACHE_HOME ($# files)"
for f in "$tmp"/cache/lltrain/kernels-*.bin; do
	printf 'not a program binary' >"$f"
done
XDG_CACHE_HOME=$tmp/cache expect 0 "tokens/s:" "damaged cache files are rebuilt, not trusted" -- bench $small --device opencl:0.0
cp "$tmp/profiled" "$tmp/out"
has "peak device mem:" "bench on OpenCL prints the peak device memory"
has "profile:" "bench --profile prints the device time per step"
has "attention_forward" "bench --profile names the ops"
has "gemm" "bench --profile times CLBlast's GEMMs too"
expect 1 "no OpenCL device 9.9; found 0.0" "a device number that does not exist is refused, saying what there is" -- bench $small --device opencl:9.9
one_line "the missing device's message"
expect 1 "no OpenCL device name contains 'nosuchdevice'" "a device name that matches nothing is refused" -- bench $small --device opencl:nosuchdevice
expect 0 "device auto: using the" "--device auto says which device it chose" -- bench $small --device auto

# No platform at all: the ICD loader reads its vendors from an empty place.
mkdir "$tmp/novendors"
OCL_ICD_VENDORS=$tmp/novendors expect 1 "the OpenCL loader found no platform with a device" "no OpenCL platform: --device opencl exits 1 saying so" -- bench $small --device opencl
one_line "the no-platform message"
OCL_ICD_VENDORS=$tmp/novendors expect 0 "device auto: using the CPU (no OpenCL GPU; the OpenCL loader found no platform" "no OpenCL platform: --device auto falls back to the CPU and says so" -- bench $small --device auto

# A kernel that does not build: the log and the device are printed.
LLTRAIN_CL_OPTIONS='-Dulong=+' expect 1 "failed to build on" "a kernel build failure names the device" -- bench $small --device opencl
has "build log:" "the build failure prints the compiler's log"
has_match "[Ee][Rr][Rr][Oo][Rr]" "the log holds the compiler's error"

# An allocation the device refuses: bytes asked, bytes there, the setting
# (bench's own check of the estimate told that the device is far larger).
expect 1 "lower train.batch or train.seq" "a refused allocation names the setting that lowers it" -- bench --preset tiny --steps 1 --batch 65536 --device opencl --device-mem 1000000
has_match "refused [0-9]* bytes" "the refusal gives the bytes asked"
has_match "it has [0-9.]* GiB" "the refusal gives the device's memory"
# Without that, bench refuses before it allocates, from the estimate.
expect 1 "GiB short" "bench refuses a batch the device cannot hold before allocating" -- bench --preset tiny --steps 1 --batch 65536 --device opencl
one_line "bench's refusal"
one_line "the refusal message"
echo "1..$n"
exit $failed
