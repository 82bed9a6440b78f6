"""The CLI: every subcommand shares the common options, and building it stays light."""

import subprocess
import sys

from hpcmass.cli import available_commands, build_parser
from hpcmass.params import STAGES


def test_cli_import_stays_light():
    """`hpcmass status` or a typo must not pay for importing TensorFlow, yt or pyXSIM."""
    code = ("import sys; from hpcmass.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'yt', 'pyxsim', 'soxs', 'matplotlib', 'horovod') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_command_takes_the_common_options():
    parser, modules = build_parser()
    assert set(modules) == {name for name, _ in available_commands()}
    for name in modules:
        args = parser.parse_args([name, "--params", "p.yaml", "--workdir", "w", "--set", "a.b=1", "--set", "c=2"])
        assert (args.params, args.workdir, args.overrides) == ("p.yaml", "w", ["a.b=1", "c=2"])


def test_stage_commands_are_listed_in_pipeline_order():
    names = [n for n, _ in available_commands() if n in STAGES]
    assert names == sorted(names, key=STAGES.index)
    assert "status" in dict(available_commands())


def test_relative_workdir_is_resolved(tmp_path):
    """A relative --workdir must survive stages that chdir (the observe stage runs SOXS in scratch)."""
    from hpcmass.cli import resolve_workdir
    from hpcmass.params import load_params

    class Args:
        workdir = "runs/x"

    assert resolve_workdir(Args, load_params(None)).is_absolute()
