// CUDA kernels of the fused Gaussian readout.
//
// With x (B,C,H,W), grid (B,N,2) or (N,2) (L = B position lists, or L = 1 shared by the batch), f (C,N),
// gy = dL/dy (B,N) and the four bilinear taps t of each position (pixel p_t, weight w_t; gaussian_readout_taps.h):
//
//   forward      one thread per (b, n): y = sum_c f[c,n] sum_t w_t x[b,c,p_t] + bias[n]
//   grid grad    one thread per (b, n): S_t = sum_c f[c,n] x[b,c,p_t] -> float32 rows (B,N,2); a second kernel
//                converts them (per-batch grid) or sums them over b in order (shared grid)
//   features     one thread per (n, 8 channels), b in order: df[c,n] = sum_b gy[b,n] sum_t w_t x[b,c,p_t]
//   bias         one thread per n, b in order
//   x            a gather, not a scatter. Every position gets the cell of its top-left tap, key = list *
//                ((H+1)(W+1)+1) + (y0+1)(W+1) + (x0+1) (the last cell of a list holds the positions off the map),
//                and its fractions; cub's radix sort of (key, n) is stable, so each cell lists its neurons in
//                index order; a binary search gives where each key starts. Then one warp per (b, pixel), its lanes
//                over channels, adds w_t gy[b,n] f[c,n] for the neurons of the four cells whose taps reach the
//                pixel, cell by cell in that order, and writes dx once.
//
// Nothing uses atomics and every sum has a fixed order: all gradients are bit-identical from run to run. Threads
// along n read f, gy, y and df coalesced; the taps are gathers from one map plane, shared by the threads of a block
// (same b). Scratch (the caller's workspace): grid-gradient rows B*N*2, keys and neuron indices 4*L*N, fractions
// 2*L*N, key starts L*((H+1)(W+1)+1)+1, f transposed N*C (float32), cub's sort storage; never (B,C,N).
#include "cuda/gaussian_readout_cuda.cuh"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gaussian_readout_taps.h"

namespace daenr::cuda {
namespace {

using daenr::gaussian::Corner;
using daenr::gaussian::kTaps;

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kChannelsPerLane = 4;            // dx: a warp covers 128 channels per block of the grid's z axis
constexpr int kFeatureChannels = 8;            // df: channels per thread
constexpr int64_t kMaxGridY = 65535;
constexpr size_t kAlign = 256;

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Extents derived from GaussianDims.
struct Layout {
  int64_t lists, cells, keys, HW;  // cells per list including the off-map one; keys = lists * cells
  explicit Layout(const GaussianDims& d)
      : lists(d.shared ? 1 : d.B), cells((d.H + 1) * (d.W + 1) + 1), keys(lists * cells), HW(d.H * d.W) {}
};

// The tap table of one position (weights 0 for taps off the map).
struct Taps {
  int32_t pixel[kTaps];
  float w[kTaps];
  bool inside[kTaps];
  Corner<float> corner;
};

template <typename T>
__device__ bool taps_of(const T* grid, int64_t list, int64_t n, const GaussianDims& d, Taps& t) {
  const T* g = grid + (list * d.N + n) * 2;
  if (!daenr::gaussian::locate<float>(to_float(g[0]), to_float(g[1]), d.H, d.W, d.align_corners, t.corner)) {
    return false;
  }
#pragma unroll
  for (int k = 0; k < kTaps; ++k) {
    t.inside[k] = daenr::gaussian::tap_pixel(t.corner, k, d.H, d.W, t.pixel[k]);
    t.w[k] = t.inside[k] ? daenr::gaussian::tap_weight(t.corner, k) : 0.f;
  }
  return true;
}

template <typename T>
__device__ float tap_value(const T* plane, const Taps& t, int k) {
  return t.inside[k] ? to_float(plane[t.pixel[k]]) : 0.f;
}

// ------------------------------------------------------------------------------------------------ kernels

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, const T* __restrict__ grid, const T* __restrict__ f,
                   const T* __restrict__ bias, T* __restrict__ y, GaussianDims d) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const int64_t HW = d.H * d.W;
  for (int64_t b = blockIdx.y; b < d.B; b += gridDim.y) {
    float acc = 0.f;
    Taps t;
    if (taps_of(grid, d.shared ? 0 : b, n, d, t)) {
      const T* plane = x + b * d.C * HW;
      for (int64_t c = 0; c < d.C; ++c, plane += HW) {
        float v = 0.f;
#pragma unroll
        for (int k = 0; k < kTaps; ++k) v += t.w[k] * tap_value(plane, t, k);
        acc += to_float(f[c * d.N + n]) * v;
      }
    }
    if (bias != nullptr) acc += to_float(bias[n]);
    y[b * d.N + n] = from_float<T>(acc);
  }
}

