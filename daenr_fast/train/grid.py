"""A grid of training runs that share an architecture, trained as one stacked model: :func:`train_grid`.

The paper's tables are grids of small models of one architecture (a model family and layer) that differ in seed,
alpha:beta, neuron subset or data region. Alone, each leaves a GPU idle (a step is a few launch-bound
milliseconds). A grid steps its G members together: every step stacks the G members' parameters and batches,
runs them as one vmapped model (:class:`~daenr_fast.train.grid_model.StackedModel`) and computes the G losses in
one call of :func:`~daenr_fast.train.losses.loss_terms` (per-member alpha and beta as (G,) tensors)::

    X = stack_g x_g (G,B,1,H,W),  S = stack_g s_g (G,B,n)        each member's own batch (its own BatchOrder)
    L = loss_terms(stacked forward(X), X, S)                      (G,) one loss per member
    sum_g L_g -> backward                                         d(sum_g L_g)/d theta_g = dL_g/d theta_g
    optimizer_g.step() for every member g                         each member's own Adam (its own lr)

Everything else is per member and is the lone run's own code: each member is a
:class:`~daenr_fast.train.trainer.Trainer` (its data split, batch order, early stopping, learning-rate halving,
rounds, best-state restore, checkpoints, ``history.csv``, ``metrics.json`` and output folder); the grid only
replaces the forward/backward of the steps and the forward of the validation passes. A member leaves the grid
when its run ends (or fails); the others go on. A member's output folder is what a lone run writes, and a
member resumes from its own checkpoint.

Two strategies (:data:`STRATEGIES`) run a step's forward and backward:

* ``"vmap"``: one vmapped call of the stacked model, as above. Numbers: the members' losses, gradients and
  updates are those of the lone runs up to floating-point reassociation (grouped convolutions sum their weight
  gradients over the batch in another order, the stacked Poisson loss reduces per image before averaging):
  relative differences of about 1e-6 per float32 step. Only models whose forward draws no random numbers stack
  (:func:`unstackable`).
* ``"loop"``: each member's own forward and loss, one after another, and one backward of the summed losses
  (the gradient of member g's loss reaches only member g). These are the lone runs' own operations, so the
  numbers are the lone runs' bit for bit; every member keeps its own global random state (swapped in around its
  forward and its checkpoints), so the VAE's sampling, the FC readout's dropout and the VQ-VAE's code restarts
  draw what the lone run draws.
* ``"auto"`` (default): ``"vmap"`` on CUDA for models that stack, ``"loop"`` otherwise. On a GPU one small model
  leaves the device idle and the stacked call fills it; on the CPU one model already keeps the cores busy and
  the grouped convolutions of the stacked call are slower than G ordinary ones (``daenr bench --ops e2e``: 0.54x
  the separate runs' model-steps/s at G = 32 on 2 cores), so the loop, which runs what the separate runs run, is
  the faster choice.

Why vmap over ``functional_call`` (not hand-written grouped convolutions): the members stay the registry's
``nn.Module`` s, so the architecture, the loss, the checkpoints and the evaluation have one definition each; the
vmap of a convolution is a grouped convolution anyway, and the fused readout ops have vmap rules that fold the
models into one call. BatchNorm under vmap keeps per-member running statistics (stacked buffers, written back
after each training forward).
"""
from __future__ import annotations

import functools
import json
import math
import time
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from daenr_fast.models.registry import build_model, display_name, split_name
from daenr_fast.train import gradient_share
from daenr_fast.train.checkpoint import capture_rng_states, restore_rng_states
from daenr_fast.train.config import TrainConfig
from daenr_fast.train.grid_model import StackedMembers, StackedModel
from daenr_fast.train.losses import first_non_finite, loss_terms, term_weights
from daenr_fast.train.trainer import (EVAL_BATCH, NonFiniteLossError, Trainer, TrainResult, check_run,
                                      deterministic_mode, finish_run, open_run, resolve_device, validation_loss)

#: config fields that may differ between the members of a grid; every other field must be equal
MEMBER_FIELDS = ("seed", "alpha", "beta", "data", "out", "preset", "lr", "lr_factor", "patience", "rounds",
                 "min_delta", "max_steps", "eval_every", "checkpoint_every", "progress", "figures")
