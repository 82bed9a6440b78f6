"""The ``hpcmass`` command: one entry point, a subcommand per stage or tool.

A subcommand lives in its stage's package as a module with ``HELP``, ``add_arguments(parser)``
and ``run(args, params, comm) -> int``; for a pipeline stage that is one call of
``hpcmass.<stage>.stage.run(workdir, params, comm, ...)``, the stage's Python API.
Every subcommand takes ``--params``, ``--workdir`` and repeated ``--set key.path=value``.
Errors the user can fix print one line and exit 2 (bad params/store) or 1 (failed work).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from . import __version__
from .errors import HpcmassError

#: (subcommand, module) in pipeline order, then tools.
COMMANDS = (
    ("catalog", "hpcmass.catalog.cli"),
    ("fetch-tng", "hpcmass.catalog.fetch_cli"),
    ("stage-data", "hpcmass.observe.stage_data_cli"),
    ("observe", "hpcmass.observe.cli"),
    ("dataset", "hpcmass.dataset.cli"),
    ("train", "hpcmass.train.cli"),
    ("interpret", "hpcmass.interpret.cli"),
    ("report", "hpcmass.report.cli"),
    ("compare", "hpcmass.report.compare_cli"),
    ("predict", "hpcmass.predict.cli"),
    ("export-model", "hpcmass.predict.export_cli"),
    ("submit", "hpcmass.hpc.submit_cli"),
    ("status", "hpcmass.status_cli"),
)


def available_commands():
    """(name, module) of the subcommands that exist in this installation, in pipeline order."""
    for name, module in COMMANDS:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            yield name, module


def common_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", metavar="FILE", help="run parameters (YAML); default: built-in defaults")
    common.add_argument("--workdir", metavar="DIR",
                        help="where store.h5 and outputs go (default: $HPCMASS_WORKDIR or runs/<run.name>)")
    common.add_argument("--set", metavar="KEY.PATH=VALUE", action="append", default=[], dest="overrides",
                        help="override one parameter, e.g. --set catalog.n_clusters=20 (repeatable)")
    common.add_argument("--restart-from", metavar="STAGE",
                        help="discard this stage and every later one from the store, then run")
    return common


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="hpcmass", description="Galaxy-cluster masses from mock Chandra X-ray images with a CNN.")
    parser.add_argument("--version", action="version", version=f"hpcmass {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = common_arguments()
    modules = {}
    for name, module_name in available_commands():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, parents=[common], help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        modules[name] = module
    return parser, modules


def resolve_workdir(args, params) -> Path:
    """Absolute, so that stages may change directory (SOXS works in a scratch directory)."""
    return Path(args.workdir or os.environ.get("HPCMASS_WORKDIR") or Path("runs") / params.run.name).resolve()


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    from .mpi import EXIT_STOPPED, get_logger, install_excepthook, install_stop_handler, stop_requested, world
    from .params import load_params

    comm = world()
    log = get_logger(comm)
    try:
        params = load_params(args.params, args.overrides)
        args.workdir = resolve_workdir(args, params)
        install_excepthook(comm)
        install_stop_handler()
        rc = int(modules[args.command].run(args, params, comm) or 0)
        if stop_requested():
            log.warning("stopped early on %s: finished units are in the store; re-run (or requeue) to resume",
                        stop_requested())
            return EXIT_STOPPED
        return rc
    except HpcmassError as e:
        if comm.Get_rank() == 0:
            print(f"hpcmass {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        log.warning("interrupted; finished units are kept in the store, re-run to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
