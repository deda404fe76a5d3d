// CUDA fused positional encoding + per-jet MLP: half-precision storage, WMMA 16x16x16 tensor-core
// products with float32 accumulation. Same algorithm as csrc/cpu/mlp_cpu.cpp (the executable
// specification), described in csrc/README.md; the differences are listed there (tile of 32
// coordinates, output rows padded to 16, half storage with per-tile power-of-two delta scaling).
//
// One block of kWarps warps owns (jet b = blockIdx.x, chunk c = blockIdx.y): a contiguous range of
// the jet's coordinate tiles. For each tile the block keeps every layer's activations in shared
// memory (half), runs the forward, then (backward / MSE) the backward through all layers, adding the
// tile's weight gradients into the block's own float32 slice of a global workspace (no atomics: each
// slice has exactly one writer). A second kernel sums the slices of a jet over its chunks in chunk
// order (deterministic) and writes the float32 gradients.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda_layout.h"

namespace inr_fast {
namespace cuda {

namespace {

using namespace nvcuda;

constexpr int kT = cuda_layout::kT;  // coordinates per tile on CUDA (2 WMMA columns)
constexpr int kWarps = cuda_layout::kWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kFrag = 16;
static_assert(kT % kFrag == 0 && cuda_layout::kRedFloats >= kWarps, "tile / reduction sizes");

using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, half, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, half, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, half, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

using cuda_layout::slot_floats;

// Workspace (see cuda_layout::workspace_layout): partials (B x n_chunks slots, gradients only),
// per-jet grad_x partials (B x N x 2, backward with grad_x only), packed half weights W
// (B x w_total) and their transposes W^T (B x w_total).
struct Workspace {
  float* part;
  float* gx;
  half* wh;
  half* wth;
};

bool needs_part(const MlpProblem<float>& p) { return p.mode != MlpMode::kForward; }
bool needs_gx(const MlpProblem<float>& p) { return p.mode == MlpMode::kBackward && p.grad_x != nullptr; }

cuda_layout::WorkspaceLayout workspace_layout_of(const MlpProblem<float>& p, int n_chunks) {
  return cuda_layout::workspace_layout(p.layout, p.batch, p.n, n_chunks, needs_part(p), needs_gx(p));
}

Workspace carve(const MlpProblem<float>& p, int n_chunks, float* base) {
  const cuda_layout::WorkspaceLayout l = workspace_layout_of(p, n_chunks);
  Workspace w;
  w.part = base + l.part;
  w.gx = base + l.gx;
  w.wh = reinterpret_cast<half*>(base + l.wh);
  w.wth = reinterpret_cast<half*>(base + l.wth);
  return w;
}

// Layer l and offset r within it of packed weight element e (offsets ascending).
__device__ int layer_of(const int64_t* off, int n_layers, int64_t e) {
  int l = 0;
  while (l + 1 < n_layers && off[l + 1] <= e) ++l;
  return l;
}

// Packs jet b's float32 weights into half, row-major (fo_p, fi_p) and transposed (fi_p, fo_p),
// zeros in the padding.
__global__ void pack_weights_kernel(MlpProblem<float> p, half* __restrict__ wh, half* __restrict__ wth) {
  const MlpLayout& s = p.layout;
  const int64_t b = blockIdx.x;
  for (int64_t e = threadIdx.x; e < s.w_total; e += blockDim.x) {
    const int l = layer_of(s.w_off, s.n_layers, e);
    const int64_t r = e - s.w_off[l];
    const int o = int(r / s.fi_p[l]), i = int(r % s.fi_p[l]);
    const float v = (o < s.fo[l] && i < s.fi[l]) ? p.weights[l][(b * s.fo[l] + o) * s.fi[l] + i] : 0.0f;
    wh[b * s.w_total + e] = __float2half_rn(v);
    wth[b * s.w_total + s.w_off[l] + int64_t(i) * s.fo_p[l] + o] = __float2half_rn(v);
  }
}

// Block-wide max of v >= 0 (all threads get the result). `red` holds kWarps floats.
__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read from the previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float m = red[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, red[w]);
  return m;
}

__device__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float m = 0.0f;
  for (int w = 0; w < kWarps; ++w) m += red[w];
  return m;
}

struct Smem {
  half* act[kMlpMaxLayers];  // act[l]: input of layer l, (fi_p[l] x kT) row-major
  half* dh;                  // scaled half deltas (max_dim x kT)
  float* stage;              // float32 products (max_dim x kT)
  float* xs;                 // the tile's coordinates (2 x kT)
  float* red;                // reductions (kWarps)
};

__device__ Smem carve_smem(const MlpLayout& s, unsigned char* base) {
  const cuda_layout::SmemLayout l = cuda_layout::smem_layout(s);
  Smem m;
  for (int i = 0; i < s.n_layers; ++i) m.act[i] = reinterpret_cast<half*>(base + l.act[i]);
  m.dh = reinterpret_cast<half*>(base + l.dh);
  m.stage = reinterpret_cast<float*>(base + l.stage);
  m.xs = reinterpret_cast<float*>(base + l.xs);
  m.red = reinterpret_cast<float*>(base + l.red);
  return m;
}

// PE feature f of coordinate pair (x0, x1), features as in common.h; 0 in the padding.
__device__ float pe_feature(int f, int n_features, float x0, float x1) {
  if (f < 2) return f == 0 ? x0 : x1;
  if (f >= n_features) return 0.0f;
  const int k = (f - 2) / 4, j = (f - 2) % 4;
  const float xc = (j & 1) ? x1 : x0;
  float sn, cs;
  sincospif(reduce_period2(ldexpf(xc, k)), &sn, &cs);
  return j < 2 ? sn : cs;
}

__global__ void __launch_bounds__(kThreads) mlp_main_kernel(MlpProblem<float> p, int n_chunks,
                                                            Workspace ws) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const MlpLayout& s = p.layout;
  const Smem sm = carve_smem(s, smem_raw);
  const int D = s.depth;
  const int64_t b = blockIdx.x;
  const int chunk = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / 32;
  const int64_t ntiles = (p.n + kT - 1) / kT;
  const int64_t tile_lo = ntiles * chunk / n_chunks, tile_hi = ntiles * (chunk + 1) / n_chunks;
  const half* wh = ws.wh + b * s.w_total;
  const half* wth = ws.wth + b * s.w_total;
  float* part = ws.part + (b * n_chunks + chunk) * slot_floats(s);
  const bool grads = p.mode != MlpMode::kForward;
  const float inv3n = 1.0f / (3.0f * float(p.n));
  float loss = 0.0f;

