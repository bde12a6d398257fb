"""A small CNN trained briefly on simulated data predicts held-out test responses."""
import numpy as np
import torch

from daenr_fast.data import prepare


def test_small_cnn_learns_region2(sim_regions):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        corr = _train_and_correlate(sim_regions[2])
    finally:
        torch.set_num_threads(threads)
    assert np.nanmedian(corr) > 0.15


def _train_and_correlate(dataset):
    torch.manual_seed(0)
    splits = prepare(dataset)
    x, y = splits.tensors("train")
    xt, _ = splits.tensors("test")
    n = splits.n_neurons
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5, padding=2, stride=2), torch.nn.ELU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ELU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, n),
    )
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        i = torch.randint(0, len(x), (64,), generator=gen)
        rate = torch.nn.functional.elu(net(x[i])) + 1
        loss = (rate - y[i] * torch.log(rate + 1e-8)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = (torch.nn.functional.elu(net(xt)) + 1).numpy()
    target = splits.test_mean.numpy()
    return [np.corrcoef(pred[:, j], target[:, j])[0, 1] for j in range(n)]
