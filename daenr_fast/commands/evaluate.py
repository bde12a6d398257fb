"""``daenr evaluate RUN``: recompute a trained run's test metrics from its checkpoint and print them."""
from __future__ import annotations

import argparse
import json

NAME = "evaluate"
HELP = "recompute and print the test metrics of a trained run (daenr evaluate runs/NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a folder written by daenr train")
    parser.add_argument("--data", metavar="SPEC", help="evaluate on other data with the same neurons "
                        "(default: the run's own data)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.add_argument("--save", action="store_true",
                        help="also rewrite metrics.json, reconstructions.png and neurons.png in RUN")


def run(args) -> int:
    from daenr_fast.train.evaluate import (evaluate_model, format_table, json_safe, load_run, run_summary,
                                           write_outputs)
    from daenr_fast.train.trainer import load_splits, resolve_device

    device = str(resolve_device(args.device))
    config, model, payload = load_run(args.run_dir, device)
    if args.data is not None:
        config = config.replace(data=args.data)
    splits = load_splits(config)
    if splits.n_neurons != payload["n_neurons"]:
        raise ValueError(f"the run was trained on {payload['n_neurons']} neurons but {config.data} has "
                         f"{splits.n_neurons}")
    metrics = evaluate_model(model, splits, config)
    metrics["run"] = run_summary(payload["state"], model)
    if args.json:
        print(json.dumps(json_safe(metrics), indent=1))
    else:
        print(format_table(metrics))
    if args.save:
        write_outputs(args.run_dir, model, splits, config, metrics, figures=config.figures)
    return 0