#: autoencoder families whose training forward cannot be stacked: a vmapped draw is not a lone run's draw (VAE),
#: and the VQ-VAE bottleneck's loss terms and code statistics are not stacked
RANDOM_FORWARD = {"vae": "the VAE samples its latent from the global random generator at every step",
                  "vq-vae": "the VQ-VAE codebook may replace dead codes by randomly drawn batch vectors and adds "
                            "its own loss terms"}
#: how a grid runs its members (module docstring); ``"auto"``: :func:`resolve_strategy`
STRATEGIES = ("auto", "vmap", "loop")

#: image size of the stacking probe (:func:`unstackable`)
PROBE_SIZE = 32
#: what :func:`train_grid` returns for each member
Outcome = Union[TrainResult, Exception]


def unstackable(config: TrainConfig) -> Optional[str]:
    """Why ``config``'s model cannot train in a grid (its training forward draws random numbers), or None."""
    family = split_name(config.model)[0]
    if family in RANDOM_FORWARD:
        return RANDOM_FORWARD[family]
    return _random_draw(config.model, config.layer, json.dumps(config.model_options, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _random_draw(model: str, layer: int, options: str) -> Optional[str]:
    """Probe a stack of two freshly built members in training mode (the global random state is left as it was):
    a random draw inside the vmapped forward (e.g. dropout) is an error there."""
    with torch.random.fork_rng(devices=[]):
        members = [build_model(model, layer=layer, n_neurons=2, **json.loads(options)).train() for _ in range(2)]
        try:
            with torch.no_grad():
                StackedModel(members).forward(torch.zeros(2, 2, 1, PROBE_SIZE, PROBE_SIZE), [0, 1], training=True)
        except RuntimeError as err:
            if "random" not in str(err):
                raise
            return "its training forward draws random numbers (dropout or sampling)"
    return None


def resolve_strategy(strategy: str, config: TrainConfig, device: Optional[torch.device] = None) -> str:
    """The strategy (``"vmap"`` or ``"loop"``) a grid of ``config``'s runs on ``device`` (None: the config's)
    uses when asked for ``strategy`` (one of :data:`STRATEGIES`; see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    reason = unstackable(config)
    if strategy == "vmap" and reason is not None:
        raise ValueError(f"model {config.model!r} cannot train in a vmapped grid: {reason}, which a stacked model "
                         f"cannot reproduce per run; use strategy 'loop' (or 'auto')")
    if strategy != "auto":
        return strategy
    kind = _device_type(config.device) if device is None else device.type
    return "vmap" if kind == "cuda" and reason is None else "loop"


def _device_type(name: str) -> str:
    """``cpu`` or ``cuda`` for a config's device name (``auto``: what :func:`resolve_device` would pick)."""
    return resolve_device(name).type if name == "auto" else torch.device(name).type


def grid_key(config: TrainConfig) -> Optional[str]:
    """The fields that must be equal within a grid, as a string (equal strings: the runs can share a grid), or
    None when a grid would not help: a model that cannot be stacked (:func:`unstackable`) on a GPU, where its
    grid would loop over runs that separate processes overlap."""
    if _device_type(config.device) != "cpu" and resolve_strategy("auto", config) == "loop":
        return None
    fields = {k: v for k, v in config.to_dict().items() if k not in MEMBER_FIELDS}
    return json.dumps(fields, sort_keys=True, default=str)


def check_grid(configs: Sequence[TrainConfig], strategy: str = "auto") -> None:
    """Raise a ``ValueError`` unless ``configs`` can train as one grid (see :data:`MEMBER_FIELDS`) with
    ``strategy``."""
    if not configs:
        raise ValueError("a grid needs at least one run configuration")
    for index, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"configs[{index}] must be a TrainConfig, got {type(config).__name__}")
    resolve_strategy(strategy, configs[0])
    first = configs[0].to_dict()
    for index, config in enumerate(configs[1:], start=1):
        other = config.to_dict()
        diffs = [f"{k}: {first[k]!r} vs {other[k]!r}" for k in first if k not in MEMBER_FIELDS and first[k] != other[k]]
        if diffs:
            raise ValueError(f"run {index} cannot share a grid with run 0: " + "; ".join(diffs)
                             + f" (only {', '.join(MEMBER_FIELDS)} may differ)")
    outs = [c.out for c in configs if c.out]
    if len(set(outs)) != len(outs):
        raise ValueError("the runs of a grid need distinct output folders (config.out)")


def _check_data(trainers: Sequence[Trainer]) -> None:
    """The members' data must stack: same neurons, image shape, batch size and validation-set size."""
    first = trainers[0]

    def shape(t: Trainer):
        return {"neurons": t.splits.n_neurons, "image shape": tuple(t.train_x.shape[1:]),
                "batch size": t.batches.batch_size, "validation images": int(t.val_x.shape[0])}

    ref = shape(first)
    for index, trainer in enumerate(trainers[1:], start=1):
        got = shape(trainer)
        diffs = [f"{k} {ref[k]} vs {got[k]}" for k in ref if ref[k] != got[k]]
        if diffs:
            raise ValueError(f"the data of run {index} ({trainer.config.data}) does not stack with run 0's "
                             f"({first.config.data}): " + ", ".join(diffs))


class GridTrainer:
    """Steps the members (:class:`Trainer` s, built by :func:`~daenr_fast.train.trainer.open_run`) together.

    Args:
        trainers: the members.
        strategy: one of :data:`STRATEGIES` (module docstring).
        rng_states: with the ``"loop"`` strategy, each member's global random state
            (:func:`~daenr_fast.train.checkpoint.capture_rng_states` right after its ``open_run``); required when
            the model draws random numbers in its forward (:func:`unstackable`), so that each member draws what
            its lone run draws.
    """

    def __init__(self, trainers: Sequence[Trainer], strategy: str = "auto", rng_states: Optional[Sequence] = None):
        self.trainers = list(trainers)
        _check_data(self.trainers)
        self.config = self.trainers[0].config
        self.strategy = resolve_strategy(strategy, self.config, self.trainers[0].device)
        if rng_states is not None and len(rng_states) != len(self.trainers):
            raise ValueError(f"rng_states must have one entry per member ({len(self.trainers)}), "
                             f"got {len(rng_states)}")
        if self.strategy == "loop" and rng_states is None and unstackable(self.config) is not None:
            raise ValueError(f"a grid of {self.config.model!r} needs each member's random state (rng_states): "
                             f"{unstackable(self.config)}")
        self._rng = None if self.strategy == "vmap" or rng_states is None else list(rng_states)
        self.stacked = StackedModel([t.model for t in self.trainers]) if self.strategy == "vmap" else None
        self.errors: Dict[int, Exception] = {}
        self._val_x = torch.stack([t.val_x for t in self.trainers])
        self._val_s = torch.stack([t.val_s for t in self.trainers])
        self._loss_configs: Dict[tuple, TrainConfig] = {}

    def active(self) -> List[int]:
        return [g for g, t in enumerate(self.trainers) if not t.state["finished"] and g not in self.errors]

    def _loss_config(self, which: Sequence[int]) -> TrainConfig:
        """The loss configuration of members ``which``: the shared fields, alpha and beta as (G,) tensors."""
        key = tuple(which)
        if key not in self._loss_configs:
            config = TrainConfig.from_dict(self.config.to_dict())
            device = self.trainers[0].device
            config.alpha = torch.tensor([self.trainers[g].config.alpha for g in which], device=device)
            config.beta = torch.tensor([self.trainers[g].config.beta for g in which], device=device)
            self._loss_configs[key] = config
        return self._loss_configs[key]

    @contextmanager
    def _member_random_state(self, g: int):
        """Member ``g``'s own global random state inside the block (``"loop"`` grids given ``rng_states``)."""
        if self._rng is None:
            yield
            return
        restore_rng_states(self._rng[g])
        try:
            yield
        finally:
            self._rng[g] = capture_rng_states()

    def _losses(self, x: Tensor, s: Tensor, which: List[int], training: bool):
        """x (G,B,1,H,W), s (G,B,n) -> total (G,), terms name -> (G,) of members ``which``."""
        if self.strategy == "vmap":
            out = self.stacked.forward(x, which, training)
            return loss_terms(StackedMembers(self.stacked, which), out, x, s, self._loss_config(which))
        totals, terms = [], []
        for i, g in enumerate(which):
            model = self.trainers[g].model.train(training)
            with self._member_random_state(g):
                total, member_terms = loss_terms(model, model(x[i]), x[i], s[i], self.trainers[g].config)
            totals.append(total)
            terms.append(member_terms)
        return torch.stack(totals), {name: torch.stack([t[name] for t in terms]) for name in terms[0]}

    # ------------------------------------------------------------------ one step of every active member
    def _step(self, which: List[int]) -> None:
        batches = []
        for g in which:
            t = self.trainers[g]
            idx = t.batches.next().to(t.device)
            batches.append((t.train_x[idx], t.train_s[idx]))
        x = torch.stack([b[0] for b in batches])
        s = torch.stack([b[1] for b in batches])
        total, terms = self._losses(x, s, which, training=True)
        values = torch.stack([v.detach() for v in terms.values()] + [total.detach()]).tolist()
        names = list(terms) + ["total"]
        running = []
        for i, g in enumerate(which):
            member_values = {name: values[k][i] for k, name in enumerate(names)}
            if all(math.isfinite(v) for v in member_values.values()):
                running.append(i)
                continue
            bad = first_non_finite(total[i], {k: v[i] for k, v in terms.items()})
            self.errors[g] = NonFiniteLossError(self.trainers[g].state["step"] + 1, bad, member_values[bad],
                                                self.trainers[g].last_checkpoint)
        shares = self._gradient_shares(which, running, terms)
        for g in which:
            self.trainers[g].optimizer.zero_grad(set_to_none=True)
        if running:
            total[running].sum().backward()
        for i in running:
            g = which[i]
            trainer = self.trainers[g]
            trainer.optimizer.step()
            trainer._shares = shares.get(g, {})
            trainer._add_step_values({name: values[k][i] for k, name in enumerate(names)})

    def _gradient_shares(self, which: List[int], running: List[int], terms: Dict[str, Tensor]) -> dict:
        """Per member whose next step is an evaluation step, the share of each loss term in its shared encoder's
        gradient (:mod:`daenr_fast.train.gradient_share`): one ``autograd.grad`` per term for all of them (the
        members are independent, so the gradient of the sum over members is each member's own)."""
        due = [i for i in running
               if (self.trainers[which[i]].state["step"] + 1) % self.trainers[which[i]].config.eval_every == 0]
        if not due:
            return {}
        params = {i: gradient_share.shared_encoder_parameters(self.trainers[which[i]].model) for i in due}
        weights = {i: term_weights(self.trainers[which[i]].config) for i in due}
        norms: Dict[int, Dict[str, float]] = {i: {} for i in due}
        flat = [p for i in due for p in params[i]]
        for name, value in terms.items():
            if not value.requires_grad:
                continue
            weighted = sum(weights[i][name] * value[i] for i in due)
            grads = torch.autograd.grad(weighted, flat, retain_graph=True, allow_unused=True)
            start = 0
            for i in due:
                mine = [g for g in grads[start:start + len(params[i])] if g is not None]
                start += len(params[i])
                if mine:
                    norms[i][name] = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in mine))
        return {which[i]: gradient_share.shares(norms[i]) for i in due}

    # ------------------------------------------------------------------ validation of several members at once
    @torch.no_grad()
    def _validation(self, which: List[int]) -> Dict[int, Dict[str, float]]:
        """The :func:`~daenr_fast.train.trainer.validation_loss` of members ``which`` (eval mode, per image)."""
        if self.strategy == "loop":
            return {g: validation_loss(self.trainers[g].model, self.trainers[g].val_x, self.trainers[g].val_s,
                                       self.trainers[g].config) for g in which}
        index = torch.tensor(which, device=self._val_x.device)
        images, responses = self._val_x[index], self._val_s[index]
        n = images.shape[1]
        sums: Dict[int, Dict[str, float]] = {g: {} for g in which}
        for start in range(0, n, EVAL_BATCH):
            x, s = images[:, start:start + EVAL_BATCH], responses[:, start:start + EVAL_BATCH]
            total, terms = self._losses(x, s, which, training=False)
            names = list(terms) + ["total"]
            values = torch.stack(list(terms.values()) + [total]).tolist()
            for i, g in enumerate(which):
                for k, name in enumerate(names):
                    sums[g][name] = sums[g].get(name, 0.0) + values[k][i] * x.shape[1]
        return {g: {name: value / n for name, value in sums[g].items()} for g in which}

    # ------------------------------------------------------------------ protocol
    def fit(self) -> None:
        """Train until every member's run has ended (or failed); each member's protocol is its own."""
        for trainer in self.trainers:
            trainer.model.train()
        total = sum(t.config.max_steps or 0 for t in self.trainers) or None
        bar = tqdm(total=total, initial=sum(t.state["step"] for t in self.trainers),
                   disable=not any(t.config.progress for t in self.trainers), dynamic_ncols=True, leave=False,
                   desc=f"{display_name(self.config.model, self.config.layer)} x{len(self.trainers)}", unit="step")
        try:
            while True:
                which = self.active()
                if not which:
                    break
                started = time.perf_counter()
                self._step(which)
                stepped = [g for g in which if g not in self.errors]
                due = [g for g in stepped
                       if self.trainers[g].state["step"] % self.trainers[g].config.eval_every == 0]
                vals = self._validation(due) if due else {}
                for g in stepped:
                    with self._member_random_state(g):  # a checkpoint saves the member's own random state
                        self.trainers[g]._end_step(started, vals.get(g))
                bar.update(len(stepped))
                bar.set_postfix(running=len(self.active()))
        finally:
            bar.close()
        for trainer in self.trainers:
            trainer.model.eval()


