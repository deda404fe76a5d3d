// CUDA fused positional encoding + per-jet MLP: float16 operands, mma.sync m16n8k16 tensor-core
// products with float32 accumulation. Same algorithm as csrc/cpu/mlp_cpu.cpp (the executable
// specification); csrc/README.md describes the decomposition, the numerics and what differs.
//
// Work: the coordinates of each jet are cut into chunks of Config::chunk_coords, and a persistent
// grid of blocks takes the (jet, chunk) items in turn. Per item a block stages the jet's weights
// (float16) and biases in shared memory once, then streams the chunk's tiles of 16 x warps
// coordinates. Each warp carries its 16 coordinates through every layer in registers (the output
// fragments of one mma become the A operand of the next), so the forward needs no shared memory but
// the weights; with gradients it also leaves each layer's input and output delta of the tile in
// shared memory, and after the backward the block computes the tile's weight gradients
// grad W_l^T += a_l^T delta_l from them, into float32 fragments that stay in registers for the whole
// chunk and are written once (a per-chunk slot), then summed over chunks in order by reduce_kernel.
// Activations and deltas are scaled per tile by a power of two before the float16 conversion.
#include "inr_fast/cuda_prims.cuh"
#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda.h"

namespace inr_fast {
namespace cuda {

namespace {

using namespace prims;
namespace cl = cuda_layout;

constexpr int kRows = cl::kWarpRows;
constexpr int kAcc = cl::kAccFrags;
constexpr float kPi = 3.14159265358979323846f;

struct Args {
  MlpProblem<float> p;
  cl::Config cfg;
  int64_t n_chunks;
  float* slots;      // (B, n_chunks) chunk partials (gradients only)
  float* gx;         // (B, N, 2) per-jet grad_x partials (backward with grad_x only)
  const half* wh;    // float16 W per jet, (fo_p, fi_p) per layer, when not staged in shared memory
  const half* wth;   // float16 W^T per jet, (fi_p, fo_p) per layer
};

// Shared-memory sections of a block (cuda_layout::smem_layout).
struct Smem {
  half* w[kMlpMaxLayers];
  half* act[kMlpMaxLayers];
  half* dlt[kMlpMaxLayers];
  float* bias;
  float* gbw;
  float* red;
  float* scl_a;  // per-tile scale of layer l's input activations (scl_a[0] = 1: the encoding)
  float* scl_d;  // per-tile scale of layer l's output deltas
};

__device__ __forceinline__ Smem carve(const MlpLayout& s, const cl::Config& c, bool backward,
                                      unsigned char* base) {
  const cl::SmemLayout m = cl::smem_layout(s, c, backward, int(sizeof(half)));
  Smem r;
  for (int l = 0; l < s.n_layers; ++l) {
    r.w[l] = reinterpret_cast<half*>(base + m.w[l]);
    r.act[l] = reinterpret_cast<half*>(base + m.act[l]);
    r.dlt[l] = reinterpret_cast<half*>(base + m.dlt[l]);
  }
  r.bias = reinterpret_cast<float*>(base + m.bias);
  r.gbw = reinterpret_cast<float*>(base + m.gbw);
  r.red = reinterpret_cast<float*>(base + m.red);
  r.scl_a = reinterpret_cast<float*>(base + m.scl);
  r.scl_d = r.scl_a + kMlpMaxLayers;
  return r;
}

// ---------------------------------------------------------------------------------- small helpers

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Max over the block of the warps' values: one barrier. `red` alternates between two halves, so a
// half is rewritten only after every warp has passed the next barrier (and read it).
__device__ __forceinline__ float block_max(float warp_value, float* red, int& parity, int nw) {
  float* r = red + parity * cl::kMaxWarps;
  parity ^= 1;
  if (threadIdx.x % 32 == 0) r[threadIdx.x / 32] = warp_value;
  __syncthreads();
  float m = r[0];
  for (int w = 1; w < nw; ++w) m = fmaxf(m, r[w]);
  return m;
}
__device__ __forceinline__ float block_sum(float warp_value, float* red, int& parity, int nw) {
  float* r = red + parity * cl::kMaxWarps;
  parity ^= 1;
  if (threadIdx.x % 32 == 0) r[threadIdx.x / 32] = warp_value;
  __syncthreads();
  float m = 0.0f;
  for (int w = 0; w < nw; ++w) m += r[w];
  return m;
}

// The power of two s with max |v| s in [2^12, 2^13): float16 neither overflows (65,504) nor loses
// small values to subnormals. The shift is clamped to +-125 so s and 1/s are finite normal floats;
// m = 0 or NaN: s = 1; m = inf: s = 2^-125 (the infinity stays one).
__device__ __forceinline__ float tile_scale(float m) {
  const int shift = m > 0.0f ? max(-125, min(125, 12 - ilogbf(m))) : 0;
  return ldexpf(1.0f, shift);
}

// ReLU that keeps NaN (so a non-finite network shows in its outputs).
__device__ __forceinline__ float relu(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

// Encoding feature f of coordinate (x0, x1) (order of common.h); 0 in the padding.
__device__ __forceinline__ float pe_feature(int f, int n_features, float x0, float x1) {
  if (f < 2) return f == 0 ? x0 : x1;
  if (f >= n_features) return 0.0f;
  const int k = (f - 2) / 4, j = (f - 2) % 4;
  float sn, cs;
  sincospif(reduce_period2(ldexpf((j & 1) ? x1 : x0, k)), &sn, &cs);
  return j < 2 ? sn : cs;
}

// ---------------------------------------------------------------------------------- fragment loads
// Lane l = 4 g + q. B fragments of the weights for mma with k over the input features (forward):
// W is (fo_p, fi_p) row-major ([n][k]). Two n8 tiles n0, n0 + 8 at k-step k0: b[0..1], b[2..3].
__device__ __forceinline__ void load_b_fwd2(h2 (&b)[4], const half* w, int pw, int n0, int k0, bool smem) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  if (smem) {
    const int j = lane >> 3, r = lane & 7;
    ldsm_x4(b, w + (n0 + (j >> 1) * 8 + r) * pw + k0 + (j & 1) * 8);
  } else {
    const half* p = w + (n0 + g) * pw + k0 + 2 * q;
    b[0] = ld_global(reinterpret_cast<const h2*>(p));
    b[1] = ld_global(reinterpret_cast<const h2*>(p + 8));
    b[2] = ld_global(reinterpret_cast<const h2*>(p + 8 * pw));
    b[3] = ld_global(reinterpret_cast<const h2*>(p + 8 * pw + 8));
  }
}
// One n8 tile (the output layer, fo_p = 8).
__device__ __forceinline__ void load_b_fwd1(h2 (&b)[2], const half* w, int pw, int k0, bool smem) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  if (smem) {
    const int j = (lane >> 3) & 1, r = lane & 7;
    ldsm_x2(b, w + r * pw + k0 + j * 8);
  } else {
    const half* p = w + g * pw + k0 + 2 * q;
    b[0] = ld_global(reinterpret_cast<const h2*>(p));
    b[1] = ld_global(reinterpret_cast<const h2*>(p + 8));
  }
}
// B fragments of W^T for mma with k over the output features (backward, d = delta W): k = o,
// n = i. Staged W is read transposed by ldmatrix.trans; in global memory the W^T copy
// (fi_p, fo_p) is read directly. Two n8 tiles n0, n0 + 8 at k-step k0.
__device__ __forceinline__ void load_b_bwd2(h2 (&b)[4], const half* w, int pw, const half* wt, int pwt,
                                            int k0, int n0, bool smem) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  if (smem) {
    const int j = lane >> 3, r = lane & 7;
    ldsm_x4_t(b, w + (k0 + (j & 1) * 8 + r) * pw + n0 + (j >> 1) * 8);
  } else {
    const half* p = wt + (n0 + g) * pwt + k0 + 2 * q;
    b[0] = ld_global(reinterpret_cast<const h2*>(p));
    b[1] = ld_global(reinterpret_cast<const h2*>(p + 8));
    b[2] = ld_global(reinterpret_cast<const h2*>(p + 8 * pwt));
    b[3] = ld_global(reinterpret_cast<const h2*>(p + 8 * pwt + 8));
  }
}
// The output layer's W^T (only 8 rows o): b0b1 of two n8 tiles n0, n0 + 8 (k rows 8..15 are zero).
__device__ __forceinline__ void load_b_bwd_out2(h2 (&b)[2], const half* w, int pw, const half* wt, int pwt,
                                                int n0, bool smem) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  if (smem) {
    const int j = (lane >> 3) & 1, r = lane & 7;
    ldsm_x2_t(b, w + r * pw + n0 + j * 8);
  } else {
    b[0] = ld_global(reinterpret_cast<const h2*>(wt + (n0 + g) * pwt + 2 * q));
    b[1] = ld_global(reinterpret_cast<const h2*>(wt + (n0 + 8 + g) * pwt + 2 * q));
  }
}

