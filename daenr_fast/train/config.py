"""Training configuration: :class:`TrainConfig`, its validation and (de)serialisation.

Loss (per batch of B images; every term is reduced per image, then averaged over the batch; paper Eqs. 4-7)::

    total = alpha * (E(x, x_hat) + kl_weight * KL + VQ) + beta * (R(z, s) + readout_reg * P(readout))

    E = 1/B sum_b red_P (x_b - x_hat_b)^2                        over the P = 32*32 pixels of image b
    R = 1/B sum_b red_n (r_bn - s_bn log(r_bn + 1e-8)),  r = act(z)   (response_loss="poisson")
      = 1/B sum_b red_n (act(z)_bn - s_bn)^2                     (response_loss="mse", for dF/F data)

``P`` is the readout head's own weighted penalty (``regularizer()``: the FR / FM / GR L1 terms with weight
``readout_l1``, FC's L2 term with weight ``fc_l2``; model options). ``red`` is a sum or a mean, chosen by
``recon_reduction`` (over pixels) and ``response_reduction`` (over neurons). The default, :data:`PAPER_SCALING`
(pixel mean, neuron sum), is the scaling under which the paper's alpha:beta tables make sense: with the pixel
sum of Eq. 4 read literally, the reconstruction gradient is ~1e3 times larger and Table 8's betas (1e-5..1e-3)
leave the neural term without effect on the encoder (see :mod:`daenr_fast.train.gradient_share` and the report's
settings table).

Autoencoder baselines have only the alpha terms, CNN baselines only the beta terms.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from daenr_fast.models.encoder import check_layer
from daenr_fast.models.readouts import ACTIVATIONS
from daenr_fast.models.registry import AUTOENCODERS, MODEL_OPTIONS, READOUT_ONLY_MODELS, check_model_name

RESPONSE_LOSSES = ("poisson", "mse")
DEFAULT_ACTIVATION = {"poisson": "elu1", "mse": "identity"}
#: per-image reductions of the reconstruction error (over pixels) and of the response loss (over neurons)
REDUCTIONS = ("sum", "mean")
#: (recon_reduction, response_reduction) that the paper's alpha:beta tables (8-13) assume
PAPER_SCALING = ("mean", "sum")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json``).

    Model and data:
        model: registry name (``cae-fr``, ..., ``cnn-fm``, ``cae``, ``vae``, ``vq-vae``).
        layer: encoder layer i (1..4) the readout taps.
        data: data spec for :func:`daenr_fast.data.load` (``sim:region3``, ``antolik:PATH/region3``, ``PATH.npz``).
        val_fraction: part of the training set held out for validation (early stopping).
        model_options: extra :func:`daenr_fast.models.build_model` options (``latent_dim``, ``num_codes``, ...).

    Loss (see the module docstring):
        alpha, beta: weights of the image and the response terms (paper Tables 8-13).
        recon_reduction: ``"mean"`` (default) or ``"sum"`` of the squared error over an image's pixels.
        response_reduction: ``"sum"`` (default) or ``"mean"`` of the response loss over an image's neurons.
        response_loss: ``"poisson"`` (spike counts) or ``"mse"`` (non-count data such as dF/F).
        activation: readout output nonlinearity; None = ``elu1`` for Poisson, ``identity`` for MSE.
        kl_weight: weight of the VAE's KL term inside the image term.
        readout_reg: multiplier of the readout's penalty inside the response term; the penalty carries its own
            weights (model options ``readout_l1``, ``fc_l2``), so 1 applies them and 0 turns the penalty off.

    Protocol (paper section 4.1):
        lr: initial Adam learning rate; lr_factor: multiplier after each round (0.5 = halve).
        batch_size: images per step. eval_every: steps between validation evaluations.
        patience: steps without validation improvement that end a round; rounds: number of rounds.
        min_delta: improvement needed to count as better. max_steps: total step cap (None = no cap).

    Run:
        seed: seeds the data split, initialisation, batches and sampling. device: ``cpu``, ``cuda`` or ``auto``.
        deterministic: ``torch.use_deterministic_algorithms`` during the run.
        out: output folder (None = write nothing). checkpoint_every: steps between checkpoints.
        progress: show a progress bar. figures: write ``reconstructions.png`` and ``neurons.png``.
        preset: the preset name the weights came from (informational).
    """

    model: str = "cae-fr"
    layer: int = 2
    data: str = "sim:region3"
    alpha: float = 1.0
    beta: float = 1e-3
    recon_reduction: str = PAPER_SCALING[0]
    response_reduction: str = PAPER_SCALING[1]
    response_loss: str = "poisson"
    activation: Optional[str] = None
    kl_weight: float = 1.0
    readout_reg: float = 1.0
    lr: float = 1e-3
    lr_factor: float = 0.5
    batch_size: int = 64
    eval_every: int = 50
    patience: int = 1000
    rounds: int = 2
    min_delta: float = 0.0
    max_steps: Optional[int] = 20000
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "cpu"
    deterministic: bool = False
    out: Optional[str] = None
    checkpoint_every: int = 500
    progress: bool = True
    figures: bool = True
    preset: Optional[str] = None
    model_options: dict = field(default_factory=dict)

    @property
    def response_activation(self) -> str:
        return self.activation or DEFAULT_ACTIVATION[self.response_loss]

    @property
    def uses_images(self) -> bool:
        """Whether the model has the image (alpha) terms."""
        return self.model not in READOUT_ONLY_MODELS

    @property
    def uses_responses(self) -> bool:
        """Whether the model has the response (beta) terms."""
        return self.model not in AUTOENCODERS

    def validate(self) -> "TrainConfig":
        """Raise a ``ValueError`` naming the first bad field; returns self."""
        check_model_name(self.model)
        check_layer(self.layer)
        for name in ("alpha", "beta", "kl_weight", "readout_reg", "min_delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.uses_images and self.uses_responses and self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta are both 0: nothing to train")
        if not self.uses_responses and self.alpha == 0:
            raise ValueError(f"model {self.model!r} trains on the image loss only: alpha must be > 0")
        if not self.uses_images and self.beta == 0:
            raise ValueError(f"model {self.model!r} trains on the response loss only: beta must be > 0")
        for name in ("recon_reduction", "response_reduction"):
            check_reduction(name, getattr(self, name))
        if self.response_loss not in RESPONSE_LOSSES:
            raise ValueError(f"response_loss must be one of {', '.join(RESPONSE_LOSSES)}, got {self.response_loss!r}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.response_loss == "poisson" and self.response_activation == "identity":
            raise ValueError("the Poisson loss needs positive rates: use activation elu1, softplus or exp")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.lr_factor, (int, float)) and 0 < self.lr_factor <= 1):
            raise ValueError(f"lr_factor must be in (0, 1], got {self.lr_factor!r}")
        for name in ("batch_size", "eval_every", "patience", "rounds", "checkpoint_every"):
            _positive_int(name, getattr(self, name))
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        unknown = sorted(set(self.model_options) - set(MODEL_OPTIONS))
        if unknown:
            raise ValueError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(MODEL_OPTIONS)}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys raise a ``ValueError`` listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (unknown names raise a ``ValueError``)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def check_reduction(name: str, value) -> str:
    """``value`` if it is one of :data:`REDUCTIONS`, else a ``ValueError`` naming ``name`` and the valid ones."""
    if value not in REDUCTIONS:
        raise ValueError(f"{name} must be one of {', '.join(REDUCTIONS)}, got {value!r}")
    return value


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
