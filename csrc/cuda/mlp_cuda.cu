// CUDA fused positional encoding + per-jet MLP: float16 operands, mma.sync m16n8k16 tensor-core
// products with float32 accumulation. Same algorithm as csrc/cpu/mlp_cpu.cpp (the executable
// specification); csrc/README.md describes the decomposition, the numerics and what differs.
//
// Work: the coordinates of each jet are cut into chunks of Config::chunk_coords, and a persistent
// grid of blocks takes the (jet, chunk) items in turn. Per item a block stages the jet's weights
// (float16) and biases in shared memory once, then streams the chunk's tiles of warp_rows(W) x warps
// coordinates. Each warp carries its 32 coordinates (two m16 row blocks, so that every weight
// fragment read serves two mma; 16 at W = 128) through every layer: without gradients in registers
// (the output fragments of one mma become the A operand of the next); with gradients it leaves each
// layer's input and output delta of the tile in shared memory (the next layer reading its A
// fragments back at W >= 64, where the registers hold the weight-gradient rows), and after the
// backward the block computes the tile's weight gradients grad W_l^T += a_l^T delta_l from them, in
// rows grouped by layer that share their B fragments, into float32 rows that stay on chip (registers,
// then shared memory) for the whole chunk and are written once (a per-chunk slot), then summed over
// chunks in order by reduce_kernel. Activations and deltas are scaled per tile by a power of two
// before the float16 conversion.
#include "inr_fast/cuda_prims.cuh"
#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda.h"
#include "inr_fast/wgmma_operands.cuh"

