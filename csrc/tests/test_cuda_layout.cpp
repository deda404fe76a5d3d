// Bounds and alignment of the CUDA fused MLP's shared-memory and workspace layouts, checked on the
// host through the functions mlp_cuda.cu itself uses (inr_fast/mlp_cuda_layout.h), for every
// supported shape: width in {16, 32, 64, 128}, depth 1..8, n_freqs 0..20. The index ranges below are
// those of the kernel's accesses (WMMA tiles of 16 x 16, tiles of kT coordinates); no GPU needed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda_layout.h"

namespace {

using inr_fast::MlpLayout;
namespace cl = inr_fast::cuda_layout;

int failures = 0;

#define CHECK(cond)                                                                                     \
  do {                                                                                                  \
    if (!(cond)) {                                                                                      \
      if (++failures <= 20)                                                                             \
        std::printf("FAIL %s:%d: %s (W=%d D=%d L=%d)\n", __FILE__, __LINE__, #cond, s.width, s.depth,   \
                    s.n_freqs);                                                                         \
    }                                                                                                   \
  } while (0)

constexpr int kFrag = 16;
constexpr int64_t kOptinSm80 = 163 * 1024;  // opt-in dynamic shared memory per block, A100

// Section [off, off + size) in bytes lies inside [lo, hi) and starts 128-byte aligned.
void check_section(const MlpLayout& s, int64_t off, int64_t size, int64_t lo, int64_t hi) {
  CHECK(off >= lo && off + size <= hi);
  CHECK(off % 128 == 0);
}

void check_smem(const MlpLayout& s) {
  const cl::SmemLayout m = cl::smem_layout(s);
  const int kT = cl::kT;
  // Extents actually indexed by the kernel, in elements.
  int64_t stage_used = 0, dh_used = 0;
  for (int l = 0; l < s.n_layers; ++l) {
    const int fip = s.fi_p[l], fop = s.fo_p[l];
    CHECK(fip % kFrag == 0 && fop % kFrag == 0);
    // act[l]: PE writes rows < fi_p[0]; ReLU writes act[l + 1] rows < fo_p[l]; forward B tiles read
    // rows k0 + 15 < fip, columns c0 + 15 < kT; weight-gradient col-major B tiles read (c0 + 15) * kT
    // + k0 + 15. All of them within fip * kT.
    const int64_t act_size = int64_t(fip) * kT * 2;
    const int64_t act_hi = (l + 1 < s.n_layers ? m.act[l + 1] : m.dh);
    check_section(s, m.act[l], act_size, 0, act_hi);
    if (l > 0) CHECK(s.fo_p[l - 1] <= fip);  // ReLU output of layer l - 1 fits act[l]
    CHECK(int64_t(fip - kFrag + 15) * kT + (kT - kFrag) + 15 < int64_t(fip) * kT);
    stage_used = std::max<int64_t>(stage_used, std::max(fip, fop));  // forward fop rows, backward fip
    dh_used = std::max<int64_t>(dh_used, fop);
    // WMMA leading dimensions: half multiples of 8, float multiples of 4; tile offsets 32-byte aligned.
    CHECK(fip % 8 == 0 && fop % 8 == 0 && kT % 8 == 0);
    for (int m0 = 0; m0 < fop; m0 += kFrag)
      for (int k0 = 0; k0 < fip; k0 += kFrag) {
        CHECK((int64_t(m0) * fip + k0) * 2 % 32 == 0);  // W tile in the packed weights
        CHECK((int64_t(k0) * fop + m0) * 2 % 32 == 0);  // W^T tile
        CHECK((int64_t(m0) * fip + k0) * 4 % 32 == 0);  // gradient tile in the float slot
      }
  }
  for (int c0 = 0; c0 < kT; c0 += kFrag) {
    CHECK(c0 * 2 % 32 == 0 && c0 * 4 % 32 == 0);
  }
  check_section(s, m.dh, dh_used * kT * 2, m.act[s.n_layers - 1] + int64_t(s.fi_p[s.n_layers - 1]) * kT * 2,
                m.stage);
  check_section(s, m.stage, stage_used * kT * 4, m.dh, m.xs);
  // grad_x reads stage rows 2 + 4k + c and 4 + 4k + c (k < n_freqs, c < 2): all < fi[0] <= fi_p[0].
  CHECK(s.n_freqs == 0 || 4 + 4 * (s.n_freqs - 1) + 1 < s.fi[0]);
  CHECK(s.fi[0] <= s.fi_p[0] && s.fi_p[0] <= s.max_dim);
  CHECK(s.fo_p[s.depth] >= inr_fast::kMlpOut && s.fo_p[s.depth] <= s.max_dim);
  check_section(s, m.xs, 2 * kT * 4, m.stage, m.red);
  CHECK(m.red + cl::kWarps * 4 <= m.bytes && m.red >= m.xs + 2 * kT * 4);
  CHECK(m.bytes <= kOptinSm80);  // every supported shape runs on sm_80 (and sm_90: 227 KB)
}

void check_workspace(const MlpLayout& s, int64_t batch, int64_t n, int n_chunks, bool part, bool gx) {
  const cl::WorkspaceLayout w = cl::workspace_layout(s, batch, n, n_chunks, part, gx);
  const int64_t slot = cl::slot_floats(s);
  CHECK(slot % 64 == 0 && slot >= s.w_total + s.b_total + 1);
  CHECK(w.part == 0);
  // Every block (b, c) owns [part + (b n_chunks + c) slot, + slot); the kernel touches
  // w_total + b_off[l] + o (o < fo_p[l]), w_off[l] + tiles, and the loss at w_total + b_total.
  if (part) CHECK(w.part + batch * n_chunks * slot <= w.gx);
  if (gx) CHECK(w.gx + batch * n * 2 <= w.wh);
  CHECK(w.gx >= w.part && w.wh >= w.gx);
  CHECK(w.wh % 64 == 0 && w.wth % 64 == 0);  // 256-byte aligned packed weights
  CHECK((w.wth - w.wh) * 2 >= batch * s.w_total && (w.floats - w.wth) * 2 >= batch * s.w_total);
  // Per-jet packed weights start at b * w_total halves, layers at w_off[l]: 32-byte aligned.
  CHECK(s.w_total % 16 == 0);
  for (int l = 0; l < s.n_layers; ++l) {
    CHECK(s.w_off[l] % 16 == 0);
    CHECK(s.w_off[l] + int64_t(s.fo_p[l]) * s.fi_p[l] <= s.w_total);
    CHECK(s.b_off[l] + s.fo_p[l] <= s.b_total);
  }
}

}  // namespace

