// Fused positional encoding + per-jet ReLU MLP: torch-free kernel interfaces (CPU and CUDA).
//
// y[b, n, :] = MLP_b(PE(x[n, :])) for coordinates x (N, 2) shared by B jets, each with its own weights.
// Layer l (l = 0..D) maps fan_in(l) -> fan_out(l): F -> W, (D - 1) x W -> W, W -> 3; ReLU after every
// layer but the last. Parameters arrive as D + 1 weight arrays (B, fan_out, fan_in) and D + 1 bias
// arrays (B, fan_out), row-major and contiguous. The algorithm (tiles, padding, loop and accumulation
// order) is described in csrc/README.md; the CPU kernel is the executable specification of the CUDA one.
#pragma once

#include <cstdint>

#include "inr_fast/common.h"

namespace inr_fast {

constexpr int kMlpTile = 64;       // coordinates per tile on the CPU (CUDA: 32, mlp_cuda_tile())
constexpr int kMlpOut = 3;         // output channels
constexpr int kMlpMaxDepth = 8;    // hidden layers D in [1, 8]
constexpr int kMlpMaxLayers = kMlpMaxDepth + 1;
constexpr int kMlpOutPadCpu = 16;  // output layer rows padded to 16 on the CPU (one vector) ...
constexpr int kMlpOutPadCuda = 16; // ... and to one 16-row WMMA tile on CUDA

INR_HD int pad16(int v) { return (v + 15) & ~15; }
INR_HD bool mlp_width_supported(int w) { return w == 16 || w == 32 || w == 64 || w == 128; }

// Sizes of the D + 1 layers, real and padded, and the offsets of a jet's packed parameters.
// Packed weights of layer l are row-major (fo_p[l], fi_p[l]) with zeros in the padding; packed
// biases are (fo_p[l]). Input features are padded to a multiple of 16 (42 -> 48 for L = 10).
struct MlpLayout {
  int n_freqs = 0, width = 0, depth = 0, n_layers = 0;
  int fi[kMlpMaxLayers] = {}, fo[kMlpMaxLayers] = {};
  int fi_p[kMlpMaxLayers] = {}, fo_p[kMlpMaxLayers] = {};
  int64_t w_off[kMlpMaxLayers] = {}, b_off[kMlpMaxLayers] = {};
  int64_t w_total = 0, b_total = 0;  // packed weight / bias elements per jet
  int max_dim = 0;                   // max over layers of fi_p and fo_p

