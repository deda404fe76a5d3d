// CPU positional encoding: the executable specification of csrc/cuda/pe_cuda.cu.
#include <cmath>

#include "inr_fast/pe.h"

namespace inr_fast {
namespace cpu {

namespace {
template <typename T>
constexpr T kPi = T(3.14159265358979323846264338327950288);
}

template <typename T>
void pe_forward(const T* x, int64_t n, int n_freqs, T* out) {
  const int f = pe_features(n_freqs);
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + 2 * i;
    T* o = out + i * f;
    o[0] = xi[0];
    o[1] = xi[1];
    T scale = T(1);
    for (int k = 0; k < n_freqs; ++k, scale *= T(2)) {
      for (int c = 0; c < 2; ++c) {
        const T r = reduce_period2(scale * xi[c]);
        o[2 + 4 * k + c] = std::sin(kPi<T> * r);
        o[4 + 4 * k + c] = std::cos(kPi<T> * r);
      }
    }
  }
}

template <typename T>
void pe_backward(const T* grad_out, const T* x, int64_t n, int n_freqs, T* grad_x) {
  const int f = pe_features(n_freqs);
  for (int64_t i = 0; i < n; ++i) {
    const T* xi = x + 2 * i;
    const T* g = grad_out + i * f;
    for (int c = 0; c < 2; ++c) {
      T acc = g[c];
      T scale = T(1);
      for (int k = 0; k < n_freqs; ++k, scale *= T(2)) {
        const T r = reduce_period2(scale * xi[c]);
        const T w = kPi<T> * scale;
        acc += g[2 + 4 * k + c] * w * std::cos(kPi<T> * r);
        acc -= g[4 + 4 * k + c] * w * std::sin(kPi<T> * r);
      }
      grad_x[2 * i + c] = acc;
    }
  }
}

template void pe_forward<float>(const float*, int64_t, int, float*);
template void pe_forward<double>(const double*, int64_t, int, double*);
template void pe_backward<float>(const float*, const float*, int64_t, int, float*);
template void pe_backward<double>(const double*, const double*, int64_t, int, double*);

}  // namespace cpu
}  // namespace inr_fast
