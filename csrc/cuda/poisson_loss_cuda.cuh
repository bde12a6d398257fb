// CUDA kernels of the fused Poisson loss: raw pointers and a stream, no torch headers (see poisson_loss_cuda.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "poisson_loss_enums.h"

namespace daenr::cuda {

// activation: a daenr::PoissonActivation; mode: a daenr::PoissonMode (csrc/poisson_loss_enums.h), the per-neuron
// mode reducing over the R rows of the (R, N) view. gscale multiplies dl/dz; lscale multiplies the reduced loss.
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

// z, s: R*N elements of dtype dt. loss: R*N (kModeNone), 1 (kModeTotal) or N (kModePerNeuron) elements of dt.
// grad: R*N float32 (float16/bfloat16 gradients past their range or precision stay exact until scaled by the
// upstream gradient) or null. bad_info: 2 int64 (count of negative or non-finite targets, flat index of the first
// or -1).
void poisson_loss_forward(DType dt, const void* z, const void* s, void* loss, void* grad, int64_t* bad_info,
                          float* partials, int64_t* slot_count, int64_t* slot_first, const PoissonArgs& a,
                          cudaStream_t stream);

}  // namespace daenr::cuda
