// Argument checks and unpacking shared by the CPU and CUDA bindings of the fused PE + MLP operators.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "checks.h"
#include "inr_fast/mlp.h"

namespace inr_fast {

// Checks x (N, 2) or (B, N, 2), weights[l] (B, fan_out, fan_in) and biases[l] (B, fan_out) for the D + 1 layers
// of a supported network on one device and in one dtype; returns the layout (for `out_pad`).
inline MlpLayout check_mlp_args(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                                int64_t n_freqs, int out_pad) {
  TORCH_CHECK((x.dim() == 2 || x.dim() == 3) && x.size(-1) == 2,
              "inr_fast: x must have shape (N, 2) (coordinates shared by the jets) or (B, N, 2) (per jet), got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "inr_fast: x must be float32 or float64, got ", x.scalar_type());
  check_n_freqs(n_freqs);
  TORCH_CHECK(weights.size() == biases.size(), "inr_fast: got ", weights.size(), " weight tensors but ",
              biases.size(), " bias tensors");
  TORCH_CHECK(weights.size() >= 2 && weights.size() <= size_t(kMlpMaxLayers),
              "inr_fast: the fused MLP needs depth + 1 layers with depth in [1, ", kMlpMaxDepth, "], got ",
              weights.size(), " layers");
  TORCH_CHECK(weights[0].dim() == 3, "inr_fast: weights[0] must have shape (B, width, features), got ",
              weights[0].sizes());
  const int64_t width = weights[0].size(1);
  TORCH_CHECK(mlp_width_supported(int(width)), "inr_fast: unsupported width ", width,
              " (the fused MLP supports 16, 32, 64 and 128)");
  const int depth = int(weights.size()) - 1;
  const MlpLayout s = MlpLayout::make(int(n_freqs), int(width), depth, out_pad);
  const int64_t batch = weights[0].size(0);
  TORCH_CHECK(x.dim() == 2 || x.size(0) == batch, "inr_fast: per-jet coordinates x (B, N, 2) must have B = ",
              batch, " (the jets in weights), got ", x.sizes());
  for (int l = 0; l < s.n_layers; ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    TORCH_CHECK(w.dim() == 3 && w.size(0) == batch && w.size(1) == s.fo[l] && w.size(2) == s.fi[l],
                "inr_fast: weights[", l, "] must have shape (", batch, ", ", s.fo[l], ", ", s.fi[l],
                ") for n_freqs=", n_freqs, ", width=", width, ", depth=", depth, "; got ", w.sizes());
    TORCH_CHECK(b.dim() == 2 && b.size(0) == batch && b.size(1) == s.fo[l], "inr_fast: biases[", l,
                "] must have shape (", batch, ", ", s.fo[l], "), got ", b.sizes());
    TORCH_CHECK(w.scalar_type() == x.scalar_type() && b.scalar_type() == x.scalar_type(),
                "inr_fast: weights[", l, "] and biases[", l, "] must have the dtype of x (", x.scalar_type(),
                "), got ", w.scalar_type(), " and ", b.scalar_type());
    TORCH_CHECK(w.device() == x.device() && b.device() == x.device(), "inr_fast: weights[", l,
                "] and biases[", l, "] must be on the device of x (", x.device(), ")");
  }
  return s;
}

// Coordinates per jet N of x (N, 2) or (B, N, 2), and the element stride between jets' coordinates.
inline int64_t n_coords(const at::Tensor& x) { return x.size(-2); }
inline int64_t x_jet_stride(const at::Tensor& x) { return x.dim() == 3 ? 2 * x.size(1) : 0; }

// grad_x is only computed for coordinates shared by the jets.
inline void check_grad_x_allowed(const at::Tensor& x, bool need_grad_x) {
  TORCH_CHECK(!need_grad_x || x.dim() == 2,
              "inr_fast: the gradient with respect to x is computed for shared coordinates (N, 2) only, "
              "not per-jet coordinates ", x.sizes());
}

inline void check_like_output(const at::Tensor& t, const char* name, const at::Tensor& x, int64_t batch) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == batch && t.size(1) == n_coords(x) && t.size(2) == kMlpOut,
              "inr_fast: ", name, " must have shape (B, N, 3) = (", batch, ", ", n_coords(x), ", 3), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "inr_fast: ", name, " must have the dtype of x (",
              x.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), "inr_fast: ", name, " must be on the device of x");
}

inline void check_pixel_weight(const at::Tensor& pw, const at::Tensor& x, int64_t batch) {
  const int64_t n = n_coords(x);
  TORCH_CHECK((pw.dim() == 1 && pw.size(0) == n) || (pw.dim() == 2 && pw.size(0) == batch && pw.size(1) == n),
              "inr_fast: pixel_weight must have shape (N,) or (B, N) = (", batch, ", ", n, "), got ",
              pw.sizes());
  TORCH_CHECK(pw.scalar_type() == x.scalar_type() && pw.device() == x.device(),
              "inr_fast: pixel_weight must have the dtype and device of x");
}

inline std::vector<at::Tensor> contiguous_all(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const at::Tensor& t : ts) out.push_back(t.contiguous());
  return out;
}

inline std::vector<at::Tensor> zeros_like_all(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const at::Tensor& t : ts) out.push_back(at::zeros_like(t, at::MemoryFormat::Contiguous));
  return out;
}

}  // namespace inr_fast
