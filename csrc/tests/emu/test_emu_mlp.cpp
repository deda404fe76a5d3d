// The CUDA fused PE + MLP (csrc/cuda/mlp_cuda.cu), run on the CPU through the emulator, against:
//  - the CPU kernel in float64 (csrc/cpu/mlp_cpu.cpp, the executable specification);
//  - in the float16 build, a naive float64 reference that rounds to float16 at the kernel's points
//    (NaiveReference below; the same rules as inr_fast/half_reference.py, csrc/README.md).
// Built twice by CMake: INR_EMU_HALF_IS_FLOAT ("logic": float storage, the kernel's exact algorithm,
// must equal the CPU kernel to 1e-6) and float16 (the numerics); a third build adds ASan/UBSan.
// Every case also checks that every output is written (NaN-poisoned) and finite, and that the result
// is bitwise the same under three thread schedules, two grid sizes and alone vs in a batch.
//
// Usage: test_emu_mlp [fast|slow|asan] [--only I]          (default: fast)
//        test_emu_mlp case B N W D L mode [warps chunk_tiles gx] (one case: mode 0 forward,
//                                                             1 backward (grad_x unless gx = 0), 2 MSE)
//        test_emu_mlp counters W D L N [warps]               (one MSE step, B = 1: the counters;
//                                                             warps 0: the binding's configuration)
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "inr_emu/prims.h"
#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda.h"

using namespace inr_fast;
namespace cl = inr_fast::cuda_layout;

#if defined(INR_EMU_HALF_IS_FLOAT)
constexpr bool kHalf = false;
#else
constexpr bool kHalf = true;
#endif

