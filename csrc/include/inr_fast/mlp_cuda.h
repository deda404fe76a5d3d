// The CUDA fused PE + MLP (csrc/cuda/mlp_cuda.cu): its host interface, launch configuration, and the
// shared-memory and workspace layouts it uses on host and device. Torch- and CUDA-free (plain C++
// when not compiled by nvcc), so csrc/tests/test_cuda_layout.cpp and the CPU emulator
// (csrc/tests/emu) check the very functions the kernel uses. csrc/README.md describes the algorithm.
#pragma once

#include <cstdint>

#include "inr_fast/mlp.h"

namespace inr_fast {
namespace cuda_layout {

constexpr int kMaxWarps = 8;            // warps per block; a tile is warp_rows(W) x warps coordinates
constexpr int kPad = 8;                 // row pitch = columns (rounded to 16) + 8 halves: an odd multiple of
                                        // 16 bytes, so mma-fragment and ldmatrix accesses are conflict-free
constexpr int64_t kChunkCoords = 8192;  // coordinates per chunk (one block's gradient partial)

INR_HD int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
INR_HD int pitch(int cols) { return int(round_up(cols, 16)) + kPad; }

// Coordinates per warp: two m16 row blocks of mma.m16n8k16 (each weight fragment read from shared
// memory serves 32 coordinates), one at W = 128 (the registers of two would not fit).
INR_HD constexpr int warp_rows(int width) { return width >= 128 ? 16 : 32; }
// Weight-gradient rows (below) a warp keeps in float32 registers for a whole chunk; the rest are
// accumulated in the chunk's slot in global memory every tile.
INR_HD constexpr int gw_slots(int width) { return width <= 16 ? 4 : width <= 32 ? 3 : width <= 64 ? 2 : 1; }
// Further rows a warp accumulates in float32 shared memory (Config::gw_smem), added to every tile.
INR_HD constexpr int gw_smem_slots(int width) { return width == 64 ? 1 : 0; }
// Words per lane of a layer's ReLU mask (one bit per float32 C-fragment element of the warp's rows).
INR_HD constexpr int mask_words(int width) { return (warp_rows(width) / 16 * (width / 8) * 4 + 31) / 32; }

// How a call is cut into blocks. Chosen by choose_config from the shape and the device's shared
// memory; every field may be set by hand (the emulated tests do).
struct Config {
  int warps = kMaxWarps;              // 1, 2, 4 or 8 warps per block; tile = warp_rows(W) x warps coordinates
  bool smem_weights = true;           // weights staged in shared memory per chunk (else read from
                                      // float16 copies in the global workspace)
  int64_t chunk_coords = kChunkCoords;  // coordinates per chunk: a multiple of the tile
  int max_blocks = 0;                 // grid cap (0: resident blocks from the occupancy calculator)
  bool gw_smem = true;                // up to gw_smem_slots(W) weight-gradient rows per warp beyond the
                                      // registers in shared memory (else in the chunk's slot in global memory)
  bool wgmma = false;                 // the wgmma kernel (sm_90a; MSE step, wgmma_supported shapes):
                                      // one warpgroup (warps = 4) per block, tiles of kWgTile coordinates
};

// The wgmma kernel (csrc/README.md, "The wgmma kernel"): 64 coordinates per tile (16 per warp), the
// weight gradients of every layer in the warpgroup's registers, added to float32 totals in shared
// memory every kWgFlushTiles tiles.
constexpr int kWgTile = 64;
constexpr int kWgFlushTiles = 8;
INR_HD int tile(const Config& c, int width) { return c.wgmma ? kWgTile : warp_rows(width) * c.warps; }
INR_HD bool config_valid(const Config& c, int width) {
  return (c.warps == 1 || c.warps == 2 || c.warps == 4 || c.warps == 8) && c.chunk_coords > 0 &&
         c.chunk_coords % tile(c, width) == 0 && c.max_blocks >= 0 && (!c.wgmma || (c.warps == 4 && c.smem_weights));
}
// Shapes the wgmma kernel is built for: the MSE step at W = 64, D = 3, 48 padded encoding features
// (n_freqs 10 or 11: the `fast` preset). Its weight-gradient accumulators (wg_acc_floats per thread)
// are what limits it: W = 128 or deeper networks would not fit the registers.
INR_HD bool wgmma_supported(const MlpLayout& s, bool mse_step) {
  return mse_step && s.width == 64 && s.depth == 3 && s.fi_p[0] == 48 && s.fo_p[s.depth] == 8;
}
// Weight-gradient accumulator floats per thread: grad W_l (64 x fi_p) for l < D and grad W_D^T (64 x 8).
INR_HD int wg_acc_floats(const MlpLayout& s) {
  int n = 8;
  for (int l = 0; l < s.depth; ++l) n += s.fi_p[l];
  return n / 2;
}
// K-major operand layout of the wgmma kernel (no swizzle): an R x K matrix (R rows of K) as 8 x 8
// core matrices, element (r, k) at (r / 8) * 8 K + (k / 8) * 64 + (r % 8) * 8 + k % 8 (float16
// elements): LBO 64, SBO 8 K; k16 step t starts at 128 t.
INR_HD int kmajor(int r, int k, int K) { return (r / 8) * (8 * K) + (k / 8) * 64 + (r % 8) * 8 + k % 8; }
// Chunks per jet: a function of N and the chunk size only (not of B, the grid or the GPU).
INR_HD int64_t n_chunks(int64_t n, const Config& c) {
  return n <= 0 ? 0 : (n + c.chunk_coords - 1) / c.chunk_coords;
}

// Weight-gradient rows. Row (l, m) of a layer l < D holds grad W_l^T for input features 16 m ..
// 16 m + 15 and every output feature: W / 8 fragments of 16 x 8 (A = a_l^T, B = delta_l). The output
// layer D has one row, transposed: grad W_D for its 8 (padded) outputs and every input feature
// (A = delta_D^T, rows 8-15 zero; B = a_D), also W / 8 fragments. Rows are numbered layer by layer.
INR_HD int gw_rows(const MlpLayout& s) {
  int r = 1;  // the output layer's
  for (int l = 0; l < s.depth; ++l) r += s.fi_p[l] / 16;
  return r;
}
INR_HD void gw_row(const MlpLayout& s, int row, int& l, int& m) {
  l = 0;
  while (l < s.depth && row >= s.fi_p[l] / 16) row -= s.fi_p[l] / 16, ++l;
  m = l < s.depth ? row : 0;
}
// A warp's rows: [lo, hi) of the enumeration, in nearly equal shares.
INR_HD void gw_row_range(const MlpLayout& s, int warps, int warp, int& lo, int& hi) {
  const int total = gw_rows(s);
  lo = total * warp / warps;
  hi = total * (warp + 1) / warps;
}

// One chunk's float32 partial result: [grad W per layer, (fo_p, fi_p) row-major at w_off[l] |
// grad b (b_total) | loss], padded to 64 floats.
INR_HD int64_t slot_floats(const MlpLayout& s) { return round_up(s.w_total + s.b_total + 1, 64); }

// Consecutive 128-byte aligned sections: take(bytes) returns the next one's offset.
struct Sections {
  int64_t off = 0;
  INR_HD int64_t take(int64_t bytes) {
    const int64_t r = off;
    off += round_up(bytes, 128);
    return r;
  }
};

// Byte offsets of a block's shared-memory sections, each 128-byte aligned (`half_bytes`: 2, or 4
// for the emulator's float-storage logic build).
//   w[l]    weights of layer l, (fo_p, fi_p) row-major, pitch fi_p + 8       (smem_weights)
//   bias    packed biases, b_total floats
//   act[l]  the tile's layer-l inputs, token-major (tile, fi_p), pitch fi_p + 8  (backward)
//   dlt[l]  the tile's output deltas of layer l, (tile, fo_p), pitch fo_p + 8   (backward)
//   gbw     per-warp bias-gradient partials, warps x b_total floats              (backward)
//   mask    ReLU masks of the hidden layers' outputs, warps x depth x mask_words x 32 words (backward)
//   gsm     weight-gradient rows in shared memory, warps x gw_smem_slots x W / 8 x 128 floats (backward, gw_smem)
//   red     block reductions, 2 x kMaxWarps floats; scl: per-tile scales, 2 x kMlpMaxLayers floats
struct SmemLayout {
  int64_t w[kMlpMaxLayers] = {}, act[kMlpMaxLayers] = {}, dlt[kMlpMaxLayers] = {};
  int64_t bias = 0, gbw = 0, mask = 0, gsm = 0, red = 0, scl = 0, bytes = 0;
};

INR_HD SmemLayout smem_layout(const MlpLayout& s, const Config& c, bool backward, int half_bytes = 2) {
  SmemLayout m;
  Sections sec;
  auto take = [&](int64_t bytes) { return sec.take(bytes); };
  const int64_t t = tile(c, s.width);
  for (int l = 0; l < s.n_layers; ++l)
    m.w[l] = c.smem_weights ? take(int64_t(s.fo_p[l]) * pitch(s.fi_p[l]) * half_bytes) : 0;
  m.bias = take(s.b_total * 4);
  if (backward) {
    for (int l = 0; l < s.n_layers; ++l) m.act[l] = take(t * pitch(s.fi_p[l]) * half_bytes);
    for (int l = 0; l < s.n_layers; ++l) m.dlt[l] = take(t * pitch(s.fo_p[l]) * half_bytes);
    m.gbw = take(int64_t(c.warps) * s.b_total * 4);
    m.mask = take(int64_t(c.warps) * s.depth * mask_words(s.width) * 32 * 4);
    m.gsm = take(c.gw_smem ? int64_t(c.warps) * gw_smem_slots(s.width) * (s.width / 8) * 128 * 4 : 0);
  }
  m.red = take(2 * kMaxWarps * 4);
  m.scl = take(2 * kMlpMaxLayers * 4);
  m.bytes = sec.off;
  return m;
}

// Shared memory of the wgmma kernel (byte offsets, 128-aligned), every float16 operand K-major:
//   w[l]   W_l, fo_p x fi_p (rows: outputs)            wt[l]  W_l^T for l >= 1, fi_p x KT (KT = fo_p,
//   act[l] the tile's layer-l inputs, fi_p x 64          16 for the output layer: k padded)
//          (feature-major: the coordinates are K)      dlt[l] the tile's layer-l output deltas, fo_p x 64
//   bias   b_total floats; gbw 4 x b_total floats (per-warp bias-gradient partials); tot: the
//   weight-gradient totals, wg_acc_floats x 128 floats; red, scl as smem_layout.
struct WgSmemLayout {
  int64_t w[kMlpMaxLayers] = {}, wt[kMlpMaxLayers] = {}, act[kMlpMaxLayers] = {}, dlt[kMlpMaxLayers] = {};
  int64_t bias = 0, gbw = 0, tot = 0, red = 0, scl = 0, bytes = 0;
};
INR_HD int wt_k(const MlpLayout& s, int l) { return l == s.depth ? 16 : s.fo_p[l]; }
INR_HD WgSmemLayout wg_smem_layout(const MlpLayout& s, int half_bytes = 2) {
  WgSmemLayout m;
  Sections sec;
  auto take = [&](int64_t bytes) { return sec.take(bytes); };
  for (int l = 0; l < s.n_layers; ++l) m.w[l] = take(int64_t(s.fo_p[l]) * s.fi_p[l] * half_bytes);
  for (int l = 1; l < s.n_layers; ++l) m.wt[l] = take(int64_t(s.fi_p[l]) * wt_k(s, l) * half_bytes);
  for (int l = 0; l < s.n_layers; ++l) m.act[l] = take(int64_t(s.fi_p[l]) * kWgTile * half_bytes);
  for (int l = 0; l < s.n_layers; ++l) m.dlt[l] = take(int64_t(s.fo_p[l]) * kWgTile * half_bytes);
  m.bias = take(s.b_total * 4);
  m.gbw = take(4 * s.b_total * 4);
  m.tot = take(int64_t(wg_acc_floats(s)) * 128 * 4);
  m.red = take(2 * kMaxWarps * 4);
  m.scl = take(2 * kMlpMaxLayers * 4);
  m.bytes = sec.off;
  return m;
}
// A call's shared memory, whichever kernel its configuration picks.
INR_HD int64_t kernel_smem_bytes(const MlpLayout& s, const Config& c, bool backward, int half_bytes = 2) {
  return c.wgmma ? wg_smem_layout(s, half_bytes).bytes : smem_layout(s, c, backward, half_bytes).bytes;
}

// Offsets in floats of the global workspace: chunk slots (B x n_chunks, gradients only), per-jet
// grad_x partials (B x N x 2, backward with grad_x only), float16 weights W (B x w_total, row-major
// (fo_p, fi_p) per layer) and their transposes (B x w_total, (fi_p, fo_p)) when not in shared memory.
struct WorkspaceLayout {
  int64_t slots = 0, gx = 0, wh = 0, wth = 0, floats = 0;
};

INR_HD WorkspaceLayout workspace_layout(const MlpLayout& s, int64_t batch, int64_t n, const Config& c,
                                        bool grads, bool need_gx, int half_bytes = 2) {
  const int64_t half_floats = round_up((batch * s.w_total * half_bytes + 3) / 4, 64);
  WorkspaceLayout w;
  int64_t off = 0;
  w.slots = off;
  if (grads) off += batch * (n > 0 ? n_chunks(n, c) : 1) * slot_floats(s);  // N = 0: zero partials
  w.gx = off;
  if (need_gx) off += round_up(batch * n * 2, 64);
  w.wh = off;
  if (!c.smem_weights) off += half_floats;
  w.wth = off;
  if (!c.smem_weights) off += half_floats;
  w.floats = off;
  return w;
}

// The configuration the binding uses: the most warps (the largest tile) whose shared memory fits
// `smem_optin`, weights staged in shared memory when they fit, else read from global memory, and
// weight-gradient rows in shared memory when they fit too. Depends on the shape, the mode and the
// device's shared memory only. `wgmma_step`: an MSE step on a device that runs this build's sm_90a
// code (an H100/H200): the wgmma kernel where its shape is supported and its shared memory fits.
inline Config choose_config(const MlpLayout& s, bool backward, int64_t smem_optin, bool wgmma_step = false) {
  if (wgmma_step && wgmma_supported(s, true)) {
    Config c;
    c.warps = 4;
    c.wgmma = true;
    if (wg_smem_layout(s).bytes <= smem_optin) return c;
  }
  for (int warps = kMaxWarps; warps >= 1; warps /= 2)
    for (int staged = 1; staged >= 0; --staged)
      for (int gsm = 1; gsm >= 0; --gsm) {
        Config c;
        c.warps = warps;
        c.smem_weights = staged != 0;
        c.gw_smem = gsm != 0;
        if (smem_layout(s, c, backward).bytes <= smem_optin) return c;
      }
  Config c;
  c.warps = 0;  // nothing fits: invalid, refused by the caller
  return c;
}

}  // namespace cuda_layout

#if defined(INR_FAST_WITH_CUDA)
namespace cuda {
// Half-precision tensor-core kernels. Parameters arrive as float32 pointers (fp32 master weights);
// gradients and losses are written in float32. `workspace` (device, float) must hold
// mlp_cuda_workspace_floats(p, c) floats (no initialisation needed); `stream` is a cudaStream_t as
// void*. p's layout must be built with kMlpOutPadCuda. Returns a cudaError_t as int (0 on success).
// Set INR_FAST_CUDA_SYNC=1 to synchronise and check after every launch (debugging).
int64_t mlp_cuda_workspace_floats(const MlpProblem<float>& p, const cuda_layout::Config& c);
int64_t mlp_cuda_smem_bytes(const MlpProblem<float>& p, const cuda_layout::Config& c);
int mlp_cuda_run(const MlpProblem<float>& p, const cuda_layout::Config& c, float* workspace, void* stream);
// Writes 1 to *device_flag (device memory) if this build has the wgmma kernel's code (sm_90a) for the
// current device, else 0 (cudaError_t as int).
int mlp_cuda_wgmma_built(int* device_flag, void* stream);
// Multiprocessor count and opt-in shared memory per block of the current device (cudaError_t as int).
int mlp_cuda_device_limits(int* sm_count, int* smem_optin);
}  // namespace cuda
#endif

}  // namespace inr_fast
