"""Submit the stage chain to SLURM: one job per stage, chained with afterok dependencies.

Resources come from the params' ``site`` section; the job script is ``slurm/stage.sbatch``. Stages
the store already marks complete are not submitted again, so resubmitting a finished or
half-finished chain completes it without redoing finished work.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import StageError
from ..params import STAGES, Params
from ..store import status

ROOT = Path(__file__).resolve().parents[2]
JOB_SCRIPT = ROOT / "slurm" / "stage.sbatch"


@dataclass(frozen=True)
class Job:
    stage: str
    command: list[str]


def plan_jobs(params: Params, params_file: Path | None, workdir: Path, stages: list[str],
              overrides: list[str]) -> list[Job]:
    """The sbatch command of each stage still to do, in order (dependencies filled at submit)."""
    site = params.site
    state = status(workdir)["stages"] if (workdir / "store.h5").exists() else {}
    log_dir = workdir / "slurm"
    hpcmass_args = [*(["--params", str(params_file)] if params_file else []), "--workdir", str(workdir),
                    *(a for o in overrides for a in ("--set", o))]
    env = {"HPCMASS_ROOT": str(ROOT), "HPCMASS_LAUNCHER": site.launcher, "HPCMASS_MODULES": " ".join(site.modules)}
    if site.venv:
        env["HPCMASS_VENV"] = site.venv
    export = "ALL," + ",".join(f"{k}={v}" for k, v in env.items() if "," not in v)
    jobs = []
    for stage in stages:
        s = state.get(stage)
        if s is not None and s["done"] == s["total"] and s["params_hash"] == params.stage_hash(stage):
            continue
        res = getattr(site, stage)
        cmd = ["sbatch", "--parsable", f"--job-name=hpcmass-{params.run.name}-{stage}", f"--ntasks={res.ntasks}",
               f"--time={res.time}", f"--signal=B:USR1@{site.warning_seconds}", "--requeue",
               f"--output={log_dir}/%x-%A{'_%a' if stage == 'train' else ''}.out", f"--export={export}"]
        cmd += [f"--partition={site.partition}"] * bool(site.partition)
        cmd += [f"--account={site.account}"] * bool(site.account)
        cmd += [f"--gres={res.gres}"] * bool(res.gres)
        cmd += [f"--nodes={res.nodes}"] * bool(res.nodes)
        if stage == "train":
            cmd.append(f"--array=0-{params.dataset.n_folds - 1}")
        cmd += [str(JOB_SCRIPT), stage, *hpcmass_args]
        jobs.append(Job(stage, cmd))
    return jobs


def submit(jobs: list[Job], workdir: Path, env: dict | None = None) -> dict[str, str]:
    """Run sbatch for each job with afterok on the previous one; returns stage -> job id."""
    (workdir / "slurm").mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    previous = None
    for job in jobs:
        cmd = list(job.command)
        if previous:
            cmd.insert(2, f"--dependency=afterok:{previous}")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ)
        if proc.returncode != 0:
            done = ", ".join(f"{s}={i}" for s, i in ids.items()) or "none"
            raise StageError(f"sbatch for the {job.stage} stage failed ({proc.stderr.strip()}); "
                             f"submitted so far: {done}")
        previous = ids[job.stage] = proc.stdout.strip().split(";")[0]
    return ids


def format_command(job: Job) -> str:
    return " ".join(shlex.quote(c) for c in job.command)


def chain_stages(first: str | None, last: str | None, available: list[str]) -> list[str]:
    lo = STAGES.index(first) if first else 0
    hi = STAGES.index(last) if last else len(STAGES) - 1
    return [s for s in STAGES[lo:hi + 1] if s in available]
