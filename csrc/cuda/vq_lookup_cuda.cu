// VQ nearest-codebook lookup on CUDA without the M x K distance matrix.
//
//   k*(m) = argmin_k (||e_k||^2 - 2 z_m . e_k),   dist(m) = max(0, ||z_m||^2 + that minimum)
//
// A block owns kBM rows and walks the whole codebook in tiles of kBN codes; the dot products of a (kBM x kBN)
// tile are accumulated in float registers (4 x 4 per thread) from kBD-wide slices of z and the codebook staged in
// shared memory (converted to float there, so half types accumulate in float32). Each thread keeps a running
// argmin for its 4 rows over its codes (visited in increasing order, strict improvement only); the 16 threads
// sharing a row then merge by (value, index), so ties go to the lowest index.
#include "cuda/vq_lookup_cuda.cuh"

#include <type_traits>

namespace daenr::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBD = 16;
static_assert(kBM == kBN, "the staging loop loads one z row and one code per index");
constexpr int kTX = 16, kTY = 16;  // blockDim; each thread: rows ty + 16 i, codes tx + 16 j, i, j < 4
constexpr int kNormThreads = 256;  // 8 warps, one row each

// out[r] = sum_d x[r, d]^2 in float, one warp per row.
template <typename T>
__global__ void row_sqnorm_kernel(const T* __restrict__ x, int64_t rows, int64_t D, float* __restrict__ out) {
  const int64_t row = blockIdx.x * int64_t(kNormThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together: row is uniform within a warp
  const T* xr = x + row * D;
  float acc = 0.f;
  for (int64_t d = lane; d < D; d += 32) {
    const float v = to_float(xr[d]);
    acc += v * v;
  }
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) out[row] = acc;
}

template <typename T>
__global__ void __launch_bounds__(kTX * kTY) vq_argmin_kernel(const T* __restrict__ z, const T* __restrict__ e,
                                                              const float* __restrict__ e_norm,
                                                              const float* __restrict__ z_norm, int64_t M,
                                                              int64_t K, int64_t D, int64_t* __restrict__ indices,
                                                              float* __restrict__ dist) {
  __shared__ float zs[kBD][kBM + 1];
  __shared__ float es[kBD][kBN + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTX + tx;
  const int64_t m0 = blockIdx.x * int64_t(kBM);

  float best[4];
  int64_t arg[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    best[i] = __int_as_float(0x7f800000);  // +inf
    arg[i] = 0;
  }

  for (int64_t n0 = 0; n0 < K; n0 += kBN) {
    float acc[4][4] = {};
    for (int64_t d0 = 0; d0 < D; d0 += kBD) {
      // Stage z[m0 : m0+kBM, d0 : d0+kBD] and e[n0 : n0+kBN, d0 : d0+kBD] transposed, zero outside the bounds.
#pragma unroll
      for (int l = 0; l < (kBM * kBD) / (kTX * kTY); ++l) {
        const int flat = tid + l * kTX * kTY;
        const int r = flat / kBD, c = flat % kBD;
        const int64_t gm = m0 + r, gn = n0 + r, gd = d0 + c;
        zs[c][r] = (gm < M && gd < D) ? to_float(z[gm * D + gd]) : 0.f;
        es[c][r] = (gn < K && gd < D) ? to_float(e[gn * D + gd]) : 0.f;
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
    for (int j = 0; j < 4; ++j) {  // codes in increasing order within the thread
      const int64_t n = n0 + tx + kTX * j;
      if (n >= K) break;
      const float en = e_norm[n];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float d = en - 2.f * acc[i][j];
        if (d < best[i]) {
          best[i] = d;
          arg[i] = n;
        }
      }
    }
  }

  // Merge the 16 threads of a row (lanes tx = 0..15 of one half-warp) by (value, index).
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float v = best[i];
    int64_t a = arg[i];
    for (int off = kTX / 2; off > 0; off /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, off);
      const int64_t oa = __shfl_xor_sync(0xffffffffu, a, off);
      if (ov < v || (ov == v && oa < a)) {
        v = ov;
        a = oa;
      }
    }
    const int64_t m = m0 + ty + kTY * i;
    if (tx == 0 && m < M) {
      indices[m] = a;
      dist[m] = fmaxf(z_norm[m] + v, 0.f);
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void vq_lookup_forward(DType dt, const void* z, const void* codebook, int64_t M, int64_t K, int64_t D,
                       float* norms, int64_t* indices, float* dist, cudaStream_t stream) {
  if (M == 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* zp = static_cast<const T*>(z);
    const T* ep = static_cast<const T*>(codebook);
    const int rows_per_block = kNormThreads / 32;
    row_sqnorm_kernel<T><<<static_cast<unsigned>(ceil_div(K, rows_per_block)), kNormThreads, 0, stream>>>(
        ep, K, D, norms);
    check_launch("row_sqnorm_kernel (codebook)");
    row_sqnorm_kernel<T><<<static_cast<unsigned>(ceil_div(M, rows_per_block)), kNormThreads, 0, stream>>>(
        zp, M, D, norms + K);
    check_launch("row_sqnorm_kernel (z)");
    vq_argmin_kernel<T><<<static_cast<unsigned>(ceil_div(M, kBM)), dim3(kTX, kTY), 0, stream>>>(
        zp, ep, norms, norms + K, M, K, D, indices, dist);
    check_launch("vq_argmin_kernel");
  });
}

}  // namespace daenr::cuda