namespace {

struct Rng {
  unsigned long long s;
  double u() {  // [0, 1)
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return double(s >> 11) / double(1ULL << 53);
  }
  double normal() {
    const double u1 = u() + 1e-300, u2 = u();
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
  }
};

struct Case {
  const char* name;
  int B, N, W, D, L;
  MlpMode mode;
  bool per_jet_x = false;
  int pw = 0;          // pixel weights: 0 none, 1 (N,), 2 (B, N)
  bool gx = false;     // backward: grad_x
  int warps = 8;         // 0: the binding's choice on an H100/H200 (cuda_layout::choose_config)
  bool smem_w = true;
  int chunk_tiles = 64;  // chunk = chunk_tiles tiles (warps = 0: cuda_layout::kChunkCoords)
  double wscale = 1.0;   // multiplies the first layer's weights and biases (range tests)
  double tscale = 1.0;   // multiplies targets / grad_y (range tests)
  bool he_init = false;  // He-uniform weights, biases U(-0.1, 0.1) (else nn.Linear's default)
  bool wgmma = false;    // the wgmma kernel (warps, smem_w ignored); with warps = 0: the binding on an H100/H200
};

// Everything one call produces, in float64.
struct Out {
  std::vector<double> y, loss, gx;
  std::vector<std::vector<double>> gw, gb;
};

struct Problem {
  Case c;
  MlpLayout cpu_layout, cuda_layout;
  std::vector<double> x, tgt, pw;  // values exactly representable in float32
  std::vector<std::vector<double>> w, b;
};

double f32(double v) { return double(float(v)); }

Problem make_problem(const Case& c, unsigned seed) {
  Problem P;
  P.c = c;
  P.cpu_layout = MlpLayout::make(c.L, c.W, c.D, kMlpOutPadCpu);
  P.cuda_layout = MlpLayout::make(c.L, c.W, c.D, kMlpOutPadCuda);
  Rng g{0x9e3779b97f4a7c15ULL ^ (unsigned long long)seed * 0x2545F4914F6CDD1DULL};
  for (int i = 0; i < 7; ++i) g.u();
  const int64_t nx = (c.per_jet_x ? int64_t(c.B) : 1) * c.N * 2;
  P.x.resize(nx);
  for (auto& v : P.x) v = f32(2 * g.u() - 1);
  P.tgt.resize(size_t(c.B) * c.N * 3);
  for (auto& v : P.tgt) v = f32(c.tscale * (c.mode == MlpMode::kBackward ? g.normal() : g.u()));
  if (c.pw) {
    P.pw.resize(size_t(c.pw == 2 ? c.B : 1) * c.N);
    for (auto& v : P.pw) v = f32(g.u());
  }
  const MlpLayout& s = P.cpu_layout;
  P.w.resize(s.n_layers), P.b.resize(s.n_layers);
  for (int l = 0; l < s.n_layers; ++l) {
    const double a = c.he_init ? std::sqrt(6.0 / s.fi[l]) : 1.0 / std::sqrt(double(s.fi[l]));
    const double ab = c.he_init ? 0.1 : a;
    const double k = l == 0 ? c.wscale : 1.0;
    P.w[l].resize(size_t(c.B) * s.fo[l] * s.fi[l]);
    P.b[l].resize(size_t(c.B) * s.fo[l]);
    for (auto& v : P.w[l]) v = f32(k * a * (2 * g.u() - 1));
    for (auto& v : P.b[l]) v = f32(k * ab * (2 * g.u() - 1));
  }
  return P;
}

// One jet of a problem, as a problem of its own (B = 1).
Problem jet_of(const Problem& P, int j) {
  Problem Q = P;
  const Case& c = P.c;
  Q.c.B = 1;
  if (c.per_jet_x) Q.x.assign(P.x.begin() + int64_t(j) * c.N * 2, P.x.begin() + int64_t(j + 1) * c.N * 2);
  Q.tgt.assign(P.tgt.begin() + int64_t(j) * c.N * 3, P.tgt.begin() + int64_t(j + 1) * c.N * 3);
  if (c.pw == 2) Q.pw.assign(P.pw.begin() + int64_t(j) * c.N, P.pw.begin() + int64_t(j + 1) * c.N);
  const MlpLayout& s = P.cpu_layout;
  for (int l = 0; l < s.n_layers; ++l) {
    const int64_t nw = int64_t(s.fo[l]) * s.fi[l];
    Q.w[l].assign(P.w[l].begin() + j * nw, P.w[l].begin() + (j + 1) * nw);
    Q.b[l].assign(P.b[l].begin() + j * s.fo[l], P.b[l].begin() + (j + 1) * s.fo[l]);
  }
  return Q;
}

// Fills the inputs of an MlpProblem<T> from P (T-typed copies kept alive in `keep`).
template <typename T>
struct Bound {
  std::vector<T> x, tgt, pw, y, loss, gx;
  std::vector<std::vector<T>> w, b, gw, gb;
  MlpProblem<T> p;
  Bound(const Problem& P, const MlpLayout& layout, T init) {
    const Case& c = P.c;
    auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
    x = cast(P.x), tgt = cast(P.tgt), pw = cast(P.pw);
    y.assign(size_t(c.B) * c.N * 3, init);
    loss.assign(c.B, init);
    gx.assign(size_t(c.N) * 2, init);
    const int L = layout.n_layers;
    w.resize(L), b.resize(L), gw.resize(L), gb.resize(L);
    p.mode = c.mode;
    p.layout = layout;
    p.n = c.N;
    p.batch = c.B;
    p.x = x.data();
    p.x_jet_stride = c.per_jet_x ? 2 * c.N : 0;
    for (int l = 0; l < L; ++l) {
      w[l] = cast(P.w[l]), b[l] = cast(P.b[l]);
      gw[l].assign(w[l].size(), init), gb[l].assign(b[l].size(), init);
      p.weights[l] = w[l].data(), p.biases[l] = b[l].data();
    }
    if (c.mode == MlpMode::kForward) p.y = y.data();
    if (c.mode == MlpMode::kBackward) {
      p.grad_y = tgt.data();
      if (c.gx) p.grad_x = gx.data();
    }
    if (c.mode == MlpMode::kMse) {
      p.target = tgt.data();
      p.loss = loss.data();
      if (c.pw) p.pixel_weight = pw.data(), p.pw_jet_stride = c.pw == 2 ? c.N : 0;
    }
    if (c.mode != MlpMode::kForward)
      for (int l = 0; l < L; ++l) p.grad_w[l] = gw[l].data(), p.grad_b[l] = gb[l].data();
  }
  Out out() const {
    auto d = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
    Out o;
    o.y = d(y), o.loss = d(loss), o.gx = d(gx);
    for (size_t l = 0; l < gw.size(); ++l) o.gw.push_back(d(gw[l])), o.gb.push_back(d(gb[l]));
    return o;
  }
};

Out run_cpu(const Problem& P) {
  Bound<double> B(P, P.cpu_layout, 0.0);
  std::vector<double> ws(cpu::mlp_workspace_size(B.p, 1) + 1, 0.0);
  cpu::mlp_chunk<double>(B.p, 0, 1, ws.data());
  cpu::mlp_reduce<double>(B.p, 1, ws.data());
  return B.out();
}

constexpr int64_t kRealSmemOptin = 227 * 1024;  // H100 / H200

cl::Config config_of(const Case& c, int max_blocks) {
  cl::Config cfg;
  if (c.warps == 0) {
    const MlpLayout s = MlpLayout::make(c.L, c.W, c.D, kMlpOutPadCuda);
    cfg = cl::choose_config(s, c.mode != MlpMode::kForward, kRealSmemOptin, c.wgmma && c.mode == MlpMode::kMse);
  } else if (c.wgmma) {
    cfg.warps = 4;
    cfg.wgmma = true;
    cfg.chunk_coords = int64_t(c.chunk_tiles) * cl::kWgTile;
  } else {
    cfg.warps = c.warps;
    cfg.smem_weights = c.smem_w;
    cfg.chunk_coords = int64_t(c.chunk_tiles) * cl::tile(cfg, c.W);
  }
  cfg.max_blocks = max_blocks;
  return cfg;
}

int g_failures = 0;

Out run_emulated(const Problem& P, int policy, int max_blocks) {
  shim::g_policy = policy;
  shim::g_seed = 12345u + unsigned(policy);
  Bound<float> B(P, P.cuda_layout, std::nanf(""));
  const cl::Config cfg = config_of(P.c, max_blocks);
  const int64_t wsf = cuda::mlp_cuda_workspace_floats(B.p, cfg);
  float* ws = static_cast<float*>(::operator new(size_t(wsf) * 4 + 4, std::align_val_t(256)));
  std::memset(ws, 0xff, size_t(wsf) * 4);  // like uninitialised device memory (NaN)
  const int rc = cuda::mlp_cuda_run(B.p, cfg, ws, nullptr);
  ::operator delete(ws, std::align_val_t(256));
  if (rc != 0) {
    std::printf("  mlp_cuda_run returned %d\n", rc);
    ++g_failures;
  }
  return B.out();
}

// ------------------------------------------------------------------------------------------ half reference
// float16 rounding: storage (weights, encoding: true float16) and the kernel's scaled conversion of
// activations and deltas (float16 significand, unbounded exponent).
double store_half(double v) { return double(static_cast<_Float16>(static_cast<float>(v))); }
double round_half(double v) {
  if (v == 0 || !std::isfinite(v)) return v;
  int e;
  const double m = std::frexp(v, &e);
  return std::ldexp(std::nearbyint(m * 2048.0) / 2048.0, e);
}

// A ReLU of (jet b, coordinate n, layer l, unit o): one whose mask is inverted, or whose
// pre-activation lies within float32 rounding of zero (|z| <= 2^-22 of the sum of its terms'
// magnitudes), which float32 arithmetic may put on either side.
struct Relu {
  int b, n, l, o;
};

// The network in float64, one coordinate at a time: with `half`, rounded to float16 at the kernel's
// points (weights and encoding stored as float16; activations and deltas with float16's significand
// and an unbounded exponent, as the kernel's per-tile power-of-two scaling gives); without, the plain
// float64 network (the CPU kernel's float64 results).
struct NaiveReference {
  const Problem& P;
  bool half;
  std::vector<std::vector<std::vector<double>>> W;  // [jet][layer] weights as the kernel uses them

