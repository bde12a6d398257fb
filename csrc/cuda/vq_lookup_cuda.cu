// VQ nearest-codebook lookup on CUDA without the M x K distance matrix, exact in float32 (the method and the full
// precision argument are in daenr_fast/ops/vq_lookup.py).
//
// 1. The frame, in three kernels over blocks of kFrameCodes codes: frame_sums_kernel flags the codes with a
//    non-finite component (en = NaN) and adds the finite ones into per-column double sums (one atomic per column
//    and block); frame_spread_kernel takes max |fl(e - c)| over the finite codes, c = fl(sum / count); and
//    frame_norms_kernel sets s = a power of two bringing that into [1/2, 1), the scaled centre cs = c s and
//    en_k = ||E_k||^2 with E = fl(e s - cs) = fl(e - c) s (double sums), and en_max. Scaling before the
//    subtraction is exact, so float flush-to-zero (--use_fast_math) only ever drops values below 2^-126 of the
//    scaled frame, which the window absorbs.
// 2. rows_kernel (one warp per row): the window W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2 of
//    Z = fl(z s - cs), ||Z||^2 in double (+inf when it overflows float: then the whole row is rescored).
// 3. vq_lookup_kernel: a block owns kBM rows and walks the codebook in tiles of kBN codes; Z and E are formed while
//    kBD-wide slices are staged in shared memory (one FMA each, the same expression as in step 1), and the scores
//    x = en - 2 Z.E of a (kBM x kBN) tile are accumulated in float registers (4 x 4 per thread, IEEE FMAs). After
//    each tile the 16 threads of a row merge their minimum score (NaN ignored) into the row's running minimum;
//    every score !(x > min + 2W) of the tile -- NaN included -- is rescored exactly, sum_d (z_d - e_kd)^2 in
//    double from the original inputs, in a fixed order. Each thread keeps the lowest exact distance over its
//    codes (visited in increasing order, strict improvement, NaN never wins); the 16 threads of a row then merge
//    by (distance, index), so ties go to the lowest index. A row without a non-NaN distance gets index 0 and
//    distance NaN.
// Every score is within W/2 of the true scaled distance (centring, FMA accumulation in any order, en and the
// subtraction included; flushed subnormals are absorbed because en_max >= 1/4 unless all codes coincide, when
// every code is a candidate), so the true argmin is always rescored; the index is exact up to the double rounding
// of the distances (~D 2^-53 relative) and the distance is rounded once to float32 (+inf beyond its range).
// Workspace: 3 D + K + M + 6 floats.
#include "cuda/vq_lookup_cuda.cuh"

#include <type_traits>

namespace daenr::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBD = 16;
static_assert(kBM == kBN, "the staging loop loads one row and one code per index");
constexpr int kTX = 16, kTY = 16;  // blockDim; each thread: rows ty + 16 i, codes tx + 16 j, i, j < 4
constexpr int kRowThreads = 256;   // 8 warps, one row each
constexpr int kFrameThreads = 256;   // 8 warps
constexpr int kFrameCodes = 64;      // codes per frame block
constexpr int kScaleExponent = 126;  // s stays a normal float

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ float infinity() { return __int_as_float(0x7f800000); }

// The frame's part of the workspace (floats): sums (D doubles), count (1 double), the spread and en_max as float
// bits for atomicMax (both >= 0, so their bits order like the values), the scaled centre (D), en (K).
struct Frame {
  double* sums;
  double* count;
  unsigned* spread;
  float* stats;  // (s, en_max); stats[1] is updated through its bits
  float* centre;
  float* sqnorm;
};

__device__ __forceinline__ float frame_centre(const Frame& f, int64_t d) {
  return float(f.sums[d] / fmax(*f.count, 1.0));  // the one expression for c, wherever it is needed
}