  for (int64_t tile = tile_lo; tile < tile_hi; ++tile) {
    const int64_t n0 = tile * kT;
    const int nv = int(p.n - n0 < kT ? p.n - n0 : kT);
    __syncthreads();  // the previous tile is done with xs, act and stage
    // 1. coordinates and positional encoding (columns >= nv use x = 0 and never contribute)
    if (tid < 2 * kT) {
      const int c = tid / kT, t = tid % kT;
      sm.xs[c * kT + t] = t < nv ? p.x[b * p.x_jet_stride + 2 * (n0 + t) + c] : 0.0f;
    }
    __syncthreads();
    const int nf = s.fi[0];
    for (int e = tid; e < s.fi_p[0] * kT; e += kThreads) {
      const int f = e / kT, t = e % kT;
      sm.act[0][e] = __float2half_rn(pe_feature(f, nf, sm.xs[t], sm.xs[kT + t]));
    }
    __syncthreads();
    // 2. forward: stage = W_l act[l] (k ascending in 16-wide steps), then bias and ReLU
    for (int l = 0; l <= D; ++l) {
      const int fop = s.fo_p[l], fip = s.fi_p[l], fo = s.fo[l];
      const half* w = wh + s.w_off[l];
      const int n_tiles = (fop / kFrag) * (kT / kFrag);
      for (int tt = warp; tt < n_tiles; tt += kWarps) {
        const int m0 = (tt / (kT / kFrag)) * kFrag, c0 = (tt % (kT / kFrag)) * kFrag;
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k0 = 0; k0 < fip; k0 += kFrag) {
          FragA a;
          FragB bb;
          wmma::load_matrix_sync(a, w + m0 * fip + k0, fip);
          wmma::load_matrix_sync(bb, sm.act[l] + k0 * kT + c0, kT);
          wmma::mma_sync(acc, a, bb, acc);
        }
        wmma::store_matrix_sync(sm.stage + m0 * kT + c0, acc, kT, wmma::mem_row_major);
      }
      __syncthreads();
      const float* bias = p.biases[l] + b * fo;
      for (int e = tid; e < fop * kT; e += kThreads) {
        const int o = e / kT;
        const float v = sm.stage[e] + (o < fo ? bias[o] : 0.0f);
        if (l < D)
          sm.act[l + 1][e] = __float2half_rn(v > 0.0f ? v : 0.0f);
        else
          sm.stage[e] = v;
      }
      __syncthreads();
    }
    // 3. output (forward) or output deltas, float32, in stage rows [0, 16)
    const int64_t row = (b * p.n + n0) * kMlpOut;
    if (!grads) {
      for (int e = tid; e < kMlpOut * kT; e += kThreads) {
        const int t = e / kMlpOut, c = e % kMlpOut;
        if (t < nv) p.y[row + e] = sm.stage[c * kT + t];
      }
      continue;
    }
    for (int e = tid; e < s.fo_p[D] * kT; e += kThreads) {
      const int o = e / kT, t = e % kT;
      float d = 0.0f;
      if (o < kMlpOut && t < nv) {
        const int64_t idx = row + int64_t(t) * kMlpOut + o;
        if (p.mode == MlpMode::kBackward) {
          d = p.grad_y[idx];
        } else {
          const float wgt = p.pixel_weight ? p.pixel_weight[b * p.pw_jet_stride + n0 + t] : 1.0f;
          const float r = sm.stage[e] - p.target[idx];
          d = 2.0f * wgt * r * inv3n;
          loss += wgt * r * r * inv3n;
        }
      }
      sm.stage[e] = d;
    }
    __syncthreads();
    // 4. backward, l = D .. 0 (stage holds d_{l+1} in float32, true units)
    for (int l = D; l >= 0; --l) {
      const int fop = s.fo_p[l], fip = s.fi_p[l];
      // scale so that max |d| lands in [2^12, 2^13): no fp16 overflow, no underflow of small deltas
      float m = 0.0f;
      for (int e = tid; e < fop * kT; e += kThreads) m = fmaxf(m, fabsf(sm.stage[e]));
      m = block_max(m, sm.red);
      // Shift clamped to +-125 so that scale and 1/scale stay finite normal powers of two. Every
      // finite m (ilogb <= 127) then gets its exact shift on the large side (the former +-100 clamp
      // left |d s| > 65504 for m >= 2^113: inf halves, inf * 0 = NaN in the zero-padded products);
      // subnormal m only lands lower. m = inf: 12 - INT_MAX, no overflow; m = 0 or NaN: shift 0.
      const int shift = m > 0.0f ? max(-125, min(125, 12 - ilogbf(m))) : 0;
      const float scale = ldexpf(1.0f, shift);
      const float inv = 1.0f / scale;  // exact: scale is a power of two
      for (int e = tid; e < fop * kT; e += kThreads) sm.dh[e] = __float2half_rn(sm.stage[e] * scale);
      for (int o = tid; o < fop; o += kThreads) {
        float acc = 0.0f;
        for (int t = 0; t < kT; ++t) acc += sm.stage[o * kT + t];
        part[s.w_total + s.b_off[l] + o] += acc;
      }
      __syncthreads();
      // gW_l (fop x fip) += dh (fop x kT) act[l]^T (kT x fip); act[l] read as a column-major B
      const int g_tiles = (fop / kFrag) * (fip / kFrag);
      for (int tt = warp; tt < g_tiles; tt += kWarps) {
        const int m0 = (tt / (fip / kFrag)) * kFrag, c0 = (tt % (fip / kFrag)) * kFrag;
        FragC acc, sum;
        wmma::fill_fragment(acc, 0.0f);
        for (int k0 = 0; k0 < kT; k0 += kFrag) {
          FragA a;
          FragBT bt;
          wmma::load_matrix_sync(a, sm.dh + m0 * kT + k0, kT);
          wmma::load_matrix_sync(bt, sm.act[l] + c0 * kT + k0, kT);
          wmma::mma_sync(acc, a, bt, acc);
        }
        float* g = part + s.w_off[l] + m0 * fip + c0;
        wmma::load_matrix_sync(sum, g, fip, wmma::mem_row_major);
        for (int i = 0; i < sum.num_elements; ++i) sum.x[i] += acc.x[i] * inv;
        wmma::store_matrix_sync(g, sum, fip, wmma::mem_row_major);
      }
      const bool want_gx = p.mode == MlpMode::kBackward && p.grad_x != nullptr;
      if (l == 0 && !want_gx) break;
      // d_l (fip x kT) = W_l^T (fip x fop) dh (fop x kT), back to true units
      const half* wt = wth + s.w_off[l];
      const int d_tiles = (fip / kFrag) * (kT / kFrag);
      for (int tt = warp; tt < d_tiles; tt += kWarps) {
        const int m0 = (tt / (kT / kFrag)) * kFrag, c0 = (tt % (kT / kFrag)) * kFrag;
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int k0 = 0; k0 < fop; k0 += kFrag) {
          FragA a;
          FragB bb;
          wmma::load_matrix_sync(a, wt + m0 * fop + k0, fop);
          wmma::load_matrix_sync(bb, sm.dh + k0 * kT + c0, kT);
          wmma::mma_sync(acc, a, bb, acc);
        }
        for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= inv;
        wmma::store_matrix_sync(sm.stage + m0 * kT + c0, acc, kT, wmma::mem_row_major);
      }
      __syncthreads();
      if (l > 0) {
        for (int e = tid; e < fip * kT; e += kThreads)
          if (!(__half2float(sm.act[l][e]) > 0.0f)) sm.stage[e] = 0.0f;
        __syncthreads();
      } else if (tid < 2 * kT) {
        // grad_x of this jet: d PE / d x with float32 sincospif (not the half features)
        const int c = tid / kT, t = tid % kT;
        if (t < nv) {
          const float xc = sm.xs[c * kT + t];
          float acc = sm.stage[c * kT + t];
          for (int k = 0; k < s.n_freqs; ++k) {
            float sn, cs;
            sincospif(reduce_period2(ldexpf(xc, k)), &sn, &cs);
            acc += ldexpf(3.14159265358979323846f, k) *
                   (sm.stage[(2 + 4 * k + c) * kT + t] * cs - sm.stage[(4 + 4 * k + c) * kT + t] * sn);
          }
          ws.gx[(b * p.n + n0 + t) * 2 + c] = acc;
        }
      }
    }
  }
  if (grads) {
    loss = block_sum(loss, sm.red);
    if (tid == 0) part[s.w_total + s.b_total] = loss;
  }
}