// Weight-gradient operands, from the tile's token-major buffers (rows = coordinates):
// A = a_l^T (features m0.. x coordinates k0..), read transposed.
__device__ __forceinline__ void load_a_gw(h2 (&a)[4], const half* act, int pa, int m0, int k0) {
  const int lane = threadIdx.x % 32, j = lane >> 3, r = lane & 7;
  ldsm_x4_t(a, act + (k0 + (j >> 1) * 8 + r) * pa + m0 + (j & 1) * 8);
}
// B = delta_l (coordinates k0.. x output features n0..n0+7), read transposed.
__device__ __forceinline__ void load_b_gw(h2 (&b)[2], const half* dlt, int pd, int k0, int n0) {
  const int lane = threadIdx.x % 32, j = (lane >> 3) & 1, r = lane & 7;
  ldsm_x2_t(b, dlt + (k0 + j * 8 + r) * pd + n0);
}

// ---------------------------------------------------------------------------------- one tile

// Per-thread state of a block across the tiles of one chunk.
struct ChunkState {
  float gw[kAcc][4];  // register-resident weight-gradient fragments (the warp's first kAcc)
  float loss;
};

// The warp's share of the weight-gradient fragments: [lo, hi) of the layer-major enumeration
// (layer l, m block of 16 input features, n block of 8 output features).
struct FragWalk {
  int l, m, n;
  __device__ __forceinline__ void start(const MlpLayout& s, int f) {
    l = 0;
    while (l + 1 < s.n_layers && f >= cl::gw_frags(s, l)) f -= cl::gw_frags(s, l++);
    const int nn = s.fo_p[l] / 8;
    m = f / nn;
    n = f % nn;
  }
  __device__ __forceinline__ void next(const MlpLayout& s) {
    if (++n == s.fo_p[l] / 8) {
      n = 0;
      if (++m == s.fi_p[l] / 16) m = 0, ++l;
    }
  }
};

