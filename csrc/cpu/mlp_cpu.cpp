// CPU fused positional encoding + per-jet MLP: forward, backward (recomputing the forward per tile)
// and the fused MSE training step. This is the executable specification of csrc/cuda/mlp_cuda.cu;
// csrc/README.md describes the algorithm (tiles, layouts, padding, loop and accumulation order).
//
// Vector code uses GCC/Clang vector extensions; the same always-inline body is compiled for
// AVX-512, AVX2+FMA and the baseline ISA through target attributes and chosen at run time, so the
// build needs no -march flag.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "inr_fast/mlp.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // vector types only cross always-inline boundaries
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define INR_FAST_X86_DISPATCH 1
#endif

#define INR_AI inline __attribute__((always_inline))

namespace inr_fast {
namespace cpu {
namespace {

constexpr int kT = kMlpTile;

template <typename T, int VB>
struct VecT;
template <>
struct VecT<float, 16> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct VecT<float, 32> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecT<float, 64> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecT<double, 16> {
  typedef double type __attribute__((vector_size(16)));
};
template <>
struct VecT<double, 32> {
  typedef double type __attribute__((vector_size(32)));
};
template <>
struct VecT<double, 64> {
  typedef double type __attribute__((vector_size(64)));
};

template <typename V, typename T>
INR_AI V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
INR_AI void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Register block of C (+)= A * B: rows [0, MR) of C, columns [0, NV * VL); A(i, k) = A[i * sa + k * sk].
// C[i][j] = (acc_in ? C[i][j] : 0) + sum_{k = 0}^{K-1} A(i, k) * B[k][j], k ascending, one
// multiply-add per k (FMA where the ISA has it).
template <typename T, int VB, int MR, int NV>
INR_AI void gemm_block(int K, const T* __restrict A, int sa, int sk, const T* __restrict B, int ldb,
                       T* __restrict C, int ldc, bool acc_in) {
  using V = typename VecT<T, VB>::type;
  constexpr int VL = VB / int(sizeof(T));
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = acc_in ? vload<V>(C + i * ldc + j * VL) : V{};
  for (int k = 0; k < K; ++k) {
    V b[NV];
    for (int j = 0; j < NV; ++j) b[j] = vload<V>(B + int64_t(k) * ldb + j * VL);
    for (int i = 0; i < MR; ++i) {
      const T a = A[i * sa + k * sk];
      for (int j = 0; j < NV; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) vstore(C + i * ldc + j * VL, acc[i][j]);
}

// C (M x N, row-major, ldc) (+)= A (M x K, A(i, k) = A[i * sa + k * sk]) * B (K x N, row-major, ldb).
// Needs M % 4 == 0 and N % VL == 0 (guaranteed by the padding in MlpLayout and kMlpTile = 64).
template <typename T, int VB>
INR_AI void gemm(int M, int N, int K, const T* A, int sa, int sk, const T* B, int ldb, T* C, int ldc,
                 bool acc_in) {
  constexpr int VL = VB / int(sizeof(T));
  constexpr int MR = VB >= 64 ? 8 : 4;
  int n = 0;
  for (; n + 2 * VL <= N; n += 2 * VL) {
    int m = 0;
    for (; m + MR <= M; m += MR)
      gemm_block<T, VB, MR, 2>(K, A + m * sa, sa, sk, B + n, ldb, C + m * ldc + n, ldc, acc_in);
    for (; m < M; m += 4)
      gemm_block<T, VB, 4, 2>(K, A + m * sa, sa, sk, B + n, ldb, C + m * ldc + n, ldc, acc_in);
  }
  for (; n < N; n += VL) {
    int m = 0;
    for (; m + MR <= M; m += MR)
      gemm_block<T, VB, MR, 1>(K, A + m * sa, sa, sk, B + n, ldb, C + m * ldc + n, ldc, acc_in);
    for (; m < M; m += 4)
      gemm_block<T, VB, 4, 1>(K, A + m * sa, sa, sk, B + n, ldb, C + m * ldc + n, ldc, acc_in);
  }
}

template <typename T>
constexpr T kPi = T(3.14159265358979323846264338327950288);

// sin(pi r), cos(pi r) for r in [-1, 1] (r from reduce_period2): quadrant q = nearbyint(2 r),
// u = pi (r - q / 2) in [-pi/4, pi/4], Taylor series of sin u and cos u (to u^13 / u^12 in float,
// u^21 / u^20 in double, truncation far below the rounding error), then the quadrant's symmetry.
// Branch-free so the compiler vectorises it over a tile.
template <typename T>
INR_AI void sincospi(T r, T& s_out, T& c_out) {
  constexpr int kTerms = sizeof(T) == 4 ? 6 : 10;
  const T q = std::nearbyint(T(2) * r);
  const T u = (r - T(0.5) * q) * kPi<T>;
  const T u2 = u * u;
  T ps = T(1), pc = T(1);
  for (int j = kTerms; j >= 1; --j) {
    ps = T(1) - u2 * T(1.0 / ((2.0 * j) * (2.0 * j + 1.0))) * ps;
    pc = T(1) - u2 * T(1.0 / ((2.0 * j - 1.0) * (2.0 * j))) * pc;
  }
  const T s = u * ps, c = pc;
  const int qi = int(q) & 3;
  const T s1 = (qi & 1) ? c : s;
  const T c1 = (qi & 1) ? s : c;
  s_out = (qi & 2) ? -s1 : s1;
  c_out = ((qi + 1) & 2) ? -c1 : c1;
}

// Per-chunk scratch, carved from one 64-byte-aligned block. Activations and deltas are
// token-major (row = coordinate), so every product is vectorised over output features.
template <typename T>
struct Scratch {
  T* wp;                         // packed weights (fo_p, fi_p) per layer
  T* wt;                         // packed transposed weights (fi_p, fo_p) per layer
  T* bp;                         // packed biases
  T* gw;                         // weight-gradient accumulators, layout of wp
  T* gb;                         // bias-gradient accumulators, layout of bp
  T* act[kMlpMaxLayers + 1];     // act[l]: input of layer l (kT x fi_p[l]); act[D+1]: output (kT x fo_p[D])
  T* d0;                         // deltas (kT x max_dim)
  T* d1;
  T* xt;                         // coordinates of the tile, (2 x kT)
  double loss;
};

int64_t round16(int64_t v) { return (v + 15) & ~int64_t(15); }

int64_t scratch_elems(const MlpLayout& s) {
  int64_t e = 2 * round16(s.w_total) + 2 * round16(s.b_total) + round16(s.w_total) + round16(s.b_total);
  for (int l = 0; l < s.n_layers; ++l) e += int64_t(s.fi_p[l]) * kT;
  e += int64_t(s.fo_p[s.depth]) * kT;
  e += 2 * int64_t(s.max_dim) * kT + 2 * kT;
  return e;
}

template <typename T>
Scratch<T> carve(const MlpLayout& s, T* base) {
  Scratch<T> k{};
  T* p = base;
  auto take = [&](int64_t n) {
    T* r = p;
    p += round16(n);
    return r;
  };
  k.wp = take(s.w_total);
  k.wt = take(s.w_total);
  k.bp = take(s.b_total);
  k.gw = take(s.w_total);
  k.gb = take(s.b_total);
  for (int l = 0; l < s.n_layers; ++l) k.act[l] = take(int64_t(s.fi_p[l]) * kT);
  k.act[s.n_layers] = take(int64_t(s.fo_p[s.depth]) * kT);
  k.d0 = take(int64_t(s.max_dim) * kT);
  k.d1 = take(int64_t(s.max_dim) * kT);
  k.xt = take(2 * kT);
  return k;
}

// Slot of a chunk's partial result for a jet it does not cover entirely:
// [jet + 1 (0 = unused), loss, packed weight gradients, packed bias gradients].
int64_t slot_elems(const MlpLayout& s) { return round16(2 + s.w_total + s.b_total); }

template <typename T>
void pack_jet(const MlpProblem<T>& p, int64_t b, const Scratch<T>& k) {
  const MlpLayout& s = p.layout;
  for (int l = 0; l < s.n_layers; ++l) {
    const int fo = s.fo[l], fi = s.fi[l], fop = s.fo_p[l], fip = s.fi_p[l];
    const T* w = p.weights[l] + b * fo * fi;
    const T* bias = p.biases[l] + b * fo;
    T* wp = k.wp + s.w_off[l];
    T* wt = k.wt + s.w_off[l];
    for (int o = 0; o < fop; ++o) {
      for (int i = 0; i < fip; ++i) {
        const T v = (o < fo && i < fi) ? w[o * fi + i] : T(0);
        wp[o * fip + i] = v;
        wt[i * fop + o] = v;
      }
      k.bp[s.b_off[l] + o] = o < fo ? bias[o] : T(0);
    }
  }
}

// Adds packed gradients (and loss) of jet b to the outputs, dropping the padding.
template <typename T>
void unpack_add(const MlpProblem<T>& p, int64_t b, const T* gw, const T* gb, double loss) {
  const MlpLayout& s = p.layout;
  for (int l = 0; l < s.n_layers; ++l) {
    const int fo = s.fo[l], fi = s.fi[l], fip = s.fi_p[l];
    T* out_w = p.grad_w[l] + b * fo * fi;
    T* out_b = p.grad_b[l] + b * fo;
    const T* src = gw + s.w_off[l];
    for (int o = 0; o < fo; ++o) {
      for (int i = 0; i < fi; ++i) out_w[o * fi + i] += src[o * fip + i];
      out_b[o] += gb[s.b_off[l] + o];
    }
  }
  if (p.loss != nullptr) p.loss[b] += T(loss);
}

// One tile of one jet: coordinates [n0, n0 + nv), nv <= kT; rows >= nv are computed on x = 0
// and never contribute (their deltas are zero, their outputs are not stored).
// Storage is token-major: act[l] is (kT, fi_p[l]) row-major (row = coordinate), the transpose of
// CUDA's feature-major (fi_p, kT) tiles; the products and their k order are the same.
template <typename T, int VB>
INR_AI void run_tile(const MlpProblem<T>& p, int64_t b, int64_t n0, int nv, Scratch<T>& k,
                     T* gx_partial) {
  const MlpLayout& s = p.layout;
  const int D = s.depth;
  // 1. positional encoding, vectorised feature-major into k.d1 (fi_p x kT), then act[0] = its transpose.
  T* x0 = k.xt;
  T* x1 = k.xt + kT;
  const T* xb = p.x + b * p.x_jet_stride;  // this jet's coordinates (the shared ones if stride 0)
  for (int t = 0; t < kT; ++t) {
    x0[t] = t < nv ? xb[2 * (n0 + t)] : T(0);
    x1[t] = t < nv ? xb[2 * (n0 + t) + 1] : T(0);
  }
  const int F = s.fi[0], fip0 = s.fi_p[0];
  T* fm = k.d1;
  for (int t = 0; t < kT; ++t) {
    fm[t] = x0[t];
    fm[kT + t] = x1[t];
  }
  T scale = T(1);
  for (int f = 0; f < s.n_freqs; ++f, scale *= T(2)) {
    for (int c = 0; c < 2; ++c) {
      const T* xc = c == 0 ? x0 : x1;
      T* rs = fm + (2 + 4 * f + c) * kT;
      T* rc = fm + (4 + 4 * f + c) * kT;
      for (int t = 0; t < kT; ++t) sincospi(reduce_period2(scale * xc[t]), rs[t], rc[t]);
    }
  }
  T* a0 = k.act[0];
  for (int t = 0; t < kT; ++t) {
    for (int f = 0; f < F; ++f) a0[t * fip0 + f] = fm[f * kT + t];
    for (int f = F; f < fip0; ++f) a0[t * fip0 + f] = T(0);
  }
  // 2. forward: act[l+1][t][o] = bias[o] + sum_k act[l][t][k] W_l[o][k] (k over the real fan_in,
  // ascending; B operand = the packed transpose W_l^T), ReLU for l < D.
  for (int l = 0; l <= D; ++l) {
    const int fop = s.fo_p[l];
    T* __restrict out = k.act[l + 1];
    const T* __restrict bias = k.bp + s.b_off[l];
    for (int t = 0; t < kT; ++t)
      for (int o = 0; o < fop; ++o) out[t * fop + o] = bias[o];
    gemm<T, VB>(kT, fop, s.fi[l], k.act[l], s.fi_p[l], 1, k.wt + s.w_off[l], fop, out, fop, true);
    if (l < D)
      for (int e = 0; e < fop * kT; ++e) out[e] = out[e] > T(0) ? out[e] : T(0);
  }
  const int fo_out = s.fo_p[D];
  const T* y = k.act[D + 1];  // (kT, fo_out), channels in columns [0, 3)
  const int64_t row = (b * p.n + n0) * kMlpOut;  // first (b, n0, 0) element
  if (p.mode == MlpMode::kForward) {
    for (int t = 0; t < nv; ++t)
      for (int c = 0; c < kMlpOut; ++c) p.y[row + t * kMlpOut + c] = y[t * fo_out + c];
    return;
  }
  // 3. output deltas d (kT x fo_out): grad_y, or the MSE gradient 2 w (y - target) / (3 N).
  T* d = k.d0;
  T* dn = k.d1;
  for (int e = 0; e < fo_out * kT; ++e) d[e] = T(0);
  if (p.mode == MlpMode::kBackward) {
    for (int t = 0; t < nv; ++t)
      for (int c = 0; c < kMlpOut; ++c) d[t * fo_out + c] = p.grad_y[row + t * kMlpOut + c];
  } else {
    const T inv = T(1) / T(3 * p.n);
    double loss = 0;
    for (int t = 0; t < nv; ++t) {
      const T w = p.pixel_weight ? p.pixel_weight[b * p.pw_jet_stride + n0 + t] : T(1);
      double lt = 0;
      for (int c = 0; c < kMlpOut; ++c) {
        const T r = y[t * fo_out + c] - p.target[row + t * kMlpOut + c];
        d[t * fo_out + c] = T(2) * w * r * inv;
        lt += double(r) * double(r);
      }
      loss += double(w) * lt;
    }
    k.loss += loss / double(3 * p.n);
  }
  // 4. backward, l = D .. 0: gW_l[o][i] += sum_t d[t][o] act[l][t][i] (t ascending),
  // gb_l[o] += sum_t d[t][o], then d <- d W_l (k over the real fan_out) masked by act[l] > 0.
  for (int l = D; l >= 0; --l) {
    const int fop = s.fo_p[l], fip = s.fi_p[l];
    const T* a = k.act[l];
    gemm<T, VB>(fop, fip, nv, d, 1, fop, a, fip, k.gw + s.w_off[l], fip, true);
    T* __restrict gb = k.gb + s.b_off[l];
    const T* __restrict dd = d;
    for (int t = 0; t < nv; ++t)
      for (int o = 0; o < fop; ++o) gb[o] += dd[t * fop + o];
    if (l == 0 && gx_partial == nullptr) break;
    gemm<T, VB>(kT, fip, s.fo[l], d, fop, 1, k.wp + s.w_off[l], fip, dn, fip, false);
    if (l > 0) {
      for (int e = 0; e < fip * kT; ++e) dn[e] = a[e] > T(0) ? dn[e] : T(0);
      std::swap(d, dn);
    } else {
      // d PE / d x: column c is x_c itself, sin columns gain pi 2^f cos, cos columns lose pi 2^f sin.
      for (int t = 0; t < nv; ++t) {
        const T* dr = dn + t * fip;
        const T* ar = a + t * fip;
        for (int c = 0; c < 2; ++c) {
          T acc = dr[c];
          T w = kPi<T>;
          for (int f = 0; f < s.n_freqs; ++f, w *= T(2)) {
            const int cs = 2 + 4 * f + c, cc = 4 + 4 * f + c;
            acc += w * (dr[cs] * ar[cc] - dr[cc] * ar[cs]);
          }
          gx_partial[2 * (n0 + t) + c] += acc;
        }
      }
    }
  }
}

template <typename T, int VB>
INR_AI void run_chunk(const MlpProblem<T>& p, int chunk, int n_chunks, T* workspace, T* scratch) {
  const MlpLayout& s = p.layout;
  const int64_t ntiles = (p.n + kT - 1) / kT;
  const int64_t total = p.batch * ntiles;
  const int64_t i0 = total * chunk / n_chunks, i1 = total * (chunk + 1) / n_chunks;
  Scratch<T> k = carve(s, scratch);
  const bool grads = p.mode != MlpMode::kForward;
  T* gx_partial = nullptr;
  if (p.mode == MlpMode::kBackward && p.grad_x != nullptr)
    gx_partial = workspace + int64_t(n_chunks) * 2 * slot_elems(s) + int64_t(chunk) * 2 * p.n;
  for (int64_t i = i0; i < i1;) {
    const int64_t b = i / ntiles, lo = i % ntiles, hi = std::min(ntiles, lo + (i1 - i));
    pack_jet(p, b, k);
    if (grads) {
      std::fill(k.gw, k.gw + s.w_total, T(0));
      std::fill(k.gb, k.gb + s.b_total, T(0));
      k.loss = 0;
    }
    for (int64_t tile = lo; tile < hi; ++tile) {
      const int64_t n0 = tile * kT;
      run_tile<T, VB>(p, b, n0, int(std::min<int64_t>(kT, p.n - n0)), k, gx_partial);
    }
    if (grads) {
      if (lo == 0 && hi == ntiles) {
        unpack_add(p, b, k.gw, k.gb, k.loss);  // this chunk owns the whole jet
      } else {
        T* slot = workspace + (int64_t(chunk) * 2 + (i == i0 ? 0 : 1)) * slot_elems(s);
        slot[0] = T(b + 1);
        slot[1] = T(k.loss);
        std::copy(k.gw, k.gw + s.w_total, slot + 2);
        std::copy(k.gb, k.gb + s.b_total, slot + 2 + s.w_total);
      }
    }
    i += hi - lo;
  }
}

template <typename T>
void chunk_generic(const MlpProblem<T>& p, int c, int nc, T* ws, T* scratch) {
  run_chunk<T, 16>(p, c, nc, ws, scratch);
}

#if defined(INR_FAST_X86_DISPATCH)
template <typename T>
__attribute__((target("avx2,fma"))) void chunk_avx2(const MlpProblem<T>& p, int c, int nc, T* ws,
                                                    T* scratch) {
  run_chunk<T, 32>(p, c, nc, ws, scratch);
}

template <typename T>
__attribute__((target("avx512f,avx2,fma"))) void chunk_avx512(const MlpProblem<T>& p, int c, int nc,
                                                             T* ws, T* scratch) {
  run_chunk<T, 64>(p, c, nc, ws, scratch);
}
#endif

enum class Isa { kGeneric, kAvx2, kAvx512 };

// The best ISA this CPU has; INR_FAST_CPU_ISA=generic|avx2|avx512 caps it (for tests).
Isa choose_isa() {
  Isa best = Isa::kGeneric;
#if defined(INR_FAST_X86_DISPATCH)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f")) best = Isa::kAvx512;
#endif
  const char* env = std::getenv("INR_FAST_CPU_ISA");
  if (env != nullptr) {
    if (std::strcmp(env, "generic") == 0) best = Isa::kGeneric;
    if (std::strcmp(env, "avx2") == 0 && best == Isa::kAvx512) best = Isa::kAvx2;
  }
  return best;
}

struct FreeAligned {
  void operator()(void* p) const { ::operator delete[](p, std::align_val_t(64)); }
};

}  // namespace

const char* mlp_isa() {
  switch (choose_isa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "generic";
  }
}

template <typename T>
int64_t mlp_workspace_size(const MlpProblem<T>& p, int n_chunks) {
  if (p.mode == MlpMode::kForward) return 0;
  int64_t e = int64_t(n_chunks) * 2 * slot_elems(p.layout);
  if (p.mode == MlpMode::kBackward && p.grad_x != nullptr) e += int64_t(n_chunks) * 2 * p.n;
  return e;
}

template <typename T>
void mlp_chunk(const MlpProblem<T>& p, int chunk, int n_chunks, T* workspace) {
  const int64_t bytes = scratch_elems(p.layout) * int64_t(sizeof(T));
  std::unique_ptr<T[], FreeAligned> scratch(
      static_cast<T*>(::operator new[](size_t(bytes), std::align_val_t(64))));
  switch (choose_isa()) {
#if defined(INR_FAST_X86_DISPATCH)
    case Isa::kAvx512:
      chunk_avx512<T>(p, chunk, n_chunks, workspace, scratch.get());
      break;
    case Isa::kAvx2:
      chunk_avx2<T>(p, chunk, n_chunks, workspace, scratch.get());
      break;
#endif
    default:
      chunk_generic<T>(p, chunk, n_chunks, workspace, scratch.get());
  }
}

// Partial jets: add the slots in chunk order (deterministic for a given n_chunks); grad_x: sum
// the per-chunk partials in chunk order. Outputs must be zeroed before the chunks run.
template <typename T>
void mlp_reduce(const MlpProblem<T>& p, int n_chunks, T* workspace) {
  if (p.mode == MlpMode::kForward) return;
  const MlpLayout& s = p.layout;
  const int64_t se = slot_elems(s);
  for (int64_t j = 0; j < int64_t(n_chunks) * 2; ++j) {
    const T* slot = workspace + j * se;
    const int64_t b = int64_t(slot[0]) - 1;
    if (b < 0) continue;
    unpack_add(p, b, slot + 2, slot + 2 + s.w_total, double(slot[1]));
  }
  if (p.mode == MlpMode::kBackward && p.grad_x != nullptr) {
    const T* gx = workspace + int64_t(n_chunks) * 2 * se;
    for (int64_t e = 0; e < 2 * p.n; ++e) {
      T acc = T(0);
      for (int c = 0; c < n_chunks; ++c) acc += gx[int64_t(c) * 2 * p.n + e];
      p.grad_x[e] = acc;
    }
  }
}

template int64_t mlp_workspace_size<float>(const MlpProblem<float>&, int);
template int64_t mlp_workspace_size<double>(const MlpProblem<double>&, int);
template void mlp_chunk<float>(const MlpProblem<float>&, int, int, float*);
template void mlp_chunk<double>(const MlpProblem<double>&, int, int, double*);
template void mlp_reduce<float>(const MlpProblem<float>&, int, float*);
template void mlp_reduce<double>(const MlpProblem<double>&, int, double*);

}  // namespace cpu
}  // namespace inr_fast
