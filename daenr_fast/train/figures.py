"""Run figures (matplotlib, Agg backend): ``reconstructions.png`` and ``neurons.png``."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

N_SHOWN = 10


def reconstructions_figure(path, images, recon, metrics: dict, n: int = N_SHOWN) -> None:
    """Test originals (top row) above their reconstructions (bottom row), like the paper's Figure 2."""
    n = min(n, images.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.8), squeeze=False)
    for j in range(n):
        for i, batch in enumerate((images, recon)):
            ax = axes[i, j]
            ax.imshow(np.asarray(batch[j, 0].detach().cpu()), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel("reconstr.")
    img = metrics.get("images", {})
    fig.suptitle(f"{metrics.get('model', '')}: MSE {img.get('mse', float('nan')):.4f}, "
                 f"PSNR {img.get('psnr', float('nan')):.2f} dB, SSIM {img.get('ssim', float('nan')):.3f}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def neurons_figure(path, metrics: dict) -> None:
    """(a) PCC per neuron, sorted, significant neurons (p <= 0.05) in colour; (b) single-trial correlation
    against the leave-one-out oracle correlation, both on single trials (when there are repeats)."""
    per = metrics["per_neuron"]
    pcc = np.asarray(per["pcc"], dtype=float)
    sig = np.asarray(per["significant"], dtype=bool)
    order = np.argsort(pcc)[::-1]
    has_oracle = "oracle_corr" in per
    fig, axes = plt.subplots(1, 2 if has_oracle else 1, figsize=(10 if has_oracle else 6, 3.4), squeeze=False)
    ax = axes[0, 0]
    colors = np.where(sig[order], "tab:blue", "lightgray")
    ax.bar(np.arange(pcc.size), pcc[order], color=colors, width=1.0)
    ax.axhline(np.nanmean(pcc), color="k", lw=0.8, ls="--", label=f"mean {np.nanmean(pcc):.3f}")
    ax.set_xlabel("neuron (sorted)")
    ax.set_ylabel("PCC (prediction vs trial mean)")
    ax.set_title(f"{int(sig.sum())}/{pcc.size} significant (p<=0.05, blue)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    if has_oracle:
        ax = axes[0, 1]
        oracle = np.asarray([np.nan if v is None else v for v in per["oracle_corr"]], dtype=float)
        single = np.asarray([np.nan if v is None else v for v in per["single_trial_corr"]], dtype=float)
        ax.scatter(oracle[~sig], single[~sig], s=10, color="lightgray", label="not significant")
        ax.scatter(oracle[sig], single[sig], s=10, color="tab:blue", label="significant")
        lim = [min(0.0, np.nanmin(single), np.nanmin(oracle)), max(np.nanmax(oracle), np.nanmax(single), 0.1)]
        ax.plot(lim, lim, color="k", lw=0.6)
        ax.set_xlabel("oracle correlation (leave one out)")
        ax.set_ylabel("single-trial correlation")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(metrics.get("model", ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
