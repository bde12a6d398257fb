"""DAE-NR models: encoder/decoder, CAE/VAE/VQ-VAE, FR/FC/FM (and GR) readouts, the joint model, baselines, registry.

``build_model(name, layer=i, n_neurons=n, **options)`` builds any of :data:`MODEL_NAMES`.
"""
from daenr_fast.models.autoencoder import Autoencoder, AutoencoderOutput
from daenr_fast.models.cae import CAE
from daenr_fast.models.decoder import Decoder
from daenr_fast.models.encoder import Encoder, feature_shape
from daenr_fast.models.gaussian_head import GaussianReadout
from daenr_fast.models.joint import DAENR, AutoencoderBaseline, CNNBaseline, ModelOutput
from daenr_fast.models.readouts import (ACTIVATIONS, FixedMaskReadout, FullyConnectedReadout, activate,
                                        inverse_activation)
from daenr_fast.models.registry import (BASELINES, EXTRA_MODELS, JOINT_MODELS, MODEL_NAMES, MODEL_OPTIONS,
                                        STRONG_BASELINE_OPTIONS, build_model, display_name, split_name)
from daenr_fast.models.vae import VAE
from daenr_fast.models.vqvae import VQVAE

__all__ = [
    "ACTIVATIONS", "Autoencoder", "AutoencoderOutput", "AutoencoderBaseline", "BASELINES", "CAE", "CNNBaseline",
    "DAENR", "Decoder", "EXTRA_MODELS", "Encoder", "FixedMaskReadout", "FullyConnectedReadout", "GaussianReadout",
    "JOINT_MODELS", "MODEL_NAMES", "MODEL_OPTIONS", "ModelOutput", "STRONG_BASELINE_OPTIONS", "VAE", "VQVAE",
    "activate", "build_model", "display_name", "feature_shape", "inverse_activation", "split_name",
]
