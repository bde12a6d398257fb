"""The ``daenr`` command: every sub-command is listed and its help renders; errors exit cleanly."""
import subprocess
import sys

import pytest

from daenr_fast import cli

COMMANDS = ["bench", "build", "data-stats", "demo", "evaluate", "info", "reproduce", "simulate", "train"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_sub_command_help_renders(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: daenr" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_info_runs_as_installed_console_script():
    result = subprocess.run([sys.executable, "-m", "daenr_fast.cli", "info", "--no-build"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "factorized_readout" in result.stdout and "triton" in result.stdout
    assert "factorized_readout   float32  <= 3e+09: cuda, triton, torch; above: torch, cuda, triton" in result.stdout
    assert "poisson_loss         half     always: cuda, triton, torch" in result.stdout