namespace inr_fast {
namespace cuda {

namespace {

using namespace prims;
namespace cl = cuda_layout;

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
  uint32_t* mask;  // ReLU mask bits of the hidden layers' outputs, per warp (backward)
  float* gsm;      // weight-gradient rows in shared memory, per warp (backward, Config::gw_smem)
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
  r.mask = reinterpret_cast<uint32_t*>(base + m.mask);
  r.gsm = reinterpret_cast<float*>(base + m.gsm);
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

// ReLU mask bits of a C-fragment pair lo (row g) and hi (row g + 8): bit e for element e.
__device__ __forceinline__ uint32_t relu_bits(h2 lo, h2 hi) {
  return uint32_t(__low2float(lo) > 0.0f) | uint32_t(__high2float(lo) > 0.0f) << 1 |
         uint32_t(__low2float(hi) > 0.0f) << 2 | uint32_t(__high2float(hi) > 0.0f) << 3;
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

// Weight-gradient operands, from the tile's token-major buffers (rows = coordinates). A = buf^T
// (features m0.. x coordinates k0..), read transposed.
__device__ __forceinline__ void load_a_t(h2 (&a)[4], const half* buf, int pb, int m0, int k0) {
  const int lane = threadIdx.x % 32, j = lane >> 3, r = lane & 7;
  ldsm_x4_t(a, buf + (k0 + (j >> 1) * 8 + r) * pb + m0 + (j & 1) * 8);
}
// The output layer's A = delta_D^T: its 8 (padded) outputs in rows 0-7, rows 8-15 zero.
__device__ __forceinline__ void load_a_t8(h2 (&a)[4], const half* buf, int pb, int k0) {
  const int lane = threadIdx.x % 32, j = (lane >> 3) & 1, r = lane & 7;
  h2 lo[2];
  ldsm_x2_t(lo, buf + (k0 + j * 8 + r) * pb);
  const h2 zero = __floats2half2_rn(0.0f, 0.0f);
  a[0] = lo[0], a[1] = zero, a[2] = lo[1], a[3] = zero;
}
// B = buf (coordinates k0.. x features), two n8 tiles n0, n0 + 8: b[0..1], b[2..3]; read transposed.
__device__ __forceinline__ void load_b_t2(h2 (&b)[4], const half* buf, int pb, int k0, int n0) {
  const int lane = threadIdx.x % 32, j = lane >> 3, r = lane & 7;
  ldsm_x4_t(b, buf + (k0 + (j & 1) * 8 + r) * pb + n0 + (j >> 1) * 8);
}

// A = buf (16 coordinates from row r0 x features k0 .. k0 + 15), the next layer's input read back.
__device__ __forceinline__ void load_a_rows(h2 (&a)[4], const half* buf, int pb, int r0, int k0) {
  const int lane = threadIdx.x % 32;
  ldsm_x4(a, buf + (r0 + (lane & 15)) * pb + k0 + (lane >> 4) * 8);
}

// ---------------------------------------------------------------------------------- bias gradients

// One halving step of add_bias_grad over lane bit `mask`: with M values left, each lane keeps half
// (the upper half where its bit is set), sends the other half to its partner and adds what it gets.
template <int NV, int M>
__device__ __forceinline__ void rs_step(float (&v)[NV], int mask, int& base, bool& owner) {
  const bool hi = (threadIdx.x & mask) != 0;
  if constexpr (M >= 2) {
    constexpr int H = M / 2;
#pragma unroll
    for (int i = 0; i < H; ++i) {
      const float send = hi ? v[i] : v[i + H];
      const float keep = hi ? v[i + H] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
    if (hi) base += H;
  } else {
    v[0] += __shfl_xor_sync(0xffffffffu, v[0], mask);
    if (hi) owner = false;  // both partners hold the sum; one stores it
  }
}

// Bias-gradient partial of a layer: v[j] (j = 2 n + c) is the lane's sum over its rows of column
// 8 n + 2 q + c. Summed over the 8 lanes of equal q by a reduce-scatter (3 steps, NV - NV / 8
// shuffles instead of 3 NV), each lane then adds the columns it holds to the warp's partials `gb`.
template <int NV>
__device__ __forceinline__ void add_bias_grad(float (&v)[NV], float* gb) {
  const int q = threadIdx.x % 4;
  int base = 0;
  bool owner = true;
  rs_step<NV, NV>(v, 16, base, owner);
  rs_step<NV, (NV > 1 ? NV / 2 : 1)>(v, 8, base, owner);
  rs_step<NV, (NV > 2 ? NV / 4 : 1)>(v, 4, base, owner);
  constexpr int V = NV >= 8 ? NV / 8 : 1;  // values left per lane: columns base .. base + V - 1
  if constexpr (V >= 2) {
#pragma unroll
    for (int i = 0; i < V; i += 2) {
      float* at = gb + 8 * ((base + i) >> 1) + 2 * q;
      const float2 old = lds_f2(at);
      sts_f2(at, make_float2(old.x + v[i], old.y + v[i + 1]));
    }
  } else {
    float* at = gb + 8 * (base >> 1) + 2 * q + (base & 1);
    const float old = lds_f(at, owner);
    sts_f(at, old + v[0], owner);
  }
}

// The end of a chunk's partial: the bias gradients (the warps' partials summed in warp order) and the
// loss. Starts with a barrier (every warp's partials complete).
__device__ __forceinline__ void write_bias_and_loss(const MlpLayout& s, float* slot, const float* gbw, int nw,
                                                    float warp_loss, float* red, int& parity) {
  __syncthreads();
  for (int e = threadIdx.x; e < s.b_total; e += blockDim.x) {
    float acc = 0.0f;
    for (int w = 0; w < nw; ++w) acc += gbw[w * s.b_total + e];
    st_global(slot + s.w_total + e, acc);
  }
  const float loss = block_sum(warp_loss, red, parity, nw);
  if (threadIdx.x == 0) st_global(slot + s.w_total + s.b_total, loss);
}

// ---------------------------------------------------------------------------------- weight gradients

// Per-thread state of a block across the tiles of one chunk: the float32 weight-gradient rows the
// warp keeps in registers (its first gw_slots(W) rows, cuda_layout::gw_row), and the loss.
template <int W>
struct ChunkState {
  float gw[cl::gw_slots(W)][W / 8][4];
  float loss;
};

// Where element e (C layout) of fragment n of weight-gradient row (l, m) lives in a chunk slot
// (grad W of layer l, (fo_p, fi_p) row-major at w_off[l]); false for the output row's rows 8-15.
// Lanes of equal q write 8 consecutive floats.
__device__ __forceinline__ bool gw_index(const MlpLayout& s, int l, int m, int n, int e, int64_t& at) {
  const int lane = threadIdx.x % 32, g = lane >> 2, q = lane & 3;
  const bool out = l == s.depth;  // grad W_D: rows o (outputs), columns i; else grad W_l^T: rows i
  const int o = out ? g : n * 8 + 2 * q + (e & 1);
  const int i = out ? n * 8 + 2 * q + (e & 1) : m * 16 + g + (e >> 1) * 8;
  at = s.w_off[l] + int64_t(o) * s.fi_p[l] + i;
  return !out || e < 2;
}

// A warp's weight-gradient rows [lo, hi) (cuda_layout::gw_row_range): the first nreg in registers
// (ChunkState::gw), then up to gw_smem_slots in shared memory (Config::gw_smem), up to nloc in all;
// the rest in the chunk's slot in global memory.
struct WarpRows {
  int lo = 0, hi = 0, nreg = 0, nloc = 0;
};
template <int W>
__device__ __forceinline__ WarpRows warp_rows_of(const MlpLayout& s, const cl::Config& c, int warp) {
  WarpRows r;
  cl::gw_row_range(s, c.warps, warp, r.lo, r.hi);
  const int n = r.hi - r.lo, smem = c.gw_smem ? cl::gw_smem_slots(W) : 0;
  r.nreg = n < cl::gw_slots(W) ? n : cl::gw_slots(W);
  r.nloc = n < r.nreg + smem ? n : r.nreg + smem;
  return r;
}

// The operands of row (l, m): A from `abuf`, B (all W / 8 fragments) from `bbuf`.
struct GwOperands {
  const half* abuf;
  const half* bbuf;
  int pa, pb;
  bool out;  // the output layer's transposed row
};
__device__ __forceinline__ GwOperands gw_operands(const MlpLayout& s, const Smem& S, int l) {
  GwOperands o;
  o.out = l == s.depth;
  o.abuf = o.out ? S.dlt[l] : S.act[l];
  o.bbuf = o.out ? S.act[l] : S.dlt[l];
  o.pa = cl::pitch(o.out ? s.fo_p[l] : s.fi_p[l]);
  o.pb = cl::pitch(s.width);
  return o;
}

// The tile's sum for one row, in the tile's float16 units (scale a x scale delta).
template <int W>
__device__ __forceinline__ void gw_row_sum(float (&t)[W / 8][4], const GwOperands& o, int m, int T) {
  constexpr int NH = W / 8;
#pragma unroll
  for (int n = 0; n < NH; ++n) t[n][0] = t[n][1] = t[n][2] = t[n][3] = 0.0f;
  for (int k0 = 0; k0 < T; k0 += 16) {
    h2 af[4];
    if (o.out)
      load_a_t8(af, o.abuf, o.pa, k0);
    else
      load_a_t(af, o.abuf, o.pa, m * 16, k0);
#pragma unroll
    for (int n = 0; n < NH; n += 2) {
      h2 bb[4];
      load_b_t2(bb, o.bbuf, o.pb, k0, n * 8);
      const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
      mma_16816(t[n], af, b0);
      mma_16816(t[n + 1], af, b1);
    }
  }
}

// Element e of fragment n of the warp's shared-memory row j (lanes adjacent: conflict-free).
template <int W>
__device__ __forceinline__ float* gsm_at(const Smem& S, int j, int n, int e) {
  constexpr int SR = cl::gw_smem_slots(W) > 0 ? cl::gw_smem_slots(W) : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  return S.gsm + (((warp * SR + j) * (W / 8) + n) * 4 + e) * 32 + lane;
}

// Rows per group (gw_group's registers for the tile sums): 2 at W = 64, where 3 made ptxas spill.
template <int W>
__host__ __device__ constexpr int gw_group_rows() {
  return W == 64 ? 2 : cl::gw_slots(W) + cl::gw_smem_slots(W);
}

// The tile's contribution to the warp's rows r0 .. r1 - 1 (at most gw_group_rows; rows m0, m0 + 1,
// .. of layer l): rows j < RS in registers, RS <= j < RS + SR in shared memory. Every B fragment is
// read once per k-step and serves all of them. Each row sums the tile from zero in registers (in
// the tile's float16 units, scale a x scale delta) and adds the sum, scaled back, to its chunk total
// once, so a chunk's float32 sum is a sum of tile sums.
template <int W>
__device__ __forceinline__ void gw_group(float (&gw)[cl::gw_slots(W)][W / 8][4], int r0, int r1, int l, int m0,
                                         const MlpLayout& s, const Smem& S, int T) {
  constexpr int NH = W / 8, RS = cl::gw_slots(W), G = gw_group_rows<W>();
  const GwOperands o = gw_operands(s, S, l);
  float tmp[G][NH][4];
  if constexpr (G == 1) {  // one row: B fragments loaded as used (fewer registers)
    gw_row_sum<W>(tmp[0], o, m0, T);
  } else {
#pragma unroll
    for (int jj = 0; jj < G; ++jj)
#pragma unroll
      for (int n = 0; n < NH; ++n) tmp[jj][n][0] = tmp[jj][n][1] = tmp[jj][n][2] = tmp[jj][n][3] = 0.0f;
    for (int k0 = 0; k0 < T; k0 += 16) {
      h2 bf[NH / 2][4];
#pragma unroll
      for (int n2 = 0; n2 < NH / 2; ++n2) load_b_t2(bf[n2], o.bbuf, o.pb, k0, n2 * 16);
#pragma unroll
      for (int jj = 0; jj < G; ++jj)
        if (r0 + jj < r1) {
          h2 af[4];
          if (o.out)
            load_a_t8(af, o.abuf, o.pa, k0);
          else
            load_a_t(af, o.abuf, o.pa, (m0 + jj) * 16, k0);
#pragma unroll
          for (int n = 0; n < NH; ++n) {
            const h2 bn[2] = {bf[n / 2][(n & 1) * 2], bf[n / 2][(n & 1) * 2 + 1]};
            mma_16816(tmp[jj][n], af, bn);
          }
        }
    }
  }
  const float ia = 1.0f / S.scl_a[l], id = 1.0f / S.scl_d[l];
#pragma unroll
  for (int jj = 0; jj < G; ++jj)
    if (r0 + jj < r1) {
#pragma unroll
      for (int j = 0; j < RS; ++j)
        if (j == r0 + jj)
#pragma unroll
          for (int n = 0; n < NH; ++n)
            for (int e = 0; e < 4; ++e) gw[j][n][e] += tmp[jj][n][e] * ia * id;
      if (r0 + jj >= RS)
#pragma unroll
        for (int n = 0; n < NH; ++n)
          for (int e = 0; e < 4; ++e) {
            float* at = gsm_at<W>(S, r0 + jj - RS, n, e);
            sts_f(at, lds_f(at) + tmp[jj][n][e] * ia * id);
          }
    }
}

// ---------------------------------------------------------------------------------- one tile

// Bit (t NH + n) 4 + e of the warp's mask words of a layer: element e of C fragment n of m-tile t.
template <int W>
__device__ __forceinline__ uint32_t* mask_at(const Smem& S, int depth, int l, int w) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  return S.mask + ((warp * depth + l) * cl::mask_words(W) + w) * 32 + lane;
}

// G: gradients (backward or MSE step); GX: and grad_x. With gradients every layer's input and output
// delta go to shared memory for the weight gradients anyway; at W >= 64 the next layer reads its A
// fragments back from there (ldmatrix) instead of keeping them in registers, whose room the float32
// weight-gradient rows need (ptxas spilled 900 bytes at W = 64 otherwise). Otherwise the layers chain
// in registers.
template <int W, bool G, bool GX>
__device__ void run_tile(const Args& A, const Smem& S, int64_t b, int64_t tile, ChunkState<W>& cs,
                         const WarpRows& wr, const half* const* wsrc, const half* const* wtsrc, int& parity) {
  constexpr int NH = W / 8, KH = W / 16, MT = cl::warp_rows(W) / 16, MW = cl::mask_words(W);
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  const bool smem_w = A.cfg.smem_weights;
  const int D = s.depth, nw = A.cfg.warps, T = cl::tile(A.cfg, W);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, q = lane & 3;
  constexpr bool grads = G;
  constexpr bool a_smem = G && W >= 64;  // A fragments of the next layer read back from shared memory
  constexpr bool want_gx = GX;  // == (backward with grad_x): a kernel of its own, so that the grad_x
                                // path's registers do not weigh on the others
  const int row0 = warp * MT * 16;          // the warp's first row in the tile
  const int64_t n_first = tile * T + row0;  // its first coordinate
  // m-tile t, row half r: tile row row0 + 16 t + 8 r + g.
  int64_t nrow[MT][2];
  bool valid[MT][2];
  float xc[MT][2][2];
#pragma unroll
  for (int t = 0; t < MT; ++t)
    for (int r = 0; r < 2; ++r) {
      nrow[t][r] = n_first + 16 * t + 8 * r + g;
      valid[t][r] = nrow[t][r] < p.n;
      for (int c = 0; c < 2; ++c)
        xc[t][r][c] = valid[t][r] ? ld_global(p.x + b * p.x_jet_stride + 2 * nrow[t][r] + c) : 0.0f;
    }

  // ------------------------------------------------------------------ forward
  // Layer 0: A fragments of the encoding, computed in place (and kept in act[0] for the gradients).
  // Each B fragment of the weights, read once, serves the warp's MT m-tiles.
  float acc[MT][NH][4];
  h2 a[a_smem ? 1 : MT][a_smem ? 1 : KH][4];  // the next layer's A fragments (in registers)
  {
    const int fip = s.fi_p[0], nf = s.fi[0], pa = cl::pitch(fip), pw = smem_w ? pa : fip;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int n = 0; n < NH; ++n) acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.0f;
    for (int k0 = 0; k0 < fip; k0 += 16) {
      h2 pe[MT][4];
#pragma unroll
      for (int t = 0; t < MT; ++t)
        for (int i = 0; i < 4; ++i) {
          const int r = i & 1, f = k0 + 2 * q + (i >> 1) * 8;
          pe[t][i] = __floats2half2_rn(pe_feature(f, nf, xc[t][r][0], xc[t][r][1]),
                                       pe_feature(f + 1, nf, xc[t][r][0], xc[t][r][1]));
          if (grads) sts_h2(S.act[0] + (row0 + 16 * t + 8 * r + g) * pa + f, pe[t][i]);
        }
#pragma unroll
      for (int n = 0; n < NH; n += 2) {
        h2 bb[4];
        load_b_fwd2(bb, wsrc[0], pw, n * 8, k0, smem_w);
        const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          mma_16816(acc[t][n], pe[t], b0);
          mma_16816(acc[t][n + 1], pe[t], b1);
        }
      }
    }
  }
  float inv_in = 1.0f;  // 1 / scale of the current layer's input activations
  for (int l = 0; l < D; ++l) {
    if (l > 0) {  // hidden layer l: input a (K = W) from registers, or read back from act[l]
      const int pw = smem_w ? cl::pitch(W) : W;
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int n = 0; n < NH; ++n) acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.0f;
#pragma unroll
      for (int k = 0; k < KH; ++k) {
        h2 ak[MT][4];
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          if constexpr (a_smem)
            load_a_rows(ak[t], S.act[l], cl::pitch(W), row0 + 16 * t, k * 16);
          else
            for (int i = 0; i < 4; ++i) ak[t][i] = a[t][k][i];
        }
#pragma unroll
        for (int n = 0; n < NH; n += 2) {
          h2 bb[4];
          load_b_fwd2(bb, wsrc[l], pw, n * 8, k * 16, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
#pragma unroll
          for (int t = 0; t < MT; ++t) {
            mma_16816(acc[t][n], ak[t], b0);
            mma_16816(acc[t][n + 1], ak[t], b1);
          }
        }
      }
    }
    // bias, ReLU, the tile's scale, float16 A fragments of the next layer (and act[l + 1], and the
    // ReLU mask bits of the float16 values for the backward)
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const float2 bb = lds_f2(S.bias + s.b_off[l] + n * 8 + 2 * q);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        acc[t][n][0] = relu(acc[t][n][0] * inv_in + bb.x);
        acc[t][n][1] = relu(acc[t][n][1] * inv_in + bb.y);
        acc[t][n][2] = relu(acc[t][n][2] * inv_in + bb.x);
        acc[t][n][3] = relu(acc[t][n][3] * inv_in + bb.y);
        wm = fmaxf(wm, fmaxf(fmaxf(acc[t][n][0], acc[t][n][1]), fmaxf(acc[t][n][2], acc[t][n][3])));
      }
    }
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_a[l + 1] = sc;
    const int pa = cl::pitch(W);
    uint32_t mbits[MW];
#pragma unroll
    for (int w = 0; w < MW; ++w) mbits[w] = 0u;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int n = 0; n < NH; ++n) {
        const h2 lo = __floats2half2_rn(acc[t][n][0] * sc, acc[t][n][1] * sc);
        const h2 hi = __floats2half2_rn(acc[t][n][2] * sc, acc[t][n][3] * sc);
        if constexpr (!a_smem) {
          a[t][n / 2][(n & 1) * 2] = lo;
          a[t][n / 2][(n & 1) * 2 + 1] = hi;
        }
        if constexpr (grads) {
          sts_h2(S.act[l + 1] + (row0 + 16 * t + g) * pa + n * 8 + 2 * q, lo);
          sts_h2(S.act[l + 1] + (row0 + 16 * t + g + 8) * pa + n * 8 + 2 * q, hi);
          const int bit = (t * NH + n) * 4;
          mbits[bit / 32] |= relu_bits(lo, hi) << (bit % 32);
        }
      }
    if constexpr (grads) {
#pragma unroll
      for (int w = 0; w < MW; ++w) sts_u32(mask_at<W>(S, D, l, w), mbits[w]);
      if constexpr (a_smem) __syncwarp();  // the warp's act[l + 1] rows are read back by the next layer
    }
    inv_in = 1.0f / sc;
  }
  // Output layer D: one n8 tile, float32 out.
  float y[MT][4];
  {
    const int pw = smem_w ? cl::pitch(W) : W;
#pragma unroll
    for (int t = 0; t < MT; ++t) y[t][0] = y[t][1] = y[t][2] = y[t][3] = 0.0f;
#pragma unroll
    for (int k = 0; k < KH; ++k) {
      h2 bb[2];
      load_b_fwd1(bb, wsrc[D], pw, k * 16, smem_w);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        h2 ak[4];
        if constexpr (a_smem)
          load_a_rows(ak, S.act[D], cl::pitch(W), row0 + 16 * t, k * 16);
        else
          for (int i = 0; i < 4; ++i) ak[i] = a[t][k][i];
        mma_16816(y[t], ak, bb);
      }
    }
    const float2 bb = lds_f2(S.bias + s.b_off[D] + 2 * q);
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      y[t][0] = y[t][0] * inv_in + bb.x;
      y[t][1] = y[t][1] * inv_in + bb.y;
      y[t][2] = y[t][2] * inv_in + bb.x;
      y[t][3] = y[t][3] * inv_in + bb.y;
    }
  }
  if constexpr (!grads) {
#pragma unroll
    for (int t = 0; t < MT; ++t)
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1, c = 2 * q + (e & 1);
        if (valid[t][r] && c < kMlpOut) st_global(p.y + (b * p.n + nrow[t][r]) * kMlpOut + c, y[t][e]);
      }
    return;
  }

  // ------------------------------------------------------------------ backward
  // Output deltas (float32, true units): grad_y, or the MSE gradient 2 w (y - t) / (3 N).
  const float inv3n = 1.0f / (3.0f * float(p.n));
  float dout[MT][4];