// Where element e (C layout) of weight-gradient fragment (l, m, n) lives in a chunk slot: grad W of
// layer l is stored (fo_p, fi_p) row-major at w_off[l]; the fragment holds grad W^T rows
// i = 16 m + g (+8) and columns o = 8 n + 2 q (+1). Lanes of equal q write 8 consecutive floats.
__device__ __forceinline__ int64_t slot_index(const MlpLayout& s, int l, int m, int n, int e) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  const int i = m * 16 + g + (e >> 1) * 8, o = n * 8 + 2 * q + (e & 1);
  return s.w_off[l] + int64_t(o) * s.fi_p[l] + i;
}

__device__ __forceinline__ void frag_range(const MlpLayout& s, int nw, int warp, int& lo, int& hi) {
  const int total = cl::gw_frags_total(s);
  lo = total * warp / nw;
  hi = total * (warp + 1) / nw;
}

// The tile's contribution of fragment (l, m, n): sum over the tile's coordinates of a_l^T delta_l,
// in float16 scaled units; `acache` holds A for (l, m) (reloaded by the caller when it changes).
__device__ __forceinline__ void gw_fragment(float (&t)[4], const h2 (&acache)[cl::kMaxWarps][4],
                                            const half* dlt, int pd, int n, int nw) {
  t[0] = t[1] = t[2] = t[3] = 0.0f;
#pragma unroll
  for (int k = 0; k < cl::kMaxWarps; ++k)
    if (k < nw) {
      h2 b[2];
      load_b_gw(b, dlt, pd, k * kRows, n * 8);
      mma_16816(t, acache[k], b);
    }
}

__device__ __forceinline__ void load_a_cache(h2 (&acache)[cl::kMaxWarps][4], const half* act, int pa, int m,
                                             int nw) {
#pragma unroll
  for (int k = 0; k < cl::kMaxWarps; ++k)
    if (k < nw) load_a_gw(acache[k], act, pa, m * 16, k * kRows);
}

