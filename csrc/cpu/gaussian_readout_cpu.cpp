// Fused Gaussian readout on CPU.
//
//   y[b,n] = sum_t w_t[b,n] S_t[b,n] + bias[n],   S_t[b,n] = sum_c f[c,n] x[b,c,p_t[b,n]]
//
// over the 4 bilinear taps t of each position (gaussian_readout_taps.h); x (B,C,H,W), grid (B,N,2) or (N,2) shared
// by the batch, f (C,N).
//
// Layout. One batch entry's map is copied channels-last with a zero border (1 pixel before, 2 after: row
// (y+1)*(W+3) + (x+1) holds the C channels of pixel (y,x)), and the features transposed to (N,C). A neuron then
// reads its four taps as four contiguous C-vectors (taps off the map land on the zero border, so no tap needs a
// test) and every sum over channels is a vectorised dot product or axpy. Batch entries are taken in groups (as
// many padded maps as fit in kGroupBytes) and neurons in blocks of kNeuronBlock, so that a block's features are
// read from memory once per group. No (B,C,N) tensor exists: the scratch is f transposed, df transposed, and one
// group of padded maps per thread.
//
// Determinism. Every output element has exactly one owner, which sums in a fixed order independent of how the
// work is split, so results are bit-identical from run to run and for every thread count:
//   forward         task = (b, neuron range): y[b,n] = sum_t w_t dot(x_t, f_n);
//   backward pass A task = neuron range, b in order: dgrid[b,n] from S_t = dot(x_t, f_n), and
//                   df[n,:] += dy[b,n] sum_t w_t x_t (summed over b in order);
//   backward pass B task = (b, channel range): dx[b] += w_t dy[b,n] f_n at each tap, neurons in order (the
//                   scatter: one task owns each (b, channel) so no two threads touch one pixel).
// A shared grid's gradient is summed over b in order from per-batch rows. Sums are in the input dtype (float32
// or float64) with kLanes partial sums per dot product (a fixed order, vectorised).
#include "cpu/gaussian_readout_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "gaussian_readout_taps.h"

namespace daenr::cpu {
namespace {

using daenr::gaussian::Corner;
using daenr::gaussian::kTaps;

constexpr int64_t kLanes = 8;
constexpr int64_t kMinNeuronsPerTask = 64;
constexpr int64_t kGroupBytes = 4 << 20;
constexpr int64_t kMaxGroup = 32;
constexpr int64_t kNeuronBlock = 64;
constexpr int64_t kFeaturesInCache = 256 << 10;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The padded channels-last map of one batch entry: Hp x Wp rows of C values.
struct PaddedMap {
  int64_t C, H, W, Hp, Wp;
  PaddedMap(int64_t c, int64_t h, int64_t w) : C(c), H(h), W(w), Hp(h + 3), Wp(w + 3) {}
  int64_t rows() const { return Hp * Wp; }
  int64_t row_of(int64_t y, int64_t x) const { return (y + 1) * Wp + (x + 1); }
  // A top-left tap whose four taps are all on the border (positions off the map).
  int64_t border_row() const { return row_of(H, W); }

  // `count` maps with zero borders (their interiors are left for pack to fill).
  template <typename scalar_t>
  std::unique_ptr<scalar_t[]> buffers(int64_t count) const {
    std::unique_ptr<scalar_t[]> out(new scalar_t[count * rows() * C]);
    for (int64_t i = 0; i < count; ++i) {
      scalar_t* map = out.get() + i * rows() * C;
      std::fill(map, map + Wp * C, scalar_t(0));                             // row 0
      for (int64_t y = 1; y <= H; ++y) {
        std::fill(map + y * Wp * C, map + (y * Wp + 1) * C, scalar_t(0));    // column 0
        std::fill(map + (y * Wp + W + 1) * C, map + (y + 1) * Wp * C, scalar_t(0));  // columns W+1, W+2
      }
      std::fill(map + (H + 1) * Wp * C, map + rows() * C, scalar_t(0));       // rows H+1, H+2
    }
    return out;
  }

  // out[row_of(y,x) * C + c] = x[c][y][x]; the border rows of `out` must already be zero.
  template <typename scalar_t>
  void pack(const scalar_t* planes, scalar_t* out) const {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t x = 0; x < W; ++x) {
        scalar_t* row = out + row_of(y, x) * C;
        const scalar_t* src = planes + y * W + x;
        for (int64_t c = 0; c < C; ++c) row[c] = src[c * H * W];
      }
    }
  }

  // planes[c][y][x] = padded[row_of(y,x) * C + c] for c in [c0, c1).
  template <typename scalar_t>
  void unpack(const scalar_t* padded, scalar_t* planes, int64_t c0, int64_t c1) const {
    for (int64_t c = c0; c < c1; ++c) {
      scalar_t* dst = planes + c * H * W;
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) dst[y * W + x] = padded[row_of(y, x) * C + c];
      }
    }
  }
};

