// Host/device layout of the CUDA fused MLP (csrc/cuda/mlp_cuda.cu): the shared-memory sections of a
// block and the sections of the global float32 workspace. Torch- and CUDA-free (plain C++ when not
// compiled by nvcc), so csrc/tests/test_cuda_layout.cpp checks the very functions the kernel uses.
#pragma once

#include <cstdint>

#include "inr_fast/mlp.h"

namespace inr_fast {
namespace cuda_layout {

constexpr int kT = 32;          // coordinates per tile on CUDA (2 WMMA columns)
constexpr int kWarps = 4;       // warps per block
constexpr int kRedFloats = 32;  // reduction scratch (kWarps used)

INR_HD int64_t round64(int64_t v) { return (v + 63) & ~int64_t(63); }

// One block's float32 partial results: [packed weight grads | packed bias grads | loss], padded to
// 64 floats (256 bytes) so every slot, and every WMMA tile in it, stays 32-byte aligned.
INR_HD int64_t slot_floats(const MlpLayout& s) { return round64(s.w_total + s.b_total + 1); }

// Byte offsets of the shared-memory sections (base aligned to 128 bytes):
// act[l] (fi_p[l] x kT half), dh (max_dim x kT half), stage (max_dim x kT float), xs (2 x kT float),
// red (kRedFloats float). Section sizes are multiples of 16 x kT elements (or 64 floats), so every
// section starts 128-byte aligned.
struct SmemLayout {
  int64_t act[kMlpMaxLayers] = {};
  int64_t dh = 0, stage = 0, xs = 0, red = 0, bytes = 0;
};

INR_HD SmemLayout smem_layout(const MlpLayout& s) {
  SmemLayout m;
  int64_t off = 0;
  for (int l = 0; l < s.n_layers; ++l) {
    m.act[l] = off;
    off += int64_t(s.fi_p[l]) * kT * 2;
  }
  m.dh = off;
  off += int64_t(s.max_dim) * kT * 2;
  m.stage = off;
  off += int64_t(s.max_dim) * kT * 4;
  m.xs = off;
  off += 2 * kT * 4;
  m.red = off;
  off += kRedFloats * 4;
  m.bytes = off;
  return m;
}

// Offsets in floats of the global workspace sections: per-block partial slots (B x n_chunks, only
// when gradients are computed), per-jet grad_x partials (B x N x 2, only for backward with grad_x),
// packed half weights W and their transposes W^T (B x w_total halves each).
struct WorkspaceLayout {
  int64_t part = 0, gx = 0, wh = 0, wth = 0, floats = 0;
};

INR_HD WorkspaceLayout workspace_layout(const MlpLayout& s, int64_t batch, int64_t n, int n_chunks,
                                        bool need_part, bool need_gx) {
  WorkspaceLayout w;
  int64_t off = 0;
  w.part = off;
  if (need_part) off += batch * n_chunks * slot_floats(s);
  w.gx = off;
  if (need_gx) off += round64(batch * n * 2);
  w.wh = off;
  off += round64((batch * s.w_total + 1) / 2);
  w.wth = off;
  off += round64((batch * s.w_total + 1) / 2);
  w.floats = off;
  return w;
}

}  // namespace cuda_layout
}  // namespace inr_fast
