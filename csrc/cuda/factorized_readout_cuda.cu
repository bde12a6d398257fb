// CUDA kernels of the fused factorized readout: one tiled GEMM template, four operand pairs.
//
// With P = H*W, x (B,C,P), m (N,P), w (N,C), gy = dL/dy (B,N) and G[b,c,n] = gy[b,n] w[n,c]:
//
//   forward  y  (B,N) = X (B, C*P)  @ F (C*P, N)    X[b,(c,p)] = x[b,c,p]     F[(c,p),n] = w[n,c] m[n,p]
//   grad x   gx (B*C, P) = G (B*C, N) @ m (N, P)     G[(b,c),n] = gy[b,n] w[n,c]
//   grad m   gm (N, P)   = G^T (N, B*C) @ x (B*C, P)
//   grad w   gw (N, C)   = R (N, B*P) @ X^T (B*P, C)  R[n,(b,p)] = gy[b,n] m[n,p]
//
// The factorized operands (F, G, R) are formed element by element while a tile is loaded into shared memory, so no
// (B,C,N) or (B,N,P) tensor ever exists. Tiles: 64 x 64 outputs per block of 256 threads, 16-deep k-steps, 4 x 4
// outputs per thread, float32 accumulation, shared-memory double buffering with register prefetch. When the output
// alone has too few tiles to fill the GPU, k is split across blocks (split-K); the splits write float32 partial
// sums to the caller's workspace and a second kernel adds them in a fixed order (deterministic) and applies the
// epilogue (bias, conversion to the element type).
#include "cuda/factorized_readout_cuda.cuh"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace daenr::cuda {
namespace {

constexpr int kBM = 64;       // output rows per block
constexpr int kBN = 64;       // output columns per block
constexpr int kBK = 16;       // k per shared-memory tile
constexpr int kTM = 4;        // output rows per thread
constexpr int kTN = 4;        // output columns per thread
constexpr int kThreads = 256;
constexpr int kPad = 4;       // keeps float4 alignment, spreads the transposed tile stores over banks
constexpr int kPerThread = 4; // tile elements each thread loads per operand and k-step
constexpr int64_t kMinTilesPerSplit = 8;
constexpr int64_t kMaxSplits = 64;

static_assert((kBM / kTM) * (kBN / kTN) == kThreads, "one thread per 4x4 output patch");
static_assert(kBM == kBN, "both operands share the tile loader");
static_assert(kBM * kBK == kPerThread * kThreads, "A tile load covers the tile exactly");
static_assert(kThreads % kBK == 0 && kThreads % kBM == 0, "thread mappings of the tile loader");

template <typename T>
struct Tag {
  using type = T;
};

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------------------------------------ operand loaders
//
// A loader presents one GEMM operand as a (rows x K) matrix L(r, k) -- operand A as (M x K), operand B transposed
// as (N x K) -- and is used in three steps: row(r) once per thread and row, kcoord(k) once per k-step (contiguous k)
// or per element, load(row, kcoord) per element, returning float. kContigK says whether consecutive k are
// adjacent in memory, which picks the coalesced thread mapping of the tile loader. kcoord takes k < 2^32 (checked by
// the launcher) so that the (c,p), (b,c) and (b,p) splits of a flattened k are 32-bit divisions.

// Row r of a row-major matrix with leading dimension ld, k along the row: L(r,k) = a[r*ld + k].
template <typename T>
struct RowsOf {
  static constexpr bool kContigK = true;
  using Row = const T*;
  using KCoord = uint32_t;
  const T* a;
  int64_t ld;
  __device__ Row row(int64_t r) const { return a + r * ld; }
  __device__ KCoord kcoord(uint32_t k) const { return k; }
  __device__ float load(Row r, KCoord k) const { return to_float(r[k]); }
};

// Column r of a row-major matrix with leading dimension ld, k down the column: L(r,k) = a[k*ld + r].
template <typename T>
struct ColumnsOf {
  static constexpr bool kContigK = false;
  using Row = const T*;
  using KCoord = int64_t;
  const T* a;
  int64_t ld;
  __device__ Row row(int64_t r) const { return a + r; }
  __device__ KCoord kcoord(uint32_t k) const { return static_cast<int64_t>(k) * ld; }
  __device__ float load(Row r, KCoord k) const { return to_float(r[k]); }
};

// Forward, F^T: L(n, (c,p)) = w[n,c] * m[n,p].
template <typename T>
struct MaskTimesFeatures {
  static constexpr bool kContigK = true;
  struct Row {
    const T* m;
    const T* w;
  };
  struct KCoord {
    uint32_t c, p;
  };
  const T* m;
  const T* w;
  int64_t C, P;
  __device__ Row row(int64_t n) const { return {m + n * P, w + n * C}; }
  __device__ KCoord kcoord(uint32_t k) const {
    const uint32_t p32 = static_cast<uint32_t>(P);
    const uint32_t c = k / p32;
    return {c, k - c * p32};
  }
  __device__ float load(const Row& r, const KCoord& k) const { return to_float(r.w[k.c]) * to_float(r.m[k.p]); }
};

// Grad x, G: L((b,c), n) = gy[b,n] * w[n,c].
template <typename T>
struct GradTimesFeaturesByBatchChannel {
  static constexpr bool kContigK = true;
  struct Row {
    const T* gy;  // gy + b*N
    const T* w;   // w + c, stride C over n
  };
  using KCoord = uint32_t;
  const T* gy;
  const T* w;
  int64_t C, N;
  __device__ Row row(int64_t i) const {
    const int64_t b = i / C;
    return {gy + b * N, w + (i - b * C)};
  }
  __device__ KCoord kcoord(uint32_t k) const { return k; }
  __device__ float load(const Row& r, KCoord n) const {
    return to_float(r.gy[n]) * to_float(r.w[static_cast<int64_t>(n) * C]);
  }
};

// Grad m, G^T: L(n, (b,c)) = gy[b,n] * w[n,c].
template <typename T>
struct GradTimesFeaturesByNeuron {
  static constexpr bool kContigK = true;
  struct Row {
    const T* gy;  // gy + n, stride N over b
    const T* w;   // w + n*C
  };
  struct KCoord {
    int64_t bn;  // b*N
    uint32_t c;
  };
  const T* gy;
  const T* w;
  int64_t C, N;
  __device__ Row row(int64_t n) const { return {gy + n, w + n * C}; }
  __device__ KCoord kcoord(uint32_t k) const {
    const uint32_t c32 = static_cast<uint32_t>(C);
    const uint32_t b = k / c32;
    return {static_cast<int64_t>(b) * N, k - b * c32};
  }
  __device__ float load(const Row& r, const KCoord& k) const { return to_float(r.gy[k.bn]) * to_float(r.w[k.c]); }
};

// Grad w, R: L(n, (b,p)) = gy[b,n] * m[n,p].
template <typename T>
struct GradTimesMaskByNeuron {
  static constexpr bool kContigK = true;
  struct Row {
    const T* gy;  // gy + n, stride N over b
    const T* m;   // m + n*P
  };
  struct KCoord {
    int64_t bn;  // b*N
    uint32_t p;
  };
  const T* gy;
  const T* m;
  int64_t N, P;
  __device__ Row row(int64_t n) const { return {gy + n, m + n * P}; }
  __device__ KCoord kcoord(uint32_t k) const {
    const uint32_t p32 = static_cast<uint32_t>(P);
    const uint32_t b = k / p32;
    return {static_cast<int64_t>(b) * N, k - b * p32};
  }
  __device__ float load(const Row& r, const KCoord& k) const { return to_float(r.gy[k.bn]) * to_float(r.m[k.p]); }
};

// Grad w, X (transposed operand): L(c, (b,p)) = x[b,c,p].
template <typename T>
struct XByChannel {
  static constexpr bool kContigK = true;
  using Row = const T*;  // x + c*P
  using KCoord = int64_t;  // b*C*P + p
  const T* x;
  int64_t C, P;
  __device__ Row row(int64_t c) const { return x + c * P; }
  __device__ KCoord kcoord(uint32_t k) const {
    const uint32_t p32 = static_cast<uint32_t>(P);
    const uint32_t b = k / p32;
    return static_cast<int64_t>(b) * C * P + (k - b * p32);
  }
  __device__ float load(Row r, KCoord k) const { return to_float(r[k]); }
};

// ------------------------------------------------------------------------------------------------ epilogues

// out[i*ld + j] = v.
template <typename T>
struct StoreRowMajor {
  T* out;
  int64_t ld;
  __device__ void operator()(int64_t i, int64_t j, float v) const { out[i * ld + j] = from_float<T>(v); }
};

// y[b*N + n] = v + bias[n] (bias may be null).
template <typename T>
struct StoreWithBias {
  T* y;
  const T* bias;
  int64_t N;
  __device__ void operator()(int64_t b, int64_t n, float v) const {
    y[b * N + n] = from_float<T>(bias != nullptr ? v + to_float(bias[n]) : v);
  }
};

// ------------------------------------------------------------------------------------------------ GEMM kernel

// One thread's share of a 64 x 16 (rows x k) operand tile: 4 elements per k-step.
//   contiguous k: thread t takes k = t % 16 of rows t/16 + 16q (q = 0..3); 16 adjacent threads read 16 adjacent k.
//   otherwise:    thread t takes row t % 64 at k = t/64 + 4q;     64 adjacent threads read 64 adjacent rows.
// The tile is stored k-major in shared memory: s[k][row].
template <class L>
struct TileLoader {
  typename L::Row row[kPerThread];
  bool ok[kPerThread];
  int r0, k0;

