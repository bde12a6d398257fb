"""The paper's Figures 2-4 from sweep results (matplotlib, Agg backend).

* Figure 2: test originals and their reconstructions by CAE and CAE-FR1..4 (region 3, first seed).
* Figure 3: significant / insignificant neuron counts of the CAE-FRi image-reconstruction runs (Table 8
  weights), one panel per region (the paper's Fig. 3 is region 3, its Fig. 8 regions 1 and 2).
* Figure 4: the same counts for the readout-only CNN-FRi (top) and the joint CAE-FRi (bottom), Table 4 runs.

Counts are means over seeds; error bars span the seeds' minimum and maximum.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SIG_COLOR, INSIG_COLOR = "tab:orange", "tab:green"


def figure2(path: Path, panels: Sequence[Tuple[str, Optional[Path]]]) -> bool:
    """Originals above the reconstructions of each ``(label, recon.npz)``; False when nothing to draw."""
    loaded = [(label, np.load(p)) for label, p in panels if p is not None and Path(p).exists()]
    if not loaded:
        return False
    originals = loaded[0][1]["original"]
    rows = [("original", originals)] + [(label, data["reconstruction"]) for label, data in loaded]
    n = originals.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n, 1.05 * len(rows)), squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(images[j, 0], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("Figure 2: originals and reconstructions (region 3)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _bars(ax, labels: List[str], counts: List[Tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """Side-by-side significant / insignificant bars per label; ``counts`` = (sig per seed, insig per seed)."""
    x = np.arange(len(labels))
    for offset, k, color, name in ((-0.2, 0, SIG_COLOR, "significant"), (0.2, 1, INSIG_COLOR, "insignificant")):
        values = [c[k] for c in counts]
        means = np.array([v.mean() if v.size else np.nan for v in values])
        low = np.array([means[m] - v.min() if v.size else 0 for m, v in enumerate(values)])
        high = np.array([v.max() - means[m] if v.size else 0 for m, v in enumerate(values)])
        ax.bar(x + offset, means, width=0.4, color=color, label=name, yerr=[low, high], capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("neurons")
    ax.set_title(title, fontsize=9)


def count_figure(path: Path, panels: Dict[str, Tuple[List[str], List[Tuple[np.ndarray, np.ndarray]]]],
                 title: str) -> bool:
    """One bar panel per entry ``{panel title: (labels, counts)}``; False when every panel is empty."""
    panels = {k: v for k, v in panels.items() if any(c[0].size for c in v[1])}
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.5, 2.6 * len(panels)), squeeze=False)
    for ax, (name, (labels, counts)) in zip(axes[:, 0], panels.items()):
        _bars(ax, labels, counts, name)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