// Max of v over the block (v >= 0), folded into *target with one atomicMax on the float bits.
__device__ void block_max_into(float v, unsigned* target) {
  __shared__ float part[kFrameThreads / 32];
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kFrameThreads / 32; ++w) v = fmaxf(v, part[w]);
    atomicMax(target, __float_as_uint(v));
  }
}

template <typename T>
__global__ void __launch_bounds__(kFrameThreads) frame_sums_kernel(const T* __restrict__ e, int64_t K, int64_t D,
                                                                   Frame f) {
  __shared__ bool ok_s[kFrameCodes];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int64_t k0 = blockIdx.x * int64_t(kFrameCodes);
  for (int c = warp; c < kFrameCodes; c += kFrameThreads / 32) {  // c is uniform within a warp
    const int64_t k = k0 + c;
    bool ok = false;
    if (k < K) {
      ok = true;
      for (int64_t d = lane; d < D; d += 32) ok = ok && isfinite(to_float(e[k * D + d]));
      ok = __all_sync(0xffffffffu, ok);
      if (lane == 0) f.sqnorm[k] = ok ? 0.f : quiet_nan();
    }
    if (lane == 0) ok_s[c] = ok;
  }
  __syncthreads();
  if (t == 0) {
    int n = 0;
    for (int c = 0; c < kFrameCodes; ++c) n += ok_s[c];
    atomicAdd(f.count, double(n));
  }
  for (int64_t d = t; d < D; d += kFrameThreads) {
    double sum = 0;
#pragma unroll 8
    for (int c = 0; c < kFrameCodes; ++c) {
      if (ok_s[c]) sum += double(to_float(e[(k0 + c) * D + d]));
    }
    atomicAdd(f.sums + d, sum);
  }
}

template <typename T>
__global__ void __launch_bounds__(kFrameThreads) frame_spread_kernel(const T* __restrict__ e, int64_t K, int64_t D,
                                                                     Frame f) {
  const int64_t k0 = blockIdx.x * int64_t(kFrameCodes);
  float spread = 0.f;
  for (int64_t d = threadIdx.x; d < D; d += kFrameThreads) {
    const float c = frame_centre(f, d);
#pragma unroll 8
    for (int j = 0; j < kFrameCodes; ++j) {
      const int64_t k = k0 + j;
      if (k < K && !isnan(f.sqnorm[k])) spread = fmaxf(spread, fabsf(to_float(e[k * D + d]) - c));
    }
  }
  block_max_into(spread, f.spread);
}

template <typename T>
__global__ void __launch_bounds__(kFrameThreads) frame_norms_kernel(const T* __restrict__ e, int64_t K, int64_t D,
                                                                    Frame f) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t k0 = blockIdx.x * int64_t(kFrameCodes);
  int exponent = 0;
  frexpf(__uint_as_float(*f.spread), &exponent);
  const float scale = ldexpf(1.f, -min(max(exponent, -kScaleExponent), kScaleExponent));
  if (blockIdx.x == 0) {
    for (int64_t d = threadIdx.x; d < D; d += kFrameThreads) f.centre[d] = frame_centre(f, d) * scale;  // exact
    if (threadIdx.x == 0) f.stats[0] = scale;
  }
  float en_max = 0.f;
  for (int c = warp; c < kFrameCodes; c += kFrameThreads / 32) {  // c is uniform within a warp
    const int64_t k = k0 + c;
    if (k >= K) break;
    const bool ok = !isnan(f.sqnorm[k]);
    __syncwarp();
    double sq = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const double v = ok ? fmaf(to_float(e[k * D + d]), scale, -(frame_centre(f, d) * scale)) : 0.0;
      sq += v * v;
    }
    for (int off = 16; off > 0; off /= 2) sq += __shfl_xor_sync(0xffffffffu, sq, off);
    if (lane == 0 && ok) f.sqnorm[k] = float(sq);
    en_max = fmaxf(en_max, float(sq));
  }
  block_max_into(en_max, reinterpret_cast<unsigned*>(f.stats + 1));
}

