"""``daenr train``: train a DAE-NR model or baseline with the paper's protocol and evaluate it.

With no arguments it trains CAE-FR2 on simulated region 3 (alpha:beta = 1:1e-3, the Table 8 setting, under the
paper's loss scaling: reconstruction error averaged over pixels, Poisson loss summed over neurons) into
``runs/cae-fr2-sim-region3-s0``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

NAME = "train"
HELP = "train a DAE-NR model (or a baseline) with the paper's protocol, then evaluate it"

#: CLI option -> TrainConfig field, for the options that map one to one
_FIELDS = {
    "model": "model", "layer": "layer", "data": "data", "alpha": "alpha", "beta": "beta", "seed": "seed",
    "out": "out", "response_loss": "response_loss", "activation": "activation", "kl_weight": "kl_weight",
    "readout_reg": "readout_reg", "lr": "lr", "lr_factor": "lr_factor", "batch_size": "batch_size",
    "eval_every": "eval_every", "patience": "patience", "rounds": "rounds", "min_delta": "min_delta",
    "val_fraction": "val_fraction", "device": "device", "checkpoint_every": "checkpoint_every",
    "recon_reduction": "recon_reduction", "response_reduction": "response_reduction",
}
_MODEL_OPTIONS = ("latent_dim", "num_codes", "code_dim", "commitment", "fm_sigma", "readout_l1", "fc_dropout", "fc_l2",
                  "fm_mask", "gr_init", "vq_restarts")
#: options that may accompany --resume (they do not change the numbers)
_RESUME_OK = ("out", "device")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from daenr_fast.models.readouts import ACTIVATIONS
    from daenr_fast.models.gaussian_head import GR_INITS
    from daenr_fast.models.readouts import FM_MASKS
    from daenr_fast.models.registry import MODEL_NAMES, MODEL_OPTIONS as opts
    from daenr_fast.train.config import PAPER_SCALING, REDUCTIONS, RESPONSE_LOSSES

    g = parser.add_argument_group("model and data")
    g.add_argument("--model", choices=MODEL_NAMES, metavar="NAME",
                   help=f"model name (default cae-fr): {', '.join(MODEL_NAMES)}")
    g.add_argument("--layer", type=int, metavar="I", help="encoder layer h_I the readout taps, 1..4 (default 2)")
    g.add_argument("--data", metavar="SPEC",
                   help="sim:regionR | antolik:PATH/regionR | PATH.npz (default sim:region3)")
    g.add_argument("--preset", metavar="NAME",
                   help="alpha:beta, model and layer of paper Tables 8-13, e.g. table8:region3:cae-fr2")
    g.add_argument("--latent-dim", type=int, help="CAE/VAE latent size (default 100)")
    g.add_argument("--num-codes", type=int, help="VQ-VAE codebook size (default 256)")
    g.add_argument("--code-dim", type=int, help="VQ-VAE code dimension (default 32)")
    g.add_argument("--commitment", type=float, help="VQ-VAE commitment weight (default 0.25)")
    g.add_argument("--fm-sigma", type=float,
                   help=f"FM Gaussian mask std in pixels, --fm-mask ridge-gaussian only (default {opts['fm_sigma']:g})")
    g.add_argument("--fm-mask", choices=FM_MASKS,
                   help=f"FM fixed mask: the STA-envelope peak cell (Klindt et al. 2017) or a Gaussian at a ridge-fit "
                        f"RF centre (default {opts['fm_mask']})")
    g.add_argument("--readout-l1", type=float,
                   help=f"L1 weight of the FR (mask x features), FM and GR (features) penalties "
                        f"(default {opts['readout_l1']:g})")
    g.add_argument("--fc-dropout", type=float,
                   help=f"FC dropout on the flattened features (default {opts['fc_dropout']:g})")
    g.add_argument("--fc-l2", type=float, help=f"FC L2 weight, penalty FC_L2 * 1/2 sum W^2 (default {opts['fc_l2']:g})")
    g.add_argument("--gr-init", choices=GR_INITS,
                   help=f"GR initial positions: fitted RF centres or neuralpredictors' random init "
                        f"(default {opts['gr_init']})")
    g.add_argument("--vq-restarts", action="store_const", const=True, default=None,
                   help="restart dead VQ-VAE codes from batch vectors (default: no restarts)")
    g = parser.add_argument_group("loss")
    g.add_argument("--alpha", type=float, help="image-reconstruction weight (default 1)")
    g.add_argument("--beta", type=float, help="neural-response weight (default 1e-3)")
    g.add_argument("--recon-reduction", choices=REDUCTIONS,
                   help=f"reduce the squared error over an image's pixels by sum or mean (default "
                        f"{PAPER_SCALING[0]}, the scaling the paper's alpha:beta assume)")
    g.add_argument("--response-reduction", choices=REDUCTIONS,
                   help=f"reduce the response loss over an image's neurons by sum or mean (default "
                        f"{PAPER_SCALING[1]}, the scaling the paper's alpha:beta assume)")
    g.add_argument("--response-loss", choices=RESPONSE_LOSSES,
                   help="poisson for spike counts (default), mse for non-count data such as dF/F")
    g.add_argument("--activation", choices=ACTIVATIONS,
                   help="readout output nonlinearity (default elu1 for poisson, identity for mse)")
    g.add_argument("--kl-weight", type=float, help="VAE KL weight inside the image term (default 1)")
    g.add_argument("--readout-reg", type=float,
                   help="multiplier of each readout's own weighted penalty inside the response term; 0 turns the "
                        "penalties off (default 1)")
    g = parser.add_argument_group("protocol")
    g.add_argument("--lr", type=float, help="initial Adam learning rate (default 1e-3)")
    g.add_argument("--lr-factor", type=float, help="learning-rate factor between rounds (default 0.5)")
    g.add_argument("--batch-size", type=int, help="batch size (default 64)")
    g.add_argument("--eval-every", type=int, metavar="K", help="validate every K steps (default 50)")
    g.add_argument("--patience", type=int, help="steps without improvement that end a round (default 1000)")
    g.add_argument("--rounds", type=int, help="early-stopping rounds (default 2)")
    g.add_argument("--min-delta", type=float, help="validation improvement that counts (default 0)")
    g.add_argument("--max-steps", type=int, help="cap on the total steps; 0 = no cap (default 20000)")
    g.add_argument("--val-fraction", type=float, help="validation part of the training set (default 0.2)")
    g = parser.add_argument_group("run")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--out", metavar="DIR", help="output folder (default runs/MODELi-DATA-sSEED)")
    g.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps (default 500)")
    g.add_argument("--deterministic", action="store_true", help="use deterministic algorithms")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--compile", action="store_true",
                   help="run the training steps' forward under torch.compile (mode reduce-overhead, CUDA graphs, "
                        "on CUDA; the default mode on CPU); not saved with the run")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (from checkpoint.prev.pt, with a warning, "
                        "when checkpoint.pt is damaged)")
    g.add_argument("--overwrite", action="store_true", help="start over in an --out that already holds a run")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-figures", action="store_true", help="skip reconstructions.png and neurons.png")


def _data_tag(spec: str) -> str:
    tag = spec.split(":", 1)[-1] if spec.startswith("sim:") else spec
    tag = Path(tag).stem if not spec.startswith("sim:") else f"sim-{tag}"
    if spec.startswith("antolik:"):
        tag = "antolik-" + Path(spec.split(":", 1)[1]).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tag)


def default_out(model: str, layer: int, data: str, seed: int) -> str:
    """``runs/cae-fr2-sim-region3-s0`` style folder name."""
    from daenr_fast.models.registry import display_name

    return str(Path("runs") / f"{display_name(model, layer).lower()}-{_data_tag(data)}-s{seed}")


def config_from_args(args):
    """Build the :class:`TrainConfig` of a fresh run from parsed arguments (preset first, then options)."""
    from daenr_fast.train import TrainConfig, get_preset

    values = {}
    if args.preset:
        clash = [f"--{k}" for k in ("model", "layer", "alpha", "beta") if getattr(args, k) is not None]
        if clash:
            raise ValueError(f"--preset sets model, layer, alpha and beta; drop {', '.join(clash)}")
        preset = get_preset(args.preset)
        values.update(model=preset.model, layer=preset.layer, alpha=preset.alpha, beta=preset.beta,
                      data=preset.data, preset=preset.name)
    for opt, fld in _FIELDS.items():
        if getattr(args, opt) is not None:
            values[fld] = getattr(args, opt)
    if args.max_steps is not None:
        values["max_steps"] = args.max_steps or None
    options = {k: getattr(args, k) for k in _MODEL_OPTIONS if getattr(args, k) is not None}
    if options:
        values["model_options"] = options
    values.update(deterministic=args.deterministic, progress=not args.no_progress, figures=not args.no_figures)
    config = TrainConfig(**values)
    if config.out is None:
        config.out = default_out(config.model, config.layer, config.data, config.seed)
    return config.validate()


def config_for_resume(args):
    """The checkpoint's configuration, with only --out/--device/--no-progress/--no-figures applied."""
    from daenr_fast.train import TrainConfig, load_run_checkpoint

    given = [f"--{k.replace('_', '-')}" for k in list(_FIELDS) + list(_MODEL_OPTIONS) + ["preset", "max_steps"]
             if k not in _RESUME_OK and getattr(args, k) is not None]
    if args.deterministic or args.overwrite:
        given.append("--deterministic" if args.deterministic else "--overwrite")
    if given:
        raise ValueError(f"--resume continues with the checkpoint's settings; drop {', '.join(given)}")
    if args.out is None:
        raise ValueError("--resume needs --out DIR, the folder of the run to continue")
    saved = load_run_checkpoint(args.out).payload["config"]  # train() warns if it is checkpoint.prev.pt
    config = TrainConfig.from_dict(saved).replace(out=args.out, progress=not args.no_progress,
                                                  figures=not args.no_figures)
    if args.device is not None:
        config = config.replace(device=args.device)
    return config


def run(args) -> int:
    import torch

    from daenr_fast.train import format_table, train

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = config_for_resume(args) if args.resume else config_from_args(args)
    print(f"daenr train: {config.model} layer {config.layer} on {config.data} "
          f"(alpha {config.alpha:g}, beta {config.beta:g}, reconstruction {config.recon_reduction} over pixels, "
          f"response {config.response_reduction} over neurons, seed {config.seed}) -> {config.out}")
    result = train(config, resume=args.resume, overwrite=args.overwrite, compile=args.compile)
    print(format_table(result.metrics))
    share = result.metrics.get("gradient_share", {}).get("mean", {})
    if share:
        print("share of the shared encoder's gradient (mean over evaluation steps): "
              + ", ".join(f"{name} {value:.3g}" for name, value in share.items()))
    files = [p.name for p in sorted(Path(config.out).iterdir()) if not p.name.startswith(".")]
    print(f"wrote {config.out}/: {', '.join(files)}")
    return 0
