"""Tiny trained runs on simulated region 2 (a few training steps each) and their opened synthesis runs."""
import functools

import pytest

DATA = "sim:region2"
TINY = dict(max_steps=4, eval_every=2, checkpoint_every=4, batch_size=8, progress=False, figures=False)
MODELS = {"cae-fr": 0.5, "cnn-fr": 0.0, "vae-fr": 0.5, "vq-vae-fr": 0.5}


@pytest.fixture(scope="session")
def splits():
    from daenr_fast import data

    return data.prepare(data.load(DATA), val_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory, splits):
    """{model: run folder} of 4-step runs at layer 2 (CAE-FR2, CNN-FR2, VAE-FR2, VQ-VAE-FR2)."""
    import torch

    from daenr_fast.train import TrainConfig, train

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {}
    try:
        for model, alpha in MODELS.items():
            config = TrainConfig(model=model, layer=2, data=DATA, alpha=alpha, beta=1.0, seed=0,
                                 out=str(root / model), **TINY)
            train(config, splits)
            out[model] = root / model
    finally:
        torch.set_num_threads(previous)
    return out


@pytest.fixture(scope="session")
def opened(run_dirs):
    """``opened(model)``: the :class:`SynthesisRun` of that run (loaded once)."""
    from daenr_fast.synthesis import open_run

    return functools.lru_cache(maxsize=None)(lambda model: open_run(run_dirs[model]))


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here runs with one intra-op thread (see tests/conftest.py)."""
    yield