template <int W>
__device__ void run_tile(const Args& A, const Smem& S, int64_t b, int64_t tile, ChunkState& cs,
                         const half* const* wsrc, const half* const* wtsrc, int& parity) {
  constexpr int NH = W / 8, KH = W / 16;
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  const bool smem_w = A.cfg.smem_weights;
  const int D = s.depth, nw = A.cfg.warps, T = kRows * nw;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, q = lane & 3;
  const bool grads = p.mode != MlpMode::kForward;
  const bool want_gx = p.mode == MlpMode::kBackward && p.grad_x != nullptr;
  const int row0 = warp * kRows;             // the warp's first row in the tile
  const int64_t n_first = tile * T + row0;   // its first coordinate
  int64_t nrow[2] = {n_first + g, n_first + g + 8};
  bool valid[2] = {nrow[0] < p.n, nrow[1] < p.n};
  float xc[2][2];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c)
      xc[r][c] = valid[r] ? ld_global(p.x + b * p.x_jet_stride + 2 * nrow[r] + c) : 0.0f;

  // ------------------------------------------------------------------ forward
  // Layer 0: A fragments of the encoding, computed in place (and kept in act[0] for the gradients).
  float acc[NH][4];
  h2 a[KH][4];
  {
    const int fip = s.fi_p[0], nf = s.fi[0], pa = cl::pitch(fip), pw = smem_w ? pa : fip;
    for (int n = 0; n < NH; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int k0 = 0; k0 < fip; k0 += 16) {
      h2 pe[4];
      for (int i = 0; i < 4; ++i) {
        const int r = i & 1, f = k0 + 2 * q + (i >> 1) * 8;
        pe[i] = __floats2half2_rn(pe_feature(f, nf, xc[r][0], xc[r][1]), pe_feature(f + 1, nf, xc[r][0], xc[r][1]));
        if (grads) sts_h2(S.act[0] + (row0 + g + 8 * r) * pa + f, pe[i]);
      }
#pragma unroll
      for (int n = 0; n < NH; n += 2) {
        h2 bb[4];
        load_b_fwd2(bb, wsrc[0], pw, n * 8, k0, smem_w);
        const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
        mma_16816(acc[n], pe, b0);
        mma_16816(acc[n + 1], pe, b1);
      }
    }
  }
  float inv_in = 1.0f;  // 1 / scale of the current layer's input activations
  for (int l = 0; l < D; ++l) {
    if (l > 0) {  // hidden layer l: input a (K = W) from registers
      const int pw = smem_w ? cl::pitch(W) : W;
      for (int n = 0; n < NH; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
      for (int k = 0; k < KH; ++k)
#pragma unroll
        for (int n = 0; n < NH; n += 2) {
          h2 bb[4];
          load_b_fwd2(bb, wsrc[l], pw, n * 8, k * 16, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
          mma_16816(acc[n], a[k], b0);
          mma_16816(acc[n + 1], a[k], b1);
        }
    }
    // bias, ReLU, the tile's scale, float16 A fragments of the next layer (and act[l + 1])
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const float2 bb = lds_f2(S.bias + s.b_off[l] + n * 8 + 2 * q);
      acc[n][0] = relu(acc[n][0] * inv_in + bb.x);
      acc[n][1] = relu(acc[n][1] * inv_in + bb.y);
      acc[n][2] = relu(acc[n][2] * inv_in + bb.x);
      acc[n][3] = relu(acc[n][3] * inv_in + bb.y);
      wm = fmaxf(wm, fmaxf(fmaxf(acc[n][0], acc[n][1]), fmaxf(acc[n][2], acc[n][3])));
    }
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_a[l + 1] = sc;
    const int pa = cl::pitch(W);
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const h2 lo = __floats2half2_rn(acc[n][0] * sc, acc[n][1] * sc);
      const h2 hi = __floats2half2_rn(acc[n][2] * sc, acc[n][3] * sc);
      a[n / 2][(n & 1) * 2] = lo;
      a[n / 2][(n & 1) * 2 + 1] = hi;
      if (grads) {
        sts_h2(S.act[l + 1] + (row0 + g) * pa + n * 8 + 2 * q, lo);
        sts_h2(S.act[l + 1] + (row0 + g + 8) * pa + n * 8 + 2 * q, hi);
      }
    }
    inv_in = 1.0f / sc;
  }
  // Output layer D: one n8 tile, float32 out.
  float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  {
    const int pw = smem_w ? cl::pitch(W) : W;
#pragma unroll
    for (int k = 0; k < KH; ++k) {
      h2 bb[2];
      load_b_fwd1(bb, wsrc[D], pw, k * 16, smem_w);
      mma_16816(y, a[k], bb);
    }
    const float2 bb = lds_f2(S.bias + s.b_off[D] + 2 * q);
    y[0] = y[0] * inv_in + bb.x;
    y[1] = y[1] * inv_in + bb.y;
    y[2] = y[2] * inv_in + bb.x;
    y[3] = y[3] * inv_in + bb.y;
  }
  if (!grads) {
    for (int e = 0; e < 4; ++e) {
      const int r = e >> 1, c = 2 * q + (e & 1);
      if (valid[r] && c < kMlpOut) st_global(p.y + (b * p.n + nrow[r]) * kMlpOut + c, y[e]);
    }
    return;
  }

  // ------------------------------------------------------------------ backward
  // Output deltas (float32, true units): grad_y, or the MSE gradient 2 w (y - t) / (3 N).
  const float inv3n = 1.0f / (3.0f * float(p.n));
  float dout[4];
  for (int e = 0; e < 4; ++e) {
    const int r = e >> 1, c = 2 * q + (e & 1);
    float d = 0.0f;
    if (valid[r] && c < kMlpOut) {
      const int64_t idx = (b * p.n + nrow[r]) * kMlpOut + c;
      if (p.mode == MlpMode::kBackward) {
        d = ld_global(p.grad_y + idx);
      } else {
        const float wgt = p.pixel_weight ? ld_global(p.pixel_weight + b * p.pw_jet_stride + nrow[r]) : 1.0f;
        const float res = y[e] - ld_global(p.target + idx);
        d = 2.0f * wgt * res * inv3n;
        cs.loss += wgt * res * res * inv3n;
      }
    }
    dout[e] = d;
  }
  float* gbw = S.gbw + warp * s.b_total;
  // Bias-gradient partial of layer l from the float32 deltas of one n8 tile (column sums over the
  // warp's 16 rows; lanes 0..3 hold the sums and add them to the warp's own partials).
  auto add_gb = [&](const float (&d)[4], int l, int n) {
    float s0 = d[0] + d[2], s1 = d[1] + d[3];
    for (int o = 4; o < 32; o <<= 1) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, o);
      s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    }
    float* at = gbw + s.b_off[l] + n * 8 + 2 * q;
    const float2 old = lds_f2(at, g == 0);
    sts_f2(at, make_float2(old.x + s0, old.y + s1), g == 0);
  };

  // Layer D: scale the output delta, keep it (dlt[D]) and form d_D = delta W_D for the hidden layer.
  h2 da[KH][4];  // float16 A fragments of the current delta (K = fo_p of the layer)
  float d[NH][4];
  {
    add_gb(dout, D, 0);
    const float wm = fmaxf(fmaxf(fabsf(dout[0]), fabsf(dout[1])), fmaxf(fabsf(dout[2]), fabsf(dout[3])));
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_d[D] = sc;
    const h2 lo = __floats2half2_rn(dout[0] * sc, dout[1] * sc);
    const h2 hi = __floats2half2_rn(dout[2] * sc, dout[3] * sc);
    const int pd = cl::pitch(s.fo_p[D]);
    sts_h2(S.dlt[D] + (row0 + g) * pd + 2 * q, lo);
    sts_h2(S.dlt[D] + (row0 + g + 8) * pd + 2 * q, hi);
    const h2 zero = __floats2half2_rn(0.0f, 0.0f);
    const h2 a0[4] = {lo, hi, zero, zero};  // k = output channels 0..7; 8..15 are zero
    const float inv = 1.0f / sc;
    const int pw = smem_w ? cl::pitch(W) : W, pwt = s.fo_p[D];
#pragma unroll
    for (int n = 0; n < NH; n += 2) {
      h2 bb[2];
      load_b_bwd_out2(bb, wsrc[D], pw, wtsrc[D], pwt, n * 8, smem_w);
      const h2 b0[2] = {bb[0], zero}, b1[2] = {bb[1], zero};
      d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.0f;
      d[n + 1][0] = d[n + 1][1] = d[n + 1][2] = d[n + 1][3] = 0.0f;
      mma_16816(d[n], a0, b0);
      mma_16816(d[n + 1], a0, b1);
    }
    for (int n = 0; n < NH; ++n)
      for (int e = 0; e < 4; ++e) d[n][e] *= inv;
  }
  // Hidden layers l = D - 1 .. 0: mask d_{l+1} by a_{l+1} > 0 (giving layer l's output delta), keep
  // it, and form d_l = delta W_l (l >= 1, or the encoding's gradient at l = 0 for grad_x).
  for (int l = D - 1; l >= 0; --l) {
    const int pa = cl::pitch(W);
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const h2 m0 = lds_h2(S.act[l + 1] + (row0 + g) * pa + n * 8 + 2 * q);
      const h2 m1 = lds_h2(S.act[l + 1] + (row0 + g + 8) * pa + n * 8 + 2 * q);
      if (!(__low2float(m0) > 0.0f)) d[n][0] = 0.0f;
      if (!(__high2float(m0) > 0.0f)) d[n][1] = 0.0f;
      if (!(__low2float(m1) > 0.0f)) d[n][2] = 0.0f;
      if (!(__high2float(m1) > 0.0f)) d[n][3] = 0.0f;
      add_gb(d[n], l, n);
      wm = fmaxf(wm, fmaxf(fmaxf(fabsf(d[n][0]), fabsf(d[n][1])), fmaxf(fabsf(d[n][2]), fabsf(d[n][3]))));
    }
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_d[l] = sc;
    const int pd = cl::pitch(W);
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const h2 lo = __floats2half2_rn(d[n][0] * sc, d[n][1] * sc);
      const h2 hi = __floats2half2_rn(d[n][2] * sc, d[n][3] * sc);
      da[n / 2][(n & 1) * 2] = lo;
      da[n / 2][(n & 1) * 2 + 1] = hi;
      sts_h2(S.dlt[l] + (row0 + g) * pd + n * 8 + 2 * q, lo);
      sts_h2(S.dlt[l] + (row0 + g + 8) * pd + n * 8 + 2 * q, hi);
    }
    const float inv = 1.0f / sc;
    if (l > 0) {
      const int pw = smem_w ? cl::pitch(W) : W;
      for (int n = 0; n < NH; ++n) d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.0f;
#pragma unroll
      for (int k = 0; k < KH; ++k)
#pragma unroll
        for (int n = 0; n < NH; n += 2) {
          h2 bb[4];
          load_b_bwd2(bb, wsrc[l], pw, wtsrc[l], W, k * 16, n * 8, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
          mma_16816(d[n], da[k], b0);
          mma_16816(d[n + 1], da[k], b1);
        }
      for (int n = 0; n < NH; ++n)
        for (int e = 0; e < 4; ++e) d[n][e] *= inv;
    } else if (want_gx) {
      // d_0 = delta W_0 over the encoding's features, 16 at a time, through d PE / d x (float32
      // sincospif, not the float16 features); then summed over the quad's four lanes.
      const int fip = s.fi_p[0], nf = s.fi[0], pw = smem_w ? cl::pitch(fip) : fip;
      float gxa[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
      for (int n0 = 0; n0 < fip; n0 += 16) {
        float t[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int k = 0; k < KH; ++k) {
          h2 bb[4];
          load_b_bwd2(bb, wsrc[0], pw, wtsrc[0], W, k * 16, n0, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
          mma_16816(t[0], da[k], b0);
          mma_16816(t[1], da[k], b1);
        }
        for (int u = 0; u < 2; ++u)
          for (int e = 0; e < 4; ++e) {
            const int r = e >> 1, f = n0 + u * 8 + 2 * q + (e & 1);
            const float v = t[u][e] * inv;
            if (f < 2) {
              gxa[r][f] += v;
            } else if (f < nf) {
              const int k = (f - 2) / 4, j = (f - 2) % 4, c = j & 1;
              float sn, cs2;
              sincospif(reduce_period2(ldexpf(xc[r][c], k)), &sn, &cs2);
              gxa[r][c] += ldexpf(kPi, k) * (j < 2 ? v * cs2 : -v * sn);
            }
          }
      }
      for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) {
          gxa[r][c] += __shfl_xor_sync(0xffffffffu, gxa[r][c], 1);
          gxa[r][c] += __shfl_xor_sync(0xffffffffu, gxa[r][c], 2);
          if (q == 0 && valid[r]) st_global(A.gx + (b * p.n + nrow[r]) * 2 + c, gxa[r][c]);
        }
    }
  }
  __syncthreads();  // every warp's act and dlt rows of the tile are in shared memory

  // ------------------------------------------------------------------ weight gradients
  int lo, hi;
  frag_range(s, nw, warp, lo, hi);
  FragWalk fw;
  fw.start(s, lo);
  h2 acache[cl::kMaxWarps][4];
  int cl_l = -1, cl_m = -1;
#pragma unroll
  for (int j = 0; j < kAcc; ++j)
    if (lo + j < hi) {
      if (fw.l != cl_l || fw.m != cl_m) {
        load_a_cache(acache, S.act[fw.l], cl::pitch(s.fi_p[fw.l]), fw.m, nw);
        cl_l = fw.l, cl_m = fw.m;
      }
      float t[4];
      gw_fragment(t, acache, S.dlt[fw.l], cl::pitch(s.fo_p[fw.l]), fw.n, nw);
      const float inv = 1.0f / (S.scl_a[fw.l] * S.scl_d[fw.l]);
      for (int e = 0; e < 4; ++e) cs.gw[j][e] += t[e] * inv;
      fw.next(s);
    }
  // Fragments beyond the register budget (large networks): accumulated in the chunk's slot.
  float* slot = A.slots + (b * A.n_chunks + (tile * T) / A.cfg.chunk_coords) * cl::slot_floats(s);
  for (int f = lo + kAcc; f < hi; ++f) {
    if (fw.l != cl_l || fw.m != cl_m) {
      load_a_cache(acache, S.act[fw.l], cl::pitch(s.fi_p[fw.l]), fw.m, nw);
      cl_l = fw.l, cl_m = fw.m;
    }
    float t[4];
    gw_fragment(t, acache, S.dlt[fw.l], cl::pitch(s.fo_p[fw.l]), fw.n, nw);
    const float inv = 1.0f / (S.scl_a[fw.l] * S.scl_d[fw.l]);
    for (int e = 0; e < 4; ++e) {
      float* at = slot + slot_index(s, fw.l, fw.m, fw.n, e);
      st_global(at, ld_global(at) + t[e] * inv);
    }
    fw.next(s);
  }
}

