// CUDA kernels of the fused Poisson loss: raw pointers and a stream, no torch headers (see poisson_loss_cuda.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace daenr::cuda {

// activation: 0 identity, 1 elu1, 2 softplus, 3 exp; mode: 0 per element, 1 over everything, 2 per neuron (over
// the R rows of the (R, N) view). gscale multiplies dl/dz; lscale multiplies the reduced loss.
struct PoissonArgs {
  int64_t R, N;
  int activation, mode;
  float eps, gscale, lscale;
  bool full;
};

// Sizes of the workspace the caller allocates for one launch: `slots` int64 pairs of invalid-target counts and
// first indices, and `partials` float partial sums.
struct PoissonWorkspace {
  int64_t slots, partials;
};
PoissonWorkspace poisson_loss_workspace(const PoissonArgs& a);

// z, s: R*N elements of dtype dt. loss: R*N (mode 0), 1 (mode 1) or N (mode 2) elements of dt. grad: R*N float32
// (float16/bfloat16 gradients past their range or precision stay exact until scaled by the upstream gradient) or
// null. bad_info: 2 int64 (count of negative or non-finite targets, flat index of the first or -1).
void poisson_loss_forward(DType dt, const void* z, const void* s, void* loss, void* grad, int64_t* bad_info,
                          float* partials, int64_t* slot_count, int64_t* slot_first, const PoissonArgs& a,
                          cudaStream_t stream);

}  // namespace daenr::cuda
