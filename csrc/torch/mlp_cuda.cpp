// CUDA kernels of the fused PE + MLP operators (schemas in library.cpp): argument checks, device
// guard, current stream, NaN-poisoned outputs (so an element the kernels miss cannot pass a test),
// the launch configuration (inr_fast/mlp_cuda.h), a float32 workspace from the caching allocator,
// and a checked launch (INR_FAST_CUDA_SYNC=1: synchronised). CUDA builds only.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda.h"
#include "inr_fast/pe.h"
#include "mlp_args.h"

namespace inr_fast {
namespace {

using GradTuple = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>, at::Tensor>;
using MseTuple = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<at::Tensor> poisoned_like(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(at::full(t.sizes(), kNaN, t.options()));
  return out;
}

// Whether an MSE step may take the wgmma kernel on x's device: this build has its sm_90a code for the
// device (asked once per device by a one-thread kernel; an H100/H200 with TORCH_CUDA_ARCH_LIST=9.0a)
// and INR_FAST_WGMMA is not 0 (the mma.sync kernel then, e.g. to compare the two).
bool wgmma_usable(const at::Tensor& x) {
  const char* env = std::getenv("INR_FAST_WGMMA");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  static std::mutex mu;
  static std::map<int, bool> known;
  const int dev = x.device().index();
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find(dev);
  if (it != known.end()) return it->second;
  at::Tensor flag = at::zeros({1}, x.options().dtype(at::kInt));
  const int err = cuda::mlp_cuda_wgmma_built(flag.data_ptr<int>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "inr_fast: CUDA launch of the wgmma check failed: ", cuda::error_string(err));
  return known[dev] = flag.item<int>() == 1;
}

// Runs the kernels for problem p (mode and outputs set by the caller).
void run_cuda(MlpProblem<float>& p, const at::Tensor& x, const std::vector<at::Tensor>& w,
              const std::vector<at::Tensor>& b) {
  p.n = n_coords(x);
  p.batch = w[0].size(0);
  p.x = x.data_ptr<float>();
  p.x_jet_stride = x_jet_stride(x);
  for (int l = 0; l < p.layout.n_layers; ++l) {
    p.weights[l] = w[l].data_ptr<float>();
    p.biases[l] = b[l].data_ptr<float>();
  }
  if (p.batch == 0) return;
  // The configuration depends on the shape and the GPU's shared memory only: each jet's coordinates
  // are cut into chunks of a fixed size whatever B, the grid or the SM count, so a jet's gradients do
  // not depend on the other jets of its batch (csrc/README.md, "Work decomposition").
  int sm_count = 0, smem_optin = 0;
  const int qerr = cuda::mlp_cuda_device_limits(&sm_count, &smem_optin);
  TORCH_CHECK(qerr == 0, "inr_fast: querying the CUDA device failed: ", cuda::error_string(qerr));
  const bool wgmma_step = p.mode == MlpMode::kMse && cuda_layout::wgmma_supported(p.layout, true) && wgmma_usable(x);
  const cuda_layout::Config cfg =
      cuda_layout::choose_config(p.layout, p.mode != MlpMode::kForward, smem_optin, wgmma_step);
  TORCH_CHECK(cuda_layout::config_valid(cfg, p.layout.width), "inr_fast: the fused MLP (width ", p.layout.width, ", depth ",
              p.layout.depth, ", n_freqs ", p.layout.n_freqs, ") does not fit this GPU's ", smem_optin,
              " bytes of shared memory per block");
  at::Tensor ws = at::empty({cuda::mlp_cuda_workspace_floats(p, cfg)}, x.options());
  const int err = cuda::mlp_cuda_run(p, cfg, ws.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "inr_fast: CUDA launch of the fused MLP failed: ", cuda::error_string(err));
}

struct Inputs {
  MlpLayout layout;
  at::Tensor x;
  std::vector<at::Tensor> w, b;
};

Inputs prepare(const at::Tensor& x_in, at::TensorList weights, at::TensorList biases, int64_t n_freqs) {
  const MlpLayout s = check_mlp_args(x_in, weights, biases, n_freqs, kMlpOutPadCuda);
  check_cuda_f32(x_in, "x");
  return {s, x_in.contiguous(), contiguous_all(weights), contiguous_all(biases)};
}

at::Tensor forward_cuda(const at::Tensor& x_in, at::TensorList weights, at::TensorList biases,
                        int64_t n_freqs) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  Inputs in = prepare(x_in, weights, biases, n_freqs);
  at::Tensor y = at::full({in.w[0].size(0), n_coords(in.x), kMlpOut}, kNaN, in.x.options());
  MlpProblem<float> p;
  p.mode = MlpMode::kForward;
  p.layout = in.layout;
  p.y = y.data_ptr<float>();
  run_cuda(p, in.x, in.w, in.b);
  return y;
}

GradTuple backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, at::TensorList weights,
                        at::TensorList biases, int64_t n_freqs, bool need_grad_x) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  Inputs in = prepare(x_in, weights, biases, n_freqs);
  check_like_output(grad_in, "grad_out", x_in, in.w[0].size(0));
  check_grad_x_allowed(x_in, need_grad_x);
  const at::Tensor g = grad_in.contiguous();
  auto gw = poisoned_like(in.w), gb = poisoned_like(in.b);
  at::Tensor gx = need_grad_x ? at::full({in.x.size(0), 2}, kNaN, in.x.options())
                              : at::zeros({0, 2}, in.x.options());
  MlpProblem<float> p;
  p.mode = MlpMode::kBackward;
  p.layout = in.layout;
  p.grad_y = g.data_ptr<float>();
  for (int l = 0; l < in.layout.n_layers; ++l) {
    p.grad_w[l] = gw[l].data_ptr<float>();
    p.grad_b[l] = gb[l].data_ptr<float>();
  }
  p.grad_x = need_grad_x ? gx.data_ptr<float>() : nullptr;
  if (need_grad_x && in.x.size(0) > 0 && in.w[0].size(0) == 0) gx.zero_();
  run_cuda(p, in.x, in.w, in.b);
  return {gw, gb, gx};
}

