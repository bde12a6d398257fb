// Fused Poisson loss on CPU: one pass over (z, target) computes the loss, its reduction, dl/dz and the count of
// invalid targets.
//
//   l = r - s log(r + eps), r = act(z)          (exp: l = e^z - s z)
//   dl/dz = act'(z) (1 - s / (r + eps))          (exp: e^z - s)
//
// The (R, N) view (N = last dimension for the per-neuron mode, else R = 1) is cut into tiles of rows x column
// blocks; each tile evaluates row chunks of at most kChunk elements, reducing as it goes (a per-chunk float sum,
// or a stack buffer added to per-column double sums). Tiles write their partial sums (double) to their own slots,
// summed afterwards in a fixed order, so the result does not depend on the number of threads. float math runs on
// eight-lane vectors with polynomial exp/log.
#include "cpu/poisson_loss_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace daenr::cpu {
namespace {

constexpr int64_t kChunk = 2048;         // elements per row chunk (stack buffer)
constexpr int64_t kTileElems = 1 << 15;  // elements per tile

// Eight float lanes as a GCC/Clang vector: the float path below is explicitly vectorized.
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int kLanes = 8;

template <typename V>
inline V splat(float v) {
  if constexpr (std::is_same_v<V, vf>) {
    return vf{} + v;
  } else {
    return static_cast<V>(v);
  }
}
inline vf sel(vi m, vf a, vf b) { return m ? a : b; }
inline double sel(bool m, double a, double b) { return m ? a : b; }

// exp: 2^n exp(r), n = round(x log2 e), r = x - n ln 2 (two-part ln 2), Cephes polynomial (about 1 ulp); 2^n is
// applied as 2^(n/2) 2^(n - n/2) so that both factors are normal floats over the clamped range.
inline vf exp_(vf x) {
  const vf kRound = splat<vf>(12582912.f);  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  vf xc = sel(x > -104.f, x, splat<vf>(-104.f));  // also maps NaN to a finite value
  xc = sel(xc < 89.f, xc, splat<vf>(89.f));
  const vf n = (xc * 1.44269504088896341f + kRound) - kRound;
  const vf r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  vf p = splat<vf>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const vi ni = __builtin_convertvector(n, vi);
  const vi n1 = ni >> 1, n2 = ni - n1;
  const vf y = p * __builtin_bit_cast(vf, (n1 + 127) << 23) * __builtin_bit_cast(vf, (n2 + 127) << 23);
  return sel(x == x, y, x);
}

// log: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log x = log1p(m - 1) + e ln 2, Cephes degree-9 polynomial.
inline vf log_(vf x) {
  const vi sub = x < 1.17549435e-38f;  // subnormal (or <= 0): scale by 2^23 first
  const vf xs = sel(sub, x * 8388608.f, x);
  const vi bits = __builtin_bit_cast(vi, xs);
  vf e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, vf) - sel(sub, splat<vf>(23.f), splat<vf>(0.f));
  vf m = __builtin_bit_cast(vf, (bits & 0x007fffff) | 0x3f000000);
  const vi low = m < 0.707106781186547524f;
  e = sel(low, e - 1.f, e);
  m = sel(low, m + m - 1.f, m - 1.f);
  const vf z = m * m;
  vf y = splat<vf>(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y = y + e * -2.12194440e-4f - 0.5f * z;
  const float inf = std::numeric_limits<float>::infinity();
  vf out = (m + y + e * 0.693359375f) + (x - x);  // x - x is NaN for a NaN or infinite x, else 0
  out = sel(x == inf, splat<vf>(inf), out);
  out = sel(x == 0.f, splat<vf>(-inf), out);
  return sel(x < 0.f, splat<vf>(std::numeric_limits<float>::quiet_NaN()), out);
}

inline double exp_(double x) { return std::exp(x); }
inline double log_(double x) { return std::log(x); }

// log(1 + u) for u >= 0, accurate when u is tiny: log(w) * u / (w - 1) with w = 1 + u rounded.
template <typename V>
inline V log1p_(V u) {
  const V w = splat<V>(1.f) + u;
  const V d = w - 1.f;
  return sel(d == 0.f, u, log_(w) * (u / sel(d == 0.f, splat<V>(1.f), d)));
}

// Loss l = r - s log(r + eps) with r = act(z) (exp: l = e^z - s z) and dl/dz, activation code ACT.
template <int ACT, typename V>
inline void poisson_elem(V z, V s, V eps, V& loss, V& grad) {
  const V one = splat<V>(1.f), zero = splat<V>(0.f);
  if constexpr (ACT == kExp) {  // z is the log-rate
    const V ez = exp_(z);
    loss = ez - s * z;
    grad = ez - s;
    return;
  }
  V r, dr;
  if constexpr (ACT == kIdentity) {
    r = z;
    dr = one;
  } else if constexpr (ACT == kElu1) {
    const V ez = exp_(sel(z > 0.f, zero, z));
    r = sel(z > 0.f, z + 1.f, ez);
    dr = sel(z > 0.f, one, ez);
  } else {  // softplus with torch's threshold 20: max(z, 0) + log1p(exp(-|z|)), derivative sigmoid(z)
    const V u = exp_(sel(z < 0.f, z, -z));
    const V inv = one / (one + u);
    r = sel(z > 20.f, z, sel(z > 0.f, z, zero) + log1p_(u));
    dr = sel(z > 20.f, one, sel(z >= 0.f, inv, u * inv));
  }
  const V re = r + eps;
  loss = r - s * log_(re);
  grad = dr * (one - s / re);
}

// Stirling approximation of log(s!) where s > 1 (else 0), as torch.nn.PoissonNLLLoss(full=True). 2 pi is
// rounded to the lane type (a float constant would put a 1.4e-8 error into every double element).
template <typename V>
inline V stirling(V s) {
  using Lane = std::conditional_t<std::is_same_v<V, vf>, float, double>;
  constexpr Lane kTwoPi = static_cast<Lane>(6.283185307179586476925286766559);
  const V safe = sel(s > 1.f, s, splat<V>(1.f));
  const V v = safe * log_(safe) - safe + 0.5f * log_(kTwoPi * safe);
  return sel(s > 1.f, v, splat<V>(0.f));
}

// w <= kLanes floats from p, padded with `fill`; and the matching store.
inline vf load(const float* p, int64_t w, float fill) {
  vf v = splat<vf>(fill);
  if (w == kLanes) {
    std::memcpy(&v, p, sizeof(vf));
  } else {
    std::memcpy(&v, p, w * sizeof(float));
  }
  return v;
}
inline void store(float* p, const vf& v, int64_t w) {
  if (w == kLanes) {
    std::memcpy(p, &v, sizeof(vf));
  } else {
    std::memcpy(p, &v, w * sizeof(float));
  }
}

// One chunk of n elements, in a single pass: grad (if not null) = scale * dl/dz; the losses (plus the Stirling
// term when `full`) either stored to `out` or, when out is null, added to `sum`. Returns the number of invalid
// (negative or non-finite) targets. float: eight lanes at a time, the tail padded and masked.
template <int ACT>
int64_t eval_chunk(const float* z, const float* s, int64_t n, float eps, float scale, bool full, float* grad,
                   float* out, double& sum) {
  const vf veps = splat<vf>(eps);
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  vf acc = splat<vf>(0.f);
  vi bad = vi{} + 0;
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t w = std::min<int64_t>(kLanes, n - i);
    const vf sv = load(s + i, w, 0.f);
    vf l, g;
    poisson_elem<ACT>(load(z + i, w, 1.f), sv, veps, l, g);
    if (full) l += stirling(sv);
    if (grad != nullptr) store(grad + i, g * scale, w);
    if (out != nullptr) {
      store(out + i, l, w);
    } else {
      acc += sel(lane < int32_t(w), l, splat<vf>(0.f));
    }
    bad -= ~((sv >= 0.f) & (sv <= std::numeric_limits<float>::max()));  // -(-1) per invalid lane
  }
  double part = 0;
  int64_t nbad = 0;
  for (int l = 0; l < kLanes; ++l) {
    part += acc[l];
    nbad += bad[l];
  }
  sum += part;
  return nbad;
}