// ---------------------------------------------------------------------------------- kernels

template <int W>
__global__ void __launch_bounds__(cl::kMaxWarps * 32) mlp_main_kernel(const __grid_constant__ Args A) {
  INR_DYNAMIC_SMEM(smem_raw);
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  const bool grads = p.mode != MlpMode::kForward;
  const Smem S = carve(s, A.cfg, grads, smem_raw);
  const int nw = A.cfg.warps, T = kRows * nw, warp = threadIdx.x / 32;
  const int64_t ntiles = (p.n + T - 1) / T, tiles_per_chunk = A.cfg.chunk_coords / T;
  const int64_t items = p.batch * A.n_chunks;
  const half* wsrc[kMlpMaxLayers];
  const half* wtsrc[kMlpMaxLayers];
  int parity = 0;
  if (threadIdx.x == 0) S.scl_a[0] = 1.0f;  // the encoding is not scaled (read after barriers)

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / A.n_chunks, chunk = item % A.n_chunks;
    const int64_t t0 = chunk * tiles_per_chunk;
    const int64_t t1 = t0 + tiles_per_chunk < ntiles ? t0 + tiles_per_chunk : ntiles;
    __syncthreads();  // the previous item is done with the staged weights and the partials
    // Stage this jet's weights (float16, zero padding) and biases; zero the bias-gradient partials.
    for (int l = 0; l < s.n_layers; ++l) {
      const int fo = s.fo[l], fi = s.fi[l], fop = s.fo_p[l], fip = s.fi_p[l];
      if (A.cfg.smem_weights) {
        const float* src = p.weights[l] + b * fo * fi;
        for (int e = threadIdx.x; e < fop * fip; e += blockDim.x) {
          const int o = e / fip, i = e % fip;
          const float v = (o < fo && i < fi) ? ld_global(src + o * fi + i) : 0.0f;
          S.w[l][o * cl::pitch(fip) + i] = __float2half_rn(v);
        }
        wsrc[l] = S.w[l];
        wtsrc[l] = nullptr;
      } else {
        wsrc[l] = A.wh + b * s.w_total + s.w_off[l];
        wtsrc[l] = A.wth + b * s.w_total + s.w_off[l];
      }
      for (int o = threadIdx.x; o < fop; o += blockDim.x)
        S.bias[s.b_off[l] + o] = o < fo ? ld_global(p.biases[l] + b * fo + o) : 0.0f;
    }
    ChunkState cs;
    cs.loss = 0.0f;
    for (int j = 0; j < kAcc; ++j) cs.gw[j][0] = cs.gw[j][1] = cs.gw[j][2] = cs.gw[j][3] = 0.0f;
    float* slot = A.slots + item * cl::slot_floats(s);
    int lo = 0, hi = 0;
    if (grads) {
      for (int e = threadIdx.x; e < nw * s.b_total; e += blockDim.x) S.gbw[e] = 0.0f;
      frag_range(s, nw, warp, lo, hi);
      FragWalk fw;
      fw.start(s, lo);
      for (int f = lo; f < hi; ++f, fw.next(s))  // zero the slot's part of the overflow fragments
        if (f >= lo + kAcc)
          for (int e = 0; e < 4; ++e) st_global(slot + slot_index(s, fw.l, fw.m, fw.n, e), 0.0f);
    }
    __syncthreads();
    for (int64_t tile = t0; tile < t1; ++tile) {
      if (grads && tile > t0) __syncthreads();  // the previous tile's gradients have read act and dlt
      run_tile<W>(A, S, b, tile, cs, wsrc, wtsrc, parity);
    }
    if (!grads) continue;
    // Write the chunk's partial once: register fragments, bias gradients (warps in order), loss.
    FragWalk fw;
    fw.start(s, lo);
#pragma unroll
    for (int j = 0; j < kAcc; ++j)
      if (lo + j < hi) {
        for (int e = 0; e < 4; ++e) st_global(slot + slot_index(s, fw.l, fw.m, fw.n, e), cs.gw[j][e]);
        fw.next(s);
      }
    __syncthreads();  // every warp's bias partials are complete
    for (int e = threadIdx.x; e < s.b_total; e += blockDim.x) {
      float acc = 0.0f;
      for (int w = 0; w < nw; ++w) acc += S.gbw[w * s.b_total + e];
      st_global(slot + s.w_total + e, acc);
    }
    const float loss = block_sum(warp_sum(cs.loss), S.red, parity, nw);
    if (threadIdx.x == 0) st_global(slot + s.w_total + s.b_total, loss);
  }
}

