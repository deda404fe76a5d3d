// The CUDA fused MLP's launch configuration, shared-memory and workspace layouts
// (inr_fast/mlp_cuda.h, the functions mlp_cuda.cu itself uses), checked on the host for every
// supported shape (width 16..128, depth 1..8, n_freqs 0..20, both modes): sections inside the block
// and 128-byte aligned, the index ranges of the kernel's accesses inside their sections, every
// configuration choose_config picks launchable on an A100 (163 KB) and on consumer parts (99 KB),
// and the padded row pitches free of shared-memory bank conflicts for the access patterns the kernel
// uses (32-bit fragment accesses and ldmatrix rows). No GPU needed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <set>
#include <utility>
#include <vector>

#include "inr_fast/mlp.h"
#include "inr_fast/mlp_cuda.h"

namespace {

using inr_fast::MlpLayout;
namespace cl = inr_fast::cuda_layout;

int failures = 0;

#define CHECK(cond)                                                                                   \
  do {                                                                                                \
    if (!(cond)) {                                                                                    \
      if (++failures <= 20)                                                                           \
        std::printf("FAIL %s:%d: %s (W=%d D=%d L=%d)\n", __FILE__, __LINE__, #cond, s.width, s.depth, \
                    s.n_freqs);                                                                       \
    }                                                                                                 \
  } while (0)

constexpr int64_t kOptinSm80 = 163 * 1024;   // opt-in dynamic shared memory per block, A100
constexpr int64_t kOptinSm86 = 99 * 1024;    // sm_86 / sm_89
constexpr int64_t kOptinSm90 = 227 * 1024;   // H100 / H200

// Bank conflicts of one warp-wide access: each lane touches `bytes` at byte offset off[lane]; the
// number of 4-byte words requested from the busiest of the 32 banks (1 = conflict-free).
int wavefronts(const int64_t (&off)[32], int bytes) {
  int worst = 0;
  for (int bank = 0; bank < 32; ++bank) {
    std::set<int64_t> words;
    for (int l = 0; l < 32; ++l)
      for (int64_t w = off[l] / 4; w <= (off[l] + bytes - 1) / 4; ++w)
        if (w % 32 == bank) words.insert(w);
    worst = std::max(worst, int(words.size()));
  }
  return worst;
}

// The kernel's 32-bit fragment accesses of a half array with row pitch p (elements): lane 4 g + q
// touches row g, columns 2q, 2q + 1 (mma C / A layouts, ReLU masks, act and delta stores).
bool pairs_conflict_free(int p) {
  int64_t off[32];
  for (int l = 0; l < 32; ++l) off[l] = (int64_t(l >> 2) * p + 2 * (l & 3)) * 2;
  return wavefronts(off, 4) == 1;
}

// ldmatrix: 8 rows of 16 bytes per matrix, rows r * p elements apart; one wavefront per matrix when
// the 8 rows fall in 8 different 16-byte bank groups.
bool ldmatrix_conflict_free(int p) {
  std::set<int64_t> groups;
  for (int r = 0; r < 8; ++r) groups.insert((int64_t(r) * p * 2 / 16) % 8);
  return groups.size() == 8 && (p * 2) % 16 == 0;
}

void check_config(const MlpLayout& s, const cl::Config& c, bool backward) {
  const cl::SmemLayout m = cl::smem_layout(s, c, backward);
  const int64_t t = cl::tile(c, s.width);
  CHECK(cl::config_valid(c, s.width));
  // Sections are disjoint, in order, 128-byte aligned, inside the block.
  std::vector<std::pair<int64_t, int64_t>> sec;
  for (int l = 0; l < s.n_layers; ++l)
    if (c.smem_weights) sec.push_back({m.w[l], int64_t(s.fo_p[l]) * cl::pitch(s.fi_p[l]) * 2});
  sec.push_back({m.bias, s.b_total * 4});
  if (backward) {
    for (int l = 0; l < s.n_layers; ++l) sec.push_back({m.act[l], t * cl::pitch(s.fi_p[l]) * 2});
    for (int l = 0; l < s.n_layers; ++l) sec.push_back({m.dlt[l], t * cl::pitch(s.fo_p[l]) * 2});
    sec.push_back({m.gbw, int64_t(c.warps) * s.b_total * 4});
    sec.push_back({m.mask, int64_t(c.warps) * s.depth * cl::mask_words(s.width) * 32 * 4});
    sec.push_back({m.gsm, c.gw_smem ? int64_t(c.warps) * cl::gw_smem_slots(s.width) * (s.width / 8) * 128 * 4 : 0});
  }
  sec.push_back({m.red, 2 * cl::kMaxWarps * 4});
  sec.push_back({m.scl, 2 * inr_fast::kMlpMaxLayers * 4});
  for (size_t i = 0; i < sec.size(); ++i) {
    CHECK(sec[i].first % 128 == 0);
    CHECK(sec[i].first + sec[i].second <= (i + 1 < sec.size() ? sec[i + 1].first : m.bytes));
  }
  // Index ranges of the kernel's accesses (elements): weights rows < fo_p, columns k0 + 15 < fi_p
  // (ldmatrix rows of 8 at k0 and k0 + 8, k0 a multiple of 16); act/dlt rows < tile, columns
  // n0 + 7 < fi_p / fo_p; float2 bias and partial accesses at even offsets.
  for (int l = 0; l < s.n_layers; ++l) {
    CHECK(s.fi_p[l] % 16 == 0 && s.fo_p[l] % 8 == 0);
    CHECK(s.b_off[l] % 8 == 0 && s.w_off[l] % 128 == 0);
    CHECK(pairs_conflict_free(cl::pitch(s.fi_p[l])) && pairs_conflict_free(cl::pitch(s.fo_p[l])));
    CHECK(ldmatrix_conflict_free(cl::pitch(s.fi_p[l])) && ldmatrix_conflict_free(cl::pitch(s.fo_p[l])));
    // ldmatrix row addresses are 16-byte aligned: pitch and column offsets multiples of 8 halves.
    CHECK(cl::pitch(s.fi_p[l]) % 8 == 0 && cl::pitch(s.fo_p[l]) % 8 == 0);
  }
  CHECK(s.fo_p[s.depth] == inr_fast::kMlpOutPadCuda && s.fo_p[s.depth] >= inr_fast::kMlpOut);
  // The encoding's gradient (grad_x) reads columns 2 + 4k + c and 4 + 4k + c < fi[0] <= fi_p[0].
  CHECK(s.n_freqs == 0 || 4 + 4 * (s.n_freqs - 1) + 1 < s.fi[0]);
  CHECK(s.fi[0] <= s.fi_p[0]);
  // Weight-gradient rows: W / 8 fragments of 16 x 8 each; the rows of layer l < D cover grad W_l^T
  // (fi_p x fo_p) exactly, the output layer's one row (8 live rows of 16) grad W_D (8 x W).
  int64_t covered = 0;
  for (int r = 0; r < cl::gw_rows(s); ++r) {
    int l = -1, m = -1;
    cl::gw_row(s, r, l, m);
    CHECK(l >= 0 && l <= s.depth && m >= 0);
    if (l < s.depth) {
      CHECK(m < s.fi_p[l] / 16 && s.fo_p[l] == s.width);
      covered += int64_t(s.width / 8) * 128;
    } else {
      CHECK(m == 0 && s.fi_p[l] == s.width && s.fo_p[l] == 8 && r == cl::gw_rows(s) - 1);
      covered += int64_t(s.width / 8) * 64;
    }
  }
  CHECK(covered == s.w_total);
  // The warps' shares of the rows partition them.
  int next = 0;
  for (int w = 0; w < c.warps; ++w) {
    int lo = 0, hi = 0;
    cl::gw_row_range(s, c.warps, w, lo, hi);
    CHECK(lo == next && hi >= lo);
    next = hi;
  }
  CHECK(next == cl::gw_rows(s));
}

void check_workspace(const MlpLayout& s, int64_t batch, int64_t n, const cl::Config& c, bool grads, bool gx) {
  const cl::WorkspaceLayout w = cl::workspace_layout(s, batch, n, c, grads, gx);
  const int64_t slot = cl::slot_floats(s);
  CHECK(slot % 64 == 0 && slot >= s.w_total + s.b_total + 1);
  CHECK(w.slots == 0 && w.gx >= w.slots && w.wh >= w.gx && w.wth >= w.wh && w.floats >= w.wth);
  if (grads) CHECK(w.gx - w.slots >= batch * std::max<int64_t>(1, cl::n_chunks(n, c)) * slot);
  if (gx) CHECK(w.wh - w.gx >= batch * n * 2);
  CHECK(w.gx % 64 == 0 && w.wh % 64 == 0 && w.wth % 64 == 0);  // 256-byte aligned sections
  if (!c.smem_weights) CHECK((w.wth - w.wh) * 2 >= batch * s.w_total && (w.floats - w.wth) * 2 >= batch * s.w_total);
  // Chunks: a function of N and the chunk size only.
  CHECK(cl::n_chunks(n, c) == (n + c.chunk_coords - 1) / c.chunk_coords);
}

}  // namespace

