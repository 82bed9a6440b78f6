"""``hpcmass submit``: the stage chain as SLURM jobs with afterok dependencies."""

from __future__ import annotations

from pathlib import Path

from ..cli import available_commands
from ..params import STAGES
from .submit import chain_stages, format_command, plan_jobs, submit

HELP = "submit the stages to SLURM as a chain of batch jobs (train as an array over folds)"


def add_arguments(parser) -> None:
    parser.add_argument("--from", dest="first", choices=STAGES, help="first stage to submit (default: catalog)")
    parser.add_argument("--to", dest="last", choices=STAGES, help="last stage to submit (default: report)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch commands instead of running them")


def run(args, params, comm) -> int:
    if comm.Get_rank() != 0:
        return 0
    workdir = Path(args.workdir).resolve()
    params_file = Path(args.params).resolve() if args.params else None
    available = [name for name, _ in available_commands()]
    stages = chain_stages(args.first, args.last, available)
    jobs = plan_jobs(params, params_file, workdir, stages, args.overrides)
    if not jobs:
        print(f"nothing to submit: the store in {workdir} marks {', '.join(stages)} complete")
        return 0
    if args.dry_run:
        for job in jobs:
            print(format_command(job))
        return 0
    ids = submit(jobs, workdir)
    for stage, job_id in ids.items():
        print(f"{stage:<10} job {job_id}")
    print(f"logs: {workdir / 'slurm'}; progress: hpcmass status --workdir {workdir}")
    return 0
