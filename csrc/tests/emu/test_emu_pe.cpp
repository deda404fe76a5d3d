// The CUDA positional encoding (csrc/cuda/pe_cuda.cu), run through the emulator, against the CPU
// encoding in float64 (csrc/cpu/pe_cpu.cpp): forward and backward, several sizes (empty, one
// coordinate, partial blocks) and frequency counts, every output written (NaN poison) and bitwise
// the same under three thread schedules.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "inr_emu/prims.h"
#include "inr_fast/pe.h"

using namespace inr_fast;

namespace {

int failures = 0;

// Largest |got - want| / scale over the elements (scale: the size of what float32 rounds).
double worst(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale) {
  double w = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    w = std::max(w, std::fabs(double(got[i]) - want[i]) / scale[i]);
  }
  return w;
}

void run(int64_t n, int n_freqs) {
  const int f = pe_features(n_freqs);
  std::vector<float> x(2 * n), g(n * f);
  unsigned long long s = 88172645463325252ULL + n * 31 + n_freqs;
  auto u = [&] {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return double(s >> 11) / double(1ULL << 53);
  };
  for (auto& v : x) v = float(2 * u() - 1);
  for (auto& v : g) v = float(2 * u() - 1);
  std::vector<double> xd(x.begin(), x.end()), gd(g.begin(), g.end()), out_ref(n * f), gx_ref(2 * n);
  cpu::pe_forward<double>(xd.data(), n, n_freqs, out_ref.data());
  cpu::pe_backward<double>(gd.data(), xd.data(), n, n_freqs, gx_ref.data());
  std::vector<float> out[3], gx[3];
  for (int policy = 0; policy < 3; ++policy) {
    shim::g_policy = policy;
    out[policy].assign(n * f, std::nanf(""));
    gx[policy].assign(2 * n, std::nanf(""));
    const int e1 = cuda::pe_forward_f32(x.data(), n, n_freqs, out[policy].data(), nullptr);
    const int e2 = cuda::pe_backward_f32(g.data(), x.data(), n, n_freqs, gx[policy].data(), nullptr);
    if (e1 || e2) std::printf("  launch error %d %d\n", e1, e2), ++failures;
  }
  const bool same = std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4) == 0 &&
                    std::memcmp(out[0].data(), out[2].data(), out[0].size() * 4) == 0 &&
                    std::memcmp(gx[0].data(), gx[1].data(), gx[0].size() * 4) == 0 &&
                    std::memcmp(gx[0].data(), gx[2].data(), gx[0].size() * 4) == 0;
  // float32 against float64, in units of float32's epsilon: the encoding relative to 1 (its range),
  // the gradient relative to the sum of its terms' magnitudes (4 L + 2 terms up to pi 2^(L-1)).
  std::vector<double> one(n * f, 1.0), terms(2 * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int c = 0; c < 2; ++c) {
      double t = std::fabs(gd[i * f + c]);
      for (int k = 0; k < n_freqs; ++k)
        t += std::ldexp(M_PI, k) * (std::fabs(gd[i * f + 2 + 4 * k + c]) + std::fabs(gd[i * f + 4 + 4 * k + c]));
      terms[2 * i + c] = t;
    }
  const double eps = std::ldexp(1.0, -24);
  const double ef = worst(out[0], out_ref, one) / eps, eb = worst(gx[0], gx_ref, terms) / eps;
  const bool ok = same && ef <= 4 && eb <= 16;
  if (!ok) ++failures;
  std::printf("%s n=%lld L=%d: forward %.2f eps, backward %.2f eps of its terms%s\n", ok ? "ok  " : "FAIL",
              (long long)n, n_freqs, ef, eb,
              same ? "" : " SCHEDULE-DEPENDENT");
}

}  // namespace

int main() {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(300), int64_t(1000)})
    for (int L : {0, 1, 10, 20}) run(n, L);
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
