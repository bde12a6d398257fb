// Nearest codebook entry of every row of z without the M x K distance matrix, exact in float32 and float64.
//
// Frame: c = mean of the finite codes (float64 sum, rounded to T), s = a power of two bringing max |e - c| into
// [1/2, 1). Codes E_k = fl(e_k - c) s, en_k = ||E_k||^2 (NaN for a code with a non-finite component, whose E_k
// is zero); rows Z = fl(z_m s - c s) (= fl(z_m - c) s), one tile at a time.
// Scores: x_k = en_k - 2 Z.E_k, one GEMM per (row tile, code block) into a per-thread workspace of kRows x kCodes
// values (L2-sized). Window: W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2 with a, b from the caller
// (daenr_fast/ops/vq_lookup.py, _window).
// Candidates: per row and block, first the running minimum of the scores (NaN ignored), then every code with
// !(x_k > min + 2W) -- NaN scores and NaN/infinite thresholds included -- is rescored exactly:
// sum_d (z_d - e_kd)^2 in double, in a fixed summation order, from the original values. The lowest exact
// distance wins on a strict improvement (codes are visited in increasing order, so ties go to the lowest index);
// a NaN distance never wins; a row with only NaN distances gets index 0 and distance NaN.
//
// Precision (the full argument is in daenr_fast/ops/vq_lookup.py): |(||Z||^2 + x_k) - s^2 ||z - e_k||^2| <= W/2
// for every code, centring, GEMM (any order, FMA or not), en_k and the subtraction included; hence the true
// argmin is always within 2W of the best score and is rescored. The double rescoring errs by <= D 2^-53
// relative, so the index is the exact argmin except between distances equal to ~1e-14 relative (float32 inputs;
// float64 inputs: ties within the float64 rounding of the sums), and the distance is rounded once. In the scaled
// frame nothing overflows while ||Z||^2 is finite; beyond that W is infinite and the whole row is rescored.
// A running minimum that is still too high only admits extra candidates, never loses the argmin.
// Memory: the workspace per thread, E (K x D) and en (K).
#include "cpu/vq_lookup_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace daenr::cpu {
namespace {

constexpr int64_t kRows = 128;
constexpr int64_t kCodes = 512;
constexpr int kScaleExponent[2] = {126, 1022};  // float, double: |log2 s| stays in the normal range

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// double -> T rounded to nearest, +-inf from the rounding midpoint above T's maximum on (where a plain cast
// would be undefined).
template <typename T>
T saturate(double v) {
  if (sizeof(T) < sizeof(double) && std::fabs(v) >= 0x1.ffffffp+127) return v > 0 ? INFINITY : -INFINITY;
  return T(v);
}

template <typename T>
struct Frame {
  std::vector<T> centre;  // c s once the frame is done
  at::Tensor codes;  // (K,D) E, zero rows for the non-finite codes
  std::vector<T> sqnorm;
  T scale = 1;
  double en_max = 0;
};

template <typename T>
Frame<T> centred_codebook(const at::Tensor& codebook) {
  const int64_t K = codebook.size(0), D = codebook.size(1);
  const T* e = codebook.data_ptr<T>();
  Frame<T> f;
  std::vector<char> finite(K);
  std::vector<double> total(D, 0.0);
  int64_t count = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T* ek = e + k * D;
    finite[k] = std::all_of(ek, ek + D, [](T v) { return std::isfinite(v); });
    if (!finite[k]) continue;
    ++count;
    for (int64_t d = 0; d < D; ++d) total[d] += double(ek[d]);
  }
  f.centre.resize(D);
  for (int64_t d = 0; d < D; ++d) f.centre[d] = T(total[d] / double(std::max<int64_t>(count, 1)));
  f.codes = at::empty({K, D}, codebook.options());
  T* c = f.codes.template data_ptr<T>();
  T spread = 0;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t d = 0; d < D; ++d) {
      const T off = finite[k] ? T(e[k * D + d] - f.centre[d]) : T(0);
      c[k * D + d] = off;
      spread = std::max(spread, std::fabs(off));
    }
  }
  int exponent = 0;
  std::frexp(spread, &exponent);
  const int limit = kScaleExponent[sizeof(T) == 8];
  f.scale = std::ldexp(T(1), -std::clamp(exponent, -limit, limit));
  f.sqnorm.resize(K);
  for (int64_t k = 0; k < K; ++k) {
    double sq = 0;
    for (int64_t d = 0; d < D; ++d) {
      c[k * D + d] *= f.scale;
      sq += double(c[k * D + d]) * double(c[k * D + d]);
    }
    f.sqnorm[k] = finite[k] ? saturate<T>(sq) : std::numeric_limits<T>::quiet_NaN();
    f.en_max = std::max(f.en_max, sq);
  }
  for (T& v : f.centre) v *= f.scale;  // exact: a power of two (and |c| s stays far from overflow)
  return f;
}

// min(xmin, min_k en[k] - 2 s[k]) over k in [0, n), NaN scores ignored.
template <typename T>
T block_min(const T* s, const T* en, int64_t n, T xmin) {
  for (int64_t k = 0; k < n; ++k) {
    const T x = en[k] - 2 * s[k];
    xmin = x < xmin ? x : xmin;
  }
  return xmin;
}

