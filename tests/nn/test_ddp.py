"""The readouts and the Poisson loss under DistributedDataParallel: ``torchrun`` runs examples/ddp_readout.py on 2
CPU processes (gloo), each on half of a batch of 16, and the gradients DDP leaves after the first backward equal
those of one process on the whole batch (computed here with the same model, data and random positions).

Both readouts of the example (FactorizedReadout, FullGaussian2d), each with the torch backend and with the compiled
cpu backend (forced with DAENR_FAST_BACKEND=cpu; skipped where it does not build, except under
DAENR_FAST_EXPECT_COMPILED). float32 throughout: the two sides sum the same terms in another order, so they agree
to rtol 1e-5 with an absolute floor of 1e-6 of the parameter's largest gradient entry.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from daenr_fast._dispatch import backend_status

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_readout.py"
WORLD, BATCH, SEED = 2, 16, 3
OPS = ("factorized_readout", "gaussian_readout", "poisson_loss")
EXPECT_COMPILED = bool(os.environ.get("DAENR_FAST_EXPECT_COMPILED"))
RTOL, ATOL_FRACTION = 1e-5, 1e-6


def _example():
    spec = importlib.util.spec_from_file_location("ddp_readout", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ddp_readout = _example()


def _require(backend):
    if backend == "cpu" and not EXPECT_COMPILED:
        missing = [f"{op}: {why}" for op in OPS for ok, why in [backend_status(op, "cpu")] if not ok]
        if missing:
            pytest.skip("compiled cpu backend unavailable (" + "; ".join(missing) + ")")


def _launch(readout, backend, out):
    env = dict(os.environ, DAENR_FAST_BACKEND=backend, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               str(EXAMPLE), "--readout", readout, "--steps", "1", "--batch-size", str(BATCH), "--seed", str(SEED),
               "--save-first-gradients", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def _single_process_gradients(readout):
    """One process, the whole batch: the example's model under the same seed, the union of the ranks' images."""
    torch.manual_seed(SEED)
    model = ddp_readout.CoreAndReadout(readout)
    dataset = ddp_readout.synthetic_data(SEED)
    index = []
    for rank in range(WORLD):
        sampler = ddp_readout.rank_sampler(dataset, rank, WORLD, SEED)
        sampler.set_epoch(0)
        index += list(sampler)[:BATCH // WORLD]
    images, responses = dataset[index]
    torch.manual_seed(SEED + 0)  # the example seeds this before the forward of step 0
    loss = ddp_readout.loss_of(model, model.readout, ddp_readout.PoissonLoss(activation="elu1"), images, responses)
    loss.backward()
    return model, loss.item()


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("readout", ddp_readout.READOUTS)
def test_ddp_gradients_equal_one_process_on_the_whole_batch(readout, backend, tmp_path, monkeypatch):
    _require(backend)
    ranks = _launch(readout, backend, tmp_path)
    monkeypatch.setenv("DAENR_FAST_BACKEND", backend)
    model, loss = _single_process_gradients(readout)

    for name, value in model.state_dict().items():
        assert torch.equal(ranks[0]["initial"][name], value), f"initial {name} differs from the example's"
    names = [n for n, _ in model.named_parameters()]
    assert sorted(ranks[0]["gradients"]) == sorted(names)
    for name, param in model.named_parameters():
        grads = [r["gradients"][name] for r in ranks]
        assert torch.equal(grads[0], grads[1]), f"the ranks disagree on {name}'s all-reduced gradient"
        scale = float(param.grad.abs().max())
        assert scale > 0, f"{name} got no gradient"
        torch.testing.assert_close(grads[0], param.grad, rtol=RTOL, atol=ATOL_FRACTION * scale,
                                   msg=lambda text, n=name: f"{n}: {text}")
    assert sum(r["loss"] for r in ranks) / WORLD == pytest.approx(loss, rel=RTOL)