// Layer l of packed weight element e (offsets ascending).
__device__ __forceinline__ int layer_of(const int64_t* off, int n_layers, int64_t e) {
  int l = 0;
  while (l + 1 < n_layers && off[l + 1] <= e) ++l;
  return l;
}

// float16 copies of jet b's weights for the global-weights path: W (fo_p, fi_p) and W^T (fi_p, fo_p).
__global__ void pack_weights_kernel(MlpProblem<float> p, half* __restrict__ wh, half* __restrict__ wth) {
  const MlpLayout& s = p.layout;
  const int64_t b = blockIdx.x;
  for (int64_t e = threadIdx.x; e < s.w_total; e += blockDim.x) {
    const int l = layer_of(s.w_off, s.n_layers, e);
    const int64_t r = e - s.w_off[l];
    const int o = int(r / s.fi_p[l]), i = int(r % s.fi_p[l]);
    const float v =
        (o < s.fo[l] && i < s.fi[l]) ? ld_global(p.weights[l] + (b * s.fo[l] + o) * s.fi[l] + i) : 0.0f;
    st_global(wh + b * s.w_total + e, __float2half_rn(v));
    st_global(wth + b * s.w_total + s.w_off[l] + int64_t(i) * s.fo_p[l] + o, __float2half_rn(v));
  }
}

