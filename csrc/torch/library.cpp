// The inr_fast operator library: every schema, declared once (TORCH_LIBRARY), and the Python module
// `inr_fast._C` whose import loads this library. The kernels register per device beside their
// bindings: pe.cpp and mlp.cpp (CPU), pe_cuda.cpp, mlp_cuda.cpp and wgmma_cuda.cpp (CUDA builds only). Python side:
// inr_fast/ops.py (encoding), inr_fast/fused.py (fused MLP): fake kernels and autograd.
#include <Python.h>

#include <torch/library.h>

#include <string>

#include "inr_fast/mlp.h"

TORCH_LIBRARY(inr_fast, m) {
  // Positional encoding: x (N, 2) -> (N, 2 + 4 n_freqs), and its gradient in x.
  m.def("positional_encoding(Tensor x, int n_freqs) -> Tensor");
  m.def("positional_encoding_backward(Tensor grad_out, Tensor x, int n_freqs) -> Tensor");
  // Fused encoding + per-jet MLP. x: (N, 2) coordinates shared by the B jets, or (B, N, 2) per jet
  // (then need_grad_x must be false).
  m.def("pe_mlp_forward(Tensor x, Tensor[] weights, Tensor[] biases, int n_freqs) -> Tensor");
  m.def(
      "pe_mlp_backward(Tensor grad_out, Tensor x, Tensor[] weights, Tensor[] biases, int n_freqs, "
      "bool need_grad_x) -> (Tensor[] grad_weights, Tensor[] grad_biases, Tensor grad_x)");
  m.def(
      "pe_mlp_mse_step(Tensor x, Tensor[] weights, Tensor[] biases, Tensor target, "
      "Tensor? pixel_weight, int n_freqs) -> (Tensor loss, Tensor[] grad_weights, Tensor[] grad_biases)");
  // The wgmma probe (inr_fast/wgmma_probe.h; CUDA builds, sm_90a devices): x, w1 (64, 64), w2 (n, 64),
  // p (64, 64), q (64, n) float16 -> y = half(x w1^T) w2^T, g = p^T q, float32 (64, n).
  m.def("wgmma_probe(Tensor x, Tensor w1, Tensor w2, Tensor p, Tensor q) -> (Tensor y, Tensor g)");
  // The vector code path of the CPU kernel on this machine ("avx512", "avx2" or "generic").
  m.def("pe_mlp_cpu_isa() -> str", [] { return std::string(inr_fast::cpu::mlp_isa()); });
}

// A plain Python module: importing inr_fast._C loads this library, which registers the operators.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "inr_fast kernels", -1,
                                          nullptr, nullptr, nullptr, nullptr, nullptr};
  PyObject* mod = PyModule_Create(&module_def);
  if (mod == nullptr) return nullptr;
#if defined(INR_FAST_WITH_CUDA)
  PyModule_AddIntConstant(mod, "CUDA_BUILT", 1);
#else
  PyModule_AddIntConstant(mod, "CUDA_BUILT", 0);
#endif
  return mod;
}
