// CPU kernels (float32, float64) of the fused positional encoding + per-jet MLP operators (schemas in
// library.cpp; CUDA: mlp_cuda.cpp). Python side: inr_fast/fused.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "inr_fast/mlp.h"
#include "mlp_args.h"

namespace inr_fast {
namespace {

using GradTuple = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor>;
using MseTuple = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "inr_fast: x must be a CPU tensor for the CPU kernel");
}

// Fills the problem's parameter pointers and runs the chunks on ATen's thread pool.
template <typename T>
void run_cpu(MlpProblem<T>& p, const at::Tensor& x, const std::vector<at::Tensor>& w,
             const std::vector<at::Tensor>& b) {
  p.n = n_coords(x);
  p.batch = w[0].size(0);
  p.x = x.data_ptr<T>();
  p.x_jet_stride = x_jet_stride(x);
  for (int l = 0; l < p.layout.n_layers; ++l) {
    p.weights[l] = w[l].data_ptr<T>();
    p.biases[l] = b[l].data_ptr<T>();
  }
  const int64_t items = p.batch * ((p.n + kMlpTile - 1) / kMlpTile);
  if (items == 0) return;
  const int n_chunks = int(std::max<int64_t>(1, std::min<int64_t>(items, at::get_num_threads())));
  at::Tensor ws = at::zeros({cpu::mlp_workspace_size(p, n_chunks)}, x.options());
  T* wsp = ws.data_ptr<T>();
  at::parallel_for(0, n_chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) cpu::mlp_chunk<T>(p, int(c), n_chunks, wsp);
  });
  cpu::mlp_reduce<T>(p, n_chunks, wsp);
}

at::Tensor forward_cpu(const at::Tensor& x_in, at::TensorList weights, at::TensorList biases,
                       int64_t n_freqs) {
  const MlpLayout s = check_mlp_args(x_in, weights, biases, n_freqs, kMlpOutPadCpu);
  check_cpu(x_in);
  const at::Tensor x = x_in.contiguous();
  const auto w = contiguous_all(weights), b = contiguous_all(biases);
  at::Tensor y = at::empty({w[0].size(0), n_coords(x), kMlpOut}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pe_mlp_forward_cpu", [&] {
    MlpProblem<scalar_t> p;
    p.mode = MlpMode::kForward;
    p.layout = s;
    p.y = y.data_ptr<scalar_t>();
    run_cpu(p, x, w, b);
  });
  return y;
}

GradTuple backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, at::TensorList weights,
                       at::TensorList biases, int64_t n_freqs, bool need_grad_x) {
  const MlpLayout s = check_mlp_args(x_in, weights, biases, n_freqs, kMlpOutPadCpu);
  check_cpu(x_in);
  check_like_output(grad_in, "grad_out", x_in, weights[0].size(0));
  check_grad_x_allowed(x_in, need_grad_x);
  const at::Tensor x = x_in.contiguous(), g = grad_in.contiguous();
  const auto w = contiguous_all(weights), b = contiguous_all(biases);
  auto gw = zeros_like_all(w), gb = zeros_like_all(b);
  at::Tensor gx = at::zeros({need_grad_x ? x.size(0) : 0, 2}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pe_mlp_backward_cpu", [&] {
    MlpProblem<scalar_t> p;
    p.mode = MlpMode::kBackward;
    p.layout = s;
    p.grad_y = g.data_ptr<scalar_t>();
    for (int l = 0; l < s.n_layers; ++l) {
      p.grad_w[l] = gw[l].data_ptr<scalar_t>();
      p.grad_b[l] = gb[l].data_ptr<scalar_t>();
    }
    p.grad_x = need_grad_x ? gx.data_ptr<scalar_t>() : nullptr;
    run_cpu(p, x, w, b);
  });
  return {gw, gb, gx};
}

MseTuple mse_step_cpu(const at::Tensor& x_in, at::TensorList weights, at::TensorList biases,
                      const at::Tensor& target_in, const std::optional<at::Tensor>& pixel_weight,
                      int64_t n_freqs) {
  const MlpLayout s = check_mlp_args(x_in, weights, biases, n_freqs, kMlpOutPadCpu);
  check_cpu(x_in);
  const int64_t batch = weights[0].size(0);
  check_like_output(target_in, "target", x_in, batch);
  at::Tensor pw;
  if (pixel_weight.has_value()) {
    check_pixel_weight(*pixel_weight, x_in, batch);
    pw = pixel_weight->contiguous();
  }
  const at::Tensor x = x_in.contiguous(), target = target_in.contiguous();
  const auto w = contiguous_all(weights), b = contiguous_all(biases);
  auto gw = zeros_like_all(w), gb = zeros_like_all(b);
  at::Tensor loss = at::zeros({batch}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pe_mlp_mse_step_cpu", [&] {
    MlpProblem<scalar_t> p;
    p.mode = MlpMode::kMse;
    p.layout = s;
    p.target = target.data_ptr<scalar_t>();
    if (pw.defined()) {
      p.pixel_weight = pw.data_ptr<scalar_t>();
      p.pw_jet_stride = pw.dim() == 2 ? n_coords(x) : 0;
    }
    p.loss = loss.data_ptr<scalar_t>();
    for (int l = 0; l < s.n_layers; ++l) {
      p.grad_w[l] = gw[l].data_ptr<scalar_t>();
      p.grad_b[l] = gb[l].data_ptr<scalar_t>();
    }
    run_cpu(p, x, w, b);
  });
  return {loss, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(inr_fast, CPU, m) {
  m.impl("pe_mlp_forward", &forward_cpu);
  m.impl("pe_mlp_backward", &backward_cpu);
  m.impl("pe_mlp_mse_step", &mse_step_cpu);
}

}  // namespace inr_fast
