"""Readout heads: the FM mask is estimated from data and then fixed (ridge-Gaussian variant here, the default in
test_baselines.py); activations; VAE KL."""
import numpy as np
import pytest
import torch

from daenr_fast.models import FixedMaskReadout, FullyConnectedReadout, activate, build_model, inverse_activation
from daenr_fast.models.receptive_fields import estimate_rf_centers, map_peaks
from daenr_fast.nn.fixed_mask_readout import gaussian_masks
from daenr_fast.models.vae import gaussian_kl


def _rf_data(n=400, size=32, seed=0):
    """Responses of neurons with Gaussian (linear, 'simple') or squared (energy, 'complex') RFs at known centres."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, size, size)).astype(np.float32)
    centers = np.array([[8.0, 20.0], [24.0, 6.0], [15.0, 15.0]])
    yy, xx = np.mgrid[:size, :size]
    rf = np.exp(-((yy - centers[:, :1, None]) ** 2 + (xx - centers[:, 1:, None]) ** 2) / (2 * 2.0 ** 2))
    lin = np.einsum("nhw,khw->nk", x, rf)
    drive = np.stack([lin[:, 0], lin[:, 1], np.einsum("nhw,hw->n", x ** 2, rf[2])], 1)
    drive = (drive - drive.mean(0)) / drive.std(0)
    s = rng.poisson(np.exp(0.5 * drive)).astype(np.float32)
    return torch.from_numpy(x)[:, None], torch.from_numpy(s), torch.from_numpy(centers).float()


def test_rf_centres_recovered_for_linear_and_energy_cells():
    images, responses, centers = _rf_data(n=600)
    assert torch.linalg.norm(estimate_rf_centers(images, responses) - centers, dim=1).max() <= 2.0


def test_gaussian_masks_normalised_and_centred():
    masks = gaussian_masks(torch.tensor([[3.5, 27.5], [16.0, 16.0]]), grid=8, image_size=32, sigma=3.0)
    assert masks.shape == (2, 8, 8)
    torch.testing.assert_close(masks.sum((1, 2)), torch.ones(2))
    assert map_peaks(masks)[0].tolist() == [0.0, 6.0]   # pixel 3.5 -> cell 0 (cells cover 4 px), 27.5 -> cell 6
    with pytest.raises(ValueError, match="fm_sigma"):
        gaussian_masks(torch.zeros(1, 2), grid=8, sigma=0)


def test_fm_mask_is_fixed_during_training():
    images, responses, _ = _rf_data(n=128)
    torch.manual_seed(0)
    model = build_model("cae-fm", layer=3, n_neurons=3, fm_mask="ridge-gaussian")
    head = model.readout
    assert isinstance(head, FixedMaskReadout) and not bool(head.fitted)
    head.fit(images, responses)
    assert bool(head.fitted)
    torch.testing.assert_close(head.centers, estimate_rf_centers(images, responses))
    torch.testing.assert_close(head.mask, gaussian_masks(head.centers, 8, 32, head.sigma))
    names = {n for n, _ in model.named_parameters()}
    assert "readout.mask" not in names and "readout.features" in names
    assert "readout.mask" in model.state_dict() and not head.mask.requires_grad
    mask0, feat0 = head.mask.clone(), head.features.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = images[:16].clamp(-1, 1)
    for _ in range(3):
        out = model(x)
        loss = (out.response - responses[:16]).pow(2).sum() + (out.reconstruction - x).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(head.mask, mask0)
    assert not torch.equal(head.features, feat0)


def test_fully_connected_readout():
    head = FullyConnectedReadout((4, 8, 8), 5)
    h = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(head(h), h.flatten(1) @ head.linear.weight.T + head.bias)
    assert head.masks().shape == (5, 8, 8)
    torch.testing.assert_close(head.regularizer(), head.linear.weight.abs().sum())


@pytest.mark.parametrize("activation", ["identity", "elu1", "softplus", "exp"])
def test_inverse_activation_roundtrip(activation):
    rates = torch.tensor([0.05, 0.5, 1.0, 3.0])
    torch.testing.assert_close(activate(inverse_activation(rates, activation), activation), rates)


def test_elu1_is_positive_and_rejects_unknown():
    z = torch.linspace(-10, 10, 21)
    torch.testing.assert_close(activate(z, "elu1"), torch.nn.functional.elu(z) + 1)
    assert activate(z, "elu1").min() > 0
    with pytest.raises(ValueError, match="unknown response activation"):
        activate(z, "relu")


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(4, 6), torch.ones(4, 6))
    torch.testing.assert_close(gaussian_kl(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1).mean())
