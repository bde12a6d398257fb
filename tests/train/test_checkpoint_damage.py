"""Real damage to a real run's checkpoint: ``daenr evaluate`` refuses it in one line, ``daenr train --resume``
continues from ``checkpoint.prev.pt`` and ends exactly where the undamaged run ended; a kill during a write
leaves a temporary file that the next start removes."""
import io
import json
import shutil
import signal
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from daenr_fast.cli import main
from daenr_fast.train import load_checkpoint

RUN = ["--model", "cae-fr", "--layer", "3", "--beta", "0.5", "--max-steps", "6", "--eval-every", "3",
       "--checkpoint-every", "3", "--batch-size", "8", "--deterministic", "--threads", "1", "--no-progress",
       "--no-figures"]
COMPARED = ("images", "neurons", "per_neuron")


@pytest.fixture(scope="module")
def trained(tiny_npz, tmp_path_factory):
    """A finished 6-step run: checkpoint.pt at step 6, checkpoint.prev.pt at step 3."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("trained") / "run"
    try:
        assert main(["train", "--data", tiny_npz, "--out", str(out), *RUN]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def run(trained, tmp_path, capsys):
    """A fresh copy of the trained run folder."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    capsys.readouterr()
    return copy


def _weight_bytes(path):
    """(offset, length) in ``path`` of the largest tensor stored in the checkpoint."""
    data = path.read_bytes()
    start = data.index(b"\n") + 1
    with zipfile.ZipFile(io.BytesIO(data[start:])) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    local = start + info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[local + 26:local + 30])
    return local + 30 + name_len + extra_len, info.file_size


def zero_weight_bytes(path):
    offset, length = _weight_bytes(path)
    data = bytearray(path.read_bytes())
    at = offset + length // 2
    assert any(data[at:at + 64])
    data[at:at + 64] = bytes(64)
    path.write_bytes(bytes(data))
    start = data.index(b"\n") + 1
    torch.load(io.BytesIO(bytes(data[start:])), weights_only=False)  # what torch alone does: loads silently


DAMAGE = {
    "zeroed weight bytes": (zero_weight_bytes, "damaged: its contents do not match the SHA-256"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]), "truncated: "),
    "empty": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(p.stat().st_size)),
                     "not a daenr_fast checkpoint"),
}


def _one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]


def test_the_run_keeps_two_checkpoints(trained):
    assert load_checkpoint(trained / "checkpoint.pt")["state"]["step"] == 6
    assert load_checkpoint(trained / "checkpoint.prev.pt")["state"]["step"] == 3
    assert not list(trained.glob(".*.tmp"))


@pytest.mark.parametrize("damage", DAMAGE)
def test_evaluate_refuses_a_damaged_checkpoint_in_one_line(run, damage, capsys):
    spoil, reason = DAMAGE[damage]
    spoil(run / "checkpoint.pt")
    assert main(["evaluate", str(run)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err, f"daenr evaluate: error: {run / 'checkpoint.pt'}: ")
    assert reason in line
    assert f"{run / 'checkpoint.prev.pt'} (step 3) is intact" in line and "daenr train --resume --out" in line
    assert "PCC" not in captured.out


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_continues_from_the_previous_checkpoint_exactly(trained, run, damage, capsys):
    spoil, reason = DAMAGE[damage]
    spoil(run / "checkpoint.pt")
    assert main(["train", "--resume", "--out", str(run), "--threads", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "daenr train: warning: " in err and reason in err and "Traceback" not in err
    assert f"resuming from the previous checkpoint {run / 'checkpoint.prev.pt'} (step 3)" in err
    before = json.loads((trained / "metrics.json").read_text())
    after = json.loads((run / "metrics.json").read_text())
    assert {k: after[k] for k in COMPARED} == {k: before[k] for k in COMPARED}
    assert after["run"]["steps"] == 6
    assert load_checkpoint(run / "checkpoint.pt")["state"]["step"] == 6
    assert load_checkpoint(run / "checkpoint.prev.pt")["state"]["step"] == 3  # the damaged one never replaced it
    assert main(["evaluate", str(run)]) == 0


def test_missing_current_checkpoint_resumes_from_the_previous_one(run, capsys):
    (run / "checkpoint.pt").unlink()  # killed between the two renames of a write
    assert main(["train", "--resume", "--out", str(run), "--threads", "1", "--no-progress"]) == 0
    assert "checkpoint.pt: missing (a checkpoint write was interrupted); resuming from" in capsys.readouterr().err


def test_both_checkpoints_damaged_says_start_over(run, capsys):
    (run / "checkpoint.pt").write_bytes(b"")
    zero_weight_bytes(run / "checkpoint.prev.pt")
    for argv, command in ((["train", "--resume", "--out", str(run)], "train"), (["evaluate", str(run)], "evaluate")):
        assert main(argv) == 2
        line = _one_error_line(capsys.readouterr().err, f"daenr {command}: error: {run / 'checkpoint.pt'}: ")
        assert "empty file (0 bytes); the previous checkpoint is not usable either" in line
        assert f"{run / 'checkpoint.prev.pt'}: damaged" in line and "start the run over" in line


def test_fresh_run_over_an_old_one_drops_its_checkpoints(run, tiny_npz, capsys):
    (run / "checkpoint.prev.pt").write_bytes(b"old")
    assert main(["train", "--data", tiny_npz, "--out", str(run), *RUN, "--max-steps", "2", "--overwrite"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["state"]["step"] == 2
    assert not (run / "checkpoint.prev.pt").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_kill_during_a_write_leaves_a_temp_file_that_the_next_start_removes(run, capsys):
    """A process SIGKILLed while its checkpoint write is being flushed to disk (at the fsync)."""
    script = ("import os, signal, sys\n"
              "from daenr_fast.train import checkpoint\n"
              "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
              "checkpoint.save_checkpoint(sys.argv[1], checkpoint.load_checkpoint(sys.argv[1]))\n")
    result = subprocess.run([sys.executable, "-c", script, str(run / "checkpoint.pt")], timeout=300)
    assert result.returncode == -signal.SIGKILL
    orphans = list(run.glob(".checkpoint.pt.*.tmp"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 0
    assert load_checkpoint(run / "checkpoint.pt")["state"]["step"] == 6  # the write never touched it
    assert main(["train", "--resume", "--out", str(run), "--threads", "1", "--no-progress"]) == 0
    assert not list(run.glob(".checkpoint.pt.*.tmp"))