def train_grid(configs: Sequence[TrainConfig], splits: Optional[Sequence] = None, *,
               resume: Union[bool, Sequence[bool]] = False, overwrite: Union[bool, Sequence[bool]] = False,
               strategy: str = "auto") -> List[Outcome]:
    """Train ``configs`` as one grid; each member ends as :func:`~daenr_fast.train.train` would have ended it.

    Args:
        configs: the members' configurations; only :data:`MEMBER_FIELDS` may differ (:func:`check_grid`), and
            their data must stack (same neurons, image shape, batch and validation sizes).
        splits: one prepared :class:`daenr_fast.data.Splits` per member (None: each member loads its
            ``config.data``).
        resume, overwrite: as for :func:`~daenr_fast.train.train`, for all members or one value per member.
        strategy: one of :data:`STRATEGIES` (module docstring; ``"vmap"`` refuses models that cannot stack).

    Returns:
        one outcome per member, in order: its :class:`TrainResult` (what ``train`` returns; output folder
        written), or the exception that ended it (a :class:`NonFiniteLossError`: the other members go on).

    Raises:
        ValueError / TypeError: configurations that cannot share a grid, or any member that ``train`` would
        refuse (bad configuration, occupied output folder, unusable checkpoint), before anything is trained.
    """
    configs = list(configs)
    check_grid(configs, strategy)
    n = len(configs)
    splits = [None] * n if splits is None else list(splits)
    resume = [resume] * n if isinstance(resume, bool) else list(resume)
    overwrite = [overwrite] * n if isinstance(overwrite, bool) else list(overwrite)
    for name, values in (("splits", splits), ("resume", resume), ("overwrite", overwrite)):
        if len(values) != n:
            raise ValueError(f"{name} must have one entry per configuration ({n}), got {len(values)}")
    for config, r, o in zip(configs, resume, overwrite):
        check_run(config, resume=r, overwrite=o)
    device = resolve_device(configs[0].device)
    with deterministic_mode(configs[0].deterministic):
        trainers, rng_states = [], []
        for c, s, r, o in zip(configs, splits, resume, overwrite):
            trainers.append(open_run(c, s, resume=r, overwrite=o, device=device))
            rng_states.append(capture_rng_states())  # where the member's lone run would draw from next
        grid = GridTrainer(trainers, strategy, rng_states)
        for trainer in trainers:
            trainer.claim_folder()
        grid.fit()
        return [grid.errors[g] if g in grid.errors else finish_run(t) for g, t in enumerate(trainers)]
