// Fused factorized readout on CPU.
//
//   y[b,n] = sum_c w[n,c] * sum_p m[n,p] * x[b,c,p] + bias[n]        (p runs over the H*W pixels)
//
// The work is tiled over (batch block, neuron block). For one tile, T = X[blk] (bb*C, P) @ M[nblk]^T (P, nb)
// is a GEMM into a per-tile workspace of at most kWorkspaceElems elements, reduced at once against w; the full
// (B,C,N) or (B,N,P) tensors are never formed. Tiles run in parallel (at::parallel_for), each GEMM on one thread.
#include "cpu/factorized_readout_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace daenr::cpu {
namespace {

constexpr int64_t kWorkspaceElems = 64 * 1024;  // 256 KiB of float32 per tile: stays in L2

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Tiling {
  int64_t nb, bb, n_tiles_n, n_tiles_b;
};

// Neuron blocks are sized so that every thread gets work even for small N; batch blocks fill the workspace.
Tiling make_tiling(int64_t B, int64_t C, int64_t N) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t nb = std::min<int64_t>(std::max<int64_t>(N, 1), 256);
  if (N > 0 && ceil_div(N, nb) < threads) nb = std::max<int64_t>(8, ceil_div(N, threads));
  nb = std::min<int64_t>(nb, std::max<int64_t>(N, 1));
  int64_t bb = std::max<int64_t>(1, kWorkspaceElems / std::max<int64_t>(1, C * nb));
  bb = std::min<int64_t>(bb, std::max<int64_t>(B, 1));
  return {nb, bb, ceil_div(N, nb), ceil_div(B, bb)};
}

// G[(b,c), n] = gy[b0+b, n0+n] * w[n0+n, c] for one tile, written into g (bb*C, nb).
template <typename scalar_t>
void fill_g(const scalar_t* gy, const scalar_t* wt, scalar_t* g, int64_t b0, int64_t bb, int64_t n0, int64_t nb,
            int64_t C, int64_t N) {
  for (int64_t b = 0; b < bb; ++b) {
    const scalar_t* gyb = gy + (b0 + b) * N + n0;
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* wtc = wt + c * N + n0;
      scalar_t* gr = g + (b * C + c) * nb;
      for (int64_t n = 0; n < nb; ++n) gr[n] = gyb[n] * wtc[n];
    }
  }
}

}  // namespace

