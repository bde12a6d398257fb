// CUDA kernels of the fused factorized readout (raw pointers + stream; no torch headers).
//
//   y[b,n] = sum_c w[n,c] * sum_p m[n,p] * x[b,c,p] + bias[n]        x (B,C,P), m (N,P), w (N,C), bias (N) -> y (B,N)
//
// with P = H*W. Every pass is a tiled GEMM whose factorized operand is built on the fly from m and w, so the
// (B,C,N) and (B,N,P) intermediates never exist. All tensors are contiguous and share one element type
// (float, __half or __nv_bfloat16); products and sums are formed in float32.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"

namespace daenr::cuda {

// Extents of one call: batch B, channels C, pixels P = H*W, neurons N.
struct ReadoutDims {
  int64_t B, C, P, N;
};

// Float32 elements of scratch memory (split-K partial sums) that factorized_readout_forward /
// factorized_readout_backward need for these extents on the current device; 0 when none.
int64_t factorized_readout_forward_workspace(ReadoutDims d);
int64_t factorized_readout_backward_workspace(ReadoutDims d);

// y (B,N) = readout(x, m, w) + bias (bias may be null). `workspace` holds at least
// factorized_readout_forward_workspace(d) floats (may be null when that is 0). Throws std::runtime_error on a
// launch error or extents beyond the kernels' limits (each contraction length below 2^32).
void factorized_readout_forward(DType dt, const void* x, const void* m, const void* w, const void* bias, void* y,
                                ReadoutDims d, float* workspace, cudaStream_t stream);

// Given grad = dL/dy (B,N): gx = dL/dx (B,C,P), gm = dL/dm (N,P), gw = dL/dw (N,C). The bias gradient is
// sum_b grad[b,n] and left to the caller. `workspace` holds factorized_readout_backward_workspace(d) floats.
void factorized_readout_backward(DType dt, const void* grad, const void* x, const void* m, const void* w, void* gx,
                                 void* gm, void* gw, ReadoutDims d, float* workspace, cudaStream_t stream);

}  // namespace daenr::cuda
