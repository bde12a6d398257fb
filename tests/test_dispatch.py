"""Backend choice: explicit requests, the GPU order per op, dtype and call size, the CPU rule."""
import pytest
import torch

from daenr_fast import _dispatch
from daenr_fast.ops import OPS


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("work", [0, 1e6, 1e9, 1e12, float("inf")])
def test_gpu_order_ranks_every_gpu_backend_and_the_reference_once(op, dtype, work):
    order = _dispatch.gpu_order(op, dtype, work)
    assert sorted(order) == ["cuda", "torch", "triton"]


def test_gpu_order_follows_the_measured_crossings():
    readout = "factorized_readout"
    assert _dispatch.gpu_order(readout, torch.float32, 64 * 48 * 256 * 103)[0] == "cuda"
    assert _dispatch.gpu_order(readout, torch.float32, 32 * 64 * 1568 * 8000)[0] == "torch"
    assert _dispatch.gpu_order(readout, torch.bfloat16, 32 * 64 * 1568 * 8000)[0] == "triton"
    assert _dispatch.gpu_order(readout, torch.float16, 64 * 48 * 256 * 103)[0] == "cuda"
    assert _dispatch.gpu_order("poisson_loss", torch.float32, 2**21)[0] == "cuda"
    assert _dispatch.gpu_order("vq_lookup", torch.float32, 16384 * 1024 * 64)[0] == "cuda"
    assert _dispatch.gpu_order("vq_lookup", torch.float32, 65536 * 8192 * 256)[0] == "cuda"
    assert _dispatch.gpu_order("vq_lookup", torch.bfloat16, 65536 * 8192 * 256)[0] == "triton"
    assert _dispatch.gpu_order(readout, torch.float32, 128 * 64 * 256 * 1000)[0] == "cuda"
    assert _dispatch.gpu_order(readout) == _dispatch.gpu_order(readout, torch.float32, 0)


def test_steps_of_every_order_grow_and_end_unbounded():
    for op, kinds in _dispatch.GPU_PREFERENCE.items():
        assert set(kinds) == {"float32", "half"}, op
        for steps in kinds.values():
            limits = [limit for limit, _ in steps]
            assert limits == sorted(limits) and limits[-1] == float("inf"), op


def test_explicit_backend_wins_and_unknown_names_are_refused(monkeypatch):
    cpu = torch.device("cpu")
    assert _dispatch.resolve_backend("poisson_loss", "torch", cpu) == "torch"
    monkeypatch.setenv("DAENR_FAST_BACKEND", "torch")
    assert _dispatch.resolve_backend("poisson_loss", None, cpu, torch.float32, 1e9) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        _dispatch.resolve_backend("poisson_loss", "tpu", cpu)
    monkeypatch.setenv("DAENR_FAST_BACKEND", "cuda")
    with pytest.raises(_dispatch.BackendUnavailable, match="'cuda' is unavailable"):
        _dispatch.resolve_backend("poisson_loss", None, cpu)


def test_gpu_preference_is_the_table_file():
    from daenr_fast import dispatch_table

    assert _dispatch.GPU_PREFERENCE == dispatch_table.load(dispatch_table.TABLE_PATH)
    assert set(_dispatch.GPU_PREFERENCE) == set(OPS)