#pragma unroll
  for (int t = 0; t < MT; ++t)
    for (int e = 0; e < 4; ++e) {
      const int r = e >> 1, c = 2 * q + (e & 1);
      float d = 0.0f;
      if (valid[t][r] && c < kMlpOut) {
        const int64_t idx = (b * p.n + nrow[t][r]) * kMlpOut + c;
        if (p.mode == MlpMode::kBackward) {
          d = ld_global(p.grad_y + idx);
        } else {
          const float wgt = p.pixel_weight ? ld_global(p.pixel_weight + b * p.pw_jet_stride + nrow[t][r]) : 1.0f;
          const float res = y[t][e] - ld_global(p.target + idx);
          d = 2.0f * wgt * res * inv3n;
          cs.loss += wgt * res * res * inv3n;
        }
      }
      dout[t][e] = d;
    }
  float* gbw = S.gbw + warp * s.b_total;

  // Layer D: scale the output delta, keep it (dlt[D]) and form d_D = delta W_D for the hidden layer.
  float d[MT][NH][4];
  h2 da[a_smem ? 1 : MT][a_smem ? 1 : KH][4];  // float16 A fragments of the current delta (in registers)
  {
    float v[2] = {0.0f, 0.0f};
    float wm = 0.0f;
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      v[0] += dout[t][0] + dout[t][2];
      v[1] += dout[t][1] + dout[t][3];
      wm = fmaxf(wm, fmaxf(fmaxf(fabsf(dout[t][0]), fabsf(dout[t][1])), fmaxf(fabsf(dout[t][2]), fabsf(dout[t][3]))));
    }
    add_bias_grad<2>(v, gbw + s.b_off[D]);
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_d[D] = sc;
    const int pd = cl::pitch(s.fo_p[D]);
    const h2 zero = __floats2half2_rn(0.0f, 0.0f);
    h2 a0[MT][4];  // k = output channels 0..7; 8..15 are zero