// Sums jet b's partials over its chunks (chunk order) and writes the unpadded float32 gradients
// and the loss.
__global__ void reduce_kernel(MlpProblem<float> p, int n_chunks, const float* __restrict__ part) {
  const MlpLayout& s = p.layout;
  const int64_t b = blockIdx.x;
  const int64_t slot = slot_floats(s);
  const float* base = part + b * n_chunks * slot;
  for (int64_t e = threadIdx.x; e <= s.w_total + s.b_total; e += blockDim.x) {
    float acc = 0.0f;
    for (int c = 0; c < n_chunks; ++c) acc += base[c * slot + e];
    if (e < s.w_total) {
      const int l = layer_of(s.w_off, s.n_layers, e);
      const int64_t r = e - s.w_off[l];
      const int o = int(r / s.fi_p[l]), i = int(r % s.fi_p[l]);
      if (o < s.fo[l] && i < s.fi[l]) p.grad_w[l][(b * s.fo[l] + o) * s.fi[l] + i] = acc;
    } else if (e < s.w_total + s.b_total) {
      const int64_t r = e - s.w_total;
      const int l = layer_of(s.b_off, s.n_layers, r);
      const int o = int(r - s.b_off[l]);
      if (o < s.fo[l]) p.grad_b[l][b * s.fo[l] + o] = acc;
    } else if (p.loss != nullptr) {
      p.loss[b] = acc;
    }
  }
}

