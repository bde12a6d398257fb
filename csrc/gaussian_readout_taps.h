// Bilinear taps of one position (grid_sample semantics, zero padding), shared by the CPU and CUDA kernels of the
// Gaussian readout. Torch-free; compiles as host code and, under nvcc, as host + device code.
//
// A normalised position g (-1 and 1 are the map's ends) on an axis of `size` pixels has the source coordinate
//   align_corners:  s = (g + 1) / 2 * (size - 1)      ds/dg = (size - 1) / 2
//   otherwise:      s = ((g + 1) * size - 1) / 2      ds/dg = size / 2
// (the same expressions, in the same order, as grid_sample). The taps are (y0, x0), (y0, x0+1), (y0+1, x0),
// (y0+1, x0+1) with x0 = floor(ix), fx = ix - x0 (y alike) and weights (1-fx)(1-fy), fx(1-fy), (1-fx)fy, fx fy;
// taps outside the map read 0.
#pragma once
#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define DAENR_HD __host__ __device__ __forceinline__
#else
#define DAENR_HD inline
#endif

namespace daenr::gaussian {

constexpr int kTaps = 4;
// (dy, dx) of tap t from the top-left one: t = 2 * dy + dx.
DAENR_HD int tap_dy(int t) { return t >> 1; }
DAENR_HD int tap_dx(int t) { return t & 1; }

DAENR_HD float floor_of(float v) { return floorf(v); }
DAENR_HD double floor_of(double v) { return floor(v); }

template <typename acc_t>
DAENR_HD acc_t source_coordinate(acc_t g, int64_t size, bool align_corners) {
  return align_corners ? ((g + 1) / 2) * static_cast<acc_t>(size - 1)
                       : ((g + 1) * static_cast<acc_t>(size) - 1) / 2;
}

template <typename acc_t>
DAENR_HD acc_t source_scale(int64_t size, bool align_corners) {
  return static_cast<acc_t>(align_corners ? size - 1 : size) / 2;
}

// The top-left tap of a position and its fractions.
template <typename acc_t>
struct Corner {
  int32_t x0, y0;
  acc_t fx, fy;
};

// Locates the position (gx, gy) on an H x W map; false when none of its taps is inside (also for NaN), when it
// contributes nothing. Then x0 is in [-1, W-1] and y0 in [-1, H-1].
template <typename acc_t>
DAENR_HD bool locate(acc_t gx, acc_t gy, int64_t H, int64_t W, bool align_corners, Corner<acc_t>& c) {
  const acc_t ix = source_coordinate(gx, W, align_corners);
  const acc_t iy = source_coordinate(gy, H, align_corners);
  if (!(ix >= -1 && ix < static_cast<acc_t>(W) && iy >= -1 && iy < static_cast<acc_t>(H))) return false;
  const acc_t x0 = floor_of(ix), y0 = floor_of(iy);
  c.x0 = static_cast<int32_t>(x0);
  c.y0 = static_cast<int32_t>(y0);
  c.fx = ix - x0;
  c.fy = iy - y0;
  return true;
}

// Weight of tap t.
template <typename acc_t>
DAENR_HD acc_t tap_weight(const Corner<acc_t>& c, int t) {
  return (tap_dx(t) ? c.fx : 1 - c.fx) * (tap_dy(t) ? c.fy : 1 - c.fy);
}

// Whether tap t is inside the map, and its flat pixel index y * W + x when it is.
template <typename acc_t>
DAENR_HD bool tap_pixel(const Corner<acc_t>& c, int t, int64_t H, int64_t W, int32_t& pixel) {
  const int32_t x = c.x0 + tap_dx(t), y = c.y0 + tap_dy(t);
  const bool inside = x >= 0 && x < W && y >= 0 && y < H;
  pixel = inside ? y * static_cast<int32_t>(W) + x : 0;
  return inside;
}

// d(bilinear value)/d(ix) and /d(iy) from the tap values v[t] (0 outside the map) or from sums of them.
template <typename acc_t>
DAENR_HD acc_t value_slope_x(const Corner<acc_t>& c, const acc_t* v) {
  return (1 - c.fy) * (v[1] - v[0]) + c.fy * (v[3] - v[2]);
}
template <typename acc_t>
DAENR_HD acc_t value_slope_y(const Corner<acc_t>& c, const acc_t* v) {
  return (1 - c.fx) * (v[2] - v[0]) + c.fx * (v[3] - v[1]);
}

}  // namespace daenr::gaussian
