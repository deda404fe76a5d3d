// C++ unit test of the CPU positional encoding against a direct long-double evaluation.
#include <cmath>
#include <cstdio>
#include <vector>

#include "inr_fast/pe.h"

namespace {

int failures = 0;

void expect_close(double got, double want, double tol, const char* what, int i) {
  if (!(std::fabs(got - want) <= tol)) {
    std::printf("FAIL %s[%d]: got %.12g want %.12g\n", what, i, got, want);
    ++failures;
  }
}

template <typename T>
void check_forward(double tol) {
  const int n_freqs = 10, f = inr_fast::pe_features(n_freqs), n = 37;
  std::vector<T> x(2 * n), out(n * f);
  for (int i = 0; i < 2 * n; ++i) x[i] = T(-1 + 2.0 * ((i * 7919) % 1000) / 999.0);
  inr_fast::cpu::pe_forward<T>(x.data(), n, n_freqs, out.data());
  const long double pi = 3.14159265358979323846264338327950288L;
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < 2; ++c) {
      expect_close(out[i * f + c], x[2 * i + c], 0, "raw", i);
      for (int k = 0; k < n_freqs; ++k) {
        const long double a = std::ldexp(1.0L, k) * pi * (long double)x[2 * i + c];
        expect_close(out[i * f + 2 + 4 * k + c], (double)std::sin(a), tol, "sin", i);
        expect_close(out[i * f + 4 + 4 * k + c], (double)std::cos(a), tol, "cos", i);
      }
    }
  }
}

// Backward against central differences of the forward in double precision.
void check_backward() {
  const int n_freqs = 6, f = inr_fast::pe_features(n_freqs), n = 5;
  std::vector<double> x(2 * n), g(n * f), gx(2 * n), op(n * f), om(n * f);
  for (int i = 0; i < 2 * n; ++i) x[i] = -0.9 + 0.37 * i;
  for (int j = 0; j < n * f; ++j) g[j] = std::cos(0.3 * j);
  inr_fast::cpu::pe_backward<double>(g.data(), x.data(), n, n_freqs, gx.data());
  const double h = 1e-6;
  for (int i = 0; i < 2 * n; ++i) {
    std::vector<double> xp(x), xm(x);
    xp[i] += h;
    xm[i] -= h;
    inr_fast::cpu::pe_forward<double>(xp.data(), n, n_freqs, op.data());
    inr_fast::cpu::pe_forward<double>(xm.data(), n, n_freqs, om.data());
    double num = 0;
    for (int j = 0; j < n * f; ++j) num += g[j] * (op[j] - om[j]) / (2 * h);
    expect_close(gx[i], num, 1e-5 * (1 + std::fabs(num)), "grad_x", i);
  }
}

}  // namespace

int main() {
  check_forward<float>(1e-6);
  check_forward<double>(1e-13);
  check_backward();
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("test_pe: all checks passed\n");
  return 0;
}
