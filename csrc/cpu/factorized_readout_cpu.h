// CPU kernels of the fused factorized readout (see csrc/cpu/factorized_readout.cpp).
#pragma once
#include <ATen/ATen.h>
#include <optional>
#include <tuple>

namespace daenr::cpu {

at::Tensor factorized_readout_forward(const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features,
                                      const std::optional<at::Tensor>& bias);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> factorized_readout_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& spatial, const at::Tensor& features);

}  // namespace daenr::cpu
