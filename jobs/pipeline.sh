#!/usr/bin/env bash
# Run every hpcmass stage in order with plain mpirun; each stage resumes from the store, so a
# re-run after an interruption finishes the work without redoing what is marked done.
#   jobs/pipeline.sh --params FILE [--workdir DIR] [--ranks N] [-- extra hpcmass args]
# Environment: VENV (default .venv), MPIRUN (default mpirun), MPIRUN_ARGS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PARAMS="" WORKDIR="" RANKS="${RANKS:-2}" EXTRA=()
while (($#)); do
    case "$1" in
        --params) PARAMS="$2"; shift 2 ;;
        --workdir) WORKDIR="$2"; shift 2 ;;
        --ranks) RANKS="$2"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "pipeline.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -n "$PARAMS" ]] || { echo "pipeline.sh: --params FILE is required" >&2; exit 2; }
source "$ROOT/jobs/env.sh"
ARGS=(--params "$PARAMS" ${WORKDIR:+--workdir "$WORKDIR"} "${EXTRA[@]}")
# Stages that exist in this installation, in pipeline order (tools such as fetch-tng are not stages).
mapfile -t STAGES < <("$VENV/bin/python" -c '
from hpcmass.cli import available_commands
from hpcmass.params import STAGES
print("\n".join(n for n, _ in available_commands() if n in STAGES))')
start=$SECONDS
for stage in "${STAGES[@]}"; do
    # The report goes last, after the progress table, so that its summary ends the output.
    [[ "$stage" == report ]] && "$VENV/bin/hpcmass" status "${ARGS[@]}"
    echo "=== hpcmass $stage ($RANKS ranks) ==="
    VENV="$VENV" "$ROOT/jobs/stage.sh" "$stage" --ranks "$RANKS" "${ARGS[@]}"
done
[[ " ${STAGES[*]} " == *" report "* ]] || "$VENV/bin/hpcmass" status "${ARGS[@]}"
echo "pipeline finished in $((SECONDS - start)) s"