#pragma unroll
    for (int t = 0; t < MT; ++t) {
      const h2 lo = __floats2half2_rn(dout[t][0] * sc, dout[t][1] * sc);
      const h2 hi = __floats2half2_rn(dout[t][2] * sc, dout[t][3] * sc);
      sts_h2(S.dlt[D] + (row0 + 16 * t + g) * pd + 2 * q, lo);
      sts_h2(S.dlt[D] + (row0 + 16 * t + g + 8) * pd + 2 * q, hi);
      a0[t][0] = lo, a0[t][1] = hi, a0[t][2] = zero, a0[t][3] = zero;
    }
    const float inv = 1.0f / sc;
    const int pw = smem_w ? cl::pitch(W) : W, pwt = s.fo_p[D];
#pragma unroll
    for (int n = 0; n < NH; n += 2) {
      h2 bb[2];
      load_b_bwd_out2(bb, wsrc[D], pw, wtsrc[D], pwt, n * 8, smem_w);
      const h2 b0[2] = {bb[0], zero}, b1[2] = {bb[1], zero};
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        d[t][n][0] = d[t][n][1] = d[t][n][2] = d[t][n][3] = 0.0f;
        d[t][n + 1][0] = d[t][n + 1][1] = d[t][n + 1][2] = d[t][n + 1][3] = 0.0f;
        mma_16816(d[t][n], a0[t], b0);
        mma_16816(d[t][n + 1], a0[t], b1);
      }
    }
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int n = 0; n < NH; ++n)
        for (int e = 0; e < 4; ++e) d[t][n][e] *= inv;
  }
  // Hidden layers l = D - 1 .. 0: mask d_{l+1} by a_{l+1} > 0 (giving layer l's output delta), keep
  // it, and form d_l = delta W_l (l >= 1, or the encoding's gradient at l = 0 for grad_x).
  for (int l = D - 1; l >= 0; --l) {
    uint32_t mbits[MW];
#pragma unroll
    for (int w = 0; w < MW; ++w) mbits[w] = lds_u32(mask_at<W>(S, D, l, w));
    float v[2 * NH];
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      v[2 * n] = v[2 * n + 1] = 0.0f;
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const int bit = (t * NH + n) * 4;
        const uint32_t m4 = mbits[bit / 32] >> (bit % 32);
        for (int e = 0; e < 4; ++e)
          if (!((m4 >> e) & 1u)) d[t][n][e] = 0.0f;
        v[2 * n] += d[t][n][0] + d[t][n][2];
        v[2 * n + 1] += d[t][n][1] + d[t][n][3];
        wm = fmaxf(wm, fmaxf(fmaxf(fabsf(d[t][n][0]), fabsf(d[t][n][1])), fmaxf(fabsf(d[t][n][2]), fabsf(d[t][n][3]))));
      }
    }
    add_bias_grad<2 * NH>(v, gbw + s.b_off[l]);
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, nw));
    if (threadIdx.x == 0) S.scl_d[l] = sc;
    const int pd = cl::pitch(W);
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int n = 0; n < NH; ++n) {
        const h2 lo = __floats2half2_rn(d[t][n][0] * sc, d[t][n][1] * sc);
        const h2 hi = __floats2half2_rn(d[t][n][2] * sc, d[t][n][3] * sc);
        sts_h2(S.dlt[l] + (row0 + 16 * t + g) * pd + n * 8 + 2 * q, lo);
        sts_h2(S.dlt[l] + (row0 + 16 * t + g + 8) * pd + n * 8 + 2 * q, hi);
        if constexpr (!a_smem) {
          da[t][n / 2][(n & 1) * 2] = lo;
          da[t][n / 2][(n & 1) * 2 + 1] = hi;
        }
      }
    if constexpr (a_smem) __syncwarp();  // the warp's dlt[l] rows are read back as A fragments
    const float inv = 1.0f / sc;
    if (l > 0) {
      const int pw = smem_w ? cl::pitch(W) : W;
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int n = 0; n < NH; ++n) d[t][n][0] = d[t][n][1] = d[t][n][2] = d[t][n][3] = 0.0f;
#pragma unroll
      for (int k = 0; k < KH; ++k) {
        h2 dk[MT][4];
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          if constexpr (a_smem)
            load_a_rows(dk[t], S.dlt[l], pd, row0 + 16 * t, k * 16);
          else
            for (int i = 0; i < 4; ++i) dk[t][i] = da[t][k][i];
        }
