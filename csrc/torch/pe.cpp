// CPU kernels of the positional-encoding operators (schemas in library.cpp; CUDA: pe_cuda.cpp).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "inr_fast/pe.h"

namespace inr_fast {
namespace {

constexpr int64_t kGrain = 256;  // coordinates per parallel chunk

at::Tensor pe_forward_cpu(const at::Tensor& x_in, int64_t n_freqs) {
  check_coords(x_in, "x");
  check_n_freqs(n_freqs);
  TORCH_CHECK(x_in.device().is_cpu(), "inr_fast: x must be a CPU tensor");
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.size(0);
  at::Tensor out = at::empty({n, pe_features(int(n_freqs))}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pe_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int f = pe_features(int(n_freqs));
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      cpu::pe_forward<scalar_t>(xp + 2 * b, e - b, int(n_freqs), op + b * f);
    });
  });
  return out;
}

at::Tensor pe_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t n_freqs) {
  check_coords(x_in, "x");
  check_n_freqs(n_freqs);
  TORCH_CHECK(x_in.device().is_cpu() && grad_in.device().is_cpu(),
              "inr_fast: grad_out and x must be CPU tensors");
  const int f = pe_features(int(n_freqs));
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == x_in.size(0) && grad_in.size(1) == f,
              "inr_fast: grad_out must have shape (N, ", f, "), got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == x_in.scalar_type(),
              "inr_fast: grad_out and x must have the same dtype");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  const int64_t n = x.size(0);
  at::Tensor gx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pe_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      cpu::pe_backward<scalar_t>(gp + b * f, xp + 2 * b, e - b, int(n_freqs), gxp + 2 * b);
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(inr_fast, CPU, m) {
  m.impl("positional_encoding", &pe_forward_cpu);
  m.impl("positional_encoding_backward", &pe_backward_cpu);
}

}  // namespace inr_fast