template <int ACT>
int64_t eval_chunk(const double* z, const double* s, int64_t n, double eps, double scale, bool full, double* grad,
                   double* out, double& sum) {
  int64_t nbad = 0;
  for (int64_t i = 0; i < n; ++i) {
    double l, g;
    poisson_elem<ACT>(z[i], s[i], eps, l, g);
    if (full) l += stirling(s[i]);
    if (grad != nullptr) grad[i] = g * scale;
    if (out != nullptr) {
      out[i] = l;
    } else {
      sum += l;
    }
    nbad += !(s[i] >= 0.0 && s[i] <= std::numeric_limits<double>::max());
  }
  return nbad;
}

template <typename T>
int64_t first_invalid(const T* s, int64_t n) {
  const T big = std::numeric_limits<T>::max();
  for (int64_t i = 0; i < n; ++i) {
    if (!(s[i] >= T(0) && s[i] <= big)) return i;
  }
  return -1;
}

struct Plan {
  int64_t R, N, cb, rb, n_cb, n_rb;
};

Plan make_plan(int64_t R, int64_t N) {
  const int64_t cb = std::max<int64_t>(1, std::min(N, kChunk));
  const int64_t rb = std::max<int64_t>(1, std::min(R, kTileElems / cb));
  return {R, N, cb, rb, (N + cb - 1) / cb, (R + rb - 1) / rb};
}

