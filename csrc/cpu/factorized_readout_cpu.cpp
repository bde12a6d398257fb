// Fused factorized readout on CPU.
//
//   y[b,n] = sum_c w[n,c] * sum_p m[n,p] * x[b,c,p] + bias[n]        (p runs over the H*W pixels)
//
// The work is tiled over (batch block, neuron block). For one tile, T = X[blk] (bb*C, P) @ M[nblk]^T (P, nb)
// is a GEMM into a per-tile workspace of at most kWorkspaceElems elements, reduced at once against w; the full
// (B,C,N) or (B,N,P) tensors are never formed. Tiles run in parallel (at::parallel_for), each GEMM on one thread.
// The backward costs two more GEMMs of the forward's size (see factorized_readout_backward).
#include "cpu/factorized_readout_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace daenr::cpu {
namespace {

constexpr int64_t kWorkspaceElems = 64 * 1024;  // 256 KiB of float32 per tile: stays in L2
constexpr int64_t kBackwardElems = 256 * 1024;  // 1 MiB of float32 per backward tile (L2 + L3)
constexpr int64_t kBackwardRows = 256;          // GEMM rows per backward tile

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

// Returns sum_q m[q] z[q] and adds w * z to gm, in one sweep over z. The dot product is summed in double (a
// float sum of these long products loses digits the tests notice), in kLanes partial sums so that it vectorises.
template <typename scalar_t>
scalar_t dot_and_axpy(const scalar_t* z, const scalar_t* m, scalar_t* gm, scalar_t w, int64_t len) {
  constexpr int64_t kLanes = 8;
  double acc[kLanes] = {};
  int64_t q = 0;
  for (; q + kLanes <= len; q += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      acc[j] += static_cast<double>(m[q + j]) * static_cast<double>(z[q + j]);
      gm[q + j] += w * z[q + j];
    }
  }
  double dot = 0;
  for (; q < len; ++q) {
    dot += static_cast<double>(m[q]) * static_cast<double>(z[q]);
    gm[q] += w * z[q];
  }
  for (int64_t j = 0; j < kLanes; ++j) dot += acc[j];
  return static_cast<scalar_t>(dot);
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

// Backward in two GEMM-sized passes (the forward is the third), never holding (B,C,N) or (N,C,P):
//
//   Z[n,(c,p)] = sum_b gy[b,n] x[b,c,p]              (one GEMM gy^T X, K = B, in blocks of n and c)
//   dspatial[n,p]  = sum_c w[n,c] Z[n,c,p]           (an axpy over each block of Z while it is in cache)
//   dfeatures[n,c] = sum_p m[n,p] Z[n,c,p]           (a dot product over the same block)
//   dx[b,c,p]      = sum_n gy[b,n] w[n,c] m[n,p]     (GEMM G M with G[(b,c),n] = gy[b,n] w[n,c], K = N)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> factorized_readout_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features) {
  const int64_t B = x.size(0), C = x.size(1), P = x.size(2) * x.size(3), N = spatial.size(0);
  auto grad_x = at::zeros_like(x);
  auto grad_m = at::zeros({N, P}, x.options());
  auto grad_w = at::zeros({N, C}, x.options());
  auto grad_b = grad.sum(0);
  if (B == 0 || N == 0 || C == 0) return {grad_x, grad_m.view_as(spatial), grad_w, grad_b};
  const auto X = x.reshape({B, C * P});
  const auto M = spatial.reshape({N, P});
  const auto GyT = grad.t().contiguous();  // (N, B)
  const auto Wt = features.t().contiguous();  // (C, N)
  auto GX = grad_x.view({B * C, P});
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());

  // Large tiles: BLAS packs the operand it streams at every call, so each packed element should serve many rows
  // (tiles of a few pixels made the GEMMs of K = B too small). Pass 1: nz neurons (up to kBackwardRows, at
  // least one block per thread) by cz whole channels (Z within kBackwardElems, or one channel).
  const int64_t nz = std::max<int64_t>(1, std::min<int64_t>(kBackwardRows, ceil_div(N, threads)));
  const int64_t cz = std::max<int64_t>(1, std::min<int64_t>(C, kBackwardElems / std::max<int64_t>(1, nz * P)));
  // Pass 2: bx batch elements (up to kBackwardRows GEMM rows, one block per thread) by nx neurons (the GEMM's K).
  const int64_t bx = std::max<int64_t>(1, std::min<int64_t>(ceil_div(kBackwardRows, C), ceil_div(B, threads)));
  const int64_t nx = std::min<int64_t>(N, std::max<int64_t>(64, kBackwardElems / std::max<int64_t>(1, bx * C)));

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "factorized_readout_backward", [&] {
    const scalar_t* wp = features.data_ptr<scalar_t>();
    const scalar_t* wt = Wt.data_ptr<scalar_t>();
    const scalar_t* gy = grad.data_ptr<scalar_t>();
    const scalar_t* mp = M.data_ptr<scalar_t>();
    scalar_t* gmp = grad_m.data_ptr<scalar_t>();
    scalar_t* gwp = grad_w.data_ptr<scalar_t>();

    at::parallel_for(0, ceil_div(N, nz), 1, [&](int64_t begin, int64_t end) {
      auto ws = at::empty({nz * cz * P}, x.options());
      for (int64_t tn = begin; tn < end; ++tn) {
        const int64_t n0 = tn * nz, nb = std::min(nz, N - n0);
        for (int64_t c0 = 0; c0 < C; c0 += cz) {
          const int64_t cb = std::min(cz, C - c0);
          auto Z = ws.narrow(0, 0, nb * cb * P).view({nb, cb * P});
          at::mm_out(Z, GyT.narrow(0, n0, nb), X.narrow(1, c0 * P, cb * P));
          const scalar_t* zp = Z.data_ptr<scalar_t>();
          for (int64_t n = 0; n < nb; ++n) {
            const scalar_t* mn = mp + (n0 + n) * P;
            scalar_t* gmn = gmp + (n0 + n) * P;
            for (int64_t c = 0; c < cb; ++c) {
              const scalar_t* zr = zp + (n * cb + c) * P;
              gwp[(n0 + n) * C + c0 + c] = dot_and_axpy(zr, mn, gmn, wp[(n0 + n) * C + c0 + c], P);
            }
          }
        }
      }
    });

    at::parallel_for(0, ceil_div(B, bx), 1, [&](int64_t begin, int64_t end) {
      auto ws = at::empty({bx * C * nx}, x.options());
      for (int64_t tb = begin; tb < end; ++tb) {
        const int64_t b0 = tb * bx, bb = std::min(bx, B - b0);
        auto GXb = GX.narrow(0, b0 * C, bb * C);
        for (int64_t n0 = 0; n0 < N; n0 += nx) {
          const int64_t nb = std::min(nx, N - n0);
          auto G = ws.narrow(0, 0, bb * C * nb).view({bb * C, nb});
          fill_g(gy, wt, G.data_ptr<scalar_t>(), b0, bb, n0, nb, C, N);
          GXb.addmm_(G, M.narrow(0, n0, nb));
        }
      }
    });
  });
  return {grad_x, grad_m.view_as(spatial), grad_w, grad_b};
}

}  // namespace daenr::cpu