// grad_x[n, c] = sum over jets (ascending) of the per-jet partials.
__global__ void reduce_gx_kernel(int64_t batch, int64_t n, const float* __restrict__ gx_part,
                                 float* __restrict__ grad_x) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < 2 * n;
       e += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t b = 0; b < batch; ++b) acc += gx_part[b * 2 * n + e];
    grad_x[e] = acc;
  }
}

}  // namespace

int64_t mlp_cuda_workspace_floats(const MlpProblem<float>& p, int n_chunks) {
  return workspace_layout_of(p, n_chunks).floats;
}

int mlp_cuda_smem_bytes(const MlpLayout& s) { return int(cuda_layout::smem_layout(s).bytes); }

int mlp_cuda_run(const MlpProblem<float>& p, int n_chunks, float* workspace, void* stream_ptr) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const MlpLayout& s = p.layout;
  if (p.batch == 0) return 0;
  if (n_chunks < 1 || n_chunks > 65535) return int(cudaErrorInvalidValue);
  const Workspace ws = carve(p, n_chunks, workspace);
  const bool grads = p.mode != MlpMode::kForward;
  cudaError_t err = cudaSuccess;
  if (grads) {
    err = cudaMemsetAsync(ws.part, 0, size_t(p.batch) * n_chunks * slot_floats(s) * sizeof(float), stream);
    if (err != cudaSuccess) return int(err);
  }
  if (p.n > 0) {
    pack_weights_kernel<<<unsigned(p.batch), 256, 0, stream>>>(p, ws.wh, ws.wth);
    if ((err = cudaGetLastError()) != cudaSuccess) return int(err);
    const int smem = mlp_cuda_smem_bytes(s);
    err = cudaFuncSetAttribute(mlp_main_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return int(err);
    const dim3 grid(unsigned(p.batch), unsigned(n_chunks));
    mlp_main_kernel<<<grid, kThreads, smem, stream>>>(p, n_chunks, ws);
    if ((err = cudaGetLastError()) != cudaSuccess) return int(err);
  }
  if (grads) {
    reduce_kernel<<<unsigned(p.batch), 256, 0, stream>>>(p, n_chunks, ws.part);
    if ((err = cudaGetLastError()) != cudaSuccess) return int(err);
  }
  if (p.mode == MlpMode::kBackward && p.grad_x != nullptr && p.n > 0) {
    int64_t blocks = (2 * p.n + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    reduce_gx_kernel<<<unsigned(blocks), 256, 0, stream>>>(p.batch, p.n, ws.gx, p.grad_x);
    if ((err = cudaGetLastError()) != cudaSuccess) return int(err);
  }
  return 0;
}

int mlp_cuda_tile() { return kT; }

int mlp_cuda_device_limits(int* sm_count, int* smem_optin) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return int(err);
}

}  // namespace cuda
}  // namespace inr_fast
