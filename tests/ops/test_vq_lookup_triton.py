"""vq_lookup, triton backend on CPU under TRITON_INTERPRET=1: distances against the reference, exact ties to the
lowest index across codebook tiles, distance gradients, float16 inputs with float32 distances. Small shapes (the
interpreter is slow)."""
import os

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports daenr_fast.kernels

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from daenr_fast.ops import reference, vq_lookup  # noqa: E402

pytestmark = pytest.mark.triton


def make_inputs(M, K, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, D, generator=g).to(dtype), torch.randn(K, D, generator=g).to(dtype)


@pytest.mark.parametrize("M,K,D", [(0, 3, 4), (1, 1, 1), (17, 3, 3), (70, 130, 33), (65, 64, 64), (5, 200, 2)],
                         ids=lambda v: str(v))
def test_matches_reference_by_distance(M, K, D):
    z, e = make_inputs(M, K, D)
    _, ref_dist = reference.vq_lookup(z.double(), e.double())
    idx, dist = vq_lookup(z, e, backend="triton")
    assert idx.shape == dist.shape == (M,) and idx.dtype == torch.int64 and dist.dtype == torch.float32
    chosen = ((z.double() - e.double()[idx]) ** 2).sum(1)
    tol = 1e-5 * (z.double().pow(2).sum(1) + e.double().pow(2).sum(1).max()) + 1e-6
    assert (chosen - ref_dist <= tol).all()
    assert ((dist.double() - ref_dist.double()).abs() <= tol).all()


def test_exact_ties_go_to_the_lowest_index():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0]]).repeat(30, 1)
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    idx, dist = vq_lookup(z, e, backend="triton")
    assert idx.tolist() == [0, 0, 1]
    torch.testing.assert_close(dist, torch.tensor([1.0, 1.0, 4.0]))


def test_distance_gradients_match_reference():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(12, 6, generator=g) * 4
    z = e[torch.randint(12, (40,), generator=g)] + 0.3 * torch.randn(40, 6, generator=g)
    gd = torch.rand(40, generator=g)
    grads = []
    for fn in (lambda a, b: reference.vq_lookup(a, b)[1], lambda a, b: vq_lookup(a, b, backend="triton")[1]):
        zz, ee = z.clone().requires_grad_(), e.clone().requires_grad_()
        fn(zz, ee).backward(gd)
        grads.append((zz.grad, ee.grad))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_float16_inputs_give_float32_distances():
    z, e = make_inputs(40, 50, 16, dtype=torch.float16, seed=3)
    _, ref_dist = reference.vq_lookup(z.double(), e.double())
    idx, dist = vq_lookup(z, e, backend="triton")
    assert dist.dtype == torch.float32
    chosen = ((z.double() - e.double()[idx]) ** 2).sum(1)
    tol = 1e-5 * (z.double().pow(2).sum(1) + e.double().pow(2).sum(1).max()) + 1e-6
    assert (chosen - ref_dist <= tol).all()
