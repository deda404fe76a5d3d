// The emulator's wgmma and stmatrix (include/inr_emu/prims.h) and the wgmma probe
// (csrc/cuda/wgmma_probe.cu): the probe's two products against float64 references for every width
// it has, bitwise the same under three schedules, its counters; and the emulator's checks of the
// asynchronous rules, each provoked by a small broken kernel in a child process that must stop with
// its message (or, for accumulators read before the wait, see NaN).
//
//     test_emu_wgmma        (the logic build: float storage; the float16 build: IEEE binary16)
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "inr_emu/prims.h"
#include "inr_fast/wgmma_probe.h"

using namespace inr_fast;
using prims::h2;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

struct Rng {
  unsigned long long s;
  double u() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return double(s >> 11) / double(1ULL << 53);
  }
};

std::vector<half> random_half(size_t n, Rng& r) {
  std::vector<half> v(n);
  for (auto& x : v) x = half(float(2 * r.u() - 1));
  return v;
}

// Largest |got - want| over the reference's largest magnitude.
double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

struct ProbeOut {
  std::vector<float> y, g;
  int status = -1;
};

ProbeOut run_probe(const std::vector<half>& x, const std::vector<half>& w1, const std::vector<half>& w2,
                   const std::vector<half>& p, const std::vector<half>& q, int n, int policy) {
  shim::g_policy = policy;
  ProbeOut o;
  o.y.assign(size_t(64) * n, std::nanf(""));
  o.g.assign(size_t(64) * n, std::nanf(""));
  const int err = cuda::wgmma_probe(x.data(), w1.data(), w2.data(), p.data(), q.data(), n, o.y.data(),
                                    o.g.data(), &o.status, nullptr);
  if (err != 0) o.status = -err;
  return o;
}

void probe_case(int n) {
  Rng r{0x2545F4914F6CDD1DULL + unsigned(n)};
  const int K = cuda::kProbeRows;
  const auto x = random_half(64 * K, r), w1 = random_half(64 * K, r), w2 = random_half(size_t(n) * K, r);
  const auto p = random_half(64 * 64, r), q = random_half(size_t(64) * n, r);
  std::vector<double> y1(64 * 64), y(64 * n), g(64 * n);
  for (int i = 0; i < 64; ++i)
    for (int o = 0; o < 64; ++o) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(x[i * K + k]) * double(w1[o * K + k]);
      y1[i * 64 + o] = double(half(float(s)));  // the kernel rounds the float32 accumulator to storage
    }
  for (int i = 0; i < 64; ++i)
    for (int o = 0; o < n; ++o) {
      double s = 0, t = 0;
      for (int k = 0; k < 64; ++k) s += y1[i * 64 + k] * double(w2[o * K + k]);
      for (int k = 0; k < 64; ++k) t += double(p[k * 64 + i]) * double(q[k * n + o]);
      y[i * n + o] = s, g[i * n + o] = t;
    }
  shim::Counters before = shim::g_count;
  const ProbeOut a = run_probe(x, w1, w2, p, q, n, shim::kAscending);
  const shim::Counters c = shim::g_count;
  const ProbeOut d = run_probe(x, w1, w2, p, q, n, shim::kDescending);
  const ProbeOut rnd = run_probe(x, w1, w2, p, q, n, shim::kRandom);
  // Y: float32 accumulation of float16 products, plus the first product's rounding to storage,
  // which may fall the other way where float32 and float64 straddle a rounding boundary.
#if defined(INR_EMU_HALF_IS_FLOAT)
  const double tol_y = 1e-6;
#else
  const double tol_y = 1e-3;
#endif
  const double ey = rel_err(a.y, y), eg = rel_err(a.g, g);
  char buf[200];
  std::snprintf(buf, sizeof buf, "probe n=%d: status %d, Y within %.1e (limit %.0e), G within %.1e (limit 1e-6)", n,
                a.status, ey, tol_y, eg);
  check(a.status == 0 && ey <= tol_y && eg <= 1e-6, buf);
  const bool same = std::memcmp(a.y.data(), d.y.data(), a.y.size() * 4) == 0 &&
                    std::memcmp(a.y.data(), rnd.y.data(), a.y.size() * 4) == 0 &&
                    std::memcmp(a.g.data(), d.g.data(), a.g.size() * 4) == 0 &&
                    std::memcmp(a.g.data(), rnd.g.data(), a.g.size() * 4) == 0;
  check(same, "probe n=" + std::to_string(n) + ": bitwise the same under three schedules");
  // 4 warps x (4 k16 steps x 3 products); tensor work per warp 4 x (64 + n + n) / 8 mma.m16n8k16.
  const long long wg = c.wgmma - before.wgmma, mma = c.mma - before.mma;
  const long long wf = c.smem_wavefronts - before.smem_wavefronts;
  // Shared-memory wavefronts: staging W1, W2 (one per 64 pairs, 2 per warp-wide h2 store of 32
  // lanes... counted only with g_count_smem) is off here; wgmma reads: B once per warpgroup (N / 4
  // per k16 step), A from shared memory 4 per warp and step; stmatrix 1 per 8 x 8 matrix.
  const long long want_wf = 4 * (64 / 4 + n / 4 + n / 4) + 4 * 4 * 4 + 4 * (64 / 8 + n / 8) * 2;
  std::snprintf(buf, sizeof buf, "probe n=%d counters: wgmma %lld (48), mma %lld (%d), wavefronts %lld (%lld)", n, wg,
                mma, 4 * 4 * (64 + 2 * n) / 8, wf, want_wf);
  check(wg == 48 && mma == 4 * 4 * (64 + 2 * n) / 8 && wf == want_wf, buf);
}