int main() {
  int cases = 0;
  for (int width : {16, 32, 64, 128})
    for (int depth = 1; depth <= inr_fast::kMlpMaxDepth; ++depth)
      for (int n_freqs = 0; n_freqs <= 20; ++n_freqs) {
        const MlpLayout s = MlpLayout::make(n_freqs, width, depth, inr_fast::kMlpOutPadCuda);
        check_smem(s);
        for (bool part : {false, true})
          for (bool gx : {false, true}) {
            check_workspace(s, 1, 1, 1, part, gx);
            check_workspace(s, 3, 15625, 7, part, gx);
            check_workspace(s, 10000, 15625, 1, part, gx);  // B N 2 > 2^31: 64-bit sizes
          }
        ++cases;
      }
  // The workspace holds only what the mode needs.
  {
    const MlpLayout s = MlpLayout::make(10, 64, 3, inr_fast::kMlpOutPadCuda);
    const int64_t fwd = cl::workspace_layout(s, 64, 15625, 3, false, false).floats;
    const int64_t bwd = cl::workspace_layout(s, 64, 15625, 3, true, true).floats;
    CHECK(bwd - fwd == 64 * 3 * cl::slot_floats(s) + cl::round64(64 * 15625 * 2));
  }
  std::printf("test_cuda_layout: %d layouts, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