  INR_HD static MlpLayout make(int n_freqs, int width, int depth, int out_pad) {
    MlpLayout s;
    s.n_freqs = n_freqs;
    s.width = width;
    s.depth = depth;
    s.n_layers = depth + 1;
    for (int l = 0; l < s.n_layers; ++l) {
      s.fi[l] = l == 0 ? pe_features(n_freqs) : width;
      s.fo[l] = l == depth ? kMlpOut : width;
      s.fi_p[l] = l == 0 ? pad16(s.fi[l]) : width;
      s.fo_p[l] = l == depth ? out_pad : width;
      s.w_off[l] = s.w_total;
      s.b_off[l] = s.b_total;
      s.w_total += int64_t(s.fo_p[l]) * s.fi_p[l];
      s.b_total += s.fo_p[l];
      if (s.fi_p[l] > s.max_dim) s.max_dim = s.fi_p[l];
      if (s.fo_p[l] > s.max_dim) s.max_dim = s.fo_p[l];
    }
    return s;
  }
};

// Floating-point work of one coordinate through one network (multiply-adds counted as 2 flops),
// unpadded: forward 2 * sum_l fi*fo; backward adds weight gradients (same) and input gradients for
// l >= 1 (and l = 0 with grad_x).
inline double mlp_flops_per_coord(const MlpLayout& s, bool backward) {
  double fwd = 0, dx = 0;
  for (int l = 0; l < s.n_layers; ++l) {
    fwd += 2.0 * s.fi[l] * s.fo[l];
    if (l > 0) dx += 2.0 * s.fi[l] * s.fo[l];
  }
  return backward ? 2 * fwd + dx : fwd;
}

// What one call computes.
enum class MlpMode : int { kForward = 0, kBackward = 1, kMse = 2 };

// All inputs and outputs of one call. Unused pointers are null.
template <typename T>
struct MlpProblem {
  MlpMode mode = MlpMode::kForward;
  MlpLayout layout;
  int64_t n = 0;      // coordinates
  int64_t batch = 0;  // jets
  const T* x = nullptr;                          // (N, 2)
  const T* weights[kMlpMaxLayers] = {};          // (B, fo, fi) each
  const T* biases[kMlpMaxLayers] = {};           // (B, fo) each
  T* y = nullptr;                                // forward: (B, N, 3)
  const T* grad_y = nullptr;                     // backward: (B, N, 3)
  const T* target = nullptr;                     // mse: (B, N, 3)
  const T* pixel_weight = nullptr;               // mse, optional: pixel_weight[b * pw_jet_stride + n]
  int64_t pw_jet_stride = 0;                     // 0 (shared (N,) weights) or N ((B, N) weights)
  T* loss = nullptr;                             // mse: (B,)
  T* grad_w[kMlpMaxLayers] = {};                 // backward / mse: (B, fo, fi) each
  T* grad_b[kMlpMaxLayers] = {};                 // backward / mse: (B, fo) each
  T* grad_x = nullptr;                           // backward, optional: (N, 2)
};

namespace cpu {

// Work split: the B * ceil(N / kMlpTile) (jet, tile) items, jet-major, are cut into `n_chunks`
// contiguous ranges. mlp_chunk(p, c, ...) runs range c (call it for every c, in any order, on any
// threads); mlp_reduce combines the per-chunk partial results. `workspace` must hold
// mlp_workspace_size(p, n_chunks) elements and be zeroed before the chunks run.
template <typename T>
int64_t mlp_workspace_size(const MlpProblem<T>& p, int n_chunks);
template <typename T>
void mlp_chunk(const MlpProblem<T>& p, int chunk, int n_chunks, T* workspace);
template <typename T>
void mlp_reduce(const MlpProblem<T>& p, int n_chunks, T* workspace);

// Which vector code path the CPU kernel takes on this machine ("avx512", "avx2" or "generic").
const char* mlp_isa();

// Convenience driver: `parallel_for(n_chunks, body)` must call body(c) for every c in [0, n_chunks).
template <typename T, typename ParallelFor>
void mlp_run(const MlpProblem<T>& p, int n_chunks, T* workspace, ParallelFor&& parallel_for) {
  parallel_for(n_chunks, [&](int c) { mlp_chunk<T>(p, c, n_chunks, workspace); });
  mlp_reduce<T>(p, n_chunks, workspace);
}

}  // namespace cpu

#if defined(INR_FAST_WITH_CUDA)
namespace cuda {
// Half-precision tensor-core kernels. Parameters arrive as float32 pointers (fp32 master weights);
// gradients and losses are written in float32. `workspace` (device, float) must hold
// mlp_cuda_workspace_floats(p, n_chunks) floats (no initialisation needed);
// `stream` is a cudaStream_t as void*. mlp_cuda_run returns a cudaError_t as int (0 on success).
// Each jet's coordinate tiles are split into n_chunks (1..65535) ranges, one block each.
// The workspace holds only what p's mode needs (p.layout, n, batch, mode and grad_x must be set).
int64_t mlp_cuda_workspace_floats(const MlpProblem<float>& p, int n_chunks);
int mlp_cuda_smem_bytes(const MlpLayout& s);
int mlp_cuda_tile();  // coordinates per tile on CUDA
// Multiprocessor count and opt-in shared memory per block of the current device (cudaError_t as int).
int mlp_cuda_device_limits(int* sm_count, int* smem_optin);
int mlp_cuda_run(const MlpProblem<float>& p, int n_chunks, float* workspace, void* stream);
}  // namespace cuda
#endif

}  // namespace inr_fast