// A neuron's taps in a PaddedMap: the row of the top-left tap (the others are +1, +Wp, +Wp+1), the weights and
// the fractions.
template <typename acc_t>
struct NeuronTaps {
  int64_t row;
  acc_t w[kTaps];
  Corner<acc_t> corner;
};

template <typename acc_t, typename scalar_t>
NeuronTaps<acc_t> taps_of(const scalar_t* position, const PaddedMap& map, bool align_corners) {
  NeuronTaps<acc_t> t{};
  if (!daenr::gaussian::locate<acc_t>(position[0], position[1], map.H, map.W, align_corners, t.corner)) {
    t.row = map.border_row();
    t.corner = Corner<acc_t>{0, 0, 0, 0};
    return t;  // zero weights, border taps
  }
  t.row = map.row_of(t.corner.y0, t.corner.x0);
  for (int k = 0; k < kTaps; ++k) t.w[k] = daenr::gaussian::tap_weight(t.corner, k);
  return t;
}

// s[k] = dot(x_k, f) over the four tap rows x_0 = r, x_1 = r + C, x_2 = r + Wp*C, x_3 = x_2 + C; with `gw` also
// d[c] += sum_k gw[k] x_k[c].
template <typename T, bool kAxpy>
void tap_dots(const T* __restrict__ r, int64_t down, const T* __restrict__ f, int64_t C, T s[kTaps],
              const T* gw = nullptr, T* __restrict__ d = nullptr) {
  const T* __restrict__ r0 = r;
  const T* __restrict__ r1 = r + C;
  const T* __restrict__ r2 = r + down;
  const T* __restrict__ r3 = r + down + C;
  T a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  T g0 = 0, g1 = 0, g2 = 0, g3 = 0;
  if (kAxpy) g0 = gw[0], g1 = gw[1], g2 = gw[2], g3 = gw[3];
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const T v0 = r0[c + j], v1 = r1[c + j], v2 = r2[c + j], v3 = r3[c + j], fv = f[c + j];
      a0[j] += v0 * fv;
      a1[j] += v1 * fv;
      a2[j] += v2 * fv;
      a3[j] += v3 * fv;
      if (kAxpy) d[c + j] += g0 * v0 + g1 * v1 + g2 * v2 + g3 * v3;
    }
  }
  T t0 = 0, t1 = 0, t2 = 0, t3 = 0;
  for (; c < C; ++c) {
    const T v0 = r0[c], v1 = r1[c], v2 = r2[c], v3 = r3[c], fv = f[c];
    t0 += v0 * fv;
    t1 += v1 * fv;
    t2 += v2 * fv;
    t3 += v3 * fv;
    if (kAxpy) d[c] += g0 * v0 + g1 * v1 + g2 * v2 + g3 * v3;
  }
  for (int64_t j = 0; j < kLanes; ++j) t0 += a0[j], t1 += a1[j], t2 += a2[j], t3 += a3[j];
  s[0] = t0, s[1] = t1, s[2] = t2, s[3] = t3;
}

// x_k[c] += gw[k] f[c] over the four tap rows, c in [c0, c1).
template <typename T>
void tap_axpys(T* __restrict__ r, int64_t down, int64_t C, const T* __restrict__ f, const T gw[kTaps], int64_t c0,
               int64_t c1) {
  T* __restrict__ r0 = r;
  T* __restrict__ r1 = r + C;
  T* __restrict__ r2 = r + down;
  T* __restrict__ r3 = r + down + C;
  const T g0 = gw[0], g1 = gw[1], g2 = gw[2], g3 = gw[3];
  for (int64_t c = c0; c < c1; ++c) {
    const T fv = f[c];
    r0[c] += g0 * fv;
    r1[c] += g1 * fv;
    r2[c] += g2 * fv;
    r3[c] += g3 * fv;
  }
}

// Splits `count` items into about `parts` ranges of at least `minimum` items: the grain for at::parallel_for.
int64_t grain_for(int64_t count, int64_t parts, int64_t minimum) {
  return std::max<int64_t>(std::max<int64_t>(1, minimum), ceil_div(count, std::max<int64_t>(1, parts)));
}

