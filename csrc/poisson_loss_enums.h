// Enumerated options of the fused Poisson loss, as the bindings, the CPU kernel and the CUDA kernels pass them.
// Plain C++17 without torch headers: g++ and nvcc both compile it, and the enumerators are constant expressions
// (template arguments, `if constexpr`, device code). The Python twin is daenr_fast/ops/poisson_codes.py;
// tests/ops/test_poisson_codes.py checks that the two agree name by name and value by value.
#pragma once

namespace daenr {

// The rate r = act(z), in the order of daenr_fast.ops.reference.POISSON_ACTIVATIONS.
enum PoissonActivation : int {
  kIdentity = 0,  // r = z
  kElu1 = 1,      // r = ELU(z) + 1
  kSoftplus = 2,  // r = log(1 + e^z)
  kExp = 3,       // r = e^z (z is the log-rate)
};
constexpr int kNumPoissonActivations = 4;

// What the loss is reduced over, with N = the last dimension of z.
enum PoissonMode : int {
  kModeNone = 0,       // per element: the loss has z's shape
  kModeTotal = 1,      // over every element: a scalar
  kModePerNeuron = 2,  // over the R rows of the (R, N) view: (N,)
};
constexpr int kNumPoissonModes = 3;

}  // namespace daenr
