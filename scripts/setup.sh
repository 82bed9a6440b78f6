#!/usr/bin/env bash
# One idempotent set-up for hpcmass: system MPI/HDF5/SLURM, a venv, mpi4py and h5py built
# against that MPI, TensorFlow 2.18 + tf-keras, Horovod, and the package itself.
# A second run checks a stamp and the live stack, and returns in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HPCMASS_VENV:-$ROOT/.venv}"
PY="${HPCMASS_PYTHON:-python3}"
CONSTRAINTS="$ROOT/constraints.txt"
STAMP="$VENV/.hpcmass-setup-stamp"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

APT_PKGS=(libopenmpi-dev openmpi-bin libhdf5-openmpi-dev pkg-config slurm-wlm munge)

system_packages() {
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        local missing=()
        for p in "${APT_PKGS[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        if ((${#missing[@]})); then
            log "installing Debian packages: ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    else
        # HPC site without root: use what `module load` provides, and say what is missing.
        local why=()
        command -v mpicc >/dev/null || why+=("mpicc (load an MPI module, e.g. 'module load openmpi')")
        command -v mpirun >/dev/null || command -v srun >/dev/null || why+=("mpirun or srun")
        if [[ -z "${HDF5_DIR:-}" ]] && ! pkg-config --exists "${HDF5_PKGCONFIG_NAME:-hdf5-openmpi}" 2>/dev/null; then
            why+=("a parallel HDF5 (load e.g. 'module load hdf5/parallel' and set HDF5_DIR, or HDF5_PKGCONFIG_NAME)")
        fi
        ((${#why[@]} == 0)) || die "not root with apt, and missing: ${why[*]}"
        log "using the site's MPI ($(command -v mpicc)) and HDF5 (${HDF5_DIR:-pkg-config ${HDF5_PKGCONFIG_NAME:-hdf5-openmpi}})"
    fi
}

stamp_key() {
    cat "$CONSTRAINTS" "$ROOT/setup.cfg" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16
}

stack_ok() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import h5py, mpi4py, tensorflow, tf_keras, pyxsim, soxs, yt, horovod.tensorflow, hpcmass
assert h5py.get_config().mpi
PY
}

system_packages
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]] && stack_ok; then
    log "environment up to date ($VENV)"
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating venv $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS")
export TF_USE_LEGACY_KERAS=1

log "build tools and mpi4py (against $(command -v mpicc))"
"${PIP[@]}" wheel setuptools Cython pkgconfig packaging numpy
MPICC="$(command -v mpicc)" "${PIP[@]}" --no-binary=mpi4py mpi4py

log "scientific stack (tensorflow, tf-keras, pyxsim, soxs, yt, astropy, colossus, ...)"
"${PIP[@]}" tensorflow tf-keras pyxsim soxs yt astropy colossus pydantic PyYAML tqdm matplotlib scipy pytest

if ! "$VENV/bin/python" -c "import h5py,sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
    log "building h5py with MPI (~3 min)"
    "$VENV/bin/python" -m pip uninstall -y -q h5py || true
    CC=mpicc HDF5_MPI=ON HDF5_PKGCONFIG_NAME="${HDF5_PKGCONFIG_NAME:-hdf5-openmpi}" H5PY_SETUP_REQUIRES=0 \
        "${PIP[@]}" --no-build-isolation --no-binary=h5py --no-cache-dir h5py
fi

if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    log "building Horovod against this MPI and TensorFlow (~2 min)"
    HOROVOD_WITH_MPI=1 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITHOUT_GLOO=1 MAKEFLAGS="-j$(nproc)" \
        "${PIP[@]}" --no-build-isolation --no-cache-dir horovod
fi

log "hpcmass (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -m pip check >/dev/null || die "pip check failed: $("$VENV/bin/python" -m pip check)"
stack_ok || die "the installed stack does not import, or h5py lacks MPI"
stamp_key > "$STAMP"
log "done: $VENV"