  NaiveReference(const Problem& p, bool h) : P(p), half(h) {
    const MlpLayout& s = P.cpu_layout;
    W.resize(P.c.B);
    for (int b = 0; b < P.c.B; ++b) {
      W[b].resize(s.n_layers);
      for (int l = 0; l < s.n_layers; ++l) {
        const size_t sz = size_t(s.fo[l]) * s.fi[l];
        W[b][l].resize(sz);
        for (size_t e = 0; e < sz; ++e) W[b][l][e] = store(P.w[l][b * sz + e]);
      }
    }
  }
  double store(double v) const { return half ? store_half(v) : v; }
  double rnd(double v) const { return half ? round_half(v) : v; }

  Out zeros() const {
    const Case& c = P.c;
    Out o;
    o.y.assign(size_t(c.B) * c.N * 3, 0.0);
    o.loss.assign(c.B, 0.0);
    o.gx.assign(size_t(c.N) * 2, 0.0);
    for (int l = 0; l < P.cpu_layout.n_layers; ++l) {
      o.gw.push_back(std::vector<double>(P.w[l].size(), 0.0));
      o.gb.push_back(std::vector<double>(P.b[l].size(), 0.0));
    }
    return o;
  }

  // Adds sign x the contributions of coordinate n of jet b to o, with the masks of `flips` inverted;
  // collects its ReLUs within float32 rounding of zero into `ambiguous`.
  void add(int b, int n, const std::vector<Relu>& flips, double sign, Out& o,
           std::vector<Relu>* ambiguous = nullptr) const {
    const Case& c = P.c;
    const MlpLayout& s = P.cpu_layout;
    const int L = s.n_layers, F = s.fi[0];
    const std::vector<std::vector<double>>& Wb = W[b];
    std::vector<std::vector<double>> a(L);  // a[l]: input of layer l
    const double* xn = P.x.data() + (c.per_jet_x ? int64_t(b) * c.N * 2 : 0) + 2 * n;
    a[0].assign(F, 0.0);
    a[0][0] = store(xn[0]), a[0][1] = store(xn[1]);
    for (int k = 0; k < c.L; ++k)
      for (int cc = 0; cc < 2; ++cc) {
        const double r = reduce_period2(std::ldexp(xn[cc], k));
        a[0][2 + 4 * k + cc] = store(std::sin(M_PI * r));
        a[0][4 + 4 * k + cc] = store(std::cos(M_PI * r));
      }
    std::vector<double> z;
    for (int l = 0; l < L; ++l) {
      z.assign(s.fo[l], 0.0);
      for (int oo = 0; oo < s.fo[l]; ++oo) {
        double acc = P.b[l][int64_t(b) * s.fo[l] + oo], mag = std::fabs(acc);
        for (int i = 0; i < s.fi[l]; ++i) {
          acc += Wb[l][size_t(oo) * s.fi[l] + i] * a[l][i];
          mag += std::fabs(Wb[l][size_t(oo) * s.fi[l] + i] * a[l][i]);
        }
        z[oo] = acc;
        if (ambiguous && l + 1 < L && std::fabs(acc) <= std::ldexp(mag, -22)) ambiguous->push_back({b, n, l, oo});
      }
      if (l + 1 < L) {
        a[l + 1].resize(s.fo[l]);
        for (int oo = 0; oo < s.fo[l]; ++oo) {
          bool on = z[oo] > 0;
          for (const Relu& r : flips) on ^= r.b == b && r.n == n && r.l == l && r.o == oo;
          a[l + 1][oo] = on ? rnd(z[oo]) : 0.0;
        }
      }
    }
    const int64_t row = (int64_t(b) * c.N + n) * 3;
    if (c.mode == MlpMode::kForward) {
      for (int cc = 0; cc < 3; ++cc) o.y[row + cc] += sign * z[cc];
      return;
    }
    std::vector<double> d(3, 0.0), dn, dh;
    for (int cc = 0; cc < 3; ++cc) {
      if (c.mode == MlpMode::kBackward) {
        d[cc] = P.tgt[row + cc];
      } else {
        const double w = c.pw ? P.pw[(c.pw == 2 ? int64_t(b) * c.N : 0) + n] : 1.0;
        const double r = z[cc] - P.tgt[row + cc];
        d[cc] = 2 * w * r / (3.0 * c.N);
        o.loss[b] += sign * w * r * r / (3.0 * c.N);
      }
    }
    for (int l = L - 1; l >= 0; --l) {
      const int fo = s.fo[l], fi = s.fi[l];
      dh.assign(fo, 0.0);
      for (int oo = 0; oo < fo; ++oo) {
        o.gb[l][int64_t(b) * fo + oo] += sign * d[oo];
        dh[oo] = rnd(d[oo]);
        for (int i = 0; i < fi; ++i) o.gw[l][(int64_t(b) * fo + oo) * fi + i] += sign * dh[oo] * a[l][i];
      }
      if (l == 0 && !(c.mode == MlpMode::kBackward && c.gx)) break;
      dn.assign(fi, 0.0);
      for (int i = 0; i < fi; ++i) {
        double acc = 0;
        for (int oo = 0; oo < fo; ++oo) acc += Wb[l][size_t(oo) * fi + i] * dh[oo];
        dn[i] = (l == 0 || a[l][i] != 0) ? acc : 0.0;
      }
      if (l > 0) {
        d = dn;
        continue;
      }
      for (int cc = 0; cc < 2; ++cc) {
        double acc = dn[cc];
        for (int k = 0; k < c.L; ++k) {
          const double r = reduce_period2(std::ldexp(xn[cc], k));
          acc += std::ldexp(M_PI, k) * (dn[2 + 4 * k + cc] * std::cos(M_PI * r) - dn[4 + 4 * k + cc] * std::sin(M_PI * r));
        }
        o.gx[2 * int64_t(n) + cc] += sign * acc;
      }
    }
  }