#pragma unroll
        for (int n = 0; n < NH; n += 2) {
          h2 bb[4];
          load_b_bwd2(bb, wsrc[l], pw, wtsrc[l], W, k * 16, n * 8, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
#pragma unroll
          for (int t = 0; t < MT; ++t) {
            mma_16816(d[t][n], dk[t], b0);
            mma_16816(d[t][n + 1], dk[t], b1);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int n = 0; n < NH; ++n)
          for (int e = 0; e < 4; ++e) d[t][n][e] *= inv;
    } else if constexpr (want_gx) {
      // d_0 = delta W_0 over the encoding's features, 16 at a time, through d PE / d x (float32
      // sincospif, not the float16 features); then summed over the quad's four lanes.
      const int fip = s.fi_p[0], nf = s.fi[0], pw = smem_w ? cl::pitch(fip) : fip;
      float gxa[MT][2][2];
#pragma unroll
      for (int t = 0; t < MT; ++t) gxa[t][0][0] = gxa[t][0][1] = gxa[t][1][0] = gxa[t][1][1] = 0.0f;
      for (int n0 = 0; n0 < fip; n0 += 16) {
        float tt[MT][2][4];
#pragma unroll
        for (int t = 0; t < MT; ++t)
          for (int u = 0; u < 2; ++u) tt[t][u][0] = tt[t][u][1] = tt[t][u][2] = tt[t][u][3] = 0.0f;
#pragma unroll
        for (int k = 0; k < KH; ++k) {
          h2 bb[4];
          load_b_bwd2(bb, wsrc[0], pw, wtsrc[0], W, k * 16, n0, smem_w);
          const h2 b0[2] = {bb[0], bb[1]}, b1[2] = {bb[2], bb[3]};
#pragma unroll
          for (int t = 0; t < MT; ++t) {
            h2 dk[4];
            if constexpr (a_smem)
              load_a_rows(dk, S.dlt[0], pd, row0 + 16 * t, k * 16);
            else
              for (int i = 0; i < 4; ++i) dk[i] = da[t][k][i];
            mma_16816(tt[t][0], dk, b0);
            mma_16816(tt[t][1], dk, b1);
          }
        }
#pragma unroll
        for (int t = 0; t < MT; ++t)
          for (int u = 0; u < 2; ++u)
            for (int e = 0; e < 4; ++e) {
              const int r = e >> 1, f = n0 + u * 8 + 2 * q + (e & 1);
              const float v = tt[t][u][e] * inv;
              if (f < 2) {
                gxa[t][r][f] += v;
              } else if (f < nf) {
                const int k = (f - 2) / 4, j = (f - 2) % 4, c = j & 1;
                float sn, cs2;
                sincospif(reduce_period2(ldexpf(xc[t][r][c], k)), &sn, &cs2);
                gxa[t][r][c] += ldexpf(kPi, k) * (j < 2 ? v * cs2 : -v * sn);
              }
            }
      }
#pragma unroll
      for (int t = 0; t < MT; ++t)
        for (int r = 0; r < 2; ++r)
          for (int c = 0; c < 2; ++c) {
            gxa[t][r][c] += __shfl_xor_sync(0xffffffffu, gxa[t][r][c], 1);
            gxa[t][r][c] += __shfl_xor_sync(0xffffffffu, gxa[t][r][c], 2);
            if (q == 0 && valid[t][r]) st_global(A.gx + (b * p.n + nrow[t][r]) * 2 + c, gxa[t][r][c]);
          }
    }
  }
  __syncthreads();  // every warp's act and dlt rows of the tile are in shared memory

  // ------------------------------------------------------------------ weight gradients
  // The warp's rows on chip, grouped by layer (one B read per group); then those in the slot.
  for (int r = 0; r < wr.nloc;) {
    int l, m;
    cl::gw_row(s, wr.lo + r, l, m);
    int r1 = r + 1;
    for (; r1 < wr.nloc && r1 - r < gw_group_rows<W>(); ++r1) {
      int l1, m1;
      cl::gw_row(s, wr.lo + r1, l1, m1);
      if (l1 != l) break;
    }
    gw_group<W>(cs.gw, r, r1, l, m, s, S, T);
    r = r1;
  }
  // Rows beyond the register budget (large networks): accumulated in the chunk's slot.
  float* slot = A.slots + (b * A.n_chunks + (tile * T) / A.cfg.chunk_coords) * cl::slot_floats(s);
  for (int row = wr.lo + wr.nloc; row < wr.hi; ++row) {
    int l, m;
    cl::gw_row(s, row, l, m);
    float t[NH][4];
    gw_row_sum<W>(t, gw_operands(s, S, l), m, T);
    const float ia = 1.0f / S.scl_a[l], id = 1.0f / S.scl_d[l];
#pragma unroll
    for (int n = 0; n < NH; ++n)
      for (int e = 0; e < 4; ++e) {
        int64_t at;
        if (gw_index(s, l, m, n, e, at)) st_global(slot + at, ld_global(slot + at) + t[n][e] * ia * id);
      }
  }
}

// ---------------------------------------------------------------------------------- kernels

// The tiles [t0, t1) of chunk `chunk` of a jet (the last chunk may be shorter).
__device__ __forceinline__ void chunk_tiles(int64_t chunk, int64_t tiles_per_chunk, int64_t ntiles, int64_t& t0,
                                            int64_t& t1) {
  t0 = chunk * tiles_per_chunk;
  t1 = t0 + tiles_per_chunk < ntiles ? t0 + tiles_per_chunk : ntiles;
}

template <int W, bool G, bool GX>
__global__ void __launch_bounds__(cl::kMaxWarps * 32, 1) mlp_main_kernel(const __grid_constant__ Args A) {
  INR_DYNAMIC_SMEM(smem_raw);
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  constexpr bool grads = G;  // == (p.mode != MlpMode::kForward): launch_main picks the instance
  const Smem S = carve(s, A.cfg, grads, smem_raw);
  const int nw = A.cfg.warps, T = cl::tile(A.cfg, W), warp = threadIdx.x / 32;
  constexpr int NH = W / 8, RS = cl::gw_slots(W);
  const int64_t ntiles = (p.n + T - 1) / T, tiles_per_chunk = A.cfg.chunk_coords / T;
  const int64_t items = p.batch * A.n_chunks;
  const half* wsrc[kMlpMaxLayers];
  const half* wtsrc[kMlpMaxLayers];
  int parity = 0;
  if (threadIdx.x == 0) S.scl_a[0] = 1.0f;  // the encoding is not scaled (read after barriers)
  const WarpRows wr = grads ? warp_rows_of<W>(s, A.cfg, warp) : WarpRows();

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / A.n_chunks;
    int64_t t0, t1;
    chunk_tiles(item % A.n_chunks, tiles_per_chunk, ntiles, t0, t1);
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
    ChunkState<W> cs;
    cs.loss = 0.0f;
#pragma unroll
    for (int j = 0; j < RS; ++j)
#pragma unroll
      for (int n = 0; n < NH; ++n) cs.gw[j][n][0] = cs.gw[j][n][1] = cs.gw[j][n][2] = cs.gw[j][n][3] = 0.0f;
    float* slot = A.slots + item * cl::slot_floats(s);
    if (grads) {
      for (int e = threadIdx.x; e < nw * s.b_total; e += blockDim.x) S.gbw[e] = 0.0f;
      for (int j = 0; j < wr.nloc - wr.nreg; ++j)
        for (int n = 0; n < NH; ++n)
          for (int e = 0; e < 4; ++e) sts_f(gsm_at<W>(S, j, n, e), 0.0f);
      for (int row = wr.lo + wr.nloc; row < wr.hi; ++row) {  // zero the slot's part of the overflow rows
        int l, m;
        cl::gw_row(s, row, l, m);
        for (int n = 0; n < NH; ++n)
          for (int e = 0; e < 4; ++e) {
            int64_t at;
            if (gw_index(s, l, m, n, e, at)) st_global(slot + at, 0.0f);
          }
      }
    }
    __syncthreads();
    for (int64_t tile = t0; tile < t1; ++tile) {
      if (grads && tile > t0) __syncthreads();  // the previous tile's gradients have read act and dlt
      run_tile<W, G, GX>(A, S, b, tile, cs, wr, wsrc, wtsrc, parity);
    }
    if constexpr (grads) {
      // Write the chunk's partial once: rows on chip, bias gradients (warps in order), loss.
#pragma unroll
      for (int j = 0; j < RS; ++j)
        if (j < wr.nreg) {
          int l, m;
          cl::gw_row(s, wr.lo + j, l, m);
#pragma unroll
          for (int n = 0; n < NH; ++n)
            for (int e = 0; e < 4; ++e) {
              int64_t at;
              if (gw_index(s, l, m, n, e, at)) st_global(slot + at, cs.gw[j][n][e]);
            }
        }
      for (int j = 0; j < wr.nloc - wr.nreg; ++j) {
        int l, m;
        cl::gw_row(s, wr.lo + wr.nreg + j, l, m);
        for (int n = 0; n < NH; ++n)
          for (int e = 0; e < 4; ++e) {
            int64_t at;
            const float v = lds_f(gsm_at<W>(S, j, n, e));
            if (gw_index(s, l, m, n, e, at)) st_global(slot + at, v);
          }
      }
      write_bias_and_loss(s, slot, S.gbw, nw, warp_sum(cs.loss), S.red, parity);
    }
  }
}