// Batch entries handled together, so that each neuron's features are read from memory once per group: as many
// padded maps as fit in kGroupBytes, at most kMaxGroup, at least 1; 1 when all the features stay in cache anyway.
int64_t group_size(const PaddedMap& map, int64_t B, int64_t N, size_t element) {
  const int64_t bytes = static_cast<int64_t>(element);
  if (N * map.C * bytes <= kFeaturesInCache) return 1;
  const int64_t fit = kGroupBytes / std::max<int64_t>(1, map.rows() * map.C * bytes);
  return std::max<int64_t>(1, std::min({fit, kMaxGroup, B}));
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* grid, const scalar_t* ft, const scalar_t* bias, scalar_t* y,
                    int64_t B, int64_t C, int64_t H, int64_t W, int64_t N, bool shared, bool align_corners) {
  const PaddedMap map(C, H, W);
  const int64_t group = group_size(map, B, N, sizeof(scalar_t)), groups = ceil_div(B, group);
  const int64_t threads = at::get_num_threads();
  const int64_t ranges = groups >= threads ? 1 : ceil_div(threads, groups);  // neuron ranges per group
  const int64_t per_range = ceil_div(N, ranges), map_size = map.rows() * C;
  at::parallel_for(0, groups * ranges, 1, [&](int64_t begin, int64_t end) {
    const auto padded = map.buffers<scalar_t>(group);
    int64_t packed = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task / ranges, b0 = g * group, bn = std::min(group, B - b0);
      const int64_t n0 = (task % ranges) * per_range, n1 = std::min(N, n0 + per_range);
      if (n0 >= n1) continue;
      if (packed != g) {
        for (int64_t i = 0; i < bn; ++i) map.pack(x + (b0 + i) * C * H * W, padded.get() + i * map_size);
        packed = g;
      }
      for (int64_t k0 = n0; k0 < n1; k0 += kNeuronBlock) {  // a block's features stay in cache for the group
        for (int64_t i = 0; i < bn; ++i) {
          for (int64_t n = k0, b = b0 + i; n < std::min(n1, k0 + kNeuronBlock); ++n) {
            const auto t = taps_of<scalar_t>(grid + ((shared ? 0 : b * N) + n) * 2, map, align_corners);
            scalar_t s[kTaps];
            tap_dots<scalar_t, false>(padded.get() + i * map_size + t.row * C, map.Wp * C, ft + n * C, C, s);
            const scalar_t v = t.w[0] * s[0] + t.w[1] * s[1] + t.w[2] * s[2] + t.w[3] * s[3];
            y[b * N + n] = bias ? v + bias[n] : v;
          }
        }
      }
    }
  });
}

// Pass A: the grid gradient rows (B,N,2) and df transposed (N,C), one neuron range per task.
template <typename scalar_t>
void pass_neurons(const scalar_t* gy, const scalar_t* x, const scalar_t* grid, const scalar_t* ft,
                  scalar_t* dgrid_rows, scalar_t* dft, int64_t B, int64_t C, int64_t H, int64_t W, int64_t N,
                  bool shared, bool align_corners) {
  const PaddedMap map(C, H, W);
  const scalar_t sx = daenr::gaussian::source_scale<scalar_t>(W, align_corners);
  const scalar_t sy = daenr::gaussian::source_scale<scalar_t>(H, align_corners);
  const int64_t group = group_size(map, B, N, sizeof(scalar_t)), map_size = map.rows() * C;
  std::fill(dft, dft + N * C, scalar_t(0));
  at::parallel_for(0, N, grain_for(N, at::get_num_threads(), kMinNeuronsPerTask), [&](int64_t n0, int64_t n1) {
    const auto padded = map.buffers<scalar_t>(group);
    for (int64_t b0 = 0; b0 < B; b0 += group) {
      const int64_t bn = std::min(group, B - b0);
      for (int64_t i = 0; i < bn; ++i) map.pack(x + (b0 + i) * C * H * W, padded.get() + i * map_size);
      for (int64_t k0 = n0; k0 < n1; k0 += kNeuronBlock) {
        for (int64_t i = 0; i < bn; ++i) {  // b in order: df[n] sums over the batch in order
          for (int64_t n = k0, b = b0 + i; n < std::min(n1, k0 + kNeuronBlock); ++n) {
            const auto t = taps_of<scalar_t>(grid + ((shared ? 0 : b * N) + n) * 2, map, align_corners);
            const scalar_t g = gy[b * N + n];
            const scalar_t gw[kTaps] = {g * t.w[0], g * t.w[1], g * t.w[2], g * t.w[3]};
            scalar_t s[kTaps];
            tap_dots<scalar_t, true>(padded.get() + i * map_size + t.row * C, map.Wp * C, ft + n * C, C, s, gw,
                                     dft + n * C);
            scalar_t* out = dgrid_rows + (b * N + n) * 2;
            out[0] = g * sx * daenr::gaussian::value_slope_x(t.corner, s);
            out[1] = g * sy * daenr::gaussian::value_slope_y(t.corner, s);
          }
        }
      }
    }
  });
}