  __device__ TileLoader(const L& l, int64_t base, int64_t extent, int t) {
    if constexpr (L::kContigK) {
      k0 = t % kBK;
      r0 = t / kBK;
    } else {
      k0 = t / kBM;
      r0 = t % kBM;
    }
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      const int64_t r = base + r0 + (L::kContigK ? q * (kThreads / kBK) : 0);
      ok[q] = r < extent;
      row[q] = ok[q] ? l.row(r) : typename L::Row{};
    }
  }

  // Elements of the tile starting at k = kt; zero outside the rows or past k_end.
  __device__ void fetch(const L& l, int64_t kt, int64_t k_end, float (&v)[kPerThread]) const {
    if constexpr (L::kContigK) {
      const int64_t k = kt + k0;
      if (k < k_end) {
        const auto kc = l.kcoord(static_cast<uint32_t>(k));
#pragma unroll
        for (int q = 0; q < kPerThread; ++q) v[q] = ok[q] ? l.load(row[q], kc) : 0.f;
      } else {
#pragma unroll
        for (int q = 0; q < kPerThread; ++q) v[q] = 0.f;
      }
    } else {
#pragma unroll
      for (int q = 0; q < kPerThread; ++q) {
        const int64_t k = kt + k0 + q * (kThreads / kBM);
        v[q] = (ok[0] && k < k_end) ? l.load(row[0], l.kcoord(static_cast<uint32_t>(k))) : 0.f;
      }
    }
  }