int main() {
  int cases = 0;
  for (int width : {16, 32, 64, 128})
    for (int depth = 1; depth <= inr_fast::kMlpMaxDepth; ++depth)
      for (int n_freqs = 0; n_freqs <= 20; ++n_freqs) {
        const MlpLayout s = MlpLayout::make(n_freqs, width, depth, inr_fast::kMlpOutPadCuda);
        for (bool backward : {false, true}) {
          for (int64_t optin : {kOptinSm86, kOptinSm80, kOptinSm90}) {
            const cl::Config c = cl::choose_config(s, backward, optin);
            CHECK(cl::config_valid(c, width));  // every supported shape runs on every supported GPU
            CHECK(cl::smem_layout(s, c, backward).bytes <= optin);
            if (cl::config_valid(c, width)) check_config(s, c, backward);
          }
          for (int warps : {1, 2, 4, 8})
            for (bool staged : {false, true}) {
              cl::Config c;
              c.warps = warps;
              c.smem_weights = staged;
              c.gw_smem = warps % 2 == 0;  // both ways
              c.chunk_coords = 64 * cl::tile(c, width);
              check_config(s, c, backward);
              for (bool gx : {false, true}) {
                check_workspace(s, 1, 1, c, backward, gx);
                check_workspace(s, 3, 15625, c, backward, gx);
                check_workspace(s, 10000, 15625, c, backward, gx);  // B N 2 > 2^31: 64-bit sizes
                check_workspace(s, 2, 0, c, backward, gx);
              }
            }
        }
        ++cases;
      }
  // The preset shape (W = 64, D = 3, L = 10) gets a tile of 128 coordinates (4 warps of 32) and staged
  // weights on an A100 and an H100/H200; on the H100/H200 all 12 weight-gradient rows stay on chip
  // (2 per warp in registers, 1 in shared memory), on the A100 (163 KB) the third goes to global memory.
  {
    const MlpLayout s = MlpLayout::make(10, 64, 3, inr_fast::kMlpOutPadCuda);
    const cl::Config h = cl::choose_config(s, true, kOptinSm90);
    CHECK(h.warps == 4 && h.smem_weights && h.gw_smem && cl::tile(h, 64) == 128);
    CHECK(cl::gw_rows(s) == 12 && (cl::gw_slots(64) + cl::gw_smem_slots(64)) * h.warps == cl::gw_rows(s));
    const cl::Config c = cl::choose_config(s, true, kOptinSm80);
    CHECK(c.warps == 4 && c.smem_weights && !c.gw_smem);
    // The workspace holds only what the mode needs.
    const int64_t fwd = cl::workspace_layout(s, 64, 15625, c, false, false).floats;
    const int64_t bwd = cl::workspace_layout(s, 64, 15625, c, true, true).floats;
    CHECK(bwd - fwd == 64 * 2 * cl::slot_floats(s) + cl::round_up(64 * 15625 * 2, 64));
  }
  // The wgmma kernel: its shape only (the `fast` preset's), one warpgroup and tiles of 64; an MSE
  // step there takes it when the device runs sm_90a code and its shared memory fits an H100/H200.
  {
    const MlpLayout s = MlpLayout::make(10, 64, 3, inr_fast::kMlpOutPadCuda);
    CHECK(cl::wgmma_supported(s, true) && !cl::wgmma_supported(s, false));
    CHECK(!cl::wgmma_supported(MlpLayout::make(10, 128, 3, inr_fast::kMlpOutPadCuda), true));
    CHECK(!cl::wgmma_supported(MlpLayout::make(6, 64, 3, inr_fast::kMlpOutPadCuda), true));
    CHECK(!cl::wgmma_supported(MlpLayout::make(10, 64, 4, inr_fast::kMlpOutPadCuda), true));
    const cl::Config w = cl::choose_config(s, true, kOptinSm90, true);
    CHECK(w.wgmma && w.warps == 4 && cl::tile(w, 64) == cl::kWgTile && cl::config_valid(w, 64));
    CHECK(w.chunk_coords % cl::kWgTile == 0);
    CHECK(!cl::choose_config(s, true, kOptinSm90, false).wgmma);
    CHECK(!cl::choose_config(MlpLayout::make(10, 32, 3, inr_fast::kMlpOutPadCuda), true, kOptinSm90, true).wgmma);
    CHECK(cl::wg_acc_floats(s) == 92);  // 24 + 32 + 32 + 4 registers per thread
    const cl::WgSmemLayout m = cl::wg_smem_layout(s);
    CHECK(m.bytes <= kOptinSm90 && m.bytes == cl::kernel_smem_bytes(s, w, true));
    const int64_t secs[] = {m.w[0], m.w[1], m.w[2], m.w[3], m.wt[1], m.wt[2], m.wt[3], m.act[0], m.act[1],
                            m.act[2], m.act[3], m.dlt[0], m.dlt[1], m.dlt[2], m.dlt[3], m.bias, m.gbw, m.tot, m.red, m.scl};
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); ++i) {
      CHECK(secs[i] % 128 == 0);  // wgmma descriptors need 16-byte alignment; sections are 128-aligned
      if (i > 0) CHECK(secs[i] > secs[i - 1]);
    }
    CHECK(m.wt[3] - m.wt[2] >= 64 * 64 * 2 && m.act[0] - m.wt[3] >= 64 * 16 * 2 && m.tot - m.gbw >= 4 * s.b_total * 4);
    // K-major core-matrix layout: a bijection of R x K onto [0, R K), each core matrix 128 contiguous bytes.
    for (int K : {16, 48, 64}) {
      std::vector<int> seen(8 * K * 8, 0);
      bool ok = true;
      for (int r = 0; r < 64; ++r)
        for (int k = 0; k < K; ++k) {
          const int e = cl::kmajor(r, k, K);
          ok = ok && e >= 0 && e < 64 * K && seen[e]++ == 0;
          ok = ok && (k % 8 == 0 || e == cl::kmajor(r, k - k % 8, K) + k % 8);
          ok = ok && e / 64 == cl::kmajor(r - r % 8, k - k % 8, K) / 64;
        }
      CHECK(ok);
    }
  }
  std::printf("test_cuda_layout: %d shapes, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
