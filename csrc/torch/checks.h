// Argument checks shared by the torch bindings.
#pragma once

#include <ATen/ATen.h>

namespace inr_fast {

inline void check_coords(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 2, "inr_fast: ", name, " must have shape (N, 2), got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "inr_fast: ", name,
              " must be float32 or float64, got ", x.scalar_type());
}

inline void check_n_freqs(int64_t n_freqs) {
  TORCH_CHECK(n_freqs >= 0 && n_freqs <= 20, "inr_fast: n_freqs must be in [0, 20], got ", n_freqs);
}

// The CUDA kernels take float32 tensors on the GPU (float16 is used only inside them).
inline void check_cuda_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "inr_fast: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, "inr_fast: ", name,
              " must be float32 on CUDA (float16 is used only inside the kernels), got ", t.scalar_type());
}

}  // namespace inr_fast
