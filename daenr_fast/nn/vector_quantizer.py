"""Vector quantizer of VQ-VAE (van den Oord et al. 2017) with an EMA codebook, over :func:`daenr_fast.ops.vq_lookup`.

For every input vector ``z`` (a row of (M,D), or a pixel of (B,D,H,W)) the nearest code ``e = E[k*]``,
``k* = argmin_k ||z - E[k]||^2``, replaces it; the output ``z + sg(e - z)`` passes the gradient straight through to
the encoder. Losses (means over all elements):

    codebook loss   = ||sg(z) - e||^2          (learned codebook only; the EMA update replaces it)
    commitment loss = beta * ||z - sg(e)||^2

EMA update (training only), with n_k the number of vectors assigned to code k in the batch:

    N_k <- decay N_k + (1 - decay) n_k,     S_k <- decay S_k + (1 - decay) sum_{z -> k} z
    E_k = S_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j     (Laplace smoothing)

N starts at 1 for every code (S at the code itself), so an unused code keeps its place while N_k decays. A
code whose N_k falls below ``dead_code_threshold`` is replaced by a random vector of the current batch (N_k = 1);
N is tracked for the learned codebook too. ``kmeans_init`` sets the codebook by k-means on the first training
batch. Each forward reports the perplexity ``exp(-sum_k p_k log p_k)`` of the assignment frequencies p and the
fraction of codes used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daenr_fast.ops.vq_lookup import vq_lookup

#: default EMA cluster size below which a code is restarted from a batch vector
DEAD_CODE_THRESHOLD = 1.0


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with straight-through gradient, VQ losses, EMA codebook, dead-code restarts.

    Args:
        num_codes: K, codebook size.
        dim: D, code dimension (the channel dimension of (B,D,H,W) inputs).
        beta: commitment weight.
        ema: update the codebook by exponential moving averages (else it is a learned parameter).
        decay: EMA decay.
        eps: Laplace smoothing of the EMA cluster sizes.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        dead_code_threshold: replace codes whose EMA cluster size falls below it (0 or None: never).
        kmeans_iters: Lloyd iterations of the k-means initialisation.
        backend: backend of :func:`~daenr_fast.ops.vq_lookup` (None chooses).

    ``forward(z)`` with z (B,D,H,W) or (M,D) returns ``(quantized, info)``: quantized has z's shape and dtype;
    ``info`` holds ``loss`` (codebook + commitment), ``commitment_loss``, ``codebook_loss``, ``indices``
    ((B,H,W) or (M,)), ``perplexity`` and ``usage`` (fraction of codes used by this batch).
    """

    def __init__(self, num_codes: int = 256, dim: int = 32, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, kmeans_init: bool = False,
                 dead_code_threshold: float | None = DEAD_CODE_THRESHOLD, kmeans_iters: int = 10, backend: str | None = None):
        super().__init__()
        for name, value in (("num_codes", num_codes), ("dim", dim), ("kmeans_iters", kmeans_iters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "kmeans_iters" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'kmeans_iters' else 1}, got {value!r}")
        for name, value in (("beta", beta), ("decay", decay), ("eps", eps), ("dead_code_threshold",
                                                                             dead_code_threshold or 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if beta < 0 or eps <= 0 or (dead_code_threshold or 0.0) < 0:
            raise ValueError(f"beta and dead_code_threshold must be >= 0 and eps > 0, got beta={beta}, eps={eps}, "
                             f"dead_code_threshold={dead_code_threshold}")
        self.num_codes, self.dim, self.beta, self.ema = num_codes, dim, beta, ema
        self.decay, self.eps, self.kmeans_iters, self.backend = decay, eps, kmeans_iters, backend
        self.kmeans_init = kmeans_init
        self.dead_code_threshold = dead_code_threshold or 0.0
        codebook = torch.randn(num_codes, dim)
        if ema:
            self.register_buffer("codebook", codebook)
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._needs_kmeans = kmeans_init  # a Python mirror of `initialized`, so compiled graphs guard on it

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._needs_kmeans = self.kmeans_init and not bool(self.initialized)

    def forward(self, z: Tensor) -> tuple[Tensor, dict]:
        flat, restore = self._flatten(z)
        work = flat.to(self.codebook.dtype)
        if self.training and self._needs_kmeans:
            self._kmeans_init(work.detach())
        indices, _ = vq_lookup(work.detach(), self.codebook.detach(), backend=self.backend)
        codes = F.embedding(indices, self.codebook)
        commitment = self.beta * F.mse_loss(work, codes.detach())
        codebook_loss = work.new_zeros(()) if self.ema else F.mse_loss(work.detach(), codes)
        counts = self._counts(indices, work.dtype)
        if self.training:
            with torch.no_grad():
                self._update(work.detach(), indices, counts)
        quantized = (work + (codes - work).detach()).to(z.dtype)
        probs = counts / max(1, indices.numel())
        info = {
            "loss": commitment + codebook_loss,
            "commitment_loss": commitment,
            "codebook_loss": codebook_loss,
            "indices": indices.view(restore[1]),
            "perplexity": torch.exp(-torch.special.xlogy(probs, probs).sum()),
            "usage": (counts > 0).to(work.dtype).mean(),
        }
        return restore[0](quantized), info

    def _flatten(self, z: Tensor):
        """(M,D) rows of z, plus (a function back to z's layout, the shape of the indices)."""
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating torch.Tensor (B,D,H,W) or (M,D), got {type(z).__name__}"
                            + (f" of {z.dtype}" if isinstance(z, Tensor) else ""))
        if z.dim() not in (2, 4) or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (B,D,H,W) or (M,D) with D={self.dim}, got {tuple(z.shape)}")
        if z.dim() == 2:
            return z, (lambda q: q, (z.shape[0],))
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return flat, (lambda q: q.view(b, h, w, d).permute(0, 3, 1, 2).contiguous(), (b, h, w))

    def _update(self, z: Tensor, indices: Tensor, counts: Tensor) -> None:
        """EMA statistics, the EMA codebook, and dead-code replacement (see the module docstring)."""
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, z)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.dead_code_threshold > 0 and z.shape[0]:
            dead = self.ema_count < self.dead_code_threshold
            pick = torch.randint(z.shape[0], (self.num_codes,), device=z.device)
            self._reset_codes(dead, z[pick])

    def _counts(self, indices: Tensor, dtype: torch.dtype) -> Tensor:
        """(K,) number of vectors assigned to each code (static shape, unlike bincount)."""
        return torch.zeros(self.num_codes, dtype=dtype, device=indices.device).index_add_(
            0, indices, torch.ones(indices.shape, dtype=dtype, device=indices.device))

    def _reset_codes(self, which: Tensor, vectors: Tensor) -> None:
        """Codes where the (K,) mask ``which`` is set become the matching rows of ``vectors`` (K,D), N_k = 1."""
        keep = ~which[:, None]
        self.codebook.data.copy_(torch.where(keep, self.codebook.data, vectors))
        self.ema_sum.copy_(torch.where(keep, self.ema_sum, vectors))
        self.ema_count.copy_(torch.where(which, torch.ones_like(self.ema_count), self.ema_count))

    @torch.no_grad()
    def _kmeans_init(self, z: Tensor) -> None:
        """Lloyd's k-means on the batch, started from random batch vectors; sets the codebook and EMA state."""
        if z.shape[0] == 0:
            return
        centers = z[torch.randint(z.shape[0], (self.num_codes,), device=z.device)].clone()
        for _ in range(self.kmeans_iters):
            assign, _ = vq_lookup(z, centers, backend=self.backend)
            sums = torch.zeros_like(centers).index_add_(0, assign, z)
            counts = self._counts(assign, z.dtype)
            centers = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
        self._reset_codes(torch.ones(self.num_codes, dtype=torch.bool, device=z.device), centers)
        self.initialized.fill_(True)
        self._needs_kmeans = False

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}, "
                f"decay={self.decay}, dead_code_threshold={self.dead_code_threshold}")
