// Fused Poisson loss on CUDA. One pass over (z, target) computes the per-element loss
// l = r - s log(r + eps) (exp: e^z - s z), dl/dz, and the count of invalid targets; each block reduces its loss
// and validity counts into its own slot (float in registers, a fixed shared-memory tree), and a second small
// kernel sums the slots in double in a fixed order: deterministic, no atomics.
#include "cuda/poisson_loss_cuda.cuh"

#include <algorithm>
#include <type_traits>

namespace daenr::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;
constexpr int kColsPerBlock = 32, kRowsPerBlock = 8;  // per-neuron kernel: blockDim (32, 8)
constexpr int64_t kNoIndex = INT64_MAX;

template <int ACT>
__device__ __forceinline__ void poisson_elem(float z, float s, float eps, float& loss, float& grad) {
  if constexpr (ACT == kExp) {  // z is the log-rate
    const float ez = expf(z);
    loss = ez - s * z;
    grad = ez - s;
    return;
  }
  float r, dr;
  if constexpr (ACT == kIdentity) {
    r = z;
    dr = 1.f;
  } else if constexpr (ACT == kElu1) {
    const float ez = expf(fminf(z, 0.f));
    r = z > 0.f ? z + 1.f : ez;
    dr = z > 0.f ? 1.f : ez;
  } else {  // softplus
    const float u = expf(-fabsf(z));
    const float inv = 1.f / (1.f + u);
    const bool big = z > 20.f;
    r = big ? z : fmaxf(z, 0.f) + log1pf(u);
    dr = big ? 1.f : (z >= 0.f ? inv : u * inv);
  }
  const float re = r + eps;
  loss = r - s * logf(re);
  grad = dr * (1.f - s / re);
}

__device__ __forceinline__ float stirling(float s) {
  const float safe = fmaxf(s, 1.f);
  const float v = safe * logf(safe) - safe + 0.5f * logf(6.283185307179586f * safe);
  return s > 1.f ? v : 0.f;
}

__device__ __forceinline__ bool invalid_target(float s) { return !(s >= 0.f && s <= 3.402823466e38f); }

// Block-wide reduction of (sum, count, first) over blockDim threads (a power of two), result in thread 0.
__device__ void block_reduce(float& sum, int64_t& count, int64_t& first) {
  __shared__ float s_sum[kThreads];
  __shared__ int64_t s_count[kThreads];
  __shared__ int64_t s_first[kThreads];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int n = blockDim.x * blockDim.y;
  s_sum[tid] = sum;
  s_count[tid] = count;
  s_first[tid] = first;
  __syncthreads();
  for (int stride = n / 2; stride > 0; stride /= 2) {
    if (tid < stride) {
      s_sum[tid] += s_sum[tid + stride];
      s_count[tid] += s_count[tid + stride];
      s_first[tid] = min(s_first[tid], s_first[tid + stride]);
    }
    __syncthreads();
  }
  sum = s_sum[0];
  count = s_count[0];
  first = s_first[0];
}

// kModeNone and kModeTotal: grid-stride over all R*N elements; slot per block.
template <typename T, int ACT>
__global__ void poisson_flat_kernel(const T* __restrict__ z, const T* __restrict__ s, T* __restrict__ loss,
                                    float* __restrict__ grad, float* __restrict__ partials,
                                    int64_t* __restrict__ slot_count, int64_t* __restrict__ slot_first,
                                    PoissonArgs a) {
  const int64_t n = a.R * a.N;
  float sum = 0.f;
  int64_t count = 0, first = kNoIndex;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float si = to_float(s[i]);
    float l, g;
    poisson_elem<ACT>(to_float(z[i]), si, a.eps, l, g);
    if (a.full) l += stirling(si);
    if (grad != nullptr) grad[i] = g * a.gscale;
    if (a.mode == kModeNone) {
      loss[i] = from_float<T>(l);
    } else {
      sum += l;
    }
    if (invalid_target(si)) {
      ++count;
      first = min(first, i);
    }
  }
  block_reduce(sum, count, first);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = sum;
    slot_count[blockIdx.x] = count;
    slot_first[blockIdx.x] = first;
  }
}

// kModePerNeuron: block (32 columns, 8 rows); blockIdx.y strides over row groups; partials[blockIdx.y * N + col].
template <typename T, int ACT>
__global__ void poisson_columns_kernel(const T* __restrict__ z, const T* __restrict__ s, float* __restrict__ grad,
                                       float* __restrict__ partials, int64_t* __restrict__ slot_count,
                                       int64_t* __restrict__ slot_first, PoissonArgs a) {
  __shared__ float s_col[kRowsPerBlock][kColsPerBlock];
  const int64_t col = blockIdx.x * int64_t(kColsPerBlock) + threadIdx.x;
  float sum = 0.f;
  int64_t count = 0, first = kNoIndex;
  if (col < a.N) {
    for (int64_t r = blockIdx.y * int64_t(kRowsPerBlock) + threadIdx.y; r < a.R;
         r += int64_t(gridDim.y) * kRowsPerBlock) {
      const int64_t i = r * a.N + col;
      const float si = to_float(s[i]);
      float l, g;
      poisson_elem<ACT>(to_float(z[i]), si, a.eps, l, g);
      if (a.full) l += stirling(si);
      if (grad != nullptr) grad[i] = g * a.gscale;
      sum += l;
      if (invalid_target(si)) {
        ++count;
        first = min(first, i);
      }
    }
  }
  s_col[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < a.N) {
    float c = 0.f;
    for (int k = 0; k < kRowsPerBlock; ++k) c += s_col[k][threadIdx.x];
    partials[blockIdx.y * a.N + col] = c;
  }
  float unused = 0.f;
  block_reduce(unused, count, first);
  if (threadIdx.x == 0 && threadIdx.y == 0) {
    const int64_t slot = blockIdx.y * int64_t(gridDim.x) + blockIdx.x;
    slot_count[slot] = count;
    slot_first[slot] = first;
  }
}

