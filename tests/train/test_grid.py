"""A grid of runs trained as one stacked model ends each run as training it alone does.

The ``"loop"`` strategy runs the lone runs' own operations: everything is compared exactly (the gradient shares,
a ratio of norms the grid sums over another grouping, to 1e-9), on one thread: with two, torch's CPU kernels are
not bitwise reproducible even between two lone runs (an interrupted lone run's step-2 readout penalty differed
from the uninterrupted run's in the last float32 bit). Tolerance of the ``"vmap"`` strategy: the grid's
forward is the lone runs' (same float32 products); its backward sums the grouped
convolutions' weight gradients over the batch in another order and the stacked Poisson loss reduces per image
first, so gradients differ by float32 reassociation (~1e-6 relative per step). Over the 16 Adam steps here the
metrics and validation losses then agree to a relative 1e-4 and each parameter tensor to a relative 1e-3 in norm
(an Adam step of an element whose gradient is nearly 0 is up to lr whatever the gradient's rounding, so single
elements may differ by about lr); the protocol's decisions (which step was best,
when a round ended, the learning rates, the steps taken) are compared exactly.
"""
import json
import math

import pytest
import torch
from tiny_data import tiny_dataset

from daenr_fast.data import prepare
from daenr_fast.train import TrainConfig, train
from daenr_fast.train.grid import GridTrainer, check_grid, train_grid, unstackable
from daenr_fast.train.trainer import NonFiniteLossError, open_run

RTOL = 1e-4
PARAM_RTOL = 1e-3
#: eval every 2 steps, patience 4, two rounds: the members end their rounds at different steps
PROTOCOL = dict(model="cae-fr", layer=2, batch_size=8, eval_every=2, patience=4, rounds=2, max_steps=16, lr=3e-3,
                checkpoint_every=3, progress=False, figures=False, model_options={"channels": 8})
MEMBERS = [dict(seed=0, beta=1e-3), dict(seed=1, beta=0.5, lr=3e-2), dict(seed=2, beta=2.0, lr=1e-3)]
DISCRETE_RUN = ("steps", "rounds", "best_step", "stop_reason")


def _configs(root, name):
    return [TrainConfig(**{**PROTOCOL, **m, "out": str(root / f"{name}{i}")}) for i, m in enumerate(MEMBERS)]


def _splits(configs):
    return [prepare(tiny_dataset(), val_fraction=0.2, seed=c.seed) for c in configs]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=["vmap", "loop"])
def solo_and_grid(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    solo_cfgs, grid_cfgs = _configs(root, "solo"), _configs(root, "grid")
    solo = [train(c, s) for c, s in zip(solo_cfgs, _splits(solo_cfgs))]
    grid = train_grid(grid_cfgs, _splits(grid_cfgs), strategy=request.param)
    return root, solo, grid, request.param == "loop"


def _close(a, b, exact=False):
    if exact:
        return a == b
    return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-7))


def _assert_same_run(solo, grid, exact=False):
    run_s, run_g = solo.metrics["run"], grid.metrics["run"]
    assert {k: run_s[k] for k in DISCRETE_RUN} == {k: run_g[k] for k in DISCRETE_RUN}
    assert _close(run_s["best_val_loss"], run_g["best_val_loss"], exact)
    assert [(r["step"], r["round"], r["lr"]) for r in solo.history] == \
        [(r["step"], r["round"], r["lr"]) for r in grid.history]
    assert [list(r) for r in solo.history] == [list(r) for r in grid.history]  # same columns, same order
    for row_s, row_g in zip(solo.history, grid.history):
        for key in row_s:
            if key.startswith(("val_", "train_", "best_val")):
                assert _close(row_s[key], row_g[key], exact), (row_s["step"], key, row_s[key], row_g[key])
            elif key.startswith("grad_share_"):  # a ratio of gradient norms: reassociation of both
                assert math.isclose(row_s[key], row_g[key], rel_tol=1e-9 if exact else 1e-3), \
                    (key, row_s[key], row_g[key])
    assert solo.metrics.keys() == grid.metrics.keys()
    for part in ("images", "neurons"):
        for key, value in solo.metrics.get(part, {}).items():
            assert _close(value, grid.metrics[part][key], exact), (part, key, value, grid.metrics[part][key])
    for name, p_s in solo.model.state_dict().items():
        if exact:
            assert torch.equal(p_s, grid.model.state_dict()[name]), name
            continue
        p_s, p_g = p_s.double(), grid.model.state_dict()[name].double()
        assert (p_s - p_g).norm() <= PARAM_RTOL * p_s.norm(), (name, float((p_s - p_g).norm() / p_s.norm()))


def test_grid_of_three_ends_each_run_as_alone(solo_and_grid):
    _, solo, grid, exact = solo_and_grid
    for s, g in zip(solo, grid):
        _assert_same_run(s, g, exact)
    stops = [g.metrics["run"]["steps"] for g in grid]
    assert len(set(stops)) > 1  # the members stopped early at their own steps
    assert any(row["round"] == 2 for g in grid for row in g.history)  # and halved their learning rates


def test_each_member_folder_is_a_lone_run_folder(solo_and_grid):
    root, solo, grid, _ = solo_and_grid
    for s, g in zip(solo, grid):
        assert sorted(p.name for p in s.out.iterdir()) == sorted(p.name for p in g.out.iterdir())
        saved = json.loads((g.out / "config.json").read_text())
        assert saved == g.config.to_dict()
        metrics = json.loads((g.out / "metrics.json").read_text())
        assert metrics["run"]["steps"] == g.metrics["run"]["steps"]
        # a grid member's checkpoint is an ordinary one: the run continues alone with train(resume=True)
        resumed = train(g.config, prepare(tiny_dataset(), val_fraction=0.2, seed=g.config.seed), resume=True)
        assert resumed.metrics["run"]["steps"] == g.metrics["run"]["steps"]