// ---------------------------------------------------------------------------------- the wgmma kernel
// sm_90a, the MSE step at the shapes of cl::wgmma_supported (csrc/README.md, "The wgmma kernel").
// One warpgroup per block; a tile is 64 coordinates, 16 per warp. Per tile: the encoding in
// registers as layer 0's A fragments; each layer by wgmma with A from registers (the previous
// layer's accumulators rounded to float16 in place) and B the staged weights; the backward the same
// way against the transposed copies; every layer's input and output delta stored feature-major
// (stmatrix.trans) for the weight gradients, which wgmma then takes from shared memory, onto
// float32 accumulators that are added to totals in shared memory every kWgFlushTiles tiles. Scaling,
// masks, bias gradients and the loss are the mma.sync kernel's (run_tile with one m16 block per warp).
#if defined(INR_FAST_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INR_WG 1
#else
#define INR_WG 0
#endif

struct WgSmem {
  half* w[kMlpMaxLayers];
  half* wt[kMlpMaxLayers];
  half* act[kMlpMaxLayers];
  half* dlt[kMlpMaxLayers];
  float* bias;
  float* gbw;
  float* tot;
  float* red;
  float* scl_a;
  float* scl_d;
};

#if INR_WG || !defined(__CUDA_ARCH__)
constexpr int kWgLayers = 4;  // D + 1 (cl::wgmma_supported: D = 3)

__device__ __forceinline__ WgSmem wg_carve(const MlpLayout& s, unsigned char* base) {
  const cl::WgSmemLayout m = cl::wg_smem_layout(s, int(sizeof(half)));
  WgSmem r;
#pragma unroll
  for (int l = 0; l < kWgLayers; ++l) {  // (indices known at compile time: the pointers stay in registers)
    r.w[l] = reinterpret_cast<half*>(base + m.w[l]);
    r.wt[l] = reinterpret_cast<half*>(base + m.wt[l]);
    r.act[l] = reinterpret_cast<half*>(base + m.act[l]);
    r.dlt[l] = reinterpret_cast<half*>(base + m.dlt[l]);
  }
  r.bias = reinterpret_cast<float*>(base + m.bias);
  r.gbw = reinterpret_cast<float*>(base + m.gbw);
  r.tot = reinterpret_cast<float*>(base + m.tot);
  r.red = reinterpret_cast<float*>(base + m.red);
  r.scl_a = reinterpret_cast<float*>(base + m.scl);
  r.scl_d = r.scl_a + kMlpMaxLayers;
  return r;
}

// Descriptor of k16 step t of a K-major operand with K columns; the warp's 16 rows of column blocks
// j, j + 1 stored feature-major into a tile buffer (the tile's 64 coordinates as K).
__device__ __forceinline__ uint64_t wg_desc(const half* m, int K, int t) { return kmajor_desc(m, K, t); }
__device__ __forceinline__ void wg_store2(half* m, int j, int r0, h2 lo0, h2 hi0, h2 lo1, h2 hi1) {
  stsm_features(m, cl::kWgTile, j, r0, lo0, hi0, lo1, hi1);
}

// Per-thread state of a chunk: the weight-gradient accumulators (grad W_l, 64 x fi_p[l], for l < D;
// grad W_D^T, 64 x 8), each in units of 2^ue[l] (the product of the tile scales it was summed in),
// or empty (fresh) since the last flush; the loss.
template <int K0>
struct WgAcc {
  float g0[K0 / 2];
  float gh[kWgLayers - 2][32];
  float go[4];
  int ue[kWgLayers];
  bool fresh;
  float loss;
};

// Register j of layer l's accumulators (l = 0 .. D; j < wg_count(l)); wg_base(l) + j indexes the
// thread's totals in shared memory (one float per thread and register: tot[(base + j) 128 + thread]).
template <int K0>
__device__ __forceinline__ float* wg_reg(WgAcc<K0>& a, int l, int j) {
  return l == 0 ? &a.g0[j] : l < kWgLayers - 1 ? &a.gh[l - 1][j] : &a.go[j];
}
template <int K0>
__device__ __forceinline__ int wg_count(int l) {
  return l == 0 ? K0 / 2 : l < kWgLayers - 1 ? 32 : 4;
}
template <int K0>
__device__ __forceinline__ int wg_base(int l) {
  return l == 0 ? 0 : l < kWgLayers - 1 ? K0 / 2 + 32 * (l - 1) : K0 / 2 + 32 * (kWgLayers - 2);
}

// Adds every layer's accumulators, in true units, to the thread's totals in shared memory; they are
// then empty (the next weight-gradient wgmma starts them with scale-d = 0).
template <int K0>
__device__ __forceinline__ void wg_flush(WgAcc<K0>& a, const WgSmem& S) {
#pragma unroll
  for (int l = 0; l < kWgLayers; ++l) {
    const float u = ldexpf(1.0f, -a.ue[l]);
#pragma unroll
    for (int j = 0; j < wg_count<K0>(l); ++j) {
      float* at = S.tot + (wg_base<K0>(l) + j) * 128 + threadIdx.x;
      sts_f(at, lds_f(at) + *wg_reg(a, l, j) * u);
    }
  }
  a.fresh = true;
}

// Where register j of layer l goes in a chunk slot: its accumulator element (row, column) of the
// C layout is grad W_l (o, i) for l < D, and (i, o) of the output layer's transposed accumulator.
__device__ __forceinline__ int64_t wg_slot_index(const MlpLayout& s, int l, int j) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, q = lane & 3;
  const int row = 16 * warp + g + 8 * ((j % 4) >> 1), col = 8 * (j / 4) + 2 * q + (j & 1);
  return l < s.depth ? s.w_off[l] + int64_t(row) * s.fi_p[l] + col : s.w_off[l] + int64_t(col) * s.fi_p[l] + row;
}

template <int K0>
__device__ __forceinline__ void wg_tile(const Args& A, const WgSmem& S, int64_t b, int64_t tile, bool first,
                                        WgAcc<K0>& ac, int& parity) {
  constexpr int D = kWgLayers - 1, NH = 8, KH = 4, K0H = K0 / 16, T = cl::kWgTile;
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane >> 2, q = lane & 3;
  const int r0 = 16 * warp;  // the warp's first row in the tile
  int64_t nrow[2];
  bool valid[2];
  float xc[2][2];
  for (int r = 0; r < 2; ++r) {
    nrow[r] = tile * T + r0 + 8 * r + g;
    valid[r] = nrow[r] < p.n;
    for (int c = 0; c < 2; ++c) xc[r][c] = valid[r] ? ld_global(p.x + b * p.x_jet_stride + 2 * nrow[r] + c) : 0.0f;
  }

  // ------------------------------------------------------------------ forward
  // The encoding is computed while the previous tile's weight-gradient wgmma run; then they are
  // waited for (every warp's, by the barrier) before act and dlt are written again.
  h2 a[KH][4];  // the current layer's A fragments (k16 steps)
#pragma unroll
  for (int k = 0; k < K0H; ++k)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = i & 1, f = 16 * k + 2 * q + (i >> 1) * 8;
      a[k][i] = __floats2half2_rn(pe_feature(f, s.fi[0], xc[r][0], xc[r][1]), pe_feature(f + 1, s.fi[0], xc[r][0], xc[r][1]));
    }
  wgmma_wait<0>();
  if (!first) __syncthreads();
#pragma unroll
  for (int k = 0; k < K0H; ++k) wg_store2(S.act[0], 2 * k, r0, a[k][0], a[k][1], a[k][2], a[k][3]);
  uint32_t mbits[D];
  float acc[4 * NH];
  float inv_in = 1.0f;
#pragma unroll
  for (int l = 0; l < D; ++l) {
    constexpr int kh0 = K0H;
    const int kh = l == 0 ? kh0 : KH;
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < KH; ++k)
      if (k < kh) wgmma_rs<64>(acc, a[k], wg_desc(S.w[l], s.fi_p[l], k), k > 0);
    wgmma_commit();
    wgmma_wait<0>();
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const float2 bb = lds_f2(S.bias + s.b_off[l] + n * 8 + 2 * q);
      acc[4 * n + 0] = relu(acc[4 * n + 0] * inv_in + bb.x);
      acc[4 * n + 1] = relu(acc[4 * n + 1] * inv_in + bb.y);
      acc[4 * n + 2] = relu(acc[4 * n + 2] * inv_in + bb.x);
      acc[4 * n + 3] = relu(acc[4 * n + 3] * inv_in + bb.y);
      wm = fmaxf(wm, fmaxf(fmaxf(acc[4 * n], acc[4 * n + 1]), fmaxf(acc[4 * n + 2], acc[4 * n + 3])));
    }
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, 4));
    if (threadIdx.x == 0) S.scl_a[l + 1] = sc;
    mbits[l] = 0u;