at::Tensor factorized_readout_forward(const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features,
                                      const std::optional<at::Tensor>& bias) {
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), N = spatial.size(0);
  auto y = at::zeros({B, N}, x.options());
  if (B == 0 || N == 0) return y;
  const auto X = x.reshape({B * C, P});
  const auto M = spatial.reshape({N, P});
  const auto Wt = features.t().contiguous();  // (C, N)
  const Tiling t = make_tiling(B, C, N);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "factorized_readout_forward", [&] {
    const scalar_t* wt = Wt.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, t.n_tiles_n * t.n_tiles_b, 1, [&](int64_t begin, int64_t end) {
      auto ws = at::empty({t.bb * C * t.nb}, x.options());
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t n0 = (tile % t.n_tiles_n) * t.nb, b0 = (tile / t.n_tiles_n) * t.bb;
        const int64_t nb = std::min(t.nb, N - n0), bb = std::min(t.bb, B - b0);
        auto T = ws.narrow(0, 0, bb * C * nb).view({bb * C, nb});
        at::mm_out(T, X.narrow(0, b0 * C, bb * C), M.narrow(0, n0, nb).t());
        const scalar_t* tp = T.data_ptr<scalar_t>();
        const int64_t ld = nb;
        for (int64_t b = 0; b < bb; ++b) {
          scalar_t* yb = yp + (b0 + b) * N + n0;
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t* tr = tp + (b * C + c) * ld;
            const scalar_t* wtc = wt + c * N + n0;
            for (int64_t n = 0; n < nb; ++n) yb[n] += tr[n] * wtc[n];
          }
        }
      }
    });
  });
  if (bias.has_value()) y.add_(*bias);
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> factorized_readout_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features) {
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), N = spatial.size(0);
  auto grad_x = at::zeros_like(x);
  auto grad_m = at::zeros({N, P}, x.options());
  auto grad_wt = at::zeros({C, N}, x.options());  // transposed while accumulating: rows are contiguous in n
  auto grad_b = grad.sum(0);
  if (B == 0 || N == 0) {
    return {grad_x, grad_m.view_as(spatial), grad_wt.t().contiguous(), grad_b};
  }
  const auto X = x.reshape({B * C, P});
  const auto M = spatial.reshape({N, P});
  const auto Wt = features.t().contiguous();
  auto GX = grad_x.view({B * C, P});
  const Tiling t = make_tiling(B, C, N);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "factorized_readout_backward", [&] {
    const scalar_t* wt = Wt.data_ptr<scalar_t>();
    const scalar_t* gy = grad.data_ptr<scalar_t>();
    scalar_t* gwt = grad_wt.data_ptr<scalar_t>();

    // Pass 1, parallel over neuron blocks (each owns its rows of grad_m and columns of grad_w):
    //   T = X M^T recomputed per batch block; dW^T[c,n] += sum_b gy[b,n] T[(b,c),n]; dM[nblk] += G^T X.
    at::parallel_for(0, t.n_tiles_n, 1, [&](int64_t begin, int64_t end) {
      auto ws_t = at::empty({t.bb * C * t.nb}, x.options());
      auto ws_g = at::empty({t.bb * C * t.nb}, x.options());
      for (int64_t tn = begin; tn < end; ++tn) {
        const int64_t n0 = tn * t.nb, nb = std::min(t.nb, N - n0);
        auto Mn = M.narrow(0, n0, nb);
        auto GMn = grad_m.narrow(0, n0, nb);
        for (int64_t b0 = 0; b0 < B; b0 += t.bb) {
          const int64_t bb = std::min(t.bb, B - b0);
          auto Xb = X.narrow(0, b0 * C, bb * C);
          auto T = ws_t.narrow(0, 0, bb * C * nb).view({bb * C, nb});
          at::mm_out(T, Xb, Mn.t());
          const scalar_t* tp = T.data_ptr<scalar_t>();
          const int64_t ld = nb;
          for (int64_t b = 0; b < bb; ++b) {
            const scalar_t* gyb = gy + (b0 + b) * N + n0;
            for (int64_t c = 0; c < C; ++c) {
              const scalar_t* tr = tp + (b * C + c) * ld;
              scalar_t* gw = gwt + c * N + n0;
              for (int64_t n = 0; n < nb; ++n) gw[n] += gyb[n] * tr[n];
            }
          }
          auto G = ws_g.narrow(0, 0, bb * C * nb).view({bb * C, nb});
          fill_g(gy, wt, G.data_ptr<scalar_t>(), b0, bb, n0, nb, C, N);
          GMn.addmm_(G.t(), Xb);
        }
      }
    });

    // Pass 2, parallel over batch blocks (each owns its rows of grad_x): dX[blk] += G[blk, nblk] M[nblk].
    at::parallel_for(0, t.n_tiles_b, 1, [&](int64_t begin, int64_t end) {
      auto ws_g = at::empty({t.bb * C * t.nb}, x.options());
      for (int64_t tb = begin; tb < end; ++tb) {
        const int64_t b0 = tb * t.bb, bb = std::min(t.bb, B - b0);
        auto GXb = GX.narrow(0, b0 * C, bb * C);
        for (int64_t n0 = 0; n0 < N; n0 += t.nb) {
          const int64_t nb = std::min(t.nb, N - n0);
          auto G = ws_g.narrow(0, 0, bb * C * nb).view({bb * C, nb});
          fill_g(gy, wt, G.data_ptr<scalar_t>(), b0, bb, n0, nb, C, N);
          GXb.addmm_(G, M.narrow(0, n0, nb));
        }
      }
    });
  });
  return {grad_x, grad_m.view_as(spatial), grad_wt.t().contiguous(), grad_b};
}

}  // namespace daenr::cpu
