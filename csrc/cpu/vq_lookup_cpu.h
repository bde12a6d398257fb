// CPU kernel of the VQ nearest-codebook lookup (see csrc/cpu/vq_lookup_cpu.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace daenr::cpu {

// z (M,D), codebook (K,D), K >= 1 -> (indices (M,) int64, squared distances (M,) in z's dtype).
std::tuple<at::Tensor, at::Tensor> vq_lookup_forward(const at::Tensor& z, const at::Tensor& codebook);

}  // namespace daenr::cpu
