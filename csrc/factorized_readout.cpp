// Registration of the fused factorized readout: schema, CPU implementation and (with DAENR_WITH_CUDA) the CUDA
// implementation, which checks the tensors and hands raw pointers and the current stream to the launchers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/factorized_readout_cpu.h"

#ifdef DAENR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/factorized_readout_cuda.cuh"
#endif

namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features) {
  TORCH_CHECK(x.dim() == 4 && spatial.dim() == 3 && features.dim() == 2, "factorized_readout: bad ranks");
  TORCH_CHECK(spatial.size(1) == x.size(2) && spatial.size(2) == x.size(3), "spatial (N,H,W) must match x");
  TORCH_CHECK(features.size(0) == spatial.size(0) && features.size(1) == x.size(1), "features must be (N,C)");
  TORCH_CHECK(x.is_contiguous() && spatial.is_contiguous() && features.is_contiguous(),
              "factorized_readout: inputs must be contiguous");
  TORCH_CHECK(x.scalar_type() == spatial.scalar_type() && x.scalar_type() == features.scalar_type(),
              "factorized_readout: dtypes must match");
}

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features,
                       const std::optional<at::Tensor>& bias) {
  check_inputs(x, spatial, features);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // the kernels' own GEMMs are not differentiated
  return daenr::cpu::factorized_readout_forward(x, spatial, features, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                                        const at::Tensor& spatial,
                                                                        const at::Tensor& features) {
  check_inputs(x, spatial, features);
  TORCH_CHECK(grad.is_contiguous() && grad.size(0) == x.size(0) && grad.size(1) == spatial.size(0),
              "grad must be a contiguous (B,N) tensor");
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return daenr::cpu::factorized_readout_backward(grad, x, spatial, features);
}

#ifdef DAENR_WITH_CUDA
using daenr::cuda::ReadoutDims;

ReadoutDims dims_of(const at::Tensor& x, const at::Tensor& spatial) {
  return {x.size(0), x.size(1), x.size(2) * x.size(3), spatial.size(0)};
}

// Float32 scratch for the split-K partial sums, from the caching allocator on x's device and stream.
at::Tensor split_k_workspace(int64_t floats, const at::Tensor& x) {
  return at::empty({floats}, x.options().dtype(at::kFloat));
}

template <typename F>
void dispatch_cuda_dtype(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat: f(daenr::cuda::DType::kFloat32); break;
    case at::kHalf: f(daenr::cuda::DType::kFloat16); break;
    case at::kBFloat16: f(daenr::cuda::DType::kBFloat16); break;
    default: TORCH_CHECK(false, "factorized_readout (cuda): dtype must be float32, float16 or bfloat16");
  }
}

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features,
                        const std::optional<at::Tensor>& bias) {
  check_inputs(x, spatial, features);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty({x.size(0), spatial.size(0)}, x.options());
  if (y.numel() == 0) return y;
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  const void* b = bias.has_value() ? bias->data_ptr() : nullptr;
  const ReadoutDims dims = dims_of(x, spatial);
  auto workspace = split_k_workspace(daenr::cuda::factorized_readout_forward_workspace(dims), x);
  dispatch_cuda_dtype(x.scalar_type(), [&](daenr::cuda::DType dt) {
    daenr::cuda::factorized_readout_forward(dt, x.data_ptr(), spatial.data_ptr(), features.data_ptr(), b,
                                            y.data_ptr(), dims, workspace.data_ptr<float>(), stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                                         const at::Tensor& spatial,
                                                                         const at::Tensor& features) {
  check_inputs(x, spatial, features);
  TORCH_CHECK(grad.is_contiguous() && grad.scalar_type() == x.scalar_type(), "grad must be contiguous, x's dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  auto gx = at::empty_like(x);
  auto gm = at::empty_like(spatial);
  auto gw = at::empty_like(features);
  auto gb = grad.to(at::kFloat).sum(0).to(x.scalar_type());
  if (x.size(0) == 0) return {gx, gm.zero_(), gw.zero_(), gb};
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  const ReadoutDims dims = dims_of(x, spatial);
  auto workspace = split_k_workspace(daenr::cuda::factorized_readout_backward_workspace(dims), x);
  dispatch_cuda_dtype(x.scalar_type(), [&](daenr::cuda::DType dt) {
    daenr::cuda::factorized_readout_backward(dt, grad.data_ptr(), x.data_ptr(), spatial.data_ptr(),
                                             features.data_ptr(), gx.data_ptr(), gm.data_ptr(), gw.data_ptr(), dims,
                                             workspace.data_ptr<float>(), stream);
  });
  return {gx, gm, gw, gb};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, m) {
  m.def("factorized_readout_forward(Tensor x, Tensor spatial, Tensor features, Tensor? bias) -> Tensor");
  m.def("factorized_readout_backward(Tensor grad, Tensor x, Tensor spatial, Tensor features)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(daenr_fast_ext, CPU, m) {
  m.impl("factorized_readout_forward", &forward_cpu);
  m.impl("factorized_readout_backward", &backward_cpu);
}

#ifdef DAENR_WITH_CUDA
TORCH_LIBRARY_IMPL(daenr_fast_ext, CUDA, m) {
  m.impl("factorized_readout_forward", &forward_cuda);
  m.impl("factorized_readout_backward", &backward_cuda);
}
#endif