// rows[b][n] = (dL/dgx, dL/dgy) of position (b, n) in float32.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grid_rows_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ grid,
                     const T* __restrict__ f, float* __restrict__ rows, GaussianDims d, float sx, float sy) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= d.N) return;
  const int64_t HW = d.H * d.W;
  for (int64_t b = blockIdx.y; b < d.B; b += gridDim.y) {
    float s[kTaps] = {0.f, 0.f, 0.f, 0.f};
    Taps t;
    const bool on_map = taps_of(grid, d.shared ? 0 : b, n, d, t);
    if (on_map) {
      const T* plane = x + b * d.C * HW;
      for (int64_t c = 0; c < d.C; ++c, plane += HW) {
        const float fc = to_float(f[c * d.N + n]);
#pragma unroll
        for (int k = 0; k < kTaps; ++k) s[k] += fc * tap_value(plane, t, k);
      }
    }
    const float g = to_float(gy[b * d.N + n]);
    float* out = rows + (b * d.N + n) * 2;
    out[0] = on_map ? g * sx * daenr::gaussian::value_slope_x(t.corner, s) : 0.f;
    out[1] = on_map ? g * sy * daenr::gaussian::value_slope_y(t.corner, s) : 0.f;
  }
}

// dgrid = rows (per-batch grid) or sum_b rows[b] in order (shared grid), in T.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grid_finish_kernel(const float* __restrict__ rows, T* __restrict__ dgrid, int64_t B, int64_t N, bool shared) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = (shared ? 1 : B) * N * 2;
  if (e >= total) return;
  if (!shared) {
    dgrid[e] = from_float<T>(rows[e]);
    return;
  }
  float s = 0.f;
  for (int64_t b = 0; b < B; ++b) s += rows[b * N * 2 + e];
  dgrid[e] = from_float<T>(s);
}

// df[c, n] for kFeatureChannels channels of one neuron, b in order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    features_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ grid,
                    T* __restrict__ df, GaussianDims d) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kFeatureChannels;
  if (n >= d.N) return;
  const int64_t HW = d.H * d.W;
  float acc[kFeatureChannels] = {};
  Taps t;
  bool on_map = d.shared && taps_of(grid, 0, n, d, t);
  for (int64_t b = 0; b < d.B; ++b) {
    if (!d.shared) on_map = taps_of(grid, b, n, d, t);
    if (!on_map) continue;
    const float g = to_float(gy[b * d.N + n]);
    const T* plane = x + (b * d.C + c0) * HW;
#pragma unroll
    for (int j = 0; j < kFeatureChannels; ++j, plane += HW) {
      if (c0 + j >= d.C) break;
      float v = 0.f;
#pragma unroll
      for (int k = 0; k < kTaps; ++k) v += t.w[k] * tap_value(plane, t, k);
      acc[j] += g * v;
    }
  }
#pragma unroll
  for (int j = 0; j < kFeatureChannels; ++j) {
    if (c0 + j < d.C) df[(c0 + j) * d.N + n] = from_float<T>(acc[j]);
  }
}

// dbias[n] = sum_b gy[b, n] in order.
template <typename T>
__global__ void __launch_bounds__(kThreads) bias_kernel(const T* __restrict__ gy, T* __restrict__ db, int64_t B,
                                                        int64_t N) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float s = 0.f;
  for (int64_t b = 0; b < B; ++b) s += to_float(gy[b * N + n]);
  db[n] = from_float<T>(s);
}

