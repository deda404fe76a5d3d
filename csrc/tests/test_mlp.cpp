// C++ unit test of the CPU fused PE + MLP kernel against a naive double-precision implementation:
// forward, backward (weights, biases, coordinates) and the MSE step, for several shapes, chunk
// counts (exercising the cross-chunk reduction) and every vector code path this CPU has.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "inr_fast/mlp.h"

namespace {

using inr_fast::MlpLayout;
using inr_fast::MlpMode;
using inr_fast::MlpProblem;

int failures = 0;

struct Rng {
  unsigned long long s;
  double next() {  // uniform in [-1, 1)
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return double(s >> 11) / double(1ULL << 52) - 1.0;
  }
};

struct Case {
  int batch, n, width, depth, n_freqs;
};

struct Naive {
  std::vector<double> y, loss, gx;
  std::vector<std::vector<double>> gw, gb;
};

// Direct evaluation, one coordinate and one jet at a time.
Naive naive(const Case& c, const std::vector<double>& x, const std::vector<std::vector<double>>& w,
            const std::vector<std::vector<double>>& bias, const MlpLayout& s, const std::vector<double>& gy,
            const std::vector<double>* target) {
  const double pi = 3.14159265358979323846;
  Naive r;
  r.y.assign(size_t(c.batch) * c.n * 3, 0);
  r.loss.assign(c.batch, 0);
  r.gx.assign(size_t(c.n) * 2, 0);
  r.gw.resize(s.n_layers);
  r.gb.resize(s.n_layers);
  for (int l = 0; l < s.n_layers; ++l) {
    r.gw[l].assign(size_t(c.batch) * s.fo[l] * s.fi[l], 0);
    r.gb[l].assign(size_t(c.batch) * s.fo[l], 0);
  }
  for (int b = 0; b < c.batch; ++b) {
    for (int n = 0; n < c.n; ++n) {
      std::vector<std::vector<double>> a(s.n_layers + 1);
      a[0].assign(s.fi[0], 0);
      a[0][0] = x[2 * n];
      a[0][1] = x[2 * n + 1];
      for (int k = 0; k < c.n_freqs; ++k)
        for (int ch = 0; ch < 2; ++ch) {
          a[0][2 + 4 * k + ch] = std::sin(std::ldexp(pi, k) * x[2 * n + ch]);
          a[0][4 + 4 * k + ch] = std::cos(std::ldexp(pi, k) * x[2 * n + ch]);
        }
      for (int l = 0; l < s.n_layers; ++l) {
        a[l + 1].assign(s.fo[l], 0);
        for (int o = 0; o < s.fo[l]; ++o) {
          double z = bias[l][size_t(b) * s.fo[l] + o];
          for (int i = 0; i < s.fi[l]; ++i) z += w[l][(size_t(b) * s.fo[l] + o) * s.fi[l] + i] * a[l][i];
          a[l + 1][o] = (l < c.depth && z < 0) ? 0 : z;
        }
      }
      std::vector<double> d(3);
      for (int ch = 0; ch < 3; ++ch) {
        const size_t e = (size_t(b) * c.n + n) * 3 + ch;
        r.y[e] = a[s.n_layers][ch];
        if (target) {
          const double res = r.y[e] - (*target)[e];
          r.loss[b] += res * res / (3.0 * c.n);
          d[ch] = 2 * res / (3.0 * c.n);
        } else {
          d[ch] = gy[e];
        }
      }
      for (int l = s.n_layers - 1; l >= 0; --l) {
        std::vector<double> dp(s.fi[l], 0);
        for (int o = 0; o < s.fo[l]; ++o) {
          r.gb[l][size_t(b) * s.fo[l] + o] += d[o];
          for (int i = 0; i < s.fi[l]; ++i) {
            r.gw[l][(size_t(b) * s.fo[l] + o) * s.fi[l] + i] += d[o] * a[l][i];
            dp[i] += w[l][(size_t(b) * s.fo[l] + o) * s.fi[l] + i] * d[o];
          }
        }
        if (l > 0)
          for (int i = 0; i < s.fi[l]; ++i) dp[i] = a[l][i] > 0 ? dp[i] : 0;
        d = dp;
      }
      for (int ch = 0; ch < 2; ++ch) {
        double g = d[ch];
        for (int k = 0; k < c.n_freqs; ++k) {
          const double f = std::ldexp(pi, k);
          g += f * (d[2 + 4 * k + ch] * std::cos(f * x[2 * n + ch]) - d[4 + 4 * k + ch] * std::sin(f * x[2 * n + ch]));
        }
        r.gx[2 * n + ch] += g;
      }
    }
  }
  return r;
}

template <typename T>
void expect_all_close(const T* got, const std::vector<double>& want, double rtol, const char* what,
                      const char* label) {
  double scale = 0;
  for (double v : want) scale = std::fmax(scale, std::fabs(v));
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= rtol * (scale + 1e-30))) {
      std::printf("FAIL %s %s[%zu]: got %.10g want %.10g (scale %.3g)\n", label, what, i, double(got[i]),
                  want[i], scale);
      ++failures;
      return;
    }
  }
}

