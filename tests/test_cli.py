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


# ------------------------------------------------------------------------------------------------ error reporting
def _error_line(err: str, prefix: str) -> str:
    """The one line ``err`` must be: no traceback, no other output."""
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def _fail_with(monkeypatch, error):
    from daenr_fast.commands import data_stats

    def run(args):
        raise error

    monkeypatch.setattr(data_stats, "run", run)


def test_out_pointing_at_an_existing_file_is_one_line(tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.write_text("a file")
    assert cli.main(["train", "--out", str(existing), "--max-steps", "1", "--no-progress"]) == 2
    line = _error_line(capsys.readouterr().err, "daenr train: error: ")
    assert f"the output folder {existing} is an existing file, not a folder" in line
    assert existing.read_text() == "a file"


def test_os_error_is_one_line_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "region.npz"
    folder.mkdir()
    assert cli.main(["simulate", "--region", "3", "--out", str(folder)]) == 2
    line = _error_line(capsys.readouterr().err, "daenr simulate: error: ")
    assert line == f"daenr simulate: error: {folder}: Is a directory"


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/x/runs"), FileExistsError("taken")])
def test_every_os_error_is_a_user_error(monkeypatch, capsys, error):
    _fail_with(monkeypatch, error)
    assert cli.main(["data-stats", "sim:region3"]) == 2
    line = _error_line(capsys.readouterr().err, "daenr data-stats: error: ")
    assert line.endswith(("/x/runs: Permission denied", "taken"))


def test_internal_error_is_one_line_that_says_how_to_see_the_traceback(monkeypatch, capsys):
    _fail_with(monkeypatch, RuntimeError("boom"))
    assert cli.main(["data-stats", "sim:region3"]) == 1
    line = _error_line(capsys.readouterr().err, "daenr data-stats: error: internal error (RuntimeError: boom)")
    assert "--debug" in line and "DAENR_DEBUG=1" in line


@pytest.mark.parametrize("argv,env", [
    (["--debug", "data-stats", "sim:region3"], {}),
    (["data-stats", "sim:region3", "--debug"], {}),
    (["data-stats", "sim:region3"], {"DAENR_DEBUG": "1"}),
])
def test_debug_shows_the_traceback(monkeypatch, capsys, argv, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _fail_with(monkeypatch, RuntimeError("boom"))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and 'raise error' in err
    assert err.rstrip().endswith("daenr data-stats: error: internal error (RuntimeError: boom), and please report it")


def test_debug_shows_the_traceback_of_user_errors_too(monkeypatch, capsys):
    monkeypatch.setenv("DAENR_DEBUG", "1")
    assert cli.main(["data-stats", "nowhere.npz"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("daenr data-stats: error: nowhere.npz")


def test_debug_variable_zero_means_off(monkeypatch, capsys):
    monkeypatch.setenv("DAENR_DEBUG", "0")
    _fail_with(monkeypatch, RuntimeError("boom"))
    assert cli.main(["data-stats", "sim:region3"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_user_error_in_a_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "data.npz"
    bad.write_bytes(b"not an archive")
    result = subprocess.run([sys.executable, "-m", "daenr_fast.cli", "data-stats", str(bad)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"daenr data-stats: error: {bad} [*]: expected a .npz archive written by numpy.savez, got a file that is "
        "not a zip archive (empty, truncated or another format)"]


def test_bench_refuses_an_out_file_before_measuring(tmp_path, capsys):
    existing = tmp_path / "results"
    existing.write_text("a file")
    assert cli.main(["bench", "--quick", "--ops", "vq", "--sizes", "tiny", "--out", str(existing)]) == 2
    captured = capsys.readouterr()
    assert _error_line(captured.err, "daenr bench: error: ") == (
        f"daenr bench: error: --out {existing} is an existing file, not a folder")
    assert captured.out == ""