  __device__ void store(float (*s)[kBM + kPad], const float (&v)[kPerThread]) const {
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      if constexpr (L::kContigK) {
        s[k0][r0 + q * (kThreads / kBK)] = v[q];
      } else {
        s[k0 + q * (kThreads / kBM)][r0] = v[q];
      }
    }
  }
};

// out(i,j) = sum_{k in this block's split} A(i,k) B(k,j) for the 64 x 64 tile (blockIdx.x, blockIdx.y) and the k
// range [blockIdx.z * k_split, min(K, (blockIdx.z + 1) * k_split)). With `partial` null the result goes through the
// epilogue; otherwise it is written as float32 to partial[blockIdx.z][i][j] (an M x N slice per split).
template <class LA, class LB, class Epi>
__global__ void __launch_bounds__(kThreads)
    gemm_kernel(const LA la, const LB lb, const Epi epi, int64_t M, int64_t N, int64_t K, int64_t k_split,
                float* __restrict__ partial) {
  __shared__ __align__(16) float As[2][kBK][kBM + kPad];
  __shared__ __align__(16) float Bs[2][kBK][kBN + kPad];

  const int t = threadIdx.x;
  const int tx = t % (kBN / kTN);  // output columns tx*4 .. tx*4+3
  const int ty = t / (kBN / kTN);  // output rows    ty*4 .. ty*4+3
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.z) * k_split;
  const int64_t k_end = k_begin + k_split < K ? k_begin + k_split : K;
  const int64_t num_tiles = k_end > k_begin ? ceil_div(k_end - k_begin, kBK) : 0;

  const TileLoader<LA> a_tile(la, m0, M, t);
  const TileLoader<LB> b_tile(lb, n0, N, t);
  float ra[kPerThread], rb[kPerThread];
  float acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = 0.f;

  if (num_tiles > 0) {
    a_tile.fetch(la, k_begin, k_end, ra);
    b_tile.fetch(lb, k_begin, k_end, rb);
    a_tile.store(As[0], ra);
    b_tile.store(Bs[0], rb);
    __syncthreads();
  }
  // Iteration `tile` reads buffer tile&1 and fills the other one with the next tile (fetched into registers before
  // the arithmetic so the loads overlap it). That buffer was last read in the previous iteration, which every
  // thread finished before the barrier that closed it; one barrier per k-step publishes the new tile.
  for (int64_t tile = 0; tile < num_tiles; ++tile) {
    const int cur = static_cast<int>(tile & 1);
    const bool more = tile + 1 < num_tiles;  // the same for every thread of the block
    if (more) {
      const int64_t kt = k_begin + (tile + 1) * kBK;
      a_tile.fetch(la, kt, k_end, ra);
      b_tile.fetch(lb, kt, k_end, rb);
    }
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      const float4 a4 = *reinterpret_cast<const float4*>(&As[cur][kk][ty * kTM]);
      const float4 b4 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tx * kTN]);
      const float a[kTM] = {a4.x, a4.y, a4.z, a4.w};
      const float b[kTN] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (more) {
      a_tile.store(As[cur ^ 1], ra);
      b_tile.store(Bs[cur ^ 1], rb);
    }
    __syncthreads();
  }

  float* slice = partial != nullptr ? partial + static_cast<int64_t>(blockIdx.z) * M * N : nullptr;
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t r = m0 + ty * kTM + i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t c = n0 + tx * kTN + j;
      if (c >= N) continue;
      if (slice != nullptr) {
        slice[r * N + c] = acc[i][j];
      } else {
        epi(r, c, acc[i][j]);
      }
    }
  }
}

