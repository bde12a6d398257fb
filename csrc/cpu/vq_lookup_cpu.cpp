// Nearest codebook entry of every row of z without the M x K distance matrix.
//
//   k*(m) = argmin_k ||z_m - e_k||^2 = argmin_k (||e_k||^2 - 2 z_m . e_k),   dist(m) = ||z_m||^2 + that minimum
//
// Row tiles of kRows rows run in parallel (at::parallel_for). For one tile, the codebook is walked in blocks of
// kCodes codes: S = Z_tile E_blk^T is one GEMM into a per-thread workspace of kRows x kCodes floats (L2-sized),
// then every row keeps a running argmin over ||e||^2 - 2 S. Ties go to the lowest index: inside a block each
// lane only moves on a strict improvement and lanes are merged by (value, index); across blocks only a strictly
// smaller value replaces the best. Memory: the workspace per thread plus ||e||^2 (K values).
#include "cpu/vq_lookup_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

namespace daenr::cpu {
namespace {

constexpr int64_t kRows = 128;
constexpr int64_t kCodes = 512;

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// Running argmin of en[k] - 2 s[k] over k in [0, n): float, eight lanes with independent best values.
void argmin_block(const float* s, const float* en, int64_t n, int64_t k0, float& best, int64_t& arg) {
  const float inf = std::numeric_limits<float>::infinity();
  vf bv = vf{} + inf;
  vi bi = vi{} + 0;
  vi idx = vi{0, 1, 2, 3, 4, 5, 6, 7};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes, idx += int32_t(kLanes)) {
    vf sv, ev;
    std::memcpy(&sv, s + k, sizeof(vf));
    std::memcpy(&ev, en + k, sizeof(vf));
    const vf d = ev - 2.f * sv;
    const vi lt = d < bv;
    bv = lt ? d : bv;
    bi = lt ? idx : bi;
  }
  float v = inf;
  int64_t a = -1;
  for (int64_t l = 0; l < kLanes; ++l) {
    if (bv[l] < v || (bv[l] == v && a >= 0 && bi[l] < a)) {
      v = bv[l];
      a = bi[l];
    }
  }
  for (; k < n; ++k) {  // the tail comes after every lane's indices, so only a strict improvement wins
    const float d = en[k] - 2.f * s[k];
    if (d < v) {
      v = d;
      a = k;
    }
  }
  if (a >= 0 && v < best) {
    best = v;
    arg = k0 + a;
  }
}

void argmin_block(const double* s, const double* en, int64_t n, int64_t k0, double& best, int64_t& arg) {
  for (int64_t k = 0; k < n; ++k) {
    const double d = en[k] - 2.0 * s[k];
    if (d < best) {
      best = d;
      arg = k0 + k;
    }
  }
}

template <typename T>
T squared_norm(const T* x, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += x[i] * x[i];
  return acc;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> vq_lookup_forward(const at::Tensor& z, const at::Tensor& codebook) {
  const int64_t M = z.size(0), D = z.size(1), K = codebook.size(0);
  auto indices = at::zeros({M}, z.options().dtype(at::kLong));
  auto dist = at::empty({M}, z.options());
  if (M == 0) return {indices, dist};
  if (D == 0) return {indices, dist.zero_()};
  const auto en = codebook.mul(codebook).sum(1);  // ||e_k||^2
  const int64_t rows = std::min(M, kRows), codes = std::min(K, kCodes);

  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "vq_lookup_forward", [&] {
    const scalar_t* zp = z.data_ptr<scalar_t>();
    const scalar_t* enp = en.data_ptr<scalar_t>();
    int64_t* ip = indices.data_ptr<int64_t>();
    scalar_t* dp = dist.data_ptr<scalar_t>();
    const int64_t n_tiles = (M + rows - 1) / rows;
    at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
      auto ws = at::empty({rows, codes}, z.options());
      const scalar_t* sp = ws.data_ptr<scalar_t>();
      for (int64_t t = begin; t < end; ++t) {
        const int64_t m0 = t * rows, tm = std::min(rows, M - m0);
        const auto z_tile = z.narrow(0, m0, tm);
        scalar_t best[kRows];
        std::fill(best, best + tm, std::numeric_limits<scalar_t>::infinity());
        for (int64_t k0 = 0; k0 < K; k0 += codes) {
          const int64_t tk = std::min(codes, K - k0);
          auto s = at::from_blob(ws.data_ptr(), {tm, tk}, z.options());  // rows of stride tk
          at::mm_out(s, z_tile, codebook.narrow(0, k0, tk).t());
          for (int64_t i = 0; i < tm; ++i) argmin_block(sp + i * tk, enp + k0, tk, k0, best[i], ip[m0 + i]);
        }
        for (int64_t i = 0; i < tm; ++i) {
          dp[m0 + i] = std::max(squared_norm(zp + (m0 + i) * D, D) + best[i], scalar_t(0));
        }
      }
    });
  });
  return {indices, dist};
}

}  // namespace daenr::cpu