#pragma unroll
    for (int n = 0; n < NH; n += 2) {
      h2 lo[2], hi[2];
      for (int u = 0; u < 2; ++u) {
        lo[u] = __floats2half2_rn(acc[4 * (n + u)] * sc, acc[4 * (n + u) + 1] * sc);
        hi[u] = __floats2half2_rn(acc[4 * (n + u) + 2] * sc, acc[4 * (n + u) + 3] * sc);
        mbits[l] |= relu_bits(lo[u], hi[u]) << (4 * (n + u));
      }
      a[n / 2][0] = lo[0], a[n / 2][1] = hi[0], a[n / 2][2] = lo[1], a[n / 2][3] = hi[1];
      wg_store2(S.act[l + 1], n, r0, lo[0], hi[0], lo[1], hi[1]);
    }
    inv_in = 1.0f / sc;
  }
  float y[4];
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < KH; ++k) wgmma_rs<8>(y, a[k], wg_desc(S.w[D], s.fi_p[D], k), k > 0);
  wgmma_commit();
  wgmma_wait<0>();
  {
    const float2 bb = lds_f2(S.bias + s.b_off[D] + 2 * q);
    y[0] = y[0] * inv_in + bb.x, y[1] = y[1] * inv_in + bb.y;
    y[2] = y[2] * inv_in + bb.x, y[3] = y[3] * inv_in + bb.y;
  }

  // ------------------------------------------------------------------ backward
  const float inv3n = 1.0f / (3.0f * float(p.n));
  float dout[4];
  for (int e = 0; e < 4; ++e) {
    const int r = e >> 1, c = 2 * q + (e & 1);
    float d = 0.0f;
    if (valid[r] && c < kMlpOut) {
      const int64_t idx = (b * p.n + nrow[r]) * kMlpOut + c;
      const float wgt = p.pixel_weight ? ld_global(p.pixel_weight + b * p.pw_jet_stride + nrow[r]) : 1.0f;
      const float res = y[e] - ld_global(p.target + idx);
      d = 2.0f * wgt * res * inv3n;
      ac.loss += wgt * res * res * inv3n;
    }
    dout[e] = d;
  }
  float* gbw = S.gbw + warp * s.b_total;
  float d[4 * NH];
  {
    float vout[2] = {dout[0] + dout[2], dout[1] + dout[3]};
    const float wm = fmaxf(fmaxf(fabsf(dout[0]), fabsf(dout[1])), fmaxf(fabsf(dout[2]), fabsf(dout[3])));
    add_bias_grad<2>(vout, gbw + s.b_off[D]);
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, 4));
    if (threadIdx.x == 0) S.scl_d[D] = sc;
    const h2 lo = __floats2half2_rn(dout[0] * sc, dout[1] * sc), hi = __floats2half2_rn(dout[2] * sc, dout[3] * sc);
    const h2 zero = __floats2half2_rn(0.0f, 0.0f);
    stsm_feature(S.dlt[D], T, 0, r0, lo, hi);  // one block of 8 outputs
    const h2 a0[4] = {lo, hi, zero, zero};  // k = outputs 0..7; 8..15 zero
    wgmma_fence();
    wgmma_rs<64>(d, a0, wg_desc(S.wt[D], cl::wt_k(s, D), 0), false);
    wgmma_commit();
    wgmma_wait<0>();
    const float inv = 1.0f / sc;
    for (int i = 0; i < 4 * NH; ++i) d[i] *= inv;
  }
#pragma unroll
  for (int l = D - 1; l >= 0; --l) {
    float v[2 * NH];
    float wm = 0.0f;
#pragma unroll
    for (int n = 0; n < NH; ++n) {
      const uint32_t m4 = mbits[l] >> (4 * n);
      for (int e = 0; e < 4; ++e)
        if (!((m4 >> e) & 1u)) d[4 * n + e] = 0.0f;
      v[2 * n] = d[4 * n] + d[4 * n + 2];
      v[2 * n + 1] = d[4 * n + 1] + d[4 * n + 3];
      wm = fmaxf(wm, fmaxf(fmaxf(fabsf(d[4 * n]), fabsf(d[4 * n + 1])), fmaxf(fabsf(d[4 * n + 2]), fabsf(d[4 * n + 3]))));
    }
    add_bias_grad<2 * NH>(v, gbw + s.b_off[l]);
    const float sc = tile_scale(block_max(warp_max(wm), S.red, parity, 4));
    if (threadIdx.x == 0) S.scl_d[l] = sc;
#pragma unroll
    for (int n = 0; n < NH; n += 2) {
      h2 lo[2], hi[2];
      for (int u = 0; u < 2; ++u) {
        lo[u] = __floats2half2_rn(d[4 * (n + u)] * sc, d[4 * (n + u) + 1] * sc);
        hi[u] = __floats2half2_rn(d[4 * (n + u) + 2] * sc, d[4 * (n + u) + 3] * sc);
      }
      a[n / 2][0] = lo[0], a[n / 2][1] = hi[0], a[n / 2][2] = lo[1], a[n / 2][3] = hi[1];
      wg_store2(S.dlt[l], n, r0, lo[0], hi[0], lo[1], hi[1]);
    }
    if (l > 0) {
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < KH; ++k) wgmma_rs<64>(d, a[k], wg_desc(S.wt[l], cl::wt_k(s, l), k), k > 0);
      wgmma_commit();
      wgmma_wait<0>();
      const float inv = 1.0f / sc;
      for (int i = 0; i < 4 * NH; ++i) d[i] *= inv;
    }
  }
  fence_proxy_async();  // the tile's act and dlt, written by stmatrix, are read by wgmma below
  __syncthreads();

  // ------------------------------------------------------------------ weight gradients
  // Every layer's accumulators in units of this tile's scales (exact powers of two): rescaled where
  // the units change, flushed first where they change by more than 2^30 (no overflow, no underflow).
  int ue[D + 1];
  for (int l = 0; l <= D; ++l) ue[l] = ilogbf(S.scl_a[l]) + ilogbf(S.scl_d[l]);
  bool far = false;
  for (int l = 0; l <= D; ++l) far = far || (!ac.fresh && abs(ue[l] - ac.ue[l]) > 30);
  if (far) wg_flush(ac, S);
  if (!ac.fresh) {
#pragma unroll
    for (int l = 0; l <= D; ++l)
      if (ue[l] != ac.ue[l]) {
        const float f = ldexpf(1.0f, ue[l] - ac.ue[l]);
#pragma unroll
        for (int j = 0; j < wg_count<K0>(l); ++j) *wg_reg(ac, l, j) *= f;
      }
  }
  for (int l = 0; l <= D; ++l) ac.ue[l] = ue[l];
  const bool acc_on = !ac.fresh;
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < T / 16; ++k) {
    const bool on = acc_on || k > 0;
    wgmma_ss<K0>(ac.g0, wg_desc(S.dlt[0], T, k), wg_desc(S.act[0], T, k), on);
    wgmma_ss<64>(ac.gh[0], wg_desc(S.dlt[1], T, k), wg_desc(S.act[1], T, k), on);
    wgmma_ss<64>(ac.gh[1], wg_desc(S.dlt[2], T, k), wg_desc(S.act[2], T, k), on);
    wgmma_ss<8>(ac.go, wg_desc(S.act[D], T, k), wg_desc(S.dlt[D], T, k), on);
  }
  wgmma_commit();  // waited for by the next tile (after its encoding) or before a flush
  ac.fresh = false;
}
#endif