// out(i,j) = epilogue(sum_z partial[z][i][j]), summed in split order.
template <class Epi>
__global__ void __launch_bounds__(kThreads)
    splitk_reduce_kernel(const float* __restrict__ partial, int64_t splits, int64_t M, int64_t N, const Epi epi) {
  const int64_t total = M * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    float s = 0.f;
    for (int64_t z = 0; z < splits; ++z) s += partial[z * total + e];
    const int64_t i = e / N;
    epi(i, e - i * N, s);
  }
}

// ------------------------------------------------------------------------------------------------ launch planning

int sm_count() {
  int device = 0;
  int sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0) {
    (void)cudaGetLastError();  // clear the error of the failed query
    sms = 108;
  }
  return sms;
}

// How a GEMM of M x N outputs and depth K is cut: `splits` blocks along k, each taking `k_split` (a multiple of
// kBK) consecutive k. Splits are used only when the output tiles alone cannot fill about two blocks per SM and each
// split still gets kMinTilesPerSplit k-steps; no split is empty.
struct Plan {
  int64_t splits;
  int64_t k_split;
};

Plan plan_gemm(int64_t M, int64_t N, int64_t K) {
  const int64_t tiles = ceil_div(M, kBM) * ceil_div(N, kBN);
  const int64_t k_tiles = ceil_div(K, kBK);
  int64_t splits = 1;
  if (tiles > 0) {
    const int64_t target = 2 * static_cast<int64_t>(sm_count());
    if (tiles < target && k_tiles >= 2 * kMinTilesPerSplit) {
      splits = std::min({ceil_div(target, tiles), k_tiles / kMinTilesPerSplit, kMaxSplits});
    }
  }
  const int64_t k_split = std::max<int64_t>(1, ceil_div(k_tiles, splits)) * kBK;
  splits = K > 0 ? ceil_div(K, k_split) : 1;
  return {splits, k_split};
}

int64_t workspace_of(int64_t M, int64_t N, int64_t K) {
  if (M == 0 || N == 0) return 0;
  const Plan p = plan_gemm(M, N, K);
  return p.splits > 1 ? p.splits * M * N : 0;
}

void check_extents(const char* what, int64_t M, int64_t N, int64_t K) {
  if (K >= (int64_t{1} << 32)) {
    throw std::runtime_error(std::string("factorized_readout (cuda): contraction of ") + what + " has " +
                             std::to_string(K) + " terms; the kernels support fewer than 2^32");
  }
  if (ceil_div(N, kBN) > 65535 || ceil_div(M, kBM) > 2147483647) {
    throw std::runtime_error(std::string("factorized_readout (cuda): output of ") + what + " (" + std::to_string(M) +
                             " x " + std::to_string(N) + ") exceeds the launch grid");
  }
}

