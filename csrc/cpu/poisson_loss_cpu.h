// CPU kernel of the fused Poisson loss (see csrc/cpu/poisson_loss_cpu.cpp).
#pragma once
#include <ATen/ATen.h>

#include <tuple>

#include "poisson_loss_enums.h"

namespace daenr::cpu {

// activation: a daenr::PoissonActivation, mode: a daenr::PoissonMode (csrc/poisson_loss_enums.h).
// Returns (loss, grad, bad): loss reduced as `mode` says (divided by the reduced count when `mean`); grad = the
// derivative of loss wrt z for a unit upstream gradient (z's shape; empty when !need_grad); bad = int64 (2,)
// holding the number of negative or non-finite targets and the flat index of the first one (-1 when none).
std::tuple<at::Tensor, at::Tensor, at::Tensor> poisson_loss_forward(const at::Tensor& z, const at::Tensor& target,
                                                                    int64_t activation, double eps, int64_t mode,
                                                                    bool mean, bool full, bool need_grad);

}  // namespace daenr::cpu
