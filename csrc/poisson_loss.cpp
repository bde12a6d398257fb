// Registration of the fused Poisson loss: schema, CPU implementation and (with DAENR_WITH_CUDA) the CUDA
// implementation, which allocates the outputs and workspace and hands raw pointers and the current stream over.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/poisson_loss_cpu.h"
#include "poisson_loss_enums.h"

#ifdef DAENR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/poisson_loss_cuda.cuh"
#endif

namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

void check_inputs(const at::Tensor& z, const at::Tensor& target, int64_t activation, int64_t mode) {
  TORCH_CHECK(z.sizes() == target.sizes(), "poisson_loss: z and target must have the same shape");
  TORCH_CHECK(z.scalar_type() == target.scalar_type(), "poisson_loss: z and target must have the same dtype");
  TORCH_CHECK(z.is_contiguous() && target.is_contiguous(), "poisson_loss: inputs must be contiguous");
  TORCH_CHECK(activation >= 0 && activation < daenr::kNumPoissonActivations,
              "poisson_loss: activation code must be in 0..", daenr::kNumPoissonActivations - 1, ", got ",
              activation);
  TORCH_CHECK(mode >= 0 && mode < daenr::kNumPoissonModes, "poisson_loss: mode must be in 0..",
              daenr::kNumPoissonModes - 1, ", got ", mode);
  TORCH_CHECK(mode != daenr::kModePerNeuron || z.dim() > 0,
              "poisson_loss: the per-neuron mode needs at least one dimension");
}

Outputs forward_cpu(const at::Tensor& z, const at::Tensor& target, int64_t activation, double eps, int64_t mode,
                    bool mean, bool full, bool need_grad) {
  check_inputs(z, target, activation, mode);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return daenr::cpu::poisson_loss_forward(z, target, activation, eps, mode, mean, full, need_grad);
}

#ifdef DAENR_WITH_CUDA
Outputs forward_cuda(const at::Tensor& z, const at::Tensor& target, int64_t activation, double eps, int64_t mode,
                     bool mean, bool full, bool need_grad) {
  check_inputs(z, target, activation, mode);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t numel = z.numel();
  const int64_t N = mode == daenr::kModePerNeuron ? z.size(-1) : numel;
  const int64_t R = mode == daenr::kModePerNeuron ? (N > 0 ? numel / N : 0) : 1;
  const double count = mode == daenr::kModeTotal ? double(numel) : double(R);
  daenr::cuda::DType dt;
  switch (z.scalar_type()) {
    case at::kFloat: dt = daenr::cuda::DType::kFloat32; break;
    case at::kHalf: dt = daenr::cuda::DType::kFloat16; break;
    case at::kBFloat16: dt = daenr::cuda::DType::kBFloat16; break;
    default: TORCH_CHECK(false, "poisson_loss (cuda): dtype must be float32, float16 or bfloat16");
  }
  const float scale = (mean && mode != daenr::kModeNone) ? static_cast<float>(1.0 / count) : 1.f;
  const daenr::cuda::PoissonArgs args{R, N, static_cast<int>(activation), static_cast<int>(mode),
                                      static_cast<float>(eps), scale, scale, full};
  const auto ws = daenr::cuda::poisson_loss_workspace(args);
  auto loss = mode == daenr::kModeNone
                  ? at::empty_like(z)
                  : at::empty(mode == daenr::kModeTotal ? at::IntArrayRef{} : at::IntArrayRef{N}, z.options());
  const auto float_options = z.options().dtype(at::kFloat);  // the gradient stays float32 until it is scaled
  auto grad = need_grad ? at::empty(z.sizes(), float_options) : at::empty({0}, float_options);
  auto partials = at::empty({ws.partials}, z.options().dtype(at::kFloat));
  auto slots = at::empty({2, ws.slots}, z.options().dtype(at::kLong));
  auto bad_info = at::empty({2}, z.options().dtype(at::kLong));
  daenr::cuda::poisson_loss_forward(dt, z.data_ptr(), target.data_ptr(), loss.data_ptr(),
                                    need_grad ? grad.data_ptr() : nullptr, bad_info.data_ptr<int64_t>(),
                                    partials.data_ptr<float>(), slots.data_ptr<int64_t>(),
                                    slots.data_ptr<int64_t>() + ws.slots, args,
                                    at::cuda::getCurrentCUDAStream().stream());
  return {loss, grad, bad_info};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, m) {
  m.def("poisson_loss_forward(Tensor z, Tensor target, int activation, float eps, int mode, bool mean, bool full,"
        " bool need_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(daenr_fast_ext, CPU, m) { m.impl("poisson_loss_forward", &forward_cpu); }

#ifdef DAENR_WITH_CUDA
TORCH_LIBRARY_IMPL(daenr_fast_ext, CUDA, m) { m.impl("poisson_loss_forward", &forward_cuda); }
#endif