template <int K0>
__global__ void __launch_bounds__(128, 1) mlp_wgmma_kernel(const __grid_constant__ Args A) {
#if INR_WG
  INR_DYNAMIC_SMEM(smem_raw);
  const MlpProblem<float>& p = A.p;
  const MlpLayout& s = p.layout;
  const WgSmem S = wg_carve(s, smem_raw);
  constexpr int T = cl::kWgTile;
  const int64_t ntiles = (p.n + T - 1) / T, tiles_per_chunk = A.cfg.chunk_coords / T;
  const int64_t items = p.batch * A.n_chunks;
  const int nacc = cl::wg_acc_floats(s);
  int parity = 0;
  if (threadIdx.x == 0) S.scl_a[0] = 1.0f;  // the encoding is not scaled (read after barriers)

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / A.n_chunks;
    int64_t t0, t1;
    chunk_tiles(item % A.n_chunks, tiles_per_chunk, ntiles, t0, t1);
    __syncthreads();  // the previous item is done with the staged weights, totals and partials
    // Stage this jet's weights (float16, zero padding) K-major, W and W^T; biases; zero the totals
    // and the bias-gradient partials.
#pragma unroll
    for (int l = 0; l < kWgLayers; ++l) {
      const int fo = s.fo[l], fi = s.fi[l], fop = s.fo_p[l], fip = s.fi_p[l];
      const float* src = p.weights[l] + b * fo * fi;
      auto wv = [&](int o, int i) { return (o < fo && i < fi) ? ld_global(src + o * fi + i) : 0.0f; };
      for (int e = threadIdx.x; e < fop * fip / 2; e += blockDim.x) {
        const int o = 2 * e / fip, i = 2 * e % fip;
        sts_h2(S.w[l] + cl::kmajor(o, i, fip), __floats2half2_rn(wv(o, i), wv(o, i + 1)));
      }
      for (int o = threadIdx.x; o < fop; o += blockDim.x)
        S.bias[s.b_off[l] + o] = o < fo ? ld_global(p.biases[l] + b * fo + o) : 0.0f;
    }
    __syncthreads();
    // W^T from the staged W, in 2 x 2 blocks (the output layer's k padded from 8 to 16 with zeros).
#pragma unroll
    for (int l = 1; l < kWgLayers; ++l) {
      const int fop = s.fo_p[l], fip = s.fi_p[l], kt = cl::wt_k(s, l);
      for (int e = threadIdx.x; e < fip * kt / 4; e += blockDim.x) {
        const int i = 2 * (e / (kt / 2)), o = 2 * (e % (kt / 2));
        const h2 lo = lds_h2(S.w[l] + cl::kmajor(o, i, fip), o < fop);  // (o, i), (o, i + 1)
        const h2 hi = lds_h2(S.w[l] + cl::kmajor(o + 1, i, fip), o < fop);
        sts_h2(S.wt[l] + cl::kmajor(i, o, kt), __halves2half2(lo.x, hi.x));
        sts_h2(S.wt[l] + cl::kmajor(i + 1, o, kt), __halves2half2(lo.y, hi.y));
      }
    }
    for (int e = threadIdx.x; e < 4 * s.b_total; e += blockDim.x) S.gbw[e] = 0.0f;
    for (int j = 0; j < nacc; ++j) sts_f(S.tot + j * 128 + threadIdx.x, 0.0f);
    fence_proxy_async();  // the staged weights are read by wgmma
    WgAcc<K0> ac;
    ac.fresh = true;
    ac.loss = 0.0f;
    for (int l = 0; l < kWgLayers; ++l) ac.ue[l] = 0;
    __syncthreads();
    int since_flush = 0;
    for (int64_t tile = t0; tile < t1; ++tile) {
      wg_tile<K0>(A, S, b, tile, tile == t0, ac, parity);
      if (++since_flush == cl::kWgFlushTiles || tile + 1 == t1) {
        wgmma_wait<0>();  // the tile's weight-gradient wgmma
        wg_flush(ac, S);
        since_flush = 0;
      }
    }
    // Write the chunk's partial once: the totals (each thread its own), bias gradients, loss.
    float* slot = A.slots + item * cl::slot_floats(s);
    for (int l = 0; l < kWgLayers; ++l)
      for (int j = 0; j < wg_count<K0>(l); ++j)
        st_global(slot + wg_slot_index(s, l, j), lds_f(S.tot + (wg_base<K0>(l) + j) * 128 + threadIdx.x));
    write_bias_and_loss(s, slot, S.gbw, 4, warp_sum(ac.loss), S.red, parity);
  }
#else
  (void)A;
  __trap();
#endif
}

// Whether this build has the wgmma kernel's code for the device it runs on (sm_90a).
__global__ void wgmma_built_kernel(int* out) {
#if INR_WG
  *out = 1;
#else
  *out = 0;
#endif
}

// Launches a persistent kernel over the (jet, chunk) items: as many blocks as are resident at once
// (occupancy calculator x SMs), capped by Config::max_blocks and the item count.
cudaError_t launch_persistent(void (*kernel)(const Args), const Args& args, int threads, int64_t smem,
                              cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  if (err != cudaSuccess) return err;
  int per_sm = 0, dev = 0, sms = 0;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, size_t(smem))) !=
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
  INR_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(unsigned(threads)), size_t(smem), stream)(args);
  return launch_status(stream);
}

cudaError_t launch_wgmma(const Args& args, int64_t smem, cudaStream_t stream) {
  return launch_persistent(mlp_wgmma_kernel<48>, args, 128, smem, stream);
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

template <int W, bool G, bool GX>
cudaError_t launch_main(const Args& args, int64_t smem, cudaStream_t stream) {
  return launch_persistent(mlp_main_kernel<W, G, GX>, args, 32 * args.cfg.warps, smem, stream);
}

bool needs_gx(const MlpProblem<float>& p) { return p.mode == MlpMode::kBackward && p.grad_x != nullptr; }

// The kernel instance of a call: forward only, with gradients, or with gradients and grad_x.
template <int W>
cudaError_t launch_width(const Args& args, bool grads, bool gx, int64_t smem, cudaStream_t stream) {
  if (!grads) return launch_main<W, false, false>(args, smem, stream);
  return gx ? launch_main<W, true, true>(args, smem, stream) : launch_main<W, true, false>(args, smem, stream);
}

}  // namespace

int64_t mlp_cuda_workspace_floats(const MlpProblem<float>& p, const cl::Config& c) {
  return cl::workspace_layout(p.layout, p.batch, p.n, c, p.mode != MlpMode::kForward, needs_gx(p), int(sizeof(half)))
      .floats;
}

int64_t mlp_cuda_smem_bytes(const MlpProblem<float>& p, const cl::Config& c) {
  return cl::kernel_smem_bytes(p.layout, c, p.mode != MlpMode::kForward, int(sizeof(half)));
}

int mlp_cuda_wgmma_built(int* device_flag, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  INR_LAUNCH(wgmma_built_kernel, dim3(1), dim3(1), 0, stream)(device_flag);
  return int(launch_status(stream));
}

int mlp_cuda_run(const MlpProblem<float>& p, const cl::Config& c, float* workspace, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const MlpLayout& s = p.layout;
  if (!cl::config_valid(c, s.width) || !mlp_width_supported(s.width) || s.fo_p[s.depth] != kMlpOutPadCuda)
    return int(cudaErrorInvalidValue);
  if (c.wgmma && !cl::wgmma_supported(s, p.mode == MlpMode::kMse)) return int(cudaErrorInvalidValue);
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
    if (c.wgmma) {
      err = launch_wgmma(args, smem, stream);
    } else {
      switch (s.width) {
      case 16: err = launch_width<16>(args, grads, needs_gx(p), smem, stream); break;
      case 32: err = launch_width<32>(args, grads, needs_gx(p), smem, stream); break;
      case 64: err = launch_width<64>(args, grads, needs_gx(p), smem, stream); break;
      default: err = launch_width<128>(args, grads, needs_gx(p), smem, stream); break;
      }
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
