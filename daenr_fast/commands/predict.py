"""``daenr predict RUN --images FILE.npz``: the model as a data engine: responses to any images."""
from __future__ import annotations

NAME = "predict"
HELP = ("predicted rates (and, on simulated data, the true rates) of a trained run's neurons for the images of "
        "a .npz (generic-format image keys or any *_images)")


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a folder written by daenr train (a model with a readout)")
    parser.add_argument("--images", required=True, metavar="FILE.npz",
                        help="a .npz holding (N, H, W) image stacks under train_images / val_images / test_images "
                             "or any *_images key")
    parser.add_argument("--keys", default=None, help="comma-separated keys to read (default every *_images key)")
    parser.add_argument("--space", choices=("stimulus", "model"), default=None,
                        help="stimulus: raw images of the run's data size and scale (default); model: 32 x 32 in "
                             "[-1, 1] (what daenr synthesize writes; its files say so themselves)")
    parser.add_argument("--out", default="responses.npz", help="output .npz (default responses.npz)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")


def run(args) -> int:
    from daenr_fast.synthesis import open_run
    from daenr_fast.synthesis.predict import predict_file, read_images
    from daenr_fast.train.trainer import resolve_device

    keys = None if args.keys is None else [k.strip() for k in args.keys.split(",") if k.strip()]
    read_images(args.images, keys, args.space)           # a bad file fails before the run is loaded
    run_ = open_run(args.run_dir, str(resolve_device(args.device)))
    summary = predict_file(run_, args.images, args.out, keys, args.space)
    for key, s in summary.items():
        true = f", mean true rate {s['true_mean']:.3f}" if "true_mean" in s else ""
        print(f"{key}: {s['n']} images, mean predicted rate {s['predicted_mean']:.3f}{true}")
    print(f"wrote {args.out} ({run_.n_neurons} neurons)")
    return 0
