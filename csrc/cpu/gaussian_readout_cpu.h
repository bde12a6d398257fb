// CPU kernels of the fused Gaussian readout (see csrc/cpu/gaussian_readout_cpu.cpp).
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <tuple>

namespace daenr::cpu {

// y (B,N) from x (B,C,H,W), grid (B,N,2) or (N,2), features (C,N), bias (N,) or none; float32 or float64,
// contiguous, one dtype.
at::Tensor gaussian_readout_forward(const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
                                    const std::optional<at::Tensor>& bias, bool align_corners);

// (dx, dgrid, dfeatures, dbias) given grad = dL/dy (B,N), contiguous; deterministic.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gaussian_readout_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& grid, const at::Tensor& features,
    bool align_corners);

}  // namespace daenr::cpu
