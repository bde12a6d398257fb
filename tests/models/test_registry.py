"""Every registry model x layer builds and has the right shapes; bad names and options are refused clearly."""
import pytest
import torch

from daenr_fast.models import (BASELINES, JOINT_MODELS, MODEL_NAMES, Decoder, Encoder, build_model, display_name,
                               feature_shape, split_name)

N_NEURONS = 7
GRID = {1: 16, 2: 16, 3: 8, 4: 8}


def test_names():
    assert len(JOINT_MODELS) == 9 and len(BASELINES) == 6
    assert set(JOINT_MODELS) == {f"{a}-{r}" for a in ("cae", "vae", "vq-vae") for r in ("fr", "fc", "fm")}
    assert set(BASELINES) == {"cae", "vae", "vq-vae", "cnn-fr", "cnn-fc", "cnn-fm"}
    assert split_name("vq-vae-fm") == ("vq-vae", "fm")
    assert split_name("cnn-fc") == (None, "fc")
    assert split_name("vae") == ("vae", None)
    assert display_name("cae-fr", 2) == "CAE-FR2" and display_name("vq-vae", 3) == "VQ-VAE"


def test_encoder_decoder_sizes():
    torch.manual_seed(0)
    hs = Encoder()(torch.randn(2, 1, 32, 32))
    assert [tuple(h.shape) for h in hs] == [(2, 48, 16, 16), (2, 48, 16, 16), (2, 48, 8, 8), (2, 48, 8, 8)]
    assert [feature_shape(i) for i in (1, 2, 3, 4)] == [(48, 16, 16), (48, 16, 16), (48, 8, 8), (48, 8, 8)]
    out = Decoder()(hs[-1])
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1


@pytest.mark.parametrize("layer", [1, 2, 3, 4])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_and_shapes(name, layer):
    torch.manual_seed(0)
    model = build_model(name, layer=layer, n_neurons=N_NEURONS)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    out = model(x)
    ae, readout = split_name(name)
    if ae is None:
        assert out.reconstruction is None
        assert model.encoder.depth == layer          # CNN baseline: encoder only up to h_layer
    else:
        assert out.reconstruction.shape == (3, 1, 32, 32)
        assert out.reconstruction.abs().max() <= 1   # tanh output
        assert set(out.aux_losses) == set(model.aux_terms)
        assert all(v.dim() == 0 and torch.isfinite(v) for v in out.aux_losses.values())
    if readout is None:
        assert out.response is None and model.masks() is None and not model.has_readout
    else:
        assert out.response.shape == (3, N_NEURONS)
        assert model.masks().shape == (N_NEURONS, GRID[layer], GRID[layer])
        assert model.readout_regularizer().dim() == 0
        out.response.sum().backward()                # gradient reaches the first encoder layer
        first = model.encoder if ae is None else model.autoencoder.encoder
        assert first.blocks[0][0].weight.grad.abs().sum() > 0


def test_latent_sizes():
    assert build_model("cae").autoencoder.to_latent.out_features == 100
    assert build_model("vae-fr", n_neurons=3).autoencoder.to_posterior.out_features == 200
    assert build_model("cae", latent_dim=10).autoencoder.latent_dim == 10


def test_vae_eval_is_deterministic():
    torch.manual_seed(0)
    model = build_model("vae-fc", layer=2, n_neurons=3).eval()
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x).reconstruction, model(x).reconstruction)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'cae-xx'.*cae-fr.*cnn-fm"):
        build_model("cae-xx", layer=2, n_neurons=3)


@pytest.mark.parametrize("layer", [0, 5, "2", 2.0, True])
def test_bad_layer(layer):
    with pytest.raises(ValueError, match=r"layer must be one of \[1, 2, 3, 4\]"):
        build_model("cae-fr", layer=layer, n_neurons=3)


def test_bad_neurons_and_options():
    with pytest.raises(ValueError, match="n_neurons must be a positive integer"):
        build_model("cnn-fr", layer=2)
    with pytest.raises(ValueError, match="unknown model option.*latent_dims"):
        build_model("cae", latent_dims=3)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        build_model("vae", latent_dim=0)


def test_paired_models_share_initialisation_at_one_seed():
    """CAE vs CAE-FR2 share autoencoder weights; CNN-FR2 vs CAE-FR2 share readout and the first two conv layers."""
    torch.manual_seed(3)
    cae = build_model("cae", layer=2)
    torch.manual_seed(3)
    cae_fr = build_model("cae-fr", layer=2, n_neurons=7)
    torch.manual_seed(3)
    cnn_fr = build_model("cnn-fr", layer=2, n_neurons=7)
    for (name, a), (_, b) in zip(cae.autoencoder.state_dict().items(), cae_fr.autoencoder.state_dict().items()):
        torch.testing.assert_close(a, b, msg=lambda m: f"autoencoder {name}: {m}")
    for (name, a), (_, b) in zip(cae_fr.readout.state_dict().items(), cnn_fr.readout.state_dict().items()):
        torch.testing.assert_close(a, b, msg=lambda m: f"readout {name}: {m}")
    cnn_convs = [p for n, p in cnn_fr.encoder.named_parameters()]
    cae_convs = [p for n, p in cae_fr.autoencoder.encoder.named_parameters()][:len(cnn_convs)]
    for a, b in zip(cnn_convs, cae_convs):
        torch.testing.assert_close(a, b)