// Runs out = epi(A @ B) with A = la (M x K) and B^T = lb (N x K).
template <class LA, class LB, class Epi>
void run_gemm(const char* what, const LA& la, const LB& lb, const Epi& epi, int64_t M, int64_t N, int64_t K,
              float* workspace, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  check_extents(what, M, N, K);
  const Plan p = plan_gemm(M, N, K);
  float* partial = p.splits > 1 ? workspace : nullptr;
  if (p.splits > 1 && workspace == nullptr) {
    throw std::runtime_error(std::string("factorized_readout (cuda): ") + what + " needs a workspace");
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(M, kBM)), static_cast<unsigned>(ceil_div(N, kBN)),
                  static_cast<unsigned>(p.splits));
  gemm_kernel<<<grid, kThreads, 0, stream>>>(la, lb, epi, M, N, K, p.k_split, partial);
  check_launch(what);
  if (partial != nullptr) {
    const int64_t blocks = std::min<int64_t>(ceil_div(M * N, kThreads), 8 * static_cast<int64_t>(sm_count()));
    splitk_reduce_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(partial, p.splits, M, N, epi);
    check_launch(what);
  }
}

template <typename F>
void with_type(DType dt, F&& f) {
  dispatch_dtype(dt, [&](auto* tag) { f(Tag<std::remove_pointer_t<decltype(tag)>>{}); });
}

}  // namespace

int64_t factorized_readout_forward_workspace(ReadoutDims d) { return workspace_of(d.B, d.N, d.C * d.P); }

int64_t factorized_readout_backward_workspace(ReadoutDims d) {
  return std::max({workspace_of(d.B * d.C, d.P, d.N), workspace_of(d.N, d.P, d.B * d.C),
                   workspace_of(d.N, d.C, d.B * d.P)});
}

void factorized_readout_forward(DType dt, const void* x, const void* m, const void* w, const void* bias, void* y,
                                ReadoutDims d, float* workspace, cudaStream_t stream) {
  with_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const RowsOf<T> xa{static_cast<const T*>(x), d.C * d.P};
    const MaskTimesFeatures<T> fb{static_cast<const T*>(m), static_cast<const T*>(w), d.C, d.P};
    const StoreWithBias<T> out{static_cast<T*>(y), static_cast<const T*>(bias), d.N};
    run_gemm("forward", xa, fb, out, d.B, d.N, d.C * d.P, workspace, stream);
  });
}

void factorized_readout_backward(DType dt, const void* grad, const void* x, const void* m, const void* w, void* gx,
                                 void* gm, void* gw, ReadoutDims d, float* workspace, cudaStream_t stream) {
  with_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gy = static_cast<const T*>(grad);
    const T* xp = static_cast<const T*>(x);
    const T* mp = static_cast<const T*>(m);
    const T* wp = static_cast<const T*>(w);
    // gx (B*C, P) = G (B*C, N) @ m (N, P)
    run_gemm("grad x", GradTimesFeaturesByBatchChannel<T>{gy, wp, d.C, d.N}, ColumnsOf<T>{mp, d.P},
             StoreRowMajor<T>{static_cast<T*>(gx), d.P}, d.B * d.C, d.P, d.N, workspace, stream);
    // gm (N, P) = G^T (N, B*C) @ x (B*C, P)
    run_gemm("grad spatial", GradTimesFeaturesByNeuron<T>{gy, wp, d.C, d.N}, ColumnsOf<T>{xp, d.P},
             StoreRowMajor<T>{static_cast<T*>(gm), d.P}, d.N, d.P, d.B * d.C, workspace, stream);
    // gw (N, C) = R (N, B*P) @ X^T (B*P, C)
    run_gemm("grad features", GradTimesMaskByNeuron<T>{gy, mp, d.N, d.P}, XByChannel<T>{xp, d.C, d.P},
             StoreRowMajor<T>{static_cast<T*>(gw), d.C}, d.N, d.C, d.B * d.P, workspace, stream);
  });
}

}  // namespace daenr::cuda
