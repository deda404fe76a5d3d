// CUDA kernels of the positional-encoding operators (schemas in library.cpp): thin wrappers that
// check arguments, guard the device and launch on the current stream. CUDA builds only.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "inr_fast/pe.h"

namespace inr_fast {
namespace {

void check_launch(int err, const char* what) {
  TORCH_CHECK(err == 0, "inr_fast: CUDA launch of ", what, " failed: ", cuda::error_string(err));
}

at::Tensor pe_forward_cuda(const at::Tensor& x_in, int64_t n_freqs) {
  check_coords(x_in, "x");
  check_n_freqs(n_freqs);
  check_cuda_f32(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty({x.size(0), pe_features(int(n_freqs))}, x.options());
  check_launch(cuda::pe_forward_f32(x.data_ptr<float>(), x.size(0), int(n_freqs),
                                    out.data_ptr<float>(),
                                    c10::cuda::getCurrentCUDAStream().stream()),
               "pe_forward");
  return out;
}

at::Tensor pe_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t n_freqs) {
  check_coords(x_in, "x");
  check_n_freqs(n_freqs);
  check_cuda_f32(x_in, "x");
  check_cuda_f32(grad_in, "grad_out");
  TORCH_CHECK(grad_in.device() == x_in.device(), "inr_fast: grad_out must be on the device of x (", x_in.device(),
              "), got ", grad_in.device());
  const int f = pe_features(int(n_freqs));
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == x_in.size(0) && grad_in.size(1) == f,
              "inr_fast: grad_out must have shape (N, ", f, "), got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  at::Tensor gx = at::empty_like(x);
  check_launch(cuda::pe_backward_f32(g.data_ptr<float>(), x.data_ptr<float>(), x.size(0),
                                     int(n_freqs), gx.data_ptr<float>(),
                                     c10::cuda::getCurrentCUDAStream().stream()),
               "pe_backward");
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(inr_fast, CUDA, m) {
  m.impl("positional_encoding", &pe_forward_cuda);
  m.impl("positional_encoding_backward", &pe_backward_cuda);
}

}  // namespace inr_fast
