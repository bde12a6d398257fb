"""Training: the paper's protocol (:func:`train`, :class:`TrainConfig`), losses, checkpoints, presets, evaluation.

    from daenr_fast.train import TrainConfig, train
    result = train(TrainConfig(model="cae-fr", layer=2, data="sim:region3", alpha=1, beta=1e-3, out="runs/x"))
    result.metrics["images"]["ssim"], result.metrics["neurons"]["pcc"]
"""
from daenr_fast.train.checkpoint import (CheckpointError, CheckpointWarning, load_checkpoint, load_run_checkpoint,
                                         save_checkpoint)
from daenr_fast.train.config import TrainConfig
from daenr_fast.train.evaluate import evaluate_model, format_table, predict
from daenr_fast.train.losses import loss_terms
from daenr_fast.train.presets import Preset, get_preset, presets
from daenr_fast.train.trainer import NonFiniteLossError, TrainResult, load_splits, train

__all__ = [
    "CheckpointError", "CheckpointWarning", "NonFiniteLossError", "Preset", "TrainConfig", "TrainResult",
    "evaluate_model", "format_table", "get_preset", "load_checkpoint", "load_run_checkpoint", "load_splits",
    "loss_terms", "predict", "presets", "save_checkpoint", "train",
]