// ------------------------------------------------------------------------------------------ broken kernels
// Each runs in a child process: it must end by the emulator's abort with `message` in its stderr.
enum Broken { kNoProxyFence, kNoWgmmaFence, kOperandChanged, kNotWaited, kWarpsDiffer, kARegsChanged };

__global__ void broken_kernel(int what, float* out) {
  INR_DYNAMIC_SMEM(raw);
  half* b = reinterpret_cast<half*>(raw);  // an 8 x 16 B operand (N = 8), K-major core matrices
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  for (int i = int(threadIdx.x); i < 64; i += int(blockDim.x)) prims::sts_h2(b + 2 * i, __floats2half2_rn(1.0f, 1.0f));
  if (what != kNoProxyFence) prims::fence_proxy_async();
  __syncthreads();
  h2 a[4] = {__floats2half2_rn(1, 1), __floats2half2_rn(1, 1), __floats2half2_rn(1, 1), __floats2half2_rn(1, 1)};
  float d[4] = {0, 0, 0, 0};
  const uint64_t desc = prims::wgmma_desc(b, 64, 128);
  if (what != kNoWgmmaFence) prims::wgmma_fence();
  prims::wgmma_rs<8>(d, a, desc, false);
  if (what == kWarpsDiffer && warp == 1) prims::wgmma_rs<8>(d, a, desc, true);
  prims::wgmma_commit();
  if (what == kOperandChanged && threadIdx.x == 0) prims::sts_h2(b, __floats2half2_rn(2.0f, 2.0f));
  if (what == kARegsChanged) a[0] = __floats2half2_rn(3, 3);
  if (what != kNotWaited) prims::wgmma_wait<0>();
  out[threadIdx.x] = d[lane % 4];
}

void expect_abort(int what, const char* message) {
  int fds[2];
  if (pipe(fds) != 0) return check(false, "pipe");
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    std::vector<float> out(128);
    INR_LAUNCH(broken_kernel, dim3(1), dim3(128), 128 * sizeof(half), nullptr)(what, out.data());
    std::_Exit(0);
  }
  close(fds[1]);
  std::string err;
  char buf[512];
  for (ssize_t k; (k = read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, size_t(k));
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  const bool ok = WIFSIGNALED(st) && err.find(message) != std::string::npos;
  check(ok, std::string("emulator stops a kernel: ") + message + (ok ? "" : " [got: " + err + "]"));
}

// Accumulators read before the wait that retires their wgmma are NaN.
__global__ void early_read_kernel(float* out) {
  INR_DYNAMIC_SMEM(raw);
  half* b = reinterpret_cast<half*>(raw);
  for (int i = int(threadIdx.x); i < 64; i += int(blockDim.x)) prims::sts_h2(b + 2 * i, __floats2half2_rn(1.0f, 1.0f));
  prims::fence_proxy_async();
  __syncthreads();
  const h2 a[4] = {__floats2half2_rn(1, 1), __floats2half2_rn(1, 1), __floats2half2_rn(1, 1), __floats2half2_rn(1, 1)};
  float d[4] = {0, 0, 0, 0};
  prims::wgmma_fence();
  prims::wgmma_rs<8>(d, a, prims::wgmma_desc(b, 64, 128), false);
  prims::wgmma_commit();
  out[threadIdx.x] = d[0];
  prims::wgmma_wait<0>();
  out[128 + threadIdx.x] = d[0];
}

}  // namespace

int main() {
  for (int n : {8, 56, 64, 72}) probe_case(n);
  std::vector<float> out(256, 0.0f);
  shim::g_policy = shim::kAscending;
  INR_LAUNCH(early_read_kernel, dim3(1), dim3(128), 128 * sizeof(half), nullptr)(out.data());
  bool early_nan = true, late_16 = true;
  for (int i = 0; i < 128; ++i) early_nan = early_nan && std::isnan(out[i]), late_16 = late_16 && out[128 + i] == 16.0f;
  check(early_nan && late_16, "accumulators read before wgmma.wait_group are NaN, after it A * B (16)");
  expect_abort(kNoProxyFence, "without fence.proxy.async");
  expect_abort(kNoWgmmaFence, "without a wgmma.fence");
  expect_abort(kOperandChanged, "changed while the wgmma was in flight");
  expect_abort(kARegsChanged, "A registers modified before wgmma.wait_group");
  expect_abort(kNotWaited, "exited with wgmma operations not waited for");
  expect_abort(kWarpsDiffer, "warps of a warpgroup issued different wgmma operations");
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
