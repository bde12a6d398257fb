"""Model names and :func:`build_model`.

Names: the paper's 9 joint models ``{cae,vae,vq-vae}-{fr,fc,fm}`` (:data:`JOINT_MODELS`), the autoencoder
baselines ``cae``, ``vae``, ``vq-vae`` and the readout-only baselines ``cnn-fr``, ``cnn-fc``, ``cnn-fm``
(:data:`BASELINES`); beyond the paper, the Gaussian-readout models ``cae-gr``, ``vae-gr``, ``vq-vae-gr`` and
``cnn-gr`` (:data:`EXTRA_MODELS`). :data:`MODEL_NAMES` holds all of them. The readout layer i (1..4) is a separate
argument; the paper writes the pair as e.g. CAE-FR2 (:func:`display_name`).

The defaults of :data:`MODEL_OPTIONS` make the baselines what the paper's citations describe (FR with its L1
sparsity penalty, FC with dropout and L2 as McIntosh et al. 2016, FM with Klindt et al. 2017's fixed mask at the
receptive-field envelope peak, VQ-VAE without dead-code restarts); the stronger variants stay selectable through
the options (``readout_l1=0``, ``fc_dropout=0, fc_l2=0``, ``fm_mask="ridge-gaussian"``, ``vq_restarts=True``), all
together as :data:`STRONG_BASELINE_OPTIONS`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from daenr_fast.models.cae import CAE
from daenr_fast.models.encoder import Encoder, check_layer, feature_shape
from daenr_fast.models.joint import DAENR, AutoencoderBaseline, CNNBaseline
from daenr_fast.models.gaussian_head import check_gr_init
from daenr_fast.models.readouts import EXTRA_READOUTS, FM_MASKS, READOUTS, build_readout
from daenr_fast.nn.fixed_mask_readout import ENVELOPE_PEAK
from daenr_fast.models.vae import VAE
from daenr_fast.models.vqvae import VQVAE

AUTOENCODERS = ("cae", "vae", "vq-vae")
JOINT_MODELS = tuple(f"{ae}-{ro}" for ae in AUTOENCODERS for ro in READOUTS)
CNN_BASELINES = tuple(f"cnn-{ro}" for ro in READOUTS)
BASELINES = AUTOENCODERS + CNN_BASELINES
#: models beyond the paper: the extra readouts (Gaussian) joint with each autoencoder and readout-only
EXTRA_JOINT_MODELS = tuple(f"{ae}-{ro}" for ae in AUTOENCODERS for ro in EXTRA_READOUTS)
EXTRA_CNN_MODELS = tuple(f"cnn-{ro}" for ro in EXTRA_READOUTS)
EXTRA_MODELS = EXTRA_JOINT_MODELS + EXTRA_CNN_MODELS
#: every model trained on the response loss only (no decoder)
READOUT_ONLY_MODELS = CNN_BASELINES + EXTRA_CNN_MODELS
MODEL_NAMES = JOINT_MODELS + BASELINES + EXTRA_MODELS

#: default L1 weight of the FR / FM / GR penalties, chosen on validation splits (see
#: :data:`daenr_fast.experiments.protocol.SILENT_CHOICES`, "readout regularisation")
READOUT_L1 = 0.03
#: default GR initialisation, chosen on validation splits (SILENT_CHOICES, "Gaussian readout")
GR_INIT = "rf"

#: options :func:`build_model` accepts besides name, layer and n_neurons, with their defaults
MODEL_OPTIONS = {
    "channels": 48,          # filters per conv layer
    "latent_dim": 100,       # CAE / VAE latent size
    "num_codes": 256,        # VQ-VAE codebook size K
    "code_dim": 32,          # VQ-VAE code dimension D
    "commitment": 0.25,      # VQ-VAE commitment weight
    "vq_ema": True,          # EMA codebook updates
    "vq_decay": 0.99,        # EMA decay
    "vq_restarts": False,    # restart dead VQ codes from batch vectors (van den Oord et al.: no)
    "init_noise": 1e-3,      # std of the initial readout weights
    "readout_l1": READOUT_L1,  # L1 weight of the FR (mask x features), FM and GR (features) penalties
    "fc_dropout": 0.5,       # FC dropout on the flattened features (McIntosh et al. 2016 as Klindt et al. 2017 ran it)
    "fc_l2": 0.01,           # FC L2 weight, penalty fc_l2 * 1/2 sum W^2 (same source)
    "fm_mask": ENVELOPE_PEAK,  # fixed mask at the STA-envelope peak (Klindt et al. 2017), or "ridge-gaussian"
    "fm_sigma": 3.0,         # FM Gaussian mask std, image pixels ("ridge-gaussian" only)
    "gr_init": GR_INIT,      # GR initial positions: "rf" (fitted RF centres) or "random" (neuralpredictors)
}


#: the model options of the stronger baselines this package used before they followed the paper's citations: no
#: readout penalty, FC without dropout and L2, FM with a Gaussian mask at a ridge-fit RF centre, VQ dead-code restarts
STRONG_BASELINE_OPTIONS = {"readout_l1": 0.0, "fc_dropout": 0.0, "fc_l2": 0.0, "fm_mask": "ridge-gaussian",
                           "vq_restarts": True}


def split_name(name: str) -> Tuple[Optional[str], Optional[str]]:
    """``"vq-vae-fm" -> ("vq-vae", "fm")``, ``"cae" -> ("cae", None)``, ``"cnn-fr" -> (None, "fr")``."""
    check_model_name(name)
    if name in AUTOENCODERS:
        return name, None
    head, _, readout = name.rpartition("-")
    return (None if head == "cnn" else head), readout


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    return name


def display_name(name: str, layer: int) -> str:
    """The paper's label: ``("cae-fr", 2) -> "CAE-FR2"``; autoencoder baselines carry no layer (``"VQ-VAE"``)."""
    return name.upper() if name in AUTOENCODERS else f"{name.upper()}{layer}"


