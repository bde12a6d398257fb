// CUDA kernels of the fused Gaussian readout (raw pointers + stream; no torch headers).
//
//   y[b,n] = sum_c f[c,n] * bilinear(x[b,c], grid[b,n]) + bias[n]     x (B,C,H,W), grid (B,N,2) or (N,2), f (C,N)
//
// grid_sample semantics (bilinear, zero padding; see gaussian_readout_taps.h). All tensors are contiguous and share
// one element type (float, __half or __nv_bfloat16); products and sums are formed in float32. The backward is
// deterministic (no floating-point atomics): see gaussian_readout_cuda.cu.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/common.cuh"

namespace daenr::cuda {

// Extents of one call. `shared`: grid is (N,2), the same positions for every batch entry.
struct GaussianDims {
  int64_t B, C, H, W, N;
  bool shared, align_corners;
};

// y (B,N) = readout(x, grid, f) + bias (bias may be null). Throws std::runtime_error on a launch error or extents
// beyond the kernels' limits (H*W and (H+1)*(W+1) per position list below 2^31).
void gaussian_readout_forward(DType dt, const void* x, const void* grid, const void* f, const void* bias, void* y,
                              GaussianDims d, cudaStream_t stream);

// Bytes of scratch memory gaussian_readout_backward needs for these extents: the neurons sorted by cell, their
// fractions, the cell starts, f transposed and, for a shared grid, the per-batch grid gradients. O(B*N + B*H*W + N*C).
size_t gaussian_readout_backward_workspace(GaussianDims d);

// Given grad = dL/dy (B,N): dx (B,C,H,W), dgrid (grid's shape), df (C,N), dbias (N). `workspace` holds
// gaussian_readout_backward_workspace(d) bytes, 256-byte aligned.
void gaussian_readout_backward(DType dt, const void* grad, const void* x, const void* grid, const void* f, void* dx,
                               void* dgrid, void* df, void* dbias, GaussianDims d, void* workspace,
                               cudaStream_t stream);

}  // namespace daenr::cuda
