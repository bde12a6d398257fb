"""vq_lookup on a CUDA GPU: the cuda and triton backends against the float64 reference by distance, float32 /
float16 / bfloat16 inputs (float32 distances), exact ties, distance gradients. Skipped without a GPU.

Tolerance on a chosen distance: 1e-5 * (||z||^2 + max ||e||^2) (float32 expanded form, float32 accumulation).
Run in a pytest process without ``TRITON_INTERPRET=1``; the triton cases skip themselves when it is set.
"""
import itertools
import os

import pytest
import torch

from daenr_fast.ops import reference, vq_lookup

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GRID = list(itertools.product([0, 1, 17, 4096], [1, 3, 256, 1024], [1, 3, 32, 64]))


def gpu_backends():
    return ["cuda"] + ([] if os.environ.get("TRITON_INTERPRET") == "1" else ["triton"])


@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("M,K,D", GRID, ids=lambda v: str(v))
def test_matches_reference_by_distance(backend, dtype, M, K, D):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(M, D, generator=g).to(dtype)
    e = torch.randn(K, D, generator=g).to(dtype)
    _, ref_dist = reference.vq_lookup(z.double(), e.double())
    idx, dist = vq_lookup(z.cuda(), e.cuda(), backend=backend)
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64
    idx, dist = idx.cpu(), dist.cpu()
    chosen = ((z.double() - e.double()[idx]) ** 2).sum(1)
    tol = 1e-5 * (z.double().pow(2).sum(1) + e.double().pow(2).sum(1).max()) + 1e-6
    assert (chosen - ref_dist <= tol).all()
    assert ((dist.double() - ref_dist).abs() <= tol).all()


@pytest.mark.parametrize("backend", gpu_backends())
def test_exact_ties_and_gradients(backend):
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]]).repeat(100, 1).cuda()
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]).cuda()
    assert vq_lookup(z, e, backend=backend)[0].tolist() == [0, 0, 1]
    g = torch.Generator().manual_seed(2)
    e = (torch.randn(12, 6, generator=g) * 4).cuda()
    z = e[torch.randint(12, (40,), generator=g).cuda()] + 0.3 * torch.randn(40, 6, generator=g).cuda()
    grads = []
    for fn in (lambda a, b: reference.vq_lookup(a, b)[1], lambda a, b: vq_lookup(a, b, backend=backend)[1]):
        zz, ee = z.clone().requires_grad_(), e.clone().requires_grad_()
        fn(zz, ee).sum().backward()
        grads.append((zz.grad, ee.grad))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