template <typename T>
void run_case(const Case& c, int n_chunks, double rtol) {
  const MlpLayout s = MlpLayout::make(c.n_freqs, c.width, c.depth, inr_fast::kMlpOutPadCpu);
  Rng rng{0x1234567ULL + unsigned(c.n) * 31 + unsigned(c.width)};
  std::vector<double> x(size_t(c.n) * 2), gy(size_t(c.batch) * c.n * 3), tg(gy.size());
  for (auto& v : x) v = rng.next();
  for (auto& v : gy) v = rng.next();
  for (auto& v : tg) v = rng.next();
  std::vector<std::vector<double>> w(s.n_layers), bias(s.n_layers);
  for (int l = 0; l < s.n_layers; ++l) {
    const double bound = 1.0 / std::sqrt(double(s.fi[l]));
    w[l].resize(size_t(c.batch) * s.fo[l] * s.fi[l]);
    bias[l].resize(size_t(c.batch) * s.fo[l]);
    for (auto& v : w[l]) v = bound * rng.next();
    for (auto& v : bias[l]) v = bound * rng.next();
  }
  // Round the inputs to T first so the naive evaluation sees exactly what the kernel sees.
  auto to_t = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
  auto back = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
  std::vector<T> xt = to_t(x), gyt = to_t(gy), tgt = to_t(tg);
  x = back(xt);
  gy = back(gyt);
  tg = back(tgt);
  std::vector<std::vector<T>> wt(s.n_layers), bt(s.n_layers), gwt(s.n_layers), gbt(s.n_layers);
  for (int l = 0; l < s.n_layers; ++l) {
    wt[l] = to_t(w[l]);
    bt[l] = to_t(bias[l]);
    w[l] = back(wt[l]);
    bias[l] = back(bt[l]);
  }
  const Naive ref_bw = naive(c, x, w, bias, s, gy, nullptr);
  const Naive ref_mse = naive(c, x, w, bias, s, gy, &tg);

  char label[160];
  std::snprintf(label, sizeof label, "[%s B=%d N=%d W=%d D=%d L=%d chunks=%d isa=%s]",
                sizeof(T) == 4 ? "f32" : "f64", c.batch, c.n, c.width, c.depth, c.n_freqs, n_chunks,
                inr_fast::cpu::mlp_isa());
  auto serial = [](int n, auto&& body) {
    for (int i = n - 1; i >= 0; --i) body(i);  // any order must do
  };
  for (MlpMode mode : {MlpMode::kForward, MlpMode::kBackward, MlpMode::kMse}) {
    MlpProblem<T> p;
    p.mode = mode;
    p.layout = s;
    p.n = c.n;
    p.batch = c.batch;
    p.x = xt.data();
    for (int l = 0; l < s.n_layers; ++l) {
      p.weights[l] = wt[l].data();
      p.biases[l] = bt[l].data();
      gwt[l].assign(w[l].size(), T(0));
      gbt[l].assign(bias[l].size(), T(0));
      p.grad_w[l] = gwt[l].data();
      p.grad_b[l] = gbt[l].data();
    }
    std::vector<T> y(gy.size(), T(NAN)), loss(c.batch, T(0)), gx(x.size(), T(NAN));
    p.y = y.data();
    if (mode == MlpMode::kBackward) {
      p.grad_y = gyt.data();
      p.grad_x = gx.data();
    }
    if (mode == MlpMode::kMse) {
      p.target = tgt.data();
      p.loss = loss.data();
    }
    std::vector<T> ws(size_t(inr_fast::cpu::mlp_workspace_size(p, n_chunks)), T(0));
    inr_fast::cpu::mlp_run<T>(p, n_chunks, ws.data(), serial);
    if (mode == MlpMode::kForward) {
      expect_all_close(y.data(), ref_bw.y, rtol, "y", label);
      continue;
    }
    const Naive& ref = mode == MlpMode::kBackward ? ref_bw : ref_mse;
    for (int l = 0; l < s.n_layers; ++l) {
      expect_all_close(gwt[l].data(), ref.gw[l], rtol, "grad_w", label);
      expect_all_close(gbt[l].data(), ref.gb[l], rtol, "grad_b", label);
    }
    if (mode == MlpMode::kBackward) expect_all_close(gx.data(), ref.gx, rtol, "grad_x", label);
    if (mode == MlpMode::kMse) expect_all_close(loss.data(), ref.loss, rtol, "loss", label);
  }
}

void run_all(double f32_tol) {
  const Case cases[] = {
      {3, 150, 16, 2, 3},   // N not a multiple of the tile
      {2, 40, 32, 1, 0},    // N < tile, no frequencies, D = 1
      {1, 64, 64, 3, 10},   // exactly one tile
      {2, 70, 128, 2, 4},   // W = 128
  };
  for (const Case& c : cases) {
    for (int chunks : {1, 3, 7}) {
      run_case<double>(c, chunks, 1e-11);
      run_case<float>(c, chunks, f32_tol);
    }
  }
}

}  // namespace

int main() {
  // Every code path this CPU supports: the best one, then capped to AVX2, then generic.
  run_all(2e-5);
  setenv("INR_FAST_CPU_ISA", "avx2", 1);
  run_all(2e-5);
  setenv("INR_FAST_CPU_ISA", "generic", 1);
  run_all(2e-5);
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("test_mlp: all checks passed\n");
  return 0;
}