// Sums jet b's chunk partials in chunk order and writes the unpadded float32 gradients and the loss.
__global__ void reduce_kernel(MlpProblem<float> p, int64_t n_chunks, const float* __restrict__ slots) {
  const MlpLayout& s = p.layout;
  const int64_t b = blockIdx.x, slot = cl::slot_floats(s);
  const float* base = slots + b * n_chunks * slot;
  for (int64_t e = threadIdx.x; e <= s.w_total + s.b_total; e += blockDim.x) {
    float acc = 0.0f;
    for (int64_t c = 0; c < n_chunks; ++c) acc += ld_global(base + c * slot + e);
    if (e < s.w_total) {  // grad W element (o, i) of layer l
      const int l = layer_of(s.w_off, s.n_layers, e);
      const int64_t r = e - s.w_off[l];
      const int o = int(r / s.fi_p[l]), i = int(r % s.fi_p[l]);
      if (o < s.fo[l] && i < s.fi[l]) st_global(p.grad_w[l] + (b * s.fo[l] + o) * s.fi[l] + i, acc);
    } else if (e < s.w_total + s.b_total) {
      const int64_t r = e - s.w_total;
      const int l = layer_of(s.b_off, s.n_layers, r);
      const int o = int(r - s.b_off[l]);
      if (o < s.fo[l]) st_global(p.grad_b[l] + b * s.fo[l] + o, acc);
    } else if (p.loss != nullptr) {
      st_global(p.loss + b, acc);
    }
  }
}

