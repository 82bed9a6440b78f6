#!/usr/bin/env bash
# One hpcmass stage under plain mpirun (workstations, or inside an allocation without srun).
#   jobs/stage.sh STAGE --params FILE [--workdir DIR] [--ranks N] [other hpcmass arguments]
#   jobs/observe.sh --params FILE ...        (the per-stage names are links to this script)
# Environment: VENV (default: the checkout's .venv), MPIRUN (default mpirun), MPIRUN_ARGS.
# The stage resumes from the store: re-running after an interruption finishes the work.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="$(basename "$0" .sh)"
if [[ "$name" == stage ]]; then STAGE="${1:?usage: jobs/stage.sh STAGE --params FILE [...]}"; shift; else STAGE="$name"; fi
VENV="${VENV:-$ROOT/.venv}"
RANKS="${RANKS:-2}" ARGS=()
while (($#)); do
    case "$1" in
        --ranks) RANKS="$2"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
source "$ROOT/jobs/env.sh"
exec ${MPIRUN:-mpirun} -n "$RANKS" ${MPIRUN_ARGS:-} -x TF_USE_LEGACY_KERAS -x XDG_CONFIG_HOME \
    "$VENV/bin/hpcmass" "$STAGE" "${ARGS[@]}"
