"""The decoder's latent space: the whitened parametrisation is the model's own decoder path."""
import pytest
import torch

from daenr_fast.synthesis.latent import NATURAL_QUANTILE, LatentSpace


@pytest.mark.parametrize("model", ["cae-fr", "vae-fr", "vq-vae-fr"])
def test_decoding_natural_latents_gives_the_models_reconstructions(opened, model):
    run = opened(model)
    images = run.splits.tensors("train")[0]
    space = LatentSpace(run.model.autoencoder, images)
    x = images[:5]
    with torch.no_grad():
        decoded = space.decode_latent(space.encode(x))
        recon = run.model(x).reconstruction
        w = torch.randn(4, space.dim, generator=torch.Generator().manual_seed(0))
        again = space.whiten(space.latent(w)).float()
    assert decoded.shape == (5, 1, 32, 32)
    assert torch.allclose(decoded, recon, atol=1e-4)
    assert torch.allclose(again, w, atol=1e-3)          # w are coordinates in the kept components
    assert space.dim <= images.shape[0] // 2
    # standard normal over the natural images, the bound at the chosen quantile of their norms
    assert space.natural.shape == (images.shape[0], space.dim)
    assert torch.allclose(space.natural.var(0), torch.ones(space.dim, dtype=torch.float64), atol=1e-6)
    inside = (space.natural.norm(dim=1) <= space.radius + 1e-9).double().mean()
    assert float(inside) == pytest.approx(NATURAL_QUANTILE, abs=0.01)


def test_project_scales_only_what_is_outside(opened):
    run = opened("cae-fr")
    space = LatentSpace(run.model.autoencoder, run.splits.tensors("train")[0])
    w = torch.zeros(3, space.dim)
    w[0, 0] = 0.5 * space.radius
    w[1, 1] = 3.0 * space.radius
    w[2] = 1.0
    before = w.clone()
    space.project(w)
    assert torch.equal(w[0], before[0])
    assert float(w[1].norm()) == pytest.approx(space.radius, rel=1e-6)
    assert torch.allclose(w[2] / w[2].norm(), before[2] / before[2].norm())


def test_needs_an_autoencoder_and_two_images(opened):
    run = opened("cae-fr")
    with pytest.raises(TypeError, match="no decoder latent"):
        LatentSpace(run.model.readout, run.splits.tensors("train")[0])
    with pytest.raises(ValueError, match="at least 2 natural images"):
        LatentSpace(run.model.autoencoder, run.splits.tensors("train")[0][:1])