// grad_x[n, c] = sum over jets (ascending) of the per-jet partials.
__global__ void reduce_gx_kernel(int64_t batch, int64_t n, const float* __restrict__ gx_part,
                                 float* __restrict__ grad_x) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < 2 * n; e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t b = 0; b < batch; ++b) acc += ld_global(gx_part + b * 2 * n + e);
    st_global(grad_x + e, acc);
  }
}

template <int W>
cudaError_t launch_main(const Args& args, int64_t smem, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(mlp_main_kernel<W>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  const int threads = 32 * args.cfg.warps;
  int per_sm = 0, dev = 0, sms = 0;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, mlp_main_kernel<W>, threads, size_t(smem))) !=
      cudaSuccess)
    return err;
  if ((err = cudaGetDevice(&dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const int64_t items = args.p.batch * args.n_chunks;
  int64_t blocks = int64_t(per_sm) * sms;
  if (args.cfg.max_blocks > 0 && blocks > args.cfg.max_blocks) blocks = args.cfg.max_blocks;
  if (blocks > items) blocks = items;
  if (blocks > 2147483647) blocks = 2147483647;
  INR_LAUNCH(mlp_main_kernel<W>, dim3(unsigned(blocks)), dim3(unsigned(threads)), size_t(smem), stream)(args);
  return launch_status(stream);
}

bool needs_gx(const MlpProblem<float>& p) { return p.mode == MlpMode::kBackward && p.grad_x != nullptr; }

}  // namespace

int64_t mlp_cuda_workspace_floats(const MlpProblem<float>& p, const cl::Config& c) {
  return cl::workspace_layout(p.layout, p.batch, p.n, c, p.mode != MlpMode::kForward, needs_gx(p), int(sizeof(half)))
      .floats;
}

int64_t mlp_cuda_smem_bytes(const MlpProblem<float>& p, const cl::Config& c) {
  return cl::smem_layout(p.layout, c, p.mode != MlpMode::kForward, int(sizeof(half))).bytes;
}

int mlp_cuda_run(const MlpProblem<float>& p, const cl::Config& c, float* workspace, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const MlpLayout& s = p.layout;
  if (!cl::config_valid(c) || !mlp_width_supported(s.width) || s.fo_p[s.depth] != kMlpOutPadCuda)
    return int(cudaErrorInvalidValue);
  if (p.batch == 0) return 0;
  const bool grads = p.mode != MlpMode::kForward;
  const cl::WorkspaceLayout wl = cl::workspace_layout(s, p.batch, p.n, c, grads, needs_gx(p), int(sizeof(half)));
  Args args;
  args.p = p;
  args.cfg = c;
  args.n_chunks = cl::n_chunks(p.n, c);
  args.slots = workspace + wl.slots;
  args.gx = workspace + wl.gx;
  args.wh = reinterpret_cast<const half*>(workspace + wl.wh);
  args.wth = reinterpret_cast<const half*>(workspace + wl.wth);
  cudaError_t err = cudaSuccess;
  if (p.n > 0) {
    if (!c.smem_weights) {
      INR_LAUNCH(pack_weights_kernel, dim3(unsigned(p.batch)), dim3(256), 0, stream)(
          p, reinterpret_cast<half*>(workspace + wl.wh), reinterpret_cast<half*>(workspace + wl.wth));
      if ((err = launch_status(stream)) != cudaSuccess) return int(err);
    }
    const int64_t smem = mlp_cuda_smem_bytes(p, c);
    switch (s.width) {
      case 16: err = launch_main<16>(args, smem, stream); break;
      case 32: err = launch_main<32>(args, smem, stream); break;
      case 64: err = launch_main<64>(args, smem, stream); break;
      default: err = launch_main<128>(args, smem, stream); break;
    }
    if (err != cudaSuccess) return int(err);
  }
  if (grads) {
    if (p.n == 0) {  // no chunk ran: the partials are zero
      err = cudaMemsetAsync(args.slots, 0, size_t(p.batch) * cl::slot_floats(s) * sizeof(float), stream);
      if (err != cudaSuccess) return int(err);
    }
    INR_LAUNCH(reduce_kernel, dim3(unsigned(p.batch)), dim3(256), 0, stream)(p, p.n == 0 ? 1 : args.n_chunks,
                                                                              args.slots);
    if ((err = launch_status(stream)) != cudaSuccess) return int(err);
  }
  if (needs_gx(p) && p.n > 0) {
    int64_t blocks = (2 * p.n + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    INR_LAUNCH(reduce_gx_kernel, dim3(unsigned(blocks)), dim3(256), 0, stream)(p.batch, p.n, args.gx, p.grad_x);
    if ((err = launch_status(stream)) != cudaSuccess) return int(err);
  }
  return 0;
}

int mlp_cuda_device_limits(int* sm_count, int* smem_optin) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return int(err);
}

}  // namespace cuda
}  // namespace inr_fast