// ft[n, c] = f[c, n] in float32.
template <typename T>
__global__ void __launch_bounds__(kThreads) transpose_kernel(const T* __restrict__ f, float* __restrict__ ft,
                                                             int64_t C, int64_t N) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= C * N) return;
  const int64_t c = e / N, n = e - c * N;  // reads coalesced along n
  ft[n * C + c] = to_float(f[e]);
}

// The sort key, neuron index and fractions of position (list, n).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cells_kernel(const T* __restrict__ grid, uint32_t* __restrict__ keys, int32_t* __restrict__ neurons,
                 float* __restrict__ fx, float* __restrict__ fy, GaussianDims d, Layout l) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= l.lists * d.N) return;
  const int64_t list = i / d.N, n = i - list * d.N;
  const T* g = grid + i * 2;
  Corner<float> c{};
  const bool on_map = daenr::gaussian::locate<float>(to_float(g[0]), to_float(g[1]), d.H, d.W, d.align_corners, c);
  const int64_t cell = on_map ? (c.y0 + 1) * (d.W + 1) + (c.x0 + 1) : l.cells - 1;
  keys[i] = static_cast<uint32_t>(list * l.cells + cell);
  neurons[i] = static_cast<int32_t>(n);
  fx[i] = on_map ? c.fx : 0.f;
  fy[i] = on_map ? c.fy : 0.f;
}

// starts[k] = the first index of the sorted keys with a key >= k, for k in [0, keys].
__global__ void __launch_bounds__(kThreads)
    starts_kernel(const uint32_t* __restrict__ sorted, int64_t count, int32_t* __restrict__ starts, int64_t keys) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k > keys) return;
  int64_t lo = 0, hi = count;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (static_cast<int64_t>(sorted[mid]) < k) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  starts[k] = static_cast<int32_t>(lo);
}

