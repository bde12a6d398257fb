"""Atomic, checksummed checkpoint writes, every kind of damage refused by name, and RNG state capture."""
import hashlib
import io
import os
import random
import re

import numpy as np
import pytest
import torch

from daenr_fast.train.checkpoint import (CheckpointError, capture_rng_states, load_checkpoint, load_run_checkpoint,
                                         remove_stale_temp_files, restore_rng_states, save_checkpoint)


def test_save_load_roundtrip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "checkpoint.pt"
    save_checkpoint(path, {"a": torch.arange(3), "b": {"step": 7}})
    save_checkpoint(path, {"a": torch.arange(4), "b": {"step": 8}})
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["a"], torch.arange(4)) and loaded["b"]["step"] == 8
    assert os.listdir(path.parent) == ["checkpoint.pt"]


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"step": 2, "bad": Unpicklable()})
    assert load_checkpoint(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_states_roundtrip():
    gen = torch.Generator().manual_seed(5)
    states = capture_rng_states(gen)
    first = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(10, generator=gen))
    restore_rng_states(states, gen)
    second = (torch.rand(3), np.random.rand(3), random.random(), torch.randperm(10, generator=gen))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2] and torch.equal(first[3], second[3])


# ---------------------------------------------------------------------------------------------- format and damage
def _payload_start(data: bytes) -> int:
    return data.index(b"\n") + 1


def test_file_is_a_checksummed_header_then_a_plain_torch_archive(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.arange(10.0)})
    data = path.read_bytes()
    start = _payload_start(data)
    header = data[:start].decode("ascii").split()
    assert header[:2] == ["daenr-checkpoint", "1"]
    assert header[2] == "sha256=" + hashlib.sha256(data[start:]).hexdigest()
    assert header[3] == f"bytes={len(data) - start}"
    assert torch.equal(torch.load(io.BytesIO(data[start:]), weights_only=True)["w"], torch.arange(10.0))


def test_previous_checkpoint_is_kept(tmp_path):
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_checkpoint(path, {"step": 1}, previous=prev)
    assert not prev.exists()
    save_checkpoint(path, {"step": 2}, previous=prev)
    save_checkpoint(path, {"step": 3}, previous=prev)
    assert load_checkpoint(path) == {"step": 3} and load_checkpoint(prev) == {"step": 2}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.prev.pt", "checkpoint.pt"]


def _damaged(tmp_path, change):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.randn(100)})
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(data)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.path == path and str(info.value).startswith(f"{path}: ")
    return str(info.value)


def _flip_last_byte(data):
    data[-1] ^= 0x01
    return data


@pytest.mark.parametrize("change,message", [
    (_flip_last_byte, "damaged: its contents do not match the SHA-256"),
    (lambda d: d[:-1], r"truncated: \d+ of \d+ payload bytes"),
    (lambda d: d[:40], "damaged: unreadable checkpoint header"),
    (lambda d: d + b"\0", "damaged: 1 bytes more than"),
    (lambda d: b"", r"empty file \(0 bytes\)"),
    (lambda d: np.random.default_rng(0).bytes(len(d)), "not a daenr_fast checkpoint"),
    (lambda d: d.replace(b"daenr-checkpoint 1 ", b"daenr-checkpoint 9 ", 1), "format 9 by a newer daenr_fast"),
])
def test_damage_is_a_checkpoint_error_naming_the_file(tmp_path, change, message):
    assert re.search(message, _damaged(tmp_path, change))


def test_a_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_non_dict_payload_is_not_a_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"x": 1})
    data = path.read_bytes()
    buffer = io.BytesIO()
    torch.save([1, 2], buffer)
    body = buffer.getvalue()
    path.write_bytes(b"daenr-checkpoint 1 sha256=" + hashlib.sha256(body).hexdigest().encode() +
                     f" bytes={len(body)}\n".encode() + body)
    assert data != path.read_bytes()
    with pytest.raises(CheckpointError, match="not a daenr_fast checkpoint.*list"):
        load_checkpoint(path)


def test_headerless_torch_archive_loads_after_its_crc_check(tmp_path):
    """Files written before the header: plain torch.save archives, checked through their CRC-32s."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.arange(1000.0)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(1000.0))
    data = bytearray(path.read_bytes())
    offset = data.index(torch.arange(1000.0).numpy().tobytes())
    data[offset + 400:offset + 464] = bytes(64)
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1000.0))  # torch: silent
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: damaged: record .* fails its CRC-32 check"):
        load_checkpoint(path)


def test_run_checkpoint_needs_the_run_keys(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"config": {}})
    with pytest.raises(CheckpointError, match="not a training checkpoint .no n_neurons, model"):
        load_run_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_run_checkpoint(tmp_path / "elsewhere")


def test_stale_temp_files_are_removed(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})
    (tmp_path / ".checkpoint.pt.k3j4_x.tmp").write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_text("not ours")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".checkpoint.pt.k3j4_x.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "notes.tmp"]