template <typename T>
__global__ void rows_kernel(const T* __restrict__ z, int64_t M, int64_t D, const float* __restrict__ centre,
                            const float* __restrict__ stats, float window_codes, float window_rows,
                            float* __restrict__ window) {
  const int64_t row = blockIdx.x * int64_t(kRowThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= M) return;  // whole warps leave together: row is uniform within a warp
  const float scale = stats[0];
  const double en_max = stats[1];
  double zn2 = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const double v = fmaf(to_float(z[row * D + d]), scale, -centre[d]);
    zn2 += v * v;
  }
  for (int off = 16; off > 0; off /= 2) zn2 += __shfl_xor_sync(0xffffffffu, zn2, off);
  if (lane == 0) {
    window[row] = float(double(window_codes) * (en_max + 2.0 * sqrt(zn2) * sqrt(en_max)) + double(window_rows) * zn2);
  }
}

// sum_d (z_d - e_d)^2 in double, in order.
template <typename T>
__device__ double exact_distance(const T* __restrict__ zr, const T* __restrict__ er, int64_t D) {
  double acc = 0;
  for (int64_t d = 0; d < D; ++d) {
    const double diff = double(to_float(zr[d])) - double(to_float(er[d]));
    acc = fma(diff, diff, acc);
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kTX * kTY, 3) vq_lookup_kernel(const T* __restrict__ z, const T* __restrict__ e,
                                                                 const float* __restrict__ centre,
                                                                 const float* __restrict__ sqnorm,
                                                                 const float* __restrict__ stats,
                                                                 const float* __restrict__ window, int64_t M,
                                                                 int64_t K, int64_t D,
                                                                 int64_t* __restrict__ indices,
                                                                 float* __restrict__ dist) {
  __shared__ float zs[kBD][kBM + 1];
  __shared__ float es[kBD][kBN + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTX + tx;
  const int64_t m0 = blockIdx.x * int64_t(kBM);
  const float scale = stats[0];

  float xmin[4], win[4];
  double best[4];
  int64_t arg[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + kTY * i;
    xmin[i] = infinity();
    win[i] = m < M ? window[m] : 0.f;
    best[i] = double(infinity());
    arg[i] = -1;
  }

  for (int64_t n0 = 0; n0 < K; n0 += kBN) {
    float acc[4][4] = {};
    for (int64_t d0 = 0; d0 < D; d0 += kBD) {
      // Stage Z[m0 : m0+kBM, d0 : d0+kBD] and E[n0 : n0+kBN, d0 : d0+kBD] transposed, zero outside the bounds.
#pragma unroll
      for (int l = 0; l < (kBM * kBD) / (kTX * kTY); ++l) {
        const int flat = tid + l * kTX * kTY;
        const int r = flat / kBD, c = flat % kBD;
        const int64_t gm = m0 + r, gn = n0 + r, gd = d0 + c;
        const float cs = gd < D ? centre[gd] : 0.f;
        zs[c][r] = (gm < M && gd < D) ? fmaf(to_float(z[gm * D + gd]), scale, -cs) : 0.f;
        es[c][r] = (gn < K && gd < D) ? fmaf(to_float(e[gn * D + gd]), scale, -cs) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int d = 0; d < kBD; ++d) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = zs[d][ty + kTY * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = es[d][tx + kTX * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // acc becomes the scores; padding codes score +inf
      const int64_t n = n0 + tx + kTX * j;
      const float en = n < K ? sqnorm[n] : infinity();
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i][j] = en - 2.f * acc[i][j];
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = fminf(fminf(acc[i][0], acc[i][1]), fminf(acc[i][2], acc[i][3]));  // fminf skips NaN
      for (int off = kTX / 2; off > 0; off /= 2) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, off));
      xmin[i] = fminf(xmin[i], v);
      const float thr = xmin[i] + 2.f * win[i];
      const int64_t m = m0 + ty + kTY * i;
      if (m >= M) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // codes in increasing order within the thread
        const int64_t n = n0 + tx + kTX * j;
        if (n >= K || acc[i][j] > thr) continue;
        const double d = exact_distance(z + m * D, e + n * D, D);
        if (d < best[i] || (arg[i] < 0 && d == d)) {
          best[i] = d;
          arg[i] = n;
        }
      }
    }
  }

  // Merge the 16 threads of a row (lanes tx = 0..15 of one half-warp) by (distance, index); -1 means none yet.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    double v = best[i];
    int64_t a = arg[i];
    for (int off = kTX / 2; off > 0; off /= 2) {
      const double ov = __shfl_xor_sync(0xffffffffu, v, off);
      const int64_t oa = __shfl_xor_sync(0xffffffffu, a, off);
      if (oa >= 0 && (a < 0 || ov < v || (ov == v && oa < a))) {
        v = ov;
        a = oa;
      }
    }
    const int64_t m = m0 + ty + kTY * i;
    if (tx == 0 && m < M) {
      indices[m] = a < 0 ? 0 : a;
      dist[m] = a < 0 ? quiet_nan() : float(v);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t vq_lookup_workspace(int64_t M, int64_t K, int64_t D) { return 3 * D + K + M + 6; }

void vq_lookup_forward(DType dt, const void* z, const void* codebook, int64_t M, int64_t K, int64_t D,
                       float window_codes, float window_rows, float* workspace, int64_t* indices, float* dist,
                       cudaStream_t stream) {
  if (M == 0) return;
  if (D == 0) {  // every distance is 0: index 0
    cudaMemsetAsync(indices, 0, sizeof(int64_t) * M, stream);
    cudaMemsetAsync(dist, 0, sizeof(float) * M, stream);
    check_launch("vq_lookup (D = 0)");
    return;
  }
  // Layout: sums (2D floats, 8-byte aligned at the start), count (2), spread (1), unused (1), stats (2): zeroed;
  // then the scaled centre (D), en (K), the row windows (M).
  Frame f;
  f.sums = reinterpret_cast<double*>(workspace);
  f.count = f.sums + D;
  f.spread = reinterpret_cast<unsigned*>(workspace + 2 * D + 2);
  f.stats = workspace + 2 * D + 4;
  f.centre = f.stats + 2;
  f.sqnorm = f.centre + D;
  float* window = f.sqnorm + K;
  cudaMemsetAsync(workspace, 0, sizeof(float) * (2 * D + 6), stream);
  const unsigned frame_blocks = static_cast<unsigned>(ceil_div(K, kFrameCodes));
  dispatch_dtype(dt, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* zp = static_cast<const T*>(z);
    const T* ep = static_cast<const T*>(codebook);
    frame_sums_kernel<T><<<frame_blocks, kFrameThreads, 0, stream>>>(ep, K, D, f);
    check_launch("frame_sums_kernel");
    frame_spread_kernel<T><<<frame_blocks, kFrameThreads, 0, stream>>>(ep, K, D, f);
    check_launch("frame_spread_kernel");
    frame_norms_kernel<T><<<frame_blocks, kFrameThreads, 0, stream>>>(ep, K, D, f);
    check_launch("frame_norms_kernel");
    const int rows_per_block = kRowThreads / 32;
    rows_kernel<T><<<static_cast<unsigned>(ceil_div(M, rows_per_block)), kRowThreads, 0, stream>>>(
        zp, M, D, f.centre, f.stats, window_codes, window_rows, window);
    check_launch("rows_kernel");
    vq_lookup_kernel<T><<<static_cast<unsigned>(ceil_div(M, kBM)), dim3(kTX, kTY), 0, stream>>>(
        zp, ep, f.centre, f.sqnorm, f.stats, window, M, K, D, indices, dist);
    check_launch("vq_lookup_kernel");
  });
}

}  // namespace daenr::cuda