template <int ACT, typename T>
void run(const T* z, const T* s, T eps, int64_t mode, bool full, T gscale, const Plan& p, T* loss_none,
         T* grad, double* tile_sum, double* col_sum, int64_t* tile_bad, int64_t* tile_first) {
  const int64_t n_tiles = p.n_rb * p.n_cb;
  const int64_t grain = std::max<int64_t>(1, kTileElems / std::max<int64_t>(1, p.rb * p.cb));
  at::parallel_for(0, n_tiles, grain, [&](int64_t begin, int64_t end) {
    T buf[kChunk];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r0 = (t / p.n_cb) * p.rb, r1 = std::min(p.R, r0 + p.rb);
      const int64_t c0 = (t % p.n_cb) * p.cb, w = std::min(p.N, c0 + p.cb) - c0;
      double sum = 0;
      int64_t bad = 0, first = -1;
      double* cols = col_sum == nullptr ? nullptr : col_sum + (t / p.n_cb) * p.N + c0;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t off = r * p.N + c0;
        T* out = mode == kModeNone ? loss_none + off : (mode == kModePerNeuron ? buf : nullptr);
        const int64_t nbad = eval_chunk<ACT>(z + off, s + off, w, eps, gscale, full,
                                             grad == nullptr ? nullptr : grad + off, out, sum);
        if (nbad > 0 && first < 0) first = off + first_invalid(s + off, w);
        bad += nbad;
        if (mode == kModePerNeuron) {
#pragma omp simd
          for (int64_t i = 0; i < w; ++i) cols[i] += buf[i];
        }
      }
      tile_sum[t] = sum;
      tile_bad[t] = bad;
      tile_first[t] = first;
    }
  });
}

template <typename F>
void dispatch_activation(int64_t activation, F&& f) {
  switch (activation) {
    case kIdentity: f(std::integral_constant<int, kIdentity>{}); break;
    case kElu1: f(std::integral_constant<int, kElu1>{}); break;
    case kSoftplus: f(std::integral_constant<int, kSoftplus>{}); break;
    case kExp: f(std::integral_constant<int, kExp>{}); break;
    default: TORCH_CHECK(false, "poisson_loss: unknown activation code ", activation);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> poisson_loss_forward(const at::Tensor& z, const at::Tensor& target,
                                                                    int64_t activation, double eps, int64_t mode,
                                                                    bool mean, bool full, bool need_grad) {
  const int64_t numel = z.numel();
  const int64_t N = mode == kModePerNeuron ? (z.dim() > 0 ? z.size(-1) : 1) : numel;
  const int64_t R = mode == kModePerNeuron ? (N > 0 ? numel / N : 0) : 1;
  const Plan p = make_plan(R, N);
  const int64_t n_tiles = (R > 0 && N > 0) ? p.n_rb * p.n_cb : 0;

  at::Tensor loss = mode == kModeNone ? at::empty_like(z)
                                      : at::empty(mode == kModeTotal ? at::IntArrayRef{} : at::IntArrayRef{N},
                                                  z.options());
  at::Tensor grad = need_grad ? at::empty_like(z) : at::empty({0}, z.options());
  auto dbl = z.options().dtype(at::kDouble);
  at::Tensor tile_sum = at::empty({n_tiles}, dbl);
  at::Tensor col_sum = at::zeros({mode == kModePerNeuron ? p.n_rb * N : 0}, dbl);
  at::Tensor tile_info = at::empty({2, n_tiles}, z.options().dtype(at::kLong));
  const double count = mode == kModeTotal ? double(numel) : double(R);
  const double gscale = (mean && mode != kModeNone) ? 1.0 / count : 1.0;

  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "poisson_loss_forward", [&] {
    dispatch_activation(activation, [&](auto act) {
      if (n_tiles == 0) return;
      run<decltype(act)::value>(z.data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), scalar_t(eps), mode, full,
                                scalar_t(gscale), p, mode == kModeNone ? loss.data_ptr<scalar_t>() : nullptr,
                                need_grad ? grad.data_ptr<scalar_t>() : nullptr, tile_sum.data_ptr<double>(),
                                mode == kModePerNeuron ? col_sum.data_ptr<double>() : nullptr,
                                tile_info.data_ptr<int64_t>(), tile_info.data_ptr<int64_t>() + n_tiles);
    });
    const double* ts = tile_sum.data_ptr<double>();
    if (mode == kModeTotal) {
      double total = 0;
      for (int64_t t = 0; t < n_tiles; ++t) total += ts[t];
      // a plain cast: a total past the float range becomes inf, as the torch backend's sum (fill_ would throw)
      *loss.data_ptr<scalar_t>() = static_cast<scalar_t>(mean ? total / count : total);
    } else if (mode == kModePerNeuron) {
      scalar_t* out = loss.data_ptr<scalar_t>();
      const double* cs = col_sum.data_ptr<double>();
      for (int64_t j = 0; j < N; ++j) {
        double v = 0;
        for (int64_t b = 0; b < (n_tiles > 0 ? p.n_rb : 0); ++b) v += cs[b * N + j];
        out[j] = static_cast<scalar_t>(mean ? v / count : v);
      }
    }
  });

  const int64_t* info = tile_info.data_ptr<int64_t>();
  int64_t bad = 0, first = -1;
  for (int64_t t = 0; t < n_tiles; ++t) {
    bad += info[t];
    const int64_t f = info[n_tiles + t];
    if (f >= 0 && (first < 0 || f < first)) first = f;
  }
  at::Tensor bad_info = at::empty({2}, z.options().dtype(at::kLong));
  bad_info.data_ptr<int64_t>()[0] = bad;
  bad_info.data_ptr<int64_t>()[1] = first;
  return {loss, grad, bad_info};
}

}  // namespace daenr::cpu
