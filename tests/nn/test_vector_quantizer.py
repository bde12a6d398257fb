"""nn.VectorQuantizer: nearest-code output with the straight-through gradient, VQ-VAE losses, the EMA update
formula, dead-code replacement, k-means initialisation, perplexity and usage on a known assignment, eval mode,
bad inputs."""
import math

import pytest
import torch
from torch import nn

from daenr_fast.nn import VectorQuantizer

CODES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])


def quantizer(**kwargs):
    vq = VectorQuantizer(num_codes=4, dim=2, **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(CODES)
        vq.ema_sum.copy_(CODES)
    return vq


def test_output_is_the_nearest_code_with_straight_through_gradient():
    vq = quantizer().eval()
    z = torch.tensor([[1.0, -1.0], [9.0, 1.0], [0.5, 8.0]], requires_grad=True)
    q, info = vq(z)
    assert info["indices"].tolist() == [0, 1, 2]
    torch.testing.assert_close(q.detach(), CODES[[0, 1, 2]])
    w = torch.randn(3, 2)
    (q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)


def test_gradient_reaches_the_encoder_through_feature_maps():
    torch.manual_seed(0)
    encoder = nn.Conv2d(3, 8, 1)
    vq = VectorQuantizer(num_codes=16, dim=8)
    q, info = vq(encoder(torch.randn(2, 3, 5, 4)))
    assert q.shape == (2, 8, 5, 4) and info["indices"].shape == (2, 5, 4)
    (q.square().mean() + info["loss"]).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_feature_map_layout_matches_rows():
    torch.manual_seed(1)
    vq = VectorQuantizer(num_codes=8, dim=3).eval()
    z = torch.randn(2, 3, 4, 5)
    q, info = vq(z)
    q_rows, info_rows = vq(z.permute(0, 2, 3, 1).reshape(-1, 3))
    assert torch.equal(info["indices"].flatten(), info_rows["indices"])
    assert torch.equal(q.permute(0, 2, 3, 1).reshape(-1, 3), q_rows)


def test_losses_follow_vq_vae():
    z = torch.tensor([[1.0, -1.0], [9.0, 1.0]])
    e = CODES[[0, 1]]
    _, info = quantizer(beta=0.5, ema=True).eval()(z)
    torch.testing.assert_close(info["commitment_loss"], 0.5 * (z - e).square().mean())
    assert info["codebook_loss"].item() == 0.0
    learned = quantizer(beta=0.5, ema=False, dead_code_threshold=0)
    _, info = learned(z)
    torch.testing.assert_close(info["codebook_loss"], (z - e).square().mean())
    torch.testing.assert_close(info["loss"], info["codebook_loss"] + info["commitment_loss"])
    info["loss"].backward()
    torch.testing.assert_close(learned.codebook.grad[:2], 2 * (e - z) / z.numel())
    assert torch.equal(learned.codebook.grad[2:], torch.zeros(2, 2))


def test_ema_update_moves_codes_toward_assigned_vectors():
    decay, eps = 0.9, 1e-5
    vq = quantizer(decay=decay, eps=eps, dead_code_threshold=0)
    z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [8.0, 0.0]])  # two vectors to code 0, one to code 1
    vq(z)
    count = torch.tensor([decay + 2 * (1 - decay), decay + (1 - decay), decay, decay])
    sums = decay * CODES
    sums[0] += (1 - decay) * (z[0] + z[1])
    sums[1] += (1 - decay) * z[2]
    total = count.sum()
    smoothed = (count + eps) / (total + 4 * eps) * total
    torch.testing.assert_close(vq.ema_count, count)
    torch.testing.assert_close(vq.codebook, sums / smoothed[:, None])
    assert (vq.codebook[1] - z[2]).norm() < (CODES[1] - z[2]).norm()


def test_dead_code_is_replaced_by_a_batch_vector():
    vq = quantizer(dead_code_threshold=0.95, decay=0.9)
    z = torch.tensor([[1.0, 1.0], [9.0, 0.0], [1.0, 9.0]] * 4)  # code 3 gets nothing: its count drops to 0.9
    vq(z)
    assert (vq.codebook[3] == z).all(dim=1).any()
    assert vq.ema_count[3].item() == 1.0
    assert vq.ema_count[:3].min() > 0.95


def test_no_replacement_below_threshold_zero_and_no_update_in_eval():
    vq = quantizer(dead_code_threshold=0)
    z = torch.tensor([[1.0, 1.0]])
    vq.eval()
    vq(z)
    assert torch.equal(vq.codebook, CODES) and torch.equal(vq.ema_count, torch.ones(4))
    vq.train()
    vq(z)
    torch.testing.assert_close(vq.codebook[3], CODES[3])


def test_perplexity_and_usage_on_a_known_assignment():
    z = torch.tensor([[0.1, 0.0], [0.0, 0.1], [9.0, 0.0], [0.0, 9.0]])  # codes 0, 0, 1, 2
    _, info = quantizer().eval()(z)
    p = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(info["perplexity"], torch.exp(-(p * p.log()).sum()))
    assert math.isclose(info["perplexity"].item(), 2 * math.sqrt(2), rel_tol=1e-6)
    assert info["usage"].item() == 0.75


def test_kmeans_init_finds_the_clusters():
    g = torch.Generator().manual_seed(3)
    centers = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [0.0, -6.0]])
    z = centers.repeat(40, 1) + 0.1 * torch.randn(120, 2, generator=g)
    torch.manual_seed(4)
    vq = VectorQuantizer(num_codes=3, dim=2, kmeans_init=True, dead_code_threshold=0, decay=0.5)
    assert not vq.initialized
    vq(z)
    assert vq.initialized
    nearest = torch.cdist(centers, vq.codebook).min(dim=1).values
    assert (nearest < 0.2).all()


def test_state_dict_round_trip():
    vq = VectorQuantizer(num_codes=8, dim=3)
    vq(torch.randn(20, 3))
    other = VectorQuantizer(num_codes=8, dim=3)
    other.load_state_dict(vq.state_dict())
    assert torch.equal(other.codebook, vq.codebook) and torch.equal(other.ema_count, vq.ema_count)


def test_wrong_dimension_is_refused():
    with pytest.raises(ValueError, match=r"z must have shape \(B,D,H,W\) or \(M,D\) with D=2"):
        quantizer()(torch.zeros(3, 5))


def test_wrong_rank_is_refused():
    with pytest.raises(ValueError, match="z must have shape"):
        quantizer()(torch.zeros(3, 2, 4))


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match="z must be a floating torch.Tensor"):
        quantizer()(torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_codes=0), "num_codes must be an integer >= 1"), (dict(dim=2.5), "dim must be an integer"),
    (dict(num_codes=True), "num_codes must be an integer"), (dict(decay=1.0), "decay"), (dict(beta=-1.0), "beta"),
    (dict(beta=float("nan")), "beta must be a finite number"), (dict(eps=0.0), "eps"),
    (dict(decay=float("inf")), "decay must be a finite number"),
    (dict(dead_code_threshold=-1.0), "dead_code_threshold must be >= 0"),
    (dict(kmeans_iters=-1), "kmeans_iters must be an integer >= 0")])
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**kwargs)