  Out run(std::vector<Relu>* ambiguous = nullptr) const {
    Out o = zeros();
    for (int b = 0; b < P.c.B; ++b)
      for (int n = 0; n < P.c.N; ++n) add(b, n, {}, 1.0, o, ambiguous);
    return o;
  }
};

// ------------------------------------------------------------------------------------------ comparison
double norm_rel(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - r[i]) * (a[i] - r[i]), den += r[i] * r[i];
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

bool all_finite(const std::vector<double>& a) {
  for (double v : a)
    if (!std::isfinite(v)) return false;
  return true;
}

// The tensors a mode produces, with names.
std::vector<std::pair<std::string, const std::vector<double>*>> tensors(const Out& o, const Case& c, int n_layers) {
  std::vector<std::pair<std::string, const std::vector<double>*>> t;
  if (c.mode == MlpMode::kForward) t.push_back({"y", &o.y});
  if (c.mode != MlpMode::kForward)
    for (int l = 0; l < n_layers; ++l) {
      t.push_back({"gW" + std::to_string(l), &o.gw[l]});
      t.push_back({"gb" + std::to_string(l), &o.gb[l]});
    }
  if (c.mode == MlpMode::kMse) t.push_back({"loss", &o.loss});
  if (c.mode == MlpMode::kBackward && c.gx) t.push_back({"gx", &o.gx});
  return t;
}

bool bitwise_equal(const Out& a, const Out& b, const Case& c, int n_layers) {
  auto ta = tensors(a, c, n_layers), tb = tensors(b, c, n_layers);
  for (size_t i = 0; i < ta.size(); ++i)
    if (std::memcmp(ta[i].second->data(), tb[i].second->data(), ta[i].second->size() * 8) != 0) return false;
  return true;
}

// Tolerances (csrc/README.md, "CUDA numerics"): logic build vs the CPU kernel in float64: 1e-6 (up to
// the masks of ReLUs within float32 rounding of zero, see run_case); float16 build vs the float16
// reference: 1e-3; float16 build vs float64: at most 1.5x the float16 reference's own deviation from
// float64 plus 1e-3 (the error the float16 design predicts for these very inputs).
constexpr double kTolLogic = 1e-6;
constexpr double kTolHalfRef = 1e-3;
constexpr double kHalfVsFloatFactor = 1.5, kHalfVsFloatSlack = 1e-3;

void run_case(int index, const Case& c, bool full_checks) {
  const Problem P = make_problem(c, unsigned(index) + 1);
  // Only configurations a real H100/H200 can launch (float16 shared-memory sizes, 227 KB).
  const int64_t smem16 = cl::kernel_smem_bytes(P.cuda_layout, config_of(c, 0), c.mode != MlpMode::kForward, 2);
  if (smem16 > kRealSmemOptin) {
    std::printf("FAIL [%2d] %s: %lld bytes of shared memory, more than a GPU allows\n", index, c.name,
                (long long)smem16);
    ++g_failures;
    return;
  }
  const int L = P.cpu_layout.n_layers;
  const auto t0 = std::chrono::steady_clock::now();
  const Out ref = run_cpu(P);
  const Out emu = run_emulated(P, shim::kAscending, 0);
  bool ok = true;
  std::string why;
  // determinism: schedules, grid size, batch membership
  if (full_checks) {
    const Out desc = run_emulated(P, shim::kDescending, 0);
    const Out rnd = run_emulated(P, shim::kRandom, 3);
    if (!bitwise_equal(emu, desc, c, L) || !bitwise_equal(emu, rnd, c, L)) ok = false, why += " SCHEDULE/GRID-DEPENDENT";
    if (c.B > 1 && !(c.mode == MlpMode::kBackward && c.gx)) {  // grad_x sums over jets
      const int j = c.B - 1;
      const Problem Q = jet_of(P, j);
      const Out one = run_emulated(Q, shim::kAscending, 0);
      const MlpLayout& s = P.cpu_layout;
      bool same = true;
      if (c.mode == MlpMode::kForward)
        same = std::memcmp(one.y.data(), emu.y.data() + int64_t(j) * c.N * 3, size_t(c.N) * 3 * 8) == 0;
      else
        for (int l = 0; l < L; ++l) {
          const int64_t nw = int64_t(s.fo[l]) * s.fi[l];
          same = same && std::memcmp(one.gw[l].data(), emu.gw[l].data() + j * nw, size_t(nw) * 8) == 0;
          same = same && std::memcmp(one.gb[l].data(), emu.gb[l].data() + j * s.fo[l], size_t(s.fo[l]) * 8) == 0;
        }
      if (!same) ok = false, why += " BATCH-DEPENDENT";
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Out href;
  if (kHalf) href = NaiveReference(P, true).run();
  double worst = 0, worst_ref = 0;
  std::string detail;
  auto te = tensors(emu, c, L), tr = tensors(ref, c, L);
  std::vector<std::pair<std::string, const std::vector<double>*>> th;
  if (kHalf) th = tensors(href, c, L);
  for (size_t i = 0; i < te.size(); ++i)
    if (!all_finite(*te[i].second)) ok = false, why += " NON-FINITE/UNWRITTEN(" + te[i].first + ")";
  if (!kHalf) {
    // The float64 network decides a ReLU whose pre-activation lies within float32 rounding of zero
    // one way; float32 arithmetic may decide it the other (one such flip moves a random-sign gradient
    // sum by ~1e-3 at N = 15,625). Each such ReLU is re-decided (greedily, one coordinate's
    // contribution recomputed) where that brings the float64 network closer to the kernel; the kernel
    // must then match it to 1e-6.
    const NaiveReference nr(P, false);
    std::vector<Relu> amb, flips;
    Out cur = nr.run(&amb);
    auto dist = [&](const Out& r) {
      auto t = tensors(r, c, L);
      std::vector<double> e;
      for (size_t i = 0; i < te.size(); ++i) e.push_back(norm_rel(*te[i].second, *t[i].second));
      return e;
    };
    auto maxof = [](const std::vector<double>& e) { return *std::max_element(e.begin(), e.end()); };
    std::vector<double> best = dist(cur);
    for (const Relu& r : amb) {
      std::vector<Relu> same_row, with;
      for (const Relu& f : flips)
        if (f.b == r.b && f.n == r.n) same_row.push_back(f);
      with = same_row;
      with.push_back(r);
      Out cand = cur;
      nr.add(r.b, r.n, same_row, -1.0, cand);
      nr.add(r.b, r.n, with, 1.0, cand);
      const std::vector<double> e = dist(cand);
      if (maxof(e) < maxof(best)) cur = cand, best = e, flips.push_back(r);
    }
    for (size_t i = 0; i < te.size(); ++i) {
      worst = std::max(worst, best[i]);
      if (best[i] > kTolLogic) ok = false, why += " " + te[i].first;
      char buf[96];
      std::snprintf(buf, sizeof buf, " %s:%.1e", te[i].first.c_str(), best[i]);
      detail += buf;
    }
    if (!amb.empty())
      why += " (" + std::to_string(amb.size()) + " ReLUs within float32 rounding of 0, " + std::to_string(flips.size()) +
             " decided the other way)";
  } else {
    for (size_t i = 0; i < te.size(); ++i) {
      const auto& [name, a] = te[i];
      const double e = norm_rel(*a, *tr[i].second);
      const double eh = norm_rel(*a, *th[i].second);               // vs the float16 reference
      const double eref = norm_rel(*th[i].second, *tr[i].second);  // the design's own error
      const double tol = kHalfVsFloatFactor * eref + kHalfVsFloatSlack;
      worst = std::max(worst, eh);
      worst_ref = std::max(worst_ref, e);
      if (eh > kTolHalfRef) ok = false, why += " " + name + "(vs half ref)";
      if (e > tol) ok = false, why += " " + name + "(vs float64)";
      char buf[160];
      std::snprintf(buf, sizeof buf, " %s:%.1e/%.1e/%.1e", name.c_str(), eh, e, eref);
      detail += buf;
    }
  }
  if (!ok) ++g_failures;
  const cl::Config cfg = config_of(c, 0);
  std::printf("%s [%2d] %-22s B=%d N=%d W=%d D=%d L=%d mode=%d warps=%d smem_w=%d chunk=%lld: %s %.1e%s%s  [%.1fs]\n",
              ok ? "ok  " : "FAIL", index, c.name, c.B, c.N, c.W, c.D, c.L, int(c.mode), cfg.warps,
              int(cfg.smem_weights), (long long)cfg.chunk_coords, kHalf ? "max vs half-ref" : "max vs CPU", worst,
              kHalf ? (" (vs float64 " + std::to_string(worst_ref).substr(0, 8) + ")").c_str() : "", why.c_str(), secs);
  if (!ok || std::getenv("EMU_DETAIL")) std::printf("      %s\n", detail.c_str());
}

using M = MlpMode;

std::vector<Case> fast_cases() {
  std::vector<Case> v = {
      // name, B, N, W, D, L, mode, per_jet_x, pw, gx, warps, smem_w, chunk_tiles
      {"fwd-w16", 2, 100, 16, 1, 10, M::kForward},
      {"bwd-w16-gx", 2, 100, 16, 1, 10, M::kBackward, false, 0, true},
      {"mse-w16-pw", 2, 100, 16, 2, 10, M::kMse, false, 1},
      {"mse-tiny-N", 3, 7, 16, 1, 10, M::kMse},
      {"fwd-w32-L0", 2, 70, 32, 2, 0, M::kForward},
      {"bwd-w32-D8-L0-gx", 1, 40, 32, 8, 0, M::kBackward, false, 0, true, 4},
      {"mse-w64-D3-perjet", 2, 77, 64, 3, 10, M::kMse, true, 2, false, 4},
      {"mse-w64-D3-chunks", 2, 130, 64, 3, 10, M::kMse, false, 1, false, 2, true, 1},
      {"bwd-w64-global-w", 2, 65, 64, 2, 10, M::kBackward, false, 0, true, 4, false, 1},
      {"mse-w128-D2-L20", 1, 40, 128, 2, 20, M::kMse, false, 0, false, 2},
      {"bwd-w128-D3-ovfl", 1, 33, 128, 3, 10, M::kBackward, false, 0, false, 2},
      {"mse-w64-D8-ovfl", 1, 50, 64, 8, 10, M::kMse, false, 1, false, 2, false, 1},
      {"fwd-w128-D8-L20", 1, 40, 128, 8, 20, M::kForward, false, 0, false, 2, false},
      {"mse-w32-1warp-glob", 2, 45, 32, 3, 10, M::kMse, true, 2, false, 1, false, 2},
  };
  Case r1 = {"range-big-activations", 2, 60, 64, 2, 10, M::kMse, false, 0, false, 4};
  r1.wscale = 3000.0;  // activations ~1e5 > 65,504: the per-tile scaling must keep them finite
  r1.tscale = 1e4;
  v.push_back(r1);
  Case r2 = {"range-tiny-deltas", 2, 60, 32, 3, 10, M::kMse, false, 1, false, 4};
  r2.tscale = 1e-6;  // MSE deltas ~1e-9, far below float16's normal range before scaling
  r2.he_init = true;
  v.push_back(r2);
  Case r3 = {"he-init-bwd-L0", 1, 40, 32, 8, 0, M::kBackward, false, 0, true, 2};
  r3.he_init = true;
  v.push_back(r3);
  Case r4 = {"range-extreme-scales", 1, 50, 64, 3, 10, M::kBackward, false, 0, false, 4};
  r4.tscale = 1e-20;  // deltas ~1e-20: scale a x scale delta ~2^90 (weight-gradient tile sums scaled back)
  v.push_back(r4);
  // The wgmma kernel (MSE step, W = 64, D = 3, L = 10): partial tiles, one-tile chunks, per-jet
  // coordinates and pixel weights, flushes inside a chunk (18 tiles, chunks of 16), the ranges.
  std::vector<Case> wg = {
      {"wg-mse-chunks", 2, 130, 64, 3, 10, M::kMse, false, 1, false, 4, true, 1},
      {"wg-mse-perjet", 2, 77, 64, 3, 10, M::kMse, true, 2, false, 4, true, 64},
      {"wg-mse-flushes", 1, 1100, 64, 3, 10, M::kMse, false, 0, false, 4, true, 16},
  };
  Case w1 = {"wg-range-big-act", 2, 60, 64, 3, 10, M::kMse, false, 0, false, 4};
  w1.wscale = 3000.0, w1.tscale = 1e4;
  wg.push_back(w1);
  Case w2 = {"wg-range-tiny-deltas", 2, 60, 64, 3, 10, M::kMse, false, 1, false, 4};
  w2.tscale = 1e-6, w2.he_init = true;
  wg.push_back(w2);
  for (Case& c : wg) c.wgmma = true, v.push_back(c);
  return v;
}

std::vector<Case> slow_cases() {  // replicas of tests/test_fused.py's GPU cases, as the binding runs them
  return {
      {"gpu-bwd-3x15625-w64", 3, 15625, 64, 3, 10, M::kBackward, false, 0, true, 0},
      {"gpu-mse-4x15625-w64", 4, 15625, 64, 3, 10, M::kMse, false, 1, false, 0},
      {"gpu-mse-4x15625-w64-wgmma", 4, 15625, 64, 3, 10, M::kMse, false, 1, false, 0, true, 64, 1.0, 1.0, false, true},
      {"gpu-mse-4x15625-w128", 4, 15625, 128, 2, 10, M::kMse, false, 1, false, 0},
      {"gpu-mse-4x15625-w32", 4, 15625, 32, 8, 10, M::kMse, false, 1, false, 0},
      {"gpu-bwd-2x100-w128-D8", 2, 100, 128, 8, 10, M::kBackward, false, 0, true, 0},
      {"gpu-bwd-3x7-w16", 3, 7, 16, 1, 10, M::kBackward, false, 0, true, 0},
      {"gpu-mse-perjet-3x1000", 3, 1000, 64, 3, 10, M::kMse, true, 2, false, 0},
      {"gpu-fwd-2x999-w64", 2, 999, 64, 2, 10, M::kForward, false, 0, false, 0},
  };
}

std::vector<Case> asan_cases() {
  std::vector<Case> v = fast_cases();
  return {v[1], v[6], v[7], v[8], v[10], v[11], v[13], v[18], v[19]};
}

// One MSE step of one jet with counting on: the numbers BENCHMARKS.md's roofline uses.
int counters(int W, int D, int L, int N, int warps, bool wgmma) {
  Case c = {"counters", 1, N, W, D, L, M::kMse, false, 0, false, warps};
  c.wgmma = wgmma;  // with warps = 0: the binding's choice on an H100/H200 running sm_90a code
  if (warps > 0) {
    cl::Config t;
    t.warps = warps;
    c.chunk_tiles = int(cl::kChunkCoords / cl::tile(t, W));
  }
  const cl::Config cfg = config_of(c, 0);
  const Problem P = make_problem(c, 1);
  shim::g_count_smem = true;
  shim::reset_counters();
  const auto t0 = std::chrono::steady_clock::now();
  run_emulated(P, shim::kAscending, 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const shim::Counters& k = shim::g_count;
  const Bound<float> B(P, P.cuda_layout, 0.0f);
  std::printf(
      "counters W=%d D=%d L=%d N=%d B=1 warps=%d smem_weights=%d smem=%" PRId64 " chunks=%" PRId64
      ": global_read=%lld global_write=%lld read_sectors=%lld write_sectors=%lld dram_read_sectors=%lld "
      "dram_write_sectors=%lld smem_wavefronts=%lld smem_ideal=%lld smem_bytes=%lld "
      "barriers=%lld mma=%lld ldmatrix=%lld shuffles=%lld wgmma=%lld stmatrix=%lld wgmma_kernel=%d blocks=%lld "
      "launches=%lld [%.1fs]\n",
      W, D, L, N, cfg.warps, int(cfg.smem_weights), cuda::mlp_cuda_smem_bytes(B.p, cfg), cl::n_chunks(N, cfg),
      k.global_read, k.global_write, k.global_read_sectors, k.global_write_sectors, k.dram_read_sectors,
      k.dram_write_sectors,
      k.smem_wavefronts, k.smem_ideal_wavefronts, k.smem_bytes, k.barriers, k.mma, k.ldmatrix, k.shuffles, k.wgmma, k.stmatrix, int(cfg.wgmma), k.blocks, k.launches,
      secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // The logic build stores float16 data as 4-byte floats: its shared memory is larger by that much.
  shim::g_device.smem_optin = int(kRealSmemOptin * int64_t(sizeof(half)) / 2);
  shim::g_device.smem_per_sm = int((228 * 1024) * int64_t(sizeof(half)) / 2);
  std::string suite = argc > 1 ? argv[1] : "fast";
  if (suite == "counters") {
    if (argc < 6) return std::fprintf(stderr, "usage: %s counters W D L N [warps | wgmma]\n", argv[0]), 2;
    const bool wg = argc > 6 && std::string(argv[6]) == "wgmma";
    return counters(std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
                    argc > 6 && !wg ? std::atoi(argv[6]) : 0, wg);
  }
  std::vector<Case> cases = suite == "slow" ? slow_cases() : suite == "asan" ? asan_cases() : fast_cases();
  if (suite == "case") {  // one case from the command line: case B N W D L mode [warps chunk_tiles]
    if (argc < 8) return std::fprintf(stderr, "usage: %s case B N W D L mode [warps chunk_tiles gx]\n", argv[0]), 2;
    Case c = {"custom", std::atoi(argv[2]), std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]),
              std::atoi(argv[6]), MlpMode(std::atoi(argv[7]))};
    c.gx = c.mode == MlpMode::kBackward;
    if (argc > 8) c.warps = std::atoi(argv[8]);
    if (argc > 9) c.chunk_tiles = std::atoi(argv[9]);
    if (argc > 10) c.gx = c.gx && std::atoi(argv[10]) != 0;
    cases = {c};
  }
  int only = -1;
  for (int i = 2; i < argc && suite != "case"; ++i)
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = std::atoi(argv[++i]);
  std::printf("emulated CUDA fused MLP, %s build, %s suite (%zu cases)\n", kHalf ? "float16" : "logic (float)",
              suite.c_str(), cases.size());
  // One case with the shared-memory wavefront accounting on: every counted access must be uniform.
  for (size_t i = 0; i < cases.size(); ++i) {
    if (only >= 0 && int(i) != only) continue;
    shim::g_count_smem = i == 0;
    run_case(int(i), cases[i], suite != "slow");
  }
  std::printf("%zu cases, %d failed\n", only >= 0 ? size_t(1) : cases.size(), g_failures);
  return g_failures ? 1 : 0;
}
