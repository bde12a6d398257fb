// Registration of the VQ nearest-codebook lookup: schema, CPU implementation and (with DAENR_WITH_CUDA) the CUDA
// implementation, which allocates outputs and the workspace and hands raw pointers and the stream over.
// window_codes, window_rows: the coefficients a, b of the candidate window (daenr_fast/ops/vq_lookup.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/vq_lookup_cpu.h"

#ifdef DAENR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/vq_lookup_cuda.cuh"
#endif

namespace {

void check_inputs(const at::Tensor& z, const at::Tensor& codebook) {
  TORCH_CHECK(z.dim() == 2 && codebook.dim() == 2, "vq_lookup: z must be (M,D) and codebook (K,D)");
  TORCH_CHECK(z.size(1) == codebook.size(1), "vq_lookup: z and codebook must have the same D");
  TORCH_CHECK(codebook.size(0) >= 1, "vq_lookup: the codebook needs at least one code");
  TORCH_CHECK(z.is_contiguous() && codebook.is_contiguous(), "vq_lookup: inputs must be contiguous");
  TORCH_CHECK(z.scalar_type() == codebook.scalar_type(), "vq_lookup: dtypes must match");
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& z, const at::Tensor& codebook, double window_codes,
                                               double window_rows) {
  check_inputs(z, codebook);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return daenr::cpu::vq_lookup_forward(z, codebook, window_codes, window_rows);
}

#ifdef DAENR_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& z, const at::Tensor& codebook, double window_codes,
                                                double window_rows) {
  check_inputs(z, codebook);
  const c10::cuda::CUDAGuard guard(z.device());
  daenr::cuda::DType dt;
  switch (z.scalar_type()) {
    case at::kFloat: dt = daenr::cuda::DType::kFloat32; break;
    case at::kHalf: dt = daenr::cuda::DType::kFloat16; break;
    case at::kBFloat16: dt = daenr::cuda::DType::kBFloat16; break;
    default: TORCH_CHECK(false, "vq_lookup (cuda): dtype must be float32, float16 or bfloat16");
  }
  const int64_t M = z.size(0), K = codebook.size(0), D = z.size(1);
  auto indices = at::empty({M}, z.options().dtype(at::kLong));
  auto dist = at::empty({M}, z.options().dtype(at::kFloat));
  auto workspace = at::empty({daenr::cuda::vq_lookup_workspace(M, K, D)}, z.options().dtype(at::kFloat));
  daenr::cuda::vq_lookup_forward(dt, z.data_ptr(), codebook.data_ptr(), M, K, D, float(window_codes),
                                 float(window_rows), workspace.data_ptr<float>(), indices.data_ptr<int64_t>(),
                                 dist.data_ptr<float>(), at::cuda::getCurrentCUDAStream().stream());
  return {indices, dist};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(daenr_fast_ext, m) {
  m.def("vq_lookup_forward(Tensor z, Tensor codebook, float window_codes, float window_rows) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(daenr_fast_ext, CPU, m) { m.impl("vq_lookup_forward", &forward_cpu); }

#ifdef DAENR_WITH_CUDA
TORCH_LIBRARY_IMPL(daenr_fast_ext, CUDA, m) { m.impl("vq_lookup_forward", &forward_cuda); }
#endif
