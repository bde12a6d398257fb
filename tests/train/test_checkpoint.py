"""Atomic checkpoint writes and RNG state capture."""
import os
import random

import numpy as np
import pytest
import torch

from daenr_fast.train.checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint


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