// One block: bad_info = (sum of counts, min of firsts or -1); with total != null also total = lscale * sum.
template <typename T>
__global__ void finalize_slots_kernel(const int64_t* __restrict__ slot_count, const int64_t* __restrict__ slot_first,
                                      int64_t slots, const float* __restrict__ partials, T* total, float lscale,
                                      int64_t* __restrict__ bad_info) {
  __shared__ double s_sum[kThreads];
  __shared__ int64_t s_count[kThreads];
  __shared__ int64_t s_first[kThreads];
  double sum = 0.0;
  int64_t count = 0, first = kNoIndex;
  for (int64_t k = threadIdx.x; k < slots; k += blockDim.x) {
    if (total != nullptr) sum += partials[k];
    count += slot_count[k];
    first = min(first, slot_first[k]);
  }
  s_sum[threadIdx.x] = sum;
  s_count[threadIdx.x] = count;
  s_first[threadIdx.x] = first;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_sum[threadIdx.x] += s_sum[threadIdx.x + stride];
      s_count[threadIdx.x] += s_count[threadIdx.x + stride];
      s_first[threadIdx.x] = min(s_first[threadIdx.x], s_first[threadIdx.x + stride]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    bad_info[0] = s_count[0];
    bad_info[1] = s_first[0] == kNoIndex ? -1 : s_first[0];
    if (total != nullptr) total[0] = from_float<T>(static_cast<float>(s_sum[0] * lscale));
  }
}

// loss[col] = lscale * sum over the row groups of partials[g * N + col].
template <typename T>
__global__ void finalize_columns_kernel(const float* __restrict__ partials, int64_t groups, int64_t N, T* loss,
                                        float lscale) {
  const int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= N) return;
  double v = 0.0;
  for (int64_t g = 0; g < groups; ++g) v += partials[g * N + col];
  loss[col] = from_float<T>(static_cast<float>(v * lscale));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

dim3 columns_grid(const PoissonArgs& a) {
  const int64_t gx = std::max<int64_t>(1, ceil_div(a.N, kColsPerBlock));
  const int64_t gy = std::max<int64_t>(1, std::min<int64_t>(ceil_div(a.R, kRowsPerBlock), 64));
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

int64_t flat_blocks(const PoissonArgs& a) {
  return std::max<int64_t>(1, std::min<int64_t>(ceil_div(a.R * a.N, kThreads * 4), kMaxBlocks));
}

template <typename T, int ACT>
void launch(const void* z, const void* s, void* loss, void* grad, int64_t* bad_info, float* partials,
            int64_t* slot_count, int64_t* slot_first, const PoissonArgs& a, cudaStream_t stream) {
  const T* zp = static_cast<const T*>(z);
  const T* sp = static_cast<const T*>(s);
  T* lp = static_cast<T*>(loss);
  float* gp = static_cast<float*>(grad);
  if (a.mode == kModePerNeuron) {
    const dim3 grid = columns_grid(a);
    poisson_columns_kernel<T, ACT><<<grid, dim3(kColsPerBlock, kRowsPerBlock), 0, stream>>>(
        zp, sp, gp, partials, slot_count, slot_first, a);
    check_launch("poisson_columns_kernel");
    if (a.N > 0) {
      finalize_columns_kernel<T><<<static_cast<unsigned>(ceil_div(a.N, kThreads)), kThreads, 0, stream>>>(
          partials, grid.y, a.N, lp, a.lscale);
      check_launch("finalize_columns_kernel");
    }
    finalize_slots_kernel<T><<<1, kThreads, 0, stream>>>(slot_count, slot_first, int64_t(grid.x) * grid.y,
                                                        partials, nullptr, 0.f, bad_info);
  } else {
    const int64_t blocks = flat_blocks(a);
    poisson_flat_kernel<T, ACT><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        zp, sp, lp, gp, partials, slot_count, slot_first, a);
    check_launch("poisson_flat_kernel");
    finalize_slots_kernel<T><<<1, kThreads, 0, stream>>>(slot_count, slot_first, blocks, partials,
                                                        a.mode == kModeTotal ? lp : nullptr, a.lscale, bad_info);
  }
  check_launch("finalize_slots_kernel");
}

}  // namespace

PoissonWorkspace poisson_loss_workspace(const PoissonArgs& a) {
  if (a.mode == kModePerNeuron) {
    const dim3 grid = columns_grid(a);
    return {int64_t(grid.x) * grid.y, int64_t(grid.y) * std::max<int64_t>(a.N, 1)};
  }
  const int64_t blocks = flat_blocks(a);
  return {blocks, blocks};
}

void poisson_loss_forward(DType dt, const void* z, const void* s, void* loss, void* grad, int64_t* bad_info,
                          float* partials, int64_t* slot_count, int64_t* slot_first, const PoissonArgs& a,
                          cudaStream_t stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const auto run = [&](auto act) {
      launch<T, decltype(act)::value>(z, s, loss, grad, bad_info, partials, slot_count, slot_first, a, stream);
    };
    switch (a.activation) {
      case kIdentity: run(std::integral_constant<int, kIdentity>{}); break;
      case kElu1: run(std::integral_constant<int, kElu1>{}); break;
      case kSoftplus: run(std::integral_constant<int, kSoftplus>{}); break;
      default: run(std::integral_constant<int, kExp>{}); break;
    }
  });
}

}  // namespace daenr::cuda
