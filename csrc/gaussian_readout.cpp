// Registration of the fused Gaussian readout: schema, CPU implementation and (with DAENR_WITH_CUDA) the CUDA
// implementation, which checks the tensors and hands raw pointers, a workspace and the current stream to the
// launchers.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "cpu/gaussian_readout_cpu.h"

#ifdef DAENR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/gaussian_readout_cuda.cuh"
#endif

namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features) {
  TORCH_CHECK(x.dim() == 4 && (grid.dim() == 2 || grid.dim() == 3) && features.dim() == 2,
              "gaussian_readout: x must be (B,C,H,W), grid (B,N,2) or (N,2), features (C,N)");
  const int64_t N = features.size(1);
  TORCH_CHECK(features.size(0) == x.size(1), "gaussian_readout: features must be (C,N) with x's C");
  TORCH_CHECK(grid.size(-1) == 2 && grid.size(-2) == N && (grid.dim() == 2 || grid.size(0) == x.size(0)),
              "gaussian_readout: grid must be (B,N,2) or (N,2)");
  TORCH_CHECK(x.size(2) > 0 && x.size(3) > 0, "gaussian_readout: x must have a non-empty map");
  TORCH_CHECK((x.size(2) + 1) * (x.size(3) + 1) < std::numeric_limits<int32_t>::max() / 4,
              "gaussian_readout: the map is too large (H*W must be below 2^29)");
  TORCH_CHECK(x.is_contiguous() && grid.is_contiguous() && features.is_contiguous(),
              "gaussian_readout: inputs must be contiguous");
  TORCH_CHECK(x.scalar_type() == grid.scalar_type() && x.scalar_type() == features.scalar_type(),
              "gaussian_readout: dtypes must match");
}

void check_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& features) {
  TORCH_CHECK(grad.is_contiguous() && grad.dim() == 2 && grad.size(0) == x.size(0) &&
                  grad.size(1) == features.size(1) && grad.scalar_type() == x.scalar_type(),
              "gaussian_readout: grad must be a contiguous (B,N) tensor of x's dtype");
}

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
                       const std::optional<at::Tensor>& bias, bool align_corners) {
  check_inputs(x, grid, features);
  return daenr::cpu::gaussian_readout_forward(x, grid, features, bias, align_corners);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                                        const at::Tensor& grid,
                                                                        const at::Tensor& features,
                                                                        bool align_corners) {
  check_inputs(x, grid, features);
  check_grad(grad, x, features);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return daenr::cpu::gaussian_readout_backward(grad, x, grid, features, align_corners);
}

#ifdef DAENR_WITH_CUDA
daenr::cuda::GaussianDims dims_of(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
                                  bool align_corners) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), features.size(1), grid.dim() == 2, align_corners};
}

template <typename F>
void dispatch_cuda_dtype(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat: f(daenr::cuda::DType::kFloat32); break;
    case at::kHalf: f(daenr::cuda::DType::kFloat16); break;
    case at::kBFloat16: f(daenr::cuda::DType::kBFloat16); break;
    default: TORCH_CHECK(false, "gaussian_readout (cuda): dtype must be float32, float16 or bfloat16");
  }
}

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
                        const std::optional<at::Tensor>& bias, bool align_corners) {
  check_inputs(x, grid, features);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty({x.size(0), features.size(1)}, x.options());
  if (y.numel() == 0) return y;
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  const void* b = bias.has_value() ? bias->data_ptr() : nullptr;
  dispatch_cuda_dtype(x.scalar_type(), [&](daenr::cuda::DType dt) {
    daenr::cuda::gaussian_readout_forward(dt, x.data_ptr(), grid.data_ptr(), features.data_ptr(), b, y.data_ptr(),
                                          dims_of(x, grid, features, align_corners), stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                                         const at::Tensor& grid,
                                                                         const at::Tensor& features,
                                                                         bool align_corners) {
  check_inputs(x, grid, features);
  check_grad(grad, x, features);
  const c10::cuda::CUDAGuard guard(x.device());
  auto dx = at::empty_like(x);
  auto dgrid = at::empty_like(grid);
  auto df = at::empty_like(features);
  auto dbias = at::empty({features.size(1)}, x.options());
  const auto dims = dims_of(x, grid, features, align_corners);
  // one byte tensor from the caching allocator, carved up by the launcher (256-byte aligned pieces)
  auto workspace = at::empty({static_cast<int64_t>(daenr::cuda::gaussian_readout_backward_workspace(dims))},
                             x.options().dtype(at::kByte));
  auto stream = at::cuda::getCurrentCUDAStream().stream();
  dispatch_cuda_dtype(x.scalar_type(), [&](daenr::cuda::DType dt) {
    daenr::cuda::gaussian_readout_backward(dt, grad.data_ptr(), x.data_ptr(), grid.data_ptr(), features.data_ptr(),
                                           dx.data_ptr(), dgrid.data_ptr(), df.data_ptr(), dbias.data_ptr(), dims,
                                           workspace.data_ptr(), stream);
  });
  return {dx, dgrid, df, dbias};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, m) {
  m.def("gaussian_readout_forward(Tensor x, Tensor grid, Tensor features, Tensor? bias, bool align_corners)"
        " -> Tensor");
  m.def("gaussian_readout_backward(Tensor grad, Tensor x, Tensor grid, Tensor features, bool align_corners)"
        " -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(daenr_fast_ext, CPU, m) {
  m.impl("gaussian_readout_forward", &forward_cpu);
  m.impl("gaussian_readout_backward", &backward_cpu);
}

#ifdef DAENR_WITH_CUDA
TORCH_LIBRARY_IMPL(daenr_fast_ext, CUDA, m) {
  m.impl("gaussian_readout_forward", &forward_cuda);
  m.impl("gaussian_readout_backward", &backward_cuda);
}
#endif
