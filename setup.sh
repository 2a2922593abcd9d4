#!/bin/sh
# Installs lltrain's Debian build dependencies (as root, on Debian 12; clang
# and its libFuzzer and sanitizer runtimes for make fuzz; python3-venv and
# the Python packages of the format checks that Debian ships, numpy,
# torch and psutil among them: make check pip-installs the rest into a virtual
# environment, tests/requirements.txt) and builds it in this directory:
# ./setup.sh [extra configure options]
set -eu
DEPS="build-essential autoconf automake pkg-config python3
  libopenblas-openmp-dev libdnnl-dev libjansson-dev libpcre2-dev libinih-dev zlib1g-dev
  ocl-icd-opencl-dev opencl-headers libclblast-dev pocl-opencl-icd clinfo
  mpich libmpich-dev fortunes fortunes-min groff-base
  clang libclang-rt-dev libomp-dev
  python3-venv python3-numpy python3-yaml python3-requests python3-torch python3-psutil"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $DEPS >/dev/null
else
	echo "setup.sh: not root on Debian: make sure these are installed: $DEPS" >&2
fi
autoreconf -fi
./configure --with-opencl --with-mpi "$@"
make -j"$(nproc)"