// dx[b, c, p] for one (b, pixel) per warp, 32 * kChannelsPerLane channels per grid z.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_x_kernel(const T* __restrict__ gy, const float* __restrict__ ft, const int32_t* __restrict__ neurons,
                  const int32_t* __restrict__ starts, const float* __restrict__ fx, const float* __restrict__ fy,
                  T* __restrict__ dx, GaussianDims d, Layout l) {
  const int lane = threadIdx.x % kWarp;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * (kThreads / kWarp) + threadIdx.x / kWarp;
  if (p >= l.HW) return;
  const int64_t c0 = static_cast<int64_t>(blockIdx.z) * kWarp * kChannelsPerLane + lane;
  const int64_t py = p / d.W, px = p - py * d.W;
  for (int64_t b = blockIdx.y; b < d.B; b += gridDim.y) {
    const int64_t list = d.shared ? 0 : b;
    float acc[kChannelsPerLane] = {};
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      const int ty = daenr::gaussian::tap_dy(k), tx = daenr::gaussian::tap_dx(k);
      const int64_t key = list * l.cells + (py - ty + 1) * (d.W + 1) + (px - tx + 1);
      const int32_t begin = starts[key], end = starts[key + 1];
      for (int32_t i = begin; i < end; ++i) {  // warp-uniform: the same neuron for every lane
        const int64_t n = neurons[i];
        const float wx = tx ? fx[list * d.N + n] : 1.f - fx[list * d.N + n];
        const float wy = ty ? fy[list * d.N + n] : 1.f - fy[list * d.N + n];
        const float gw = wx * wy * to_float(gy[b * d.N + n]);
        const float* row = ft + n * d.C;
#pragma unroll
        for (int j = 0; j < kChannelsPerLane; ++j) {
          const int64_t c = c0 + j * kWarp;
          if (c < d.C) acc[j] += gw * row[c];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kChannelsPerLane; ++j) {
      const int64_t c = c0 + j * kWarp;
      if (c < d.C) dx[(b * d.C + c) * l.HW + p] = from_float<T>(acc[j]);
    }
  }
}

// ------------------------------------------------------------------------------------------------ launch planning

unsigned blocks_for(int64_t count) { return static_cast<unsigned>(std::max<int64_t>(1, ceil_div(count, kThreads))); }
unsigned grid_y(int64_t B) { return static_cast<unsigned>(std::max<int64_t>(1, std::min(B, kMaxGridY))); }

void check_extents(const GaussianDims& d, const Layout& l) {
  const int64_t limit = std::numeric_limits<int32_t>::max();
  if (l.keys + 1 > limit || l.lists * d.N > limit || l.HW > limit) {
    throw std::runtime_error("gaussian_readout (cuda): " + std::to_string(l.lists) + " position lists of " +
                             std::to_string(d.N) + " neurons on a " + std::to_string(d.H) + "x" +
                             std::to_string(d.W) + " map exceed the kernels' 32-bit cell and neuron indices");
  }
  if (ceil_div(d.N, kThreads) > std::numeric_limits<int32_t>::max() ||
      ceil_div(d.C, kFeatureChannels) > kMaxGridY || ceil_div(d.C, kWarp * kChannelsPerLane) > kMaxGridY) {
    throw std::runtime_error("gaussian_readout (cuda): N or C exceeds the launch grid");
  }
}

int sort_bits(int64_t keys) {
  int bits = 1;
  while ((int64_t{1} << bits) < keys) ++bits;
  return bits;
}

// The pieces of the backward workspace, each kAlign-aligned; `base` null measures the total.
struct Workspace {
  float* rows;
  uint32_t *keys_in, *keys_out;
  int32_t *neurons_in, *neurons_out, *starts;
  float *fx, *fy, *ft;
  void* sort_storage;
  size_t sort_bytes, total;

  Workspace(const GaussianDims& d, const Layout& l, void* base) {
    const int64_t items = l.lists * d.N;
    sort_bytes = 0;
    cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr),
                                    static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                    static_cast<int32_t*>(nullptr), std::max<int64_t>(items, 1), 0,
                                    sort_bits(l.keys));
    char* p = static_cast<char*>(base);
    size_t offset = 0;
    auto take = [&](size_t bytes) {
      void* at = p == nullptr ? nullptr : p + offset;
      offset += (bytes + kAlign - 1) / kAlign * kAlign;
      return at;
    };
    rows = static_cast<float*>(take(sizeof(float) * d.B * d.N * 2));
    keys_in = static_cast<uint32_t*>(take(sizeof(uint32_t) * items));
    keys_out = static_cast<uint32_t*>(take(sizeof(uint32_t) * items));
    neurons_in = static_cast<int32_t*>(take(sizeof(int32_t) * items));
    neurons_out = static_cast<int32_t*>(take(sizeof(int32_t) * items));
    fx = static_cast<float*>(take(sizeof(float) * items));
    fy = static_cast<float*>(take(sizeof(float) * items));
    starts = static_cast<int32_t*>(take(sizeof(int32_t) * (l.keys + 1)));
    ft = static_cast<float*>(take(sizeof(float) * d.N * d.C));
    sort_storage = take(sort_bytes);
    total = offset;
  }
};

}  // namespace

void gaussian_readout_forward(DType dt, const void* x, const void* grid, const void* f, const void* bias, void* y,
                              GaussianDims d, cudaStream_t stream) {
  if (d.B == 0 || d.N == 0) return;
  check_extents(d, Layout(d));
  dispatch_dtype(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    forward_kernel<T><<<dim3(blocks_for(d.N), grid_y(d.B)), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(grid), static_cast<const T*>(f),
        static_cast<const T*>(bias), static_cast<T*>(y), d);
    check_launch("gaussian_readout forward");
  });
}

size_t gaussian_readout_backward_workspace(GaussianDims d) {
  return Workspace(d, Layout(d), nullptr).total;
}

