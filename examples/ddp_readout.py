"""A model of your own with daenr_fast's readouts and Poisson loss, trained over several processes with
PyTorch's DistributedDataParallel (DDP).

    torchrun --standalone --nproc_per_node=2 examples/ddp_readout.py --readout gaussian --steps 200

The model is a small convolutional core, (B,1,S,S) -> (B,C,S,S), and one readout, (B,C,S,S) -> (B,N): a
:class:`daenr_fast.nn.FactorizedReadout` (mask x features) or a :class:`daenr_fast.nn.FullGaussian2d` (one
Gaussian position per neuron). :class:`daenr_fast.nn.PoissonLoss` compares the rates ``elu(y) + 1`` with the
responses. Each of the ``W`` processes (ranks) reads its own ``B/W`` images of every global batch of ``B``
(``DistributedSampler``); DDP averages the gradients over the ranks during ``backward``. With the loss's default
``avg=True`` a rank's loss is the mean over its ``B/W x N`` entries, so the average of the ranks' gradients is the
gradient of the mean over the global ``B x N``: every step is the step one process would take on the whole batch
(up to the order of float additions). A summed loss (``avg=False``) must be multiplied by ``W`` for the same.
The readout's regularizer is added on every rank, and so is averaged to itself.

The Gaussian readout samples its positions from torch's random generator. With ``batch_sample=False`` (one
position per neuron for the whole batch, as here) and the generator seeded alike on every rank before each
forward, every rank draws the positions one process would; with ``batch_sample=True`` each rank draws its own,
and the steps agree only in expectation. A batch-norm layer in the core would normalise over each rank's
``B/W`` images: convert it with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` to normalise over ``B``.

CPU processes communicate with the ``gloo`` backend; with ``--device cuda`` every rank takes the GPU of its
``LOCAL_RANK`` and communicates with ``nccl``. ``DAENR_FAST_BACKEND=cpu`` (or ``torch``) selects the readout and
loss kernels as everywhere in daenr_fast.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from daenr_fast.nn import FactorizedReadout, FullGaussian2d, PoissonLoss

READOUTS = ("factorized", "gaussian")
SIZE, CHANNELS, NEURONS, IMAGES = 16, 8, 20, 256
#: readout L1 weight, added to the Poisson loss through the readout's regularizer
L1 = 1e-3


class CoreAndReadout(nn.Module):
    """(B,1,SIZE,SIZE) images -> (B,NEURONS) readout outputs (log-rates before the elu + 1 of the loss)."""

    def __init__(self, readout: str):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.core = nn.Sequential(nn.Conv2d(1, CHANNELS, 5, padding=2), nn.ELU(),
                                  nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1), nn.ELU())
        shape = (CHANNELS, SIZE, SIZE)
        if readout == "factorized":
            self.readout = FactorizedReadout(shape, NEURONS, spatial_and_feature_reg_weight=L1)
        else:
            self.readout = FullGaussian2d(shape, NEURONS, bias=True, batch_sample=False, gauss_type="full",
                                          feature_reg_weight=L1, mean_activity=torch.ones(NEURONS))

    def forward(self, images):
        return self.readout(self.core(images))


def synthetic_data(seed: int = 0) -> TensorDataset:
    """IMAGES smooth random images and the Poisson responses of NEURONS linear-nonlinear neurons to them."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(IMAGES, 1, SIZE, SIZE, generator=generator)
    images = nn.functional.avg_pool2d(noise, 3, stride=1, padding=1)
    filters = torch.randn(NEURONS, SIZE * SIZE, generator=generator) / 4
    rates = torch.exp((images.flatten(1) @ filters.T).clamp(-3, 3))
    return TensorDataset(images, torch.poisson(rates, generator=generator))


def loss_of(model: nn.Module, readout: nn.Module, loss_fn: PoissonLoss, images, responses):
    """The Poisson loss of the rates ``elu(y) + 1`` plus the readout's L1 regularizer."""
    return loss_fn(model(images), responses) + readout.regularizer()


def rank_sampler(dataset, rank: int, world: int, seed: int) -> DistributedSampler:
    """The images of ``rank``: a shuffled 1/world of the data set, the same shuffle on every rank."""
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readout", choices=READOUTS, default="factorized")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch, split over the ranks (32)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--save-first-gradients", type=Path, default=None, metavar="DIR",
                        help="write DIR/rank<R>.pt: the initial parameters and the gradients of the first step")
    args = parser.parse_args(argv)

    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} is not a multiple of the {world} processes")
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))

    dataset = synthetic_data(args.seed)
    sampler = rank_sampler(dataset, rank, world, args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size // world, sampler=sampler, drop_last=True)
    torch.manual_seed(args.seed)  # the same initial parameters on every rank (DDP also copies rank 0's)
    model = CoreAndReadout(args.readout).to(device)
    initial = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    ddp = DistributedDataParallel(model)
    loss_fn = PoissonLoss(activation="elu1")  # avg=True: see the module docstring
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)

    step, epoch = 0, 0
    while step < args.steps:
        sampler.set_epoch(epoch)
        for images, responses in loader:
            torch.manual_seed(args.seed + step)  # the same Gaussian positions on every rank
            optimizer.zero_grad()
            loss = loss_of(ddp, model.readout, loss_fn, images.to(device), responses.to(device))
            loss.backward()  # DDP averages the gradients over the ranks here
            if step == 0 and args.save_first_gradients is not None:
                args.save_first_gradients.mkdir(parents=True, exist_ok=True)
                grads = {n: p.grad.detach().clone().cpu() for n, p in model.named_parameters()}
                torch.save({"initial": initial, "gradients": grads, "loss": loss.item()},
                           args.save_first_gradients / f"rank{rank}.pt")
            optimizer.step()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if rank == 0 and (step % 20 == 0 or step == args.steps - 1):
                print(f"step {step}: loss {mean.item() / world:.4f} (mean over {world} ranks)", flush=True)
            step += 1
            if step == args.steps:
                break
        epoch += 1
    dist.barrier()  # no rank leaves while another still communicates
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
