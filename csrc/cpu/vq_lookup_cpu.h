// CPU kernel of the VQ nearest-codebook lookup (see csrc/cpu/vq_lookup_cpu.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace daenr::cpu {

// z (M,D), codebook (K,D), K >= 1, float or double -> (indices (M,) int64, squared distances (M,) in z's dtype).
// window_codes, window_rows: the coefficients a, b of the candidate window
// W = a (en_max + 2 ||Z|| sqrt(en_max)) + b ||Z||^2, computed by daenr_fast/ops/vq_lookup.py (_window).
std::tuple<at::Tensor, at::Tensor> vq_lookup_forward(const at::Tensor& z, const at::Tensor& codebook,
                                                     double window_codes, double window_rows);

}  // namespace daenr::cpu