float block_min(const float* s, const float* en, int64_t n, float xmin) {
  vf bv = vf{} + xmin;
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    vf sv, ev;
    std::memcpy(&sv, s + k, sizeof(vf));
    std::memcpy(&ev, en + k, sizeof(vf));
    const vf x = ev - 2.f * sv;
    bv = x < bv ? x : bv;
  }
  for (int64_t l = 0; l < kLanes; ++l) xmin = bv[l] < xmin ? bv[l] : xmin;
  return block_min<float>(s + k, en + k, n - k, xmin);
}

// visit(k) for every k in [0, n), in increasing order, whose score is not above thr (NaN on either side: visited).
template <typename T, typename Visit>
void each_candidate(const T* s, const T* en, int64_t n, T thr, Visit&& visit) {
  for (int64_t k = 0; k < n; ++k) {
    if (!(en[k] - 2 * s[k] > thr)) visit(k);
  }
}

template <typename Visit>
void each_candidate(const float* s, const float* en, int64_t n, float thr, Visit&& visit) {
  const vf tv = vf{} + thr;
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    vf sv, ev;
    std::memcpy(&sv, s + k, sizeof(vf));
    std::memcpy(&ev, en + k, sizeof(vf));
    const vi hit = ~(ev - 2.f * sv > tv);
    uint64_t words[4];
    std::memcpy(words, &hit, sizeof(words));
    if ((words[0] | words[1] | words[2] | words[3]) == 0) continue;
    for (int64_t l = 0; l < kLanes; ++l) {
      if (hit[l]) visit(k + l);
    }
  }
  for (; k < n; ++k) {
    if (!(en[k] - 2.f * s[k] > thr)) visit(k);
  }
}

// sum_d (z_d - e_d)^2 in double, four partial sums in a fixed order (the same for every pair, so equal codes
// give equal distances whatever their alignment).
template <typename T>
double exact_distance(const T* z, const T* e, int64_t D) {
  double acc[4] = {0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {
    for (int j = 0; j < 4; ++j) {
      const double diff = double(z[d + j]) - double(e[d + j]);
      acc[j] += diff * diff;
    }
  }
  for (; d < D; ++d) {
    const double diff = double(z[d]) - double(e[d]);
    acc[0] += diff * diff;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <typename T>
void lookup(const at::Tensor& z, const at::Tensor& codebook, double a, double b, int64_t* ip, T* dp) {
  const int64_t M = z.size(0), D = z.size(1), K = codebook.size(0);
  const Frame<T> f = centred_codebook<T>(codebook);
  const int64_t rows = std::min(M, kRows), codes = std::min(K, kCodes);
  const T* zp = z.data_ptr<T>();
  const T* ep = codebook.data_ptr<T>();
  const T* en = f.sqnorm.data();
  const double en_root = std::sqrt(f.en_max);
  const int64_t n_tiles = (M + rows - 1) / rows;
  at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
    auto ws = at::empty({rows * codes + rows * D}, z.options());
    T* sp = ws.data_ptr<T>();
    T* zc = sp + rows * codes;
    T xmin[kRows], window[kRows];
    double best[kRows];
    int64_t arg[kRows];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m0 = t * rows, tm = std::min(rows, M - m0);
      for (int64_t i = 0; i < tm; ++i) {
        const T* zr = zp + (m0 + i) * D;
        double zn2 = 0;
        for (int64_t d = 0; d < D; ++d) {
          const T v = zr[d] * f.scale - f.centre[d];
          zc[i * D + d] = v;
          zn2 += double(v) * double(v);
        }
        window[i] = saturate<T>(a * (f.en_max + 2 * std::sqrt(zn2) * en_root) + b * zn2);
        xmin[i] = std::numeric_limits<T>::infinity();
        best[i] = std::numeric_limits<double>::infinity();
        arg[i] = -1;
      }
      const auto z_tile = at::from_blob(zc, {tm, D}, z.options());
      for (int64_t k0 = 0; k0 < K; k0 += codes) {
        const int64_t tk = std::min(codes, K - k0);
        auto s = at::from_blob(sp, {tm, tk}, z.options());  // rows of stride tk
        at::mm_out(s, z_tile, f.codes.narrow(0, k0, tk).t());
        for (int64_t i = 0; i < tm; ++i) {
          const T* si = sp + i * tk;
          xmin[i] = block_min(si, en + k0, tk, xmin[i]);
          const T* zr = zp + (m0 + i) * D;
          each_candidate(si, en + k0, tk, T(xmin[i] + 2 * window[i]), [&](int64_t k) {
            const double dist = exact_distance(zr, ep + (k0 + k) * D, D);
            if (dist < best[i] || (arg[i] < 0 && dist == dist)) {
              best[i] = dist;
              arg[i] = k0 + k;
            }
          });
        }
      }
      for (int64_t i = 0; i < tm; ++i) {
        ip[m0 + i] = arg[i] < 0 ? 0 : arg[i];
        dp[m0 + i] = arg[i] < 0 ? std::numeric_limits<T>::quiet_NaN() : saturate<T>(best[i]);
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> vq_lookup_forward(const at::Tensor& z, const at::Tensor& codebook,
                                                     double window_codes, double window_rows) {
  const int64_t M = z.size(0), D = z.size(1);
  auto indices = at::zeros({M}, z.options().dtype(at::kLong));
  auto dist = at::empty({M}, z.options());
  if (M == 0) return {indices, dist};
  if (D == 0) return {indices, dist.zero_()};
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "vq_lookup_forward", [&] {
    lookup<scalar_t>(z, codebook, window_codes, window_rows, indices.data_ptr<int64_t>(),
                     dist.data_ptr<scalar_t>());
  });
  return {indices, dist};
}

}  // namespace daenr::cpu
