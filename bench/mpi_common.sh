# Shared by the MPI benches (sourced): a temporary directory removed on
# exit, the launcher with Open MPI's flags (and those that leave ranks
# unbound), the corpus prepared into
# $tmp/data, and the mean of metrics.jsonl fields over the timed steps.
# Needs LLTRAIN, MPIEXEC and VOCAB set.

# mpi_bench_setup NAME [CORPUS...]: sets here, tmp, launch, unbound; prepares the
# corpus (default: each text file of this source tree is a document).
mpi_bench_setup() {
	local name=$1
	shift
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/lltrain-$name.XXXXXX") || exit 1
	trap 'rm -rf "$tmp"' EXIT
	launch=("$MPIEXEC") unbound=()
	# Open MPI wants root and oversubscription allowed, and binds 1-2 ranks
	# to one core each unless told not to (unbound)
	if "$MPIEXEC" --version 2>&1 | grep -Eq 'Open MPI|OpenRTE'; then
		launch+=(--oversubscribe --allow-run-as-root)
		unbound=(--bind-to none)
	fi
	if [ $# -eq 0 ]; then
		# (not the Python checks' virtual environment under tests/)
		mapfile -t files < <(find "$here/src" "$here/man" "$here/cpu" "$here/cl" "$here/tests" \
			-path "$here/tests/python-env" -prune -o \
			-type f \( -name '*.[ch]' -o -name '*.[15]' -o -name '*.txt' -o -name '*.cl' \) -print)
		set -- "${files[@]}"
	fi
	"$LLTRAIN" prepare --out "$tmp/data" --vocab "$VOCAB" --doc-separator '' "$@" \
		>"$tmp/prep.out" 2>&1 || { cat "$tmp/prep.out"; exit 1; }
}

# timed_means FILE KEY...: the mean of each key over the step lines after
# step UNTIMED (default 5) of a metrics.jsonl, space-separated (0 for each
# when none).
timed_means() {
	local file=$1
	shift
	awk -F'[{:,}]' -v keys="$*" -v untimed="${UNTIMED:-5}" '
		BEGIN { nk = split(keys, k, " ") }
		/"step":/ && /"loss":/ {
			for (i = 1; i < NF; i++) {
				if ($i == "\"step\"") s = $(i + 1)
				for (j = 1; j <= nk; j++)
					if ($i == "\"" k[j] "\"") v[j] = $(i + 1)
			}
			if (s > untimed + 0) { n++; for (j = 1; j <= nk; j++) sum[j] += v[j] }
		}
		END { for (j = 1; j <= nk; j++) printf "%s%.9g", (j > 1 ? " " : ""), (n ? sum[j] / n : 0)
		      print "" }' "$file" 2>/dev/null
}
