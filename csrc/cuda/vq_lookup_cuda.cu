// VQ nearest-codebook lookup on CUDA without the M x K distance matrix, exact in float32 (the method and the full
// precision argument are in daenr_fast/ops/vq_lookup.py).
//
// 1. frame_kernel (one block): c = mean of the finite codes (double sums, rounded to float), s = a power of two
//    bringing max |e - c| into [1/2, 1); the scaled centre cs = c s, en_k = ||E_k||^2 (NaN for a code with a
//    non-finite component) and stats = (s, en_max), where E = fl(e s - cs) = fl(e - c) s. Scaling before the
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
// Workspace: D + K + 2 + M floats.
#include "cuda/vq_lookup_cuda.cuh"

#include <type_traits>

namespace daenr::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBD = 16;
static_assert(kBM == kBN, "the staging loop loads one row and one code per index");
constexpr int kTX = 16, kTY = 16;  // blockDim; each thread: rows ty + 16 i, codes tx + 16 j, i, j < 4
constexpr int kRowThreads = 256;   // 8 warps, one row each
constexpr int kFrameThreads = 1024;
constexpr int kFrameWarps = kFrameThreads / 32;
constexpr int kScaleExponent = 126;  // s stays a normal float

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ float infinity() { return __int_as_float(0x7f800000); }

// Sum / maximum of v over the frame block, returned to every thread; part: kFrameThreads doubles of shared memory.
template <bool kMax>
__device__ double block_reduce(double v, double* part) {
  part[threadIdx.x] = v;
  __syncthreads();
  for (int half = kFrameThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const double o = part[threadIdx.x + half];
      part[threadIdx.x] = kMax ? fmax(part[threadIdx.x], o) : part[threadIdx.x] + o;
    }
    __syncthreads();
  }
  const double r = part[0];
  __syncthreads();
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kFrameThreads) frame_kernel(const T* __restrict__ e, int64_t K, int64_t D,
                                                              float* __restrict__ centre,
                                                              float* __restrict__ sqnorm, float* __restrict__ stats) {
  __shared__ double part[kFrameThreads];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  // Finite codes (sqnorm holds 0 for them, NaN for the others, until the last step) and their count.
  double finite = 0;
  for (int64_t k = warp; k < K; k += kFrameWarps) {  // k is uniform within a warp
    bool ok = true;
    for (int64_t d = lane; d < D; d += 32) ok = ok && isfinite(to_float(e[k * D + d]));
    ok = __all_sync(0xffffffffu, ok);
    if (lane == 0) {
      sqnorm[k] = ok ? 0.f : quiet_nan();
      finite += ok;
    }
  }
  const double count = fmax(block_reduce<false>(finite, part), 1.0);
  // Centre: column d0 + col summed over the codes k = group (mod groups), then over the groups.
  const int64_t cols = D < kFrameThreads ? D : kFrameThreads, groups = kFrameThreads / cols;
  const int64_t col = t % cols, group = t / cols;
  for (int64_t d0 = 0; d0 < D; d0 += cols) {
    double sum = 0;
    if (group < groups && d0 + col < D) {
      for (int64_t k = group; k < K; k += groups) {
        if (!isnan(sqnorm[k])) sum += double(to_float(e[k * D + d0 + col]));
      }
    }
    part[t] = sum;
    __syncthreads();
    if (t < cols && d0 + t < D) {
      double total = 0;
      for (int64_t g = 0; g < groups; ++g) total += part[g * cols + t];
      centre[d0 + t] = float(total / count);
    }
    __syncthreads();
  }
  // Scale from the largest offset of a finite code; then the centre is stored scaled.
  double spread = 0;
  for (int64_t i = t; i < K * D; i += kFrameThreads) {
    if (!isnan(sqnorm[i / D])) spread = fmax(spread, fabs(double(to_float(e[i])) - double(centre[i % D])));
  }
  spread = block_reduce<true>(spread, part);
  int exponent = 0;
  frexp(spread, &exponent);
  const float scale = ldexpf(1.f, -min(max(exponent, -kScaleExponent), kScaleExponent));
  for (int64_t d = t; d < D; d += kFrameThreads) centre[d] *= scale;  // exact: a power of two, no overflow
  __syncthreads();
  // Squared norms of the scaled codes and the largest one.
  double en_max = 0;
  for (int64_t k = warp; k < K; k += kFrameWarps) {
    const bool ok = !isnan(sqnorm[k]);
    __syncwarp();
    double sq = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const double v = ok ? fmaf(to_float(e[k * D + d]), scale, -centre[d]) : 0.f;
      sq += v * v;
    }
    for (int off = 16; off > 0; off /= 2) sq += __shfl_xor_sync(0xffffffffu, sq, off);
    if (lane == 0 && ok) sqnorm[k] = float(sq);
    en_max = fmax(en_max, sq);
  }
  en_max = block_reduce<true>(en_max, part);
  if (t == 0) {
    stats[0] = scale;
    stats[1] = float(en_max);
  }
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

int64_t vq_lookup_workspace(int64_t M, int64_t K, int64_t D) { return D + K + 2 + M; }

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
  float* centre = workspace;  // scaled by s once the frame is done
  float* sqnorm = centre + D;
  float* stats = sqnorm + K;
  float* window = stats + 2;
  dispatch_dtype(dt, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* zp = static_cast<const T*>(z);
    const T* ep = static_cast<const T*>(codebook);
    frame_kernel<T><<<1, kFrameThreads, 0, stream>>>(ep, K, D, centre, sqnorm, stats);
    check_launch("frame_kernel");
    const int rows_per_block = kRowThreads / 32;
    rows_kernel<T><<<static_cast<unsigned>(ceil_div(M, rows_per_block)), kRowThreads, 0, stream>>>(
        zp, M, D, centre, stats, window_codes, window_rows, window);
    check_launch("rows_kernel");
    vq_lookup_kernel<T><<<static_cast<unsigned>(ceil_div(M, kBM)), dim3(kTX, kTY), 0, stream>>>(
        zp, ep, centre, sqnorm, stats, window, M, K, D, indices, dist);
    check_launch("vq_lookup_kernel");
  });
}

}  // namespace daenr::cuda
