// CUDA kernels of the VQ nearest-codebook lookup: raw pointers and a stream, no torch headers
// (see vq_lookup_cuda.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace daenr::cuda {

// z (M,D) and codebook (K,D) of dtype dt, row-major, K >= 1. norms: caller-allocated workspace of K + M floats.
// Writes indices (M,) int64 (argmin of ||z_m - e_k||^2, ties to the lowest k) and dist (M,) float32.
void vq_lookup_forward(DType dt, const void* z, const void* codebook, int64_t M, int64_t K, int64_t D,
                       float* norms, int64_t* indices, float* dist, cudaStream_t stream);

}  // namespace daenr::cuda