// Pass B: dx, one (group of batch entries, channel range) per task.
template <typename scalar_t>
void pass_scatter(const scalar_t* gy, const scalar_t* grid, const scalar_t* ft, scalar_t* dx, int64_t B, int64_t C,
                  int64_t H, int64_t W, int64_t N, bool shared, bool align_corners) {
  const PaddedMap map(C, H, W);
  const int64_t group = group_size(map, B, N, sizeof(scalar_t)), groups = ceil_div(B, group);
  const int64_t threads = at::get_num_threads();
  const int64_t ranges = std::max<int64_t>(1, groups >= threads ? 1 : std::min(C, ceil_div(threads, groups)));
  const int64_t per_range = ceil_div(C, ranges), map_size = map.rows() * C;
  at::parallel_for(0, groups * ranges, 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<scalar_t[]> padded(new scalar_t[group * map_size]);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b0 = (task / ranges) * group, bn = std::min(group, B - b0);
      const int64_t c0 = (task % ranges) * per_range, c1 = std::min(C, c0 + per_range);
      if (c0 >= c1) continue;
      std::fill(padded.get(), padded.get() + group * map_size, scalar_t(0));
      for (int64_t k0 = 0; k0 < N; k0 += kNeuronBlock) {  // neurons in order: each pixel sums in a fixed order
        for (int64_t i = 0; i < bn; ++i) {
          for (int64_t n = k0, b = b0 + i; n < std::min(N, k0 + kNeuronBlock); ++n) {
            const auto t = taps_of<scalar_t>(grid + ((shared ? 0 : b * N) + n) * 2, map, align_corners);
            const scalar_t g = gy[b * N + n];
            const scalar_t gw[kTaps] = {g * t.w[0], g * t.w[1], g * t.w[2], g * t.w[3]};
            tap_axpys(padded.get() + i * map_size + t.row * C, map.Wp * C, C, ft + n * C, gw, c0, c1);
          }
        }
      }
      for (int64_t i = 0; i < bn; ++i) {
        map.unpack(padded.get() + i * map_size, dx + (b0 + i) * C * H * W, c0, c1);
      }
    }
  });
}

// out[n * width + k] = sum_b rows[(b * N + n) * width + k], b in order.
template <typename scalar_t>
void sum_over_batch(const scalar_t* rows, scalar_t* out, int64_t B, int64_t N, int64_t width) {
  at::parallel_for(0, N * width, 1024, [&](int64_t e0, int64_t e1) {
    std::fill(out + e0, out + e1, scalar_t(0));
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t* r = rows + b * N * width;
      for (int64_t e = e0; e < e1; ++e) out[e] += r[e];
    }
  });
}

}  // namespace

at::Tensor gaussian_readout_forward(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
                                    const std::optional<at::Tensor>& bias, bool align_corners) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = features.size(1);
  auto y = at::empty({B, N}, x.options());
  if (y.numel() == 0) return y;
  const auto ft = features.t().contiguous();  // (N, C)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gaussian_readout_forward", [&] {
    forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), grid.data_ptr<scalar_t>(), ft.data_ptr<scalar_t>(),
                             bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), B, C,
                             H, W, N, grid.dim() == 2, align_corners);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gaussian_readout_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
    bool align_corners) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = features.size(1);
  const bool shared = grid.dim() == 2;
  auto dx = at::empty_like(x);
  auto dgrid = at::empty_like(grid);
  auto dft = at::empty({N, C}, x.options());
  auto dbias = at::empty({N}, x.options());
  auto dgrid_rows = shared ? at::empty({B, N, 2}, x.options()) : dgrid;
  if (B == 0 || N == 0) return {dx.zero_(), dgrid.zero_(), dft.zero_().t().contiguous(), dbias.zero_()};
  const auto ft = features.t().contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gaussian_readout_backward", [&] {
    const scalar_t* gy = grad.data_ptr<scalar_t>();
    const scalar_t* gp = grid.data_ptr<scalar_t>();
    pass_neurons<scalar_t>(gy, x.data_ptr<scalar_t>(), gp, ft.data_ptr<scalar_t>(), dgrid_rows.data_ptr<scalar_t>(),
                           dft.data_ptr<scalar_t>(), B, C, H, W, N, shared, align_corners);
    pass_scatter<scalar_t>(gy, gp, ft.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), B, C, H, W, N, shared,
                           align_corners);
    if (shared) sum_over_batch<scalar_t>(dgrid_rows.data_ptr<scalar_t>(), dgrid.data_ptr<scalar_t>(), B, N, 2);
    sum_over_batch<scalar_t>(gy, dbias.data_ptr<scalar_t>(), B, N, 1);
  });
  return {dx, dgrid, dft.t().contiguous(), dbias};
}

}  // namespace daenr::cpu
