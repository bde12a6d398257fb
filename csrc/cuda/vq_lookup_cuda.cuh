// CUDA kernels of the VQ nearest-codebook lookup: raw pointers and a stream, no torch headers
// (see vq_lookup_cuda.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace daenr::cuda {

// Floats of workspace vq_lookup_forward needs: the codebook's frame (3 D + K + 6) and one window per row (M).
int64_t vq_lookup_workspace(int64_t M, int64_t K, int64_t D);

// z (M,D) and codebook (K,D) of dtype dt, row-major, K >= 1. window_codes, window_rows: the coefficients a, b of
// the candidate window (daenr_fast/ops/vq_lookup.py). workspace: vq_lookup_workspace(M, K, D) floats.
// Writes indices (M,) int64 (argmin of ||z_m - e_k||^2, ties to the lowest k, NaN rule of the op) and dist (M,)
// float32.
void vq_lookup_forward(DType dt, const void* z, const void* codebook, int64_t M, int64_t K, int64_t D,
                       float window_codes, float window_rows, float* workspace, int64_t* indices, float* dist,
                       cudaStream_t stream);

}  // namespace daenr::cuda