void gaussian_readout_backward(DType dt, const void* grad, const void* x, const void* grid, const void* f, void* dx,
                               void* dgrid, void* df, void* dbias, GaussianDims d, void* workspace,
                               cudaStream_t stream) {
  const Layout l(d);
  const size_t element = dt == DType::kFloat32 ? 4 : 2;
  if (d.B == 0 || d.N == 0) {  // otherwise every element of every gradient is written once below
    cudaMemsetAsync(dx, 0, element * d.B * d.C * l.HW, stream);
    cudaMemsetAsync(dgrid, 0, element * (d.shared ? 1 : d.B) * d.N * 2, stream);
    cudaMemsetAsync(df, 0, element * d.C * d.N, stream);
    cudaMemsetAsync(dbias, 0, element * d.N, stream);
    check_launch("gaussian_readout backward (empty)");
    return;
  }
  check_extents(d, l);
  Workspace ws(d, l, workspace);
  const float sx = daenr::gaussian::source_scale<float>(d.W, d.align_corners);
  const float sy = daenr::gaussian::source_scale<float>(d.H, d.align_corners);
  dispatch_dtype(dt, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* gy = static_cast<const T*>(grad);
    const T* xp = static_cast<const T*>(x);
    const T* gp = static_cast<const T*>(grid);
    const T* fp = static_cast<const T*>(f);
    const dim3 per_neuron(blocks_for(d.N), grid_y(d.B));

    grid_rows_kernel<T><<<per_neuron, kThreads, 0, stream>>>(gy, xp, gp, fp, ws.rows, d, sx, sy);
    check_launch("gaussian_readout grid gradient");
    grid_finish_kernel<T><<<blocks_for((d.shared ? 1 : d.B) * d.N * 2), kThreads, 0, stream>>>(
        ws.rows, static_cast<T*>(dgrid), d.B, d.N, d.shared);
    check_launch("gaussian_readout grid gradient (finish)");
    if (d.C > 0) {
      features_kernel<T><<<dim3(blocks_for(d.N), static_cast<unsigned>(ceil_div(d.C, kFeatureChannels))),
                           kThreads, 0, stream>>>(gy, xp, gp, static_cast<T*>(df), d);
      check_launch("gaussian_readout features gradient");
    }
    bias_kernel<T><<<blocks_for(d.N), kThreads, 0, stream>>>(gy, static_cast<T*>(dbias), d.B, d.N);
    check_launch("gaussian_readout bias gradient");
    if (d.C == 0) return;

    const int64_t items = l.lists * d.N;
    transpose_kernel<T><<<blocks_for(d.C * d.N), kThreads, 0, stream>>>(fp, ws.ft, d.C, d.N);
    cells_kernel<T><<<blocks_for(items), kThreads, 0, stream>>>(gp, ws.keys_in, ws.neurons_in, ws.fx, ws.fy, d, l);
    check_launch("gaussian_readout cells");
    size_t sort_bytes = ws.sort_bytes;
    const cudaError_t sorted = cub::DeviceRadixSort::SortPairs(
        ws.sort_storage, sort_bytes, ws.keys_in, ws.keys_out, ws.neurons_in, ws.neurons_out, items, 0,
        sort_bits(l.keys), stream);
    if (sorted != cudaSuccess) {
      throw std::runtime_error(std::string("gaussian_readout (cuda): sort by cell: ") + cudaGetErrorString(sorted));
    }
    starts_kernel<<<blocks_for(l.keys + 1), kThreads, 0, stream>>>(ws.keys_out, items, ws.starts, l.keys);
    check_launch("gaussian_readout cell starts");
    const dim3 pixels(static_cast<unsigned>(ceil_div(l.HW, kThreads / kWarp)), grid_y(d.B),
                      static_cast<unsigned>(ceil_div(d.C, kWarp * kChannelsPerLane)));
    grad_x_kernel<T><<<pixels, kThreads, 0, stream>>>(gy, ws.ft, ws.neurons_out, ws.starts, ws.fx, ws.fy,
                                                      static_cast<T*>(dx), d, l);
    check_launch("gaussian_readout x gradient");
  });
}

}  // namespace daenr::cuda