MseTuple mse_step_cuda(const at::Tensor& x_in, at::TensorList weights, at::TensorList biases,
                       const at::Tensor& target_in, const std::optional<at::Tensor>& pixel_weight,
                       int64_t n_freqs) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  Inputs in = prepare(x_in, weights, biases, n_freqs);
  const int64_t batch = in.w[0].size(0);
  check_like_output(target_in, "target", x_in, batch);
  const at::Tensor target = target_in.contiguous();
  at::Tensor pw;
  if (pixel_weight.has_value()) {
    check_pixel_weight(*pixel_weight, x_in, batch);
    pw = pixel_weight->contiguous();
  }
  auto gw = poisoned_like(in.w), gb = poisoned_like(in.b);
  at::Tensor loss = at::full({batch}, kNaN, in.x.options());
  MlpProblem<float> p;
  p.mode = MlpMode::kMse;
  p.layout = in.layout;
  p.target = target.data_ptr<float>();
  if (pw.defined()) {
    p.pixel_weight = pw.data_ptr<float>();
    p.pw_jet_stride = pw.dim() == 2 ? n_coords(in.x) : 0;
  }
  p.loss = loss.data_ptr<float>();
  for (int l = 0; l < in.layout.n_layers; ++l) {
    p.grad_w[l] = gw[l].data_ptr<float>();
    p.grad_b[l] = gb[l].data_ptr<float>();
  }
  run_cuda(p, in.x, in.w, in.b);
  return {loss, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(inr_fast, CUDA, m) {
  m.impl("pe_mlp_forward", &forward_cuda);
  m.impl("pe_mlp_backward", &backward_cuda);
  m.impl("pe_mlp_mse_step", &mse_step_cuda);
}

}  // namespace inr_fast