def test_grid_resumes_members_from_their_own_checkpoints(solo_and_grid, tmp_path):
    """Runs stopped alone at different points (after steps 3 and 6, one finished) resume together in a grid and
    end as the uninterrupted lone runs."""
    _, solo, _, exact = solo_and_grid
    configs = [c.replace(out=str(tmp_path / f"r{i}")) for i, c in enumerate(_configs(tmp_path, "x"))]

    class Stop(Exception):
        pass

    for config, stop_after in zip(configs, (4, 7, None)):
        def on_step(trainer, stop_after=stop_after):
            if stop_after is not None and trainer.state["step"] == stop_after:
                raise Stop
        try:
            train(config, _splits([config])[0], on_step=on_step)
        except Stop:
            pass
    outcomes = train_grid(configs, _splits(configs), resume=True, strategy="loop" if exact else "vmap")
    for s, g in zip(solo, outcomes):
        _assert_same_run(s, g, exact)


def test_incompatible_runs_are_refused_before_anything_is_written(tmp_path):
    base = TrainConfig(**{**PROTOCOL, "out": str(tmp_path / "a")})
    with pytest.raises(ValueError, match="layer: 2 vs 3"):
        train_grid([base, base.replace(layer=3, out=str(tmp_path / "b"))])
    with pytest.raises(ValueError, match="batch_size"):
        check_grid([base, base.replace(batch_size=16, out=str(tmp_path / "b"))])
    with pytest.raises(ValueError, match="distinct output folders"):
        check_grid([base, base.replace(seed=1)])
    with pytest.raises(ValueError, match="VAE samples its latent.*strategy 'loop'"):
        check_grid([base.replace(model="vae-fr")], strategy="vmap")
    with pytest.raises(ValueError, match="draws random numbers"):  # the FC readout's dropout
        check_grid([base.replace(model="cnn-fc")], strategy="vmap")
    with pytest.raises(ValueError, match="strategy must be one of auto, vmap, loop, got 'stack'"):
        train_grid([base], strategy="stack")
    with pytest.raises(TypeError, match=r"configs\[1\] must be a TrainConfig"):
        check_grid([base, {"model": "cae-fr"}])
    with pytest.raises(ValueError, match="at least one"):
        train_grid([])
    with pytest.raises(ValueError, match="splits must have one entry per configuration"):
        train_grid([base], splits=[])
    six, eight = prepare(tiny_dataset(), seed=0), prepare(tiny_dataset(n_neurons=8), seed=1)
    with pytest.raises(ValueError, match="neurons 6 vs 8"):
        train_grid([base, base.replace(seed=1, out=str(tmp_path / "b"))], [six, eight])
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_stackable_families():
    assert unstackable(TrainConfig(model="cae-fm")) is None and unstackable(TrainConfig(model="cnn-fr")) is None
    assert "codebook" in unstackable(TrainConfig(model="vq-vae-fr"))


def test_a_member_whose_loss_diverges_fails_alone(tmp_path):
    """A learning rate that blows one member up: it fails at the step and term where it fails alone, with the
    same error; the other member finishes."""
    configs = [TrainConfig(**{**PROTOCOL, "model": "cnn-fr", "layer": 1, "beta": 1.0, "max_steps": 6,
                              "seed": i, "lr": lr, "out": str(tmp_path / f"m{i}")})
               for i, lr in enumerate((1e-3, 1e30))]
    with pytest.raises(NonFiniteLossError) as alone:
        train(configs[1].replace(out=str(tmp_path / "alone")), _splits(configs[1:])[0])
    ok, failed = train_grid(configs, _splits(configs))
    assert ok.metrics["run"]["steps"] == 6 and (ok.out / "metrics.json").exists()
    assert isinstance(failed, NonFiniteLossError)
    assert (failed.step, failed.term) == (alone.value.step, alone.value.term)
    assert not (failed.checkpoint is None) != (alone.value.checkpoint is None)


@pytest.mark.parametrize("model, layer", [("vae-fr", 2), ("cnn-fc", 1), ("vq-vae-fm", 3)])
def test_models_that_draw_random_numbers_loop_as_alone(tmp_path, model, layer):
    """VAE sampling, FC dropout, and a VQ-VAE with dead-code restarts: each member draws from its own random
    state, so a loop grid ends every run bit for bit as alone."""
    options = {"channels": 8, **({"vq_restarts": True} if model.startswith("vq") else {})}
    configs = [TrainConfig(**{**PROTOCOL, **m, "model": model, "layer": layer, "model_options": options,
                              "out": str(tmp_path / f"grid{i}")}) for i, m in enumerate(MEMBERS[:2])]
    splits = _splits(configs)
    solo = [train(c.replace(out=str(tmp_path / f"solo{i}")), s) for i, (c, s) in enumerate(zip(configs, splits))]
    grid = train_grid(configs, _splits(configs))  # auto: loop on the CPU
    for s, g in zip(solo, grid):
        _assert_same_run(s, g, exact=True)


def test_a_random_forward_grid_needs_the_members_random_states(tmp_path):
    config = TrainConfig(**{**PROTOCOL, "model": "vae-fr", "out": None})
    trainers = [open_run(config, _splits([config])[0]) for _ in range(2)]
    with pytest.raises(ValueError, match="needs each member's random state"):
        GridTrainer(trainers, strategy="loop")
    with pytest.raises(ValueError, match="rng_states must have one entry per member"):
        GridTrainer(trainers, strategy="loop", rng_states=[{}])
