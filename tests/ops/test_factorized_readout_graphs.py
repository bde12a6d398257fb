"""factorized_readout on the GPU backends inside a captured CUDA graph and under
``torch.compile(mode="reduce-overhead")`` (which replays CUDA graphs): the replayed forward and gradients equal an
eager call on the same inputs. Needs a GPU (skipped without one); the autotuned sizes are warmed up before a
capture, as a training loop's first steps do."""
import pytest
import torch

from daenr_fast.ops import factorized_readout
from ops.conftest import CUDA, readout_inputs

OP = "factorized_readout"
SHAPES = [(16, 8, 8, 8, 40), (32, 64, 16, 16, 1000)]  # (B, C, H, W, N); the second is autotuned (>= 1e8)


def _step(backend, leaves, gy):
    y = factorized_readout(*leaves, backend=backend)
    return (y, *torch.autograd.grad(y, leaves, gy))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_backward_replay_from_a_cuda_graph(backend, device, shape):
    leaves = [t.requires_grad_() for t in readout_inputs(*shape, device=device)]
    gy = torch.randn(shape[0], shape[4], device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            _step(backend, leaves, gy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _step(backend, leaves, gy)
    with torch.no_grad():
        for t in leaves:
            t.copy_(torch.randn_like(t))
        gy.copy_(torch.randn_like(gy))
    graph.replay()
    torch.cuda.synchronize()
    want = _step(backend, leaves, gy)
    for got, expected in zip(captured, want):
        assert torch.equal(got, expected)  # the same kernels on the same inputs, deterministic


@pytest.mark.cuda
def test_reduce_overhead_compile_matches_eager(backend, device):
    class Readout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            _, m, w, b = readout_inputs(1, 8, 8, 8, 40, device=device)
            self.m, self.w, self.b = (torch.nn.Parameter(t) for t in (m, w, b))

        def forward(self, x):
            return torch.nn.functional.elu(factorized_readout(x, self.m, self.w, self.b, backend=backend)) + 1

    model = Readout()
    compiled = torch.compile(model, mode="reduce-overhead")
    for seed in range(4):  # warm-up, recording, replays
        x = torch.randn(16, 8, 8, 8, generator=torch.Generator().manual_seed(seed)).to(device)
        model.zero_grad()
        torch.compiler.cudagraph_mark_step_begin()
        got = compiled(x)
        got.sum().backward()
        got_grads = [p.grad.clone() for p in model.parameters()]
        got = got.clone()
        model.zero_grad()
        want = model(x)
        want.sum().backward()
        torch.testing.assert_close(got, want)
        for g, p in zip(got_grads, model.parameters()):
            torch.testing.assert_close(g, p.grad)
