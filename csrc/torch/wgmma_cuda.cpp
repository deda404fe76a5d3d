// The wgmma probe's binding (schema in library.cpp; inr_fast/wgmma_probe.h): checks, then one
// warpgroup on the current stream. CUDA builds only; useful on sm_90 devices with sm_90a code
// (TORCH_CUDA_ARCH_LIST=9.0a, as `make gpu-test` builds), where it checks the emulator's reading of
// wgmma and stmatrix against the hardware (tests/test_wgmma_probe.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "inr_fast/pe.h"
#include "inr_fast/wgmma_probe.h"

namespace inr_fast {
namespace {

void check_operand(const at::Tensor& t, const char* name, int64_t rows, int64_t cols, const at::Tensor& x) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kHalf, "inr_fast: wgmma_probe: ", name,
              " must be a float16 CUDA tensor, got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.device() == x.device(), "inr_fast: wgmma_probe: ", name, " must be on ", x.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, "inr_fast: wgmma_probe: ", name,
              " must have shape (", rows, ", ", cols, "), got ", t.sizes());
}

std::tuple<at::Tensor, at::Tensor> wgmma_probe_cuda(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                                                    const at::Tensor& p, const at::Tensor& q) {
  const int64_t k = cuda::kProbeRows, n = w2.dim() == 2 ? w2.size(0) : -1;
  TORCH_CHECK(cuda::wgmma_probe_width_ok(int(n)), "inr_fast: wgmma_probe: w2 must have 8, 56, 64 or 72 rows, got ",
              w2.sizes());
  check_operand(x, "x", k, k, x);
  check_operand(w1, "w1", k, k, x);
  check_operand(w2, "w2", n, k, x);
  check_operand(p, "p", k, k, x);
  check_operand(q, "q", k, n, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto opts = x.options().dtype(at::kFloat);
  at::Tensor y = at::empty({k, n}, opts), g = at::empty({k, n}, opts);
  at::Tensor status = at::full({1}, -1, x.options().dtype(at::kInt));
  const at::Tensor xc = x.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous(), pc = p.contiguous(),
                   qc = q.contiguous();
  const int err = cuda::wgmma_probe(xc.data_ptr(), w1c.data_ptr(), w2c.data_ptr(), pc.data_ptr(), qc.data_ptr(),
                                    int(n), y.data_ptr<float>(), g.data_ptr<float>(), status.data_ptr<int>(),
                                    c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == 0, "inr_fast: CUDA launch of wgmma_probe failed: ", cuda::error_string(err));
  const int st = status.item<int>();
  TORCH_CHECK(st == 0, "inr_fast: wgmma_probe: ",
              st == 1 ? "this build has no sm_90a code for this device (build with TORCH_CUDA_ARCH_LIST=9.0a "
                        "on an H100/H200)"
                      : "the kernel did not run");
  return {y, g};
}

}  // namespace

TORCH_LIBRARY_IMPL(inr_fast, CUDA, m) { m.impl("wgmma_probe", &wgmma_probe_cuda); }

}  // namespace inr_fast