def _autoencoder(kind: str, opts: dict) -> nn.Module:
    if kind == "cae":
        return CAE(latent_dim=opts["latent_dim"], channels=opts["channels"])
    if kind == "vae":
        return VAE(latent_dim=opts["latent_dim"], channels=opts["channels"])
    return VQVAE(num_codes=opts["num_codes"], code_dim=opts["code_dim"], commitment=opts["commitment"],
                 ema=opts["vq_ema"], decay=opts["vq_decay"], channels=opts["channels"], restarts=opts["vq_restarts"])


def build_model(name: str, layer: int = 2, n_neurons: Optional[int] = None, **cfg) -> nn.Module:
    """Build a registry model.

    Args:
        name: one of :data:`MODEL_NAMES`.
        layer: encoder layer i in 1..4 the readout taps (validated but unused by the autoencoder baselines).
        n_neurons: number of recorded neurons (required when the model has a readout).
        **cfg: any of :data:`MODEL_OPTIONS`.

    Returns:
        a :class:`~daenr_fast.models.joint.DAENR`, :class:`~daenr_fast.models.joint.AutoencoderBaseline` or
        :class:`~daenr_fast.models.joint.CNNBaseline`; each maps x (B,1,32,32) to a
        :class:`~daenr_fast.models.joint.ModelOutput`. An FM readout's mask (and a GR readout's initial positions)
        still has to be fitted to the training data (``model.readout.fit(images, responses)``; the trainer does it).
    """
    ae_kind, readout_kind = split_name(name)
    check_layer(layer)
    unknown = sorted(set(cfg) - set(MODEL_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(MODEL_OPTIONS)}")
    opts = {**MODEL_OPTIONS, **cfg}
    _check_options(opts)
    if readout_kind is None:
        return AutoencoderBaseline(name, _autoencoder(ae_kind, opts))
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, int) or n_neurons < 1:
        raise ValueError(f"model {name!r} has a readout: n_neurons must be a positive integer, got {n_neurons!r}")
    backbone = Encoder(1, opts["channels"], depth=layer) if ae_kind is None else _autoencoder(ae_kind, opts)
    readout = _readout_with_own_stream(readout_kind, feature_shape(layer, opts["channels"]), n_neurons, opts)
    if ae_kind is None:
        return CNNBaseline(name, backbone, readout, layer)
    return DAENR(name, backbone, readout, layer)


def _check_options(opts: dict) -> None:
    """Raise a ``ValueError`` naming the first bad model option."""
    for key in ("channels", "latent_dim", "num_codes", "code_dim"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {opts[key]!r}")
    for key in ("readout_l1", "fc_l2", "fc_dropout"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    if opts["fc_dropout"] >= 1:
        raise ValueError(f"fc_dropout must be a probability in [0, 1), got {opts['fc_dropout']!r}")
    if not isinstance(opts["vq_restarts"], bool):
        raise ValueError(f"vq_restarts must be True or False, got {opts['vq_restarts']!r}")
    if opts["fm_mask"] not in FM_MASKS:
        raise ValueError(f"unknown fixed mask {opts['fm_mask']!r} (fm_mask); valid: {', '.join(FM_MASKS)}")
    check_gr_init(opts["gr_init"])


def _readout_with_own_stream(kind: str, in_shape, n_neurons: int, opts: dict) -> nn.Module:
    """The readout is initialised from its own random stream (derived from the current seed) and leaves the
    global one untouched, so that at one seed CAE and CAE-FRi share their autoencoder weights and CNN-FRi and
    CAE-FRi their readout weights: paired comparisons then differ only by the loss."""
    seed = torch.initial_seed() + 7919
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        return build_readout(kind, in_shape, n_neurons, opts)
