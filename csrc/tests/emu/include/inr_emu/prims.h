// Emulation of csrc/include/inr_fast/cuda_prims.cuh: mma.sync m16n8k16, ldmatrix and the counted
// memory accessors, with the fragment layouts of the PTX ISA ("Matrix Fragments for mma.m16n8k16
// with floating point type", "ldmatrix"): lane l = 4 g + q (g = groupID, q = threadID_in_group)
// holds A (16 x 16, row-major) elements (g, 2q..2q+1), (g+8, 2q..), (g, 2q+8..), (g+8, 2q+8..) in
// its 4 registers, B (16 x 8) elements (k = 2q..2q+1, n = g), (k = 2q+8.., n = g) in 2, and
// C/D (16 x 8, float) elements (g, 2q..2q+1), (g+8, 2q..2q+1) in 4. ldmatrix: lane l supplies the
// address of row l % 8 of matrix l / 8 and receives, of every matrix, elements (l/4, 2(l%4)..+1),
// or with .trans (2(l%4)..+1, l/4).
#pragma once

#include "inr_emu/shim.h"

struct float2 {
  float x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

namespace shim {

inline void complete_ldsm(WarpSlot& s, long key);
inline void complete_stsm(WarpSlot& s, int warp, long key);
inline void complete_mma(WarpSlot& s);
inline void wgmma_issue(WarpSlot& s, int warp, long key);
inline void wgmma_wait_group(WarpSlot& s, int warp, int keep);

inline void complete_collective(WarpSlot& s, int warp) {
  switch (s.op[0]) {
    case kOpShfl:
      ++g_count.shuffles;
      for (int l = 0; l < 32; ++l) std::memcpy(&s.fout[l][0], &s.fin[l ^ int(s.key[0])][0], sizeof(float));
      return;
    case kOpSyncwarp:
      return;
    case kOpMma:
      complete_mma(s);
      return;
    case kOpLdsm:
      complete_ldsm(s, s.key[0]);
      return;
    case kOpStsm:
      complete_stsm(s, warp, s.key[0]);
      return;
    case kOpWgmma:
      wgmma_issue(s, warp, s.key[0]);
      return;
    case kOpWgFence:
      s.wg_fenced = true;
      return;
    case kOpWgCommit:
      for (WgmmaOp& op : s.wg_ops)
        if (op.group < 0) op.group = s.wg_groups;
      ++s.wg_groups;
      return;
    case kOpWgWait:
      wgmma_wait_group(s, warp, int(s.key[0]));
      return;
    default:
      fail("unknown warp collective", s.op[0]);
  }
}

inline void complete_mma(WarpSlot& s) {
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    const half* a = s.hin[l];
    const half* b = s.hin[l] + 8;
    for (int i = 0; i < 2; ++i) {
      A[g][2 * q + i] = float(a[0 + i]);
      A[g + 8][2 * q + i] = float(a[2 + i]);
      A[g][2 * q + 8 + i] = float(a[4 + i]);
      A[g + 8][2 * q + 8 + i] = float(a[6 + i]);
      B[2 * q + i][g] = float(b[0 + i]);
      B[2 * q + 8 + i][g] = float(b[2 + i]);
      C[g][2 * q + i] = s.fin[l][i];
      C[g + 8][2 * q + i] = s.fin[l][2 + i];
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int e = 0; e < 4; ++e) {
      const int r = g + (e >= 2 ? 8 : 0), c = 2 * q + (e & 1);
      float acc = C[r][c];
      for (int k = 0; k < 16; ++k) acc += A[r][k] * B[k][c];
      s.fout[l][e] = acc;
    }
  }
  ++g_count.mma;
}

// Shared-memory bank accounting of one warp-wide access: 32 banks of 4 bytes; a wavefront serves one
// 4-byte word per bank (any number of lanes reading that word). `ideal`: the wavefronts the same
// distinct words would take without bank conflicts.
inline void count_wavefronts(const std::vector<std::pair<long, int>>& acc) {
  std::map<int, std::vector<long>> bank_words;
  long words = 0;
  for (const auto& [off, n] : acc) {
    if (n <= 0) continue;
    for (long w = off / 4; w <= (off + n - 1) / 4; ++w) {
      auto& v = bank_words[int(w % 32)];
      if (std::find(v.begin(), v.end(), w) == v.end()) v.push_back(w), ++words;
    }
  }
  long wf = 0;
  for (const auto& [bank, ws] : bank_words) wf = std::max<long>(wf, long(ws.size()));
  g_count.smem_wavefronts += wf;
  g_count.smem_ideal_wavefronts += (words * 4 + 127) / 128;  // the same distinct words without conflicts
  g_count.smem_bytes += words * 4;
}

// Byte offset in shared memory of p as the CUDA build lays it out (float16 elements of 2 bytes,
// also when the logic build stores them as float).
inline long smem_offset_half(const half* p) {
  const half* base = reinterpret_cast<const half*>(g_block->smem);
  if (p < base || p + 1 > base + g_block->smem_size / sizeof(half)) fail("shared access outside the block's shared memory");
  return long(p - base) * 2;
}
inline long smem_offset(const void* p, size_t n) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < g_block->smem || c + n > g_block->smem + g_block->smem_size)
    fail("shared access outside the block's shared memory");
  return long(c - g_block->smem);
}

// A counted shared access of this lane (active or not): matched with the other lanes' accesses of
// the same sequence number (the same instruction when the warp is converged).
inline void record_smem(long off, int bytes) {
  if (!g_count_smem) return;
  Fiber& f = me();
  WarpSlot& s = warp_slot();
  auto& v = s.pending[f.seq++];
  v.emplace_back(off, bytes);
  if (v.size() == 32) {
    count_wavefronts(v);
    s.pending.erase(f.seq - 1);
  }
}

// The rows (16 bytes each) the lanes address for nmat 8 x 8 matrices of an ldmatrix / stmatrix:
// checked (inside shared memory, 16-byte aligned; for a store no two rows of a matrix at one
// address), and counted: a matrix's rows in the same 16-byte bank group take one wavefront each.
inline void count_matrix_rows(const WarpSlot& s, int nmat, const char* what, bool store) {
  const half* base = reinterpret_cast<const half*>(g_block->smem);
  const long n_half = long(g_block->smem_size / sizeof(half));
  long wf = 0;
  for (int j = 0; j < nmat; ++j) {
    std::map<int, std::vector<long>> groups;
    for (int r = 0; r < 8; ++r) {
      const half* p = static_cast<const half*>(s.ptr[8 * j + r]);
      const long e = long(p - base);
      if (p < base || e + 8 > n_half) fail(what, j, r);  // row outside the block's shared memory
      if (e % 8 != 0) fail("ldmatrix/stmatrix row address not 16-byte aligned", j, e);
      auto& v = groups[int((e * 2 / 16) % 8)];
      const bool seen = std::find(v.begin(), v.end(), e) != v.end();
      if (seen && store) fail("stmatrix: two rows of one matrix at one address", j, e);
      if (!seen) v.push_back(e);
    }
    long m = 0;
    for (const auto& [grp, rows] : groups) m = std::max<long>(m, long(rows.size()));
    wf += m;
  }
  g_count.smem_wavefronts += wf;
  g_count.smem_ideal_wavefronts += nmat;
  g_count.smem_bytes += 128L * nmat;
}

inline void complete_ldsm(WarpSlot& s, long key) {
  const int nmat = int(key & 7);
  const bool trans = (key & 8) != 0;
  count_matrix_rows(s, nmat, "ldmatrix row outside the block's shared memory", false);
  ++g_count.ldmatrix;
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < nmat; ++j) {
      const int r = l / 4, c = 2 * (l % 4);
      for (int i = 0; i < 2; ++i) {
        const half* row = static_cast<const half*>(s.ptr[8 * j + (trans ? c + i : r)]);
        s.hout[l][2 * j + i] = trans ? row[r] : row[c + i];
      }
    }
}

// ------------------------------------------------------------------------------------------ proxies
// Shared memory written by the threads (the generic proxy) must be made visible to the async proxy
// (wgmma operands) by fence.proxy.async.shared::cta in the writing thread, then a barrier, before a
// wgmma reads it. The stores through the prims below mark their 16-byte chunks (actual bytes of the
// emulated shared memory) until the writing thread's fence; a wgmma operand in a marked chunk fails.
// (Stores made without the prims are not seen; the last writer of a chunk is the one remembered.)
inline void proxy_mark(const void* p, size_t n, int thread) {
  const long off = long(static_cast<const unsigned char*>(p) - g_block->smem);
  const long fences = (*g_block->f)[thread].proxy_fences;
  for (long c = off / 16; c <= (off + long(n) - 1) / 16; ++c) g_block->proxy_writer[size_t(c)] = {thread + 1, fences};
}
inline bool proxy_pending(long chunk) {
  const auto& [w, fences] = g_block->proxy_writer[size_t(chunk)];
  return w != 0 && (*g_block->f)[w - 1].proxy_fences == fences;
}
inline void proxy_fence() { ++me().proxy_fences; }

// stmatrix (sm_90): the inverse of ldmatrix. Lane l supplies the address of row l % 8 of matrix l / 8
// and, for every matrix j, holds fragment elements (l/4, 2(l%4)..+1) in its register j; without
// .trans fragment row r is stored to memory row r, with .trans fragment column c to memory row c.
inline void complete_stsm(WarpSlot& s, int warp, long key) {
  const int nmat = int(key & 7);
  const bool trans = (key & 8) != 0;
  count_matrix_rows(s, nmat, "stmatrix row outside the block's shared memory", true);
  ++g_count.stmatrix;
  const int warp0 = 32 * warp;  // (completed by the scheduler: me() is not this warp's)
  for (int j = 0; j < nmat; ++j)
    for (int r = 0; r < 8; ++r) {
      half* row = const_cast<half*>(static_cast<const half*>(s.ptr[8 * j + r]));
      for (int c = 0; c < 8; ++c) {
        // element (r, c) of the stored matrix: fragment (r, c) or, transposed, fragment (c, r)
        const int fr = trans ? c : r, fc = trans ? r : c;
        row[c] = s.hin[4 * fr + fc / 2][2 * j + fc % 2];
      }
      proxy_mark(row, 8 * sizeof(half), warp0 + 8 * j + r);
    }
}

// ------------------------------------------------------------------------------------------ wgmma
// wgmma.mma_async.sync.aligned.m64nNk16.f32.f16.f16 (sm_90a), D (64 x N, float32) = A (64 x 16) * B
// (16 x N) + (accumulate ? D : 0), as documented in the PTX ISA ("Asynchronous Warpgroup Level Matrix
// Multiply-Accumulate"): warp w of the warpgroup holds rows 16 w .. 16 w + 15 of D, lane l = 4 g + q
// registers 4 j + e = (row g + 8 (e / 2), column 8 j + 2 q + e % 2); A from registers in the
// m16n8k16 A layout of those 16 rows. Shared-memory operands by matrix descriptor, K-major without
// swizzling only (imm-trans 0, layout type 0): 8 x 8 core matrices of 8 rows x 16 contiguous bytes,
// element (row r, k) at start + (r / 8) * SBO + (r % 8) * 16 B + (k / 8) * LBO + (k % 8) * 2 B (B is
// stored N rows x K, i.e. element (k, n) at row n). Every warp's share depends only on its own rows
// of A, so the emulator completes it per warp; the warpgroup's four warps must issue the same
// sequence (checked at block exit by a digest). Asynchrony is checked: an operation must follow a
// wgmma.fence made since the last wait; its accumulator registers read NaN until the
// wgmma.wait_group that retires it; shared-memory operands are read at issue and must be unchanged,
// and A registers unmodified, when it retires; operands written by the threads need
// fence.proxy.async first (above).
struct DescFields {
  long start, lbo, sbo;  // in float16 elements
};
inline DescFields decode_desc(uint64_t d) {
  if ((d >> 62) != 0) fail("wgmma descriptor: only the non-swizzled layout is emulated", long(d >> 62));
  if (((d >> 49) & 7) != 0) fail("wgmma descriptor: base offset must be 0 without swizzling", long((d >> 49) & 7));
  return {long(d & 0x3fff) * 8, long((d >> 16) & 0x3fff) * 8, long((d >> 32) & 0x3fff) * 8};
}
// Reads rows r0 .. r0 + rows - 1 (x 16 k) of a descriptor's operand into out (row-major, rows x 16).
inline void read_operand(uint64_t desc, int r0, int rows, std::vector<float>& out, bool check_proxy = true) {
  const DescFields f = decode_desc(desc);
  const half* base = reinterpret_cast<const half*>(g_block->smem);
  const long n_half = long(g_block->smem_size / sizeof(half));
  out.resize(size_t(rows) * 16);
  for (int r = r0; r < r0 + rows; ++r)
    for (int kb = 0; kb < 2; ++kb) {
      const long e = f.start + (r / 8) * f.sbo + (r % 8) * 8 + kb * f.lbo;
      if (e < 0 || e + 8 > n_half) fail("wgmma operand outside the block's shared memory", r, e);
      const unsigned char* p = reinterpret_cast<const unsigned char*>(base + e);
      for (long c = (p - g_block->smem) / 16; c <= (p + 8 * sizeof(half) - 1 - g_block->smem) / 16; ++c)
        if (check_proxy && proxy_pending(c))
          fail("wgmma operand written by the threads without fence.proxy.async before it", r, e);
      for (int k = 0; k < 8; ++k) out[size_t(r - r0) * 16 + kb * 8 + k] = float(base[e + k]);
    }
}

inline uint64_t digest_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

inline void wgmma_issue(WarpSlot& s, int warp, long key) {
  const int n = int(key & 0xffff);
  const bool a_regs = (key >> 16) & 1, accumulate = (key >> 17) & 1;
  if (!s.wg_fenced) fail("wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group", warp);
  for (int l = 1; l < 32; ++l)
    if (s.u64[l] != s.u64[0] || (!a_regs && s.ptr[l] != s.ptr[0]))
      fail("wgmma descriptors not uniform across the warp", warp, l);
  WgmmaOp op;
  op.n = n, op.a_regs = a_regs, op.accumulate = accumulate;
  op.desc_b = s.u64[0];
  op.desc_a = a_regs ? 0 : uint64_t(reinterpret_cast<uintptr_t>(s.ptr[0]));
  const int wg_warp = warp % 4;
  read_operand(op.desc_b, 0, n, op.b_operand);
  if (!a_regs) read_operand(op.desc_a, 16 * wg_warp, 16, op.a_operand);
  for (int l = 0; l < 32; ++l) {
    op.acc[l] = reinterpret_cast<float*>(s.fptr[l]);
    if (a_regs) {
      op.a_src[l] = static_cast<const half*>(s.aptr[l]);
      for (int i = 0; i < 8; ++i) op.a[l][i] = op.a_src[l][i];
    }
    auto it = s.wg_shadow.find(op.acc[l]);
    if (it == s.wg_shadow.end()) {
      s.wg_shadow[op.acc[l]].assign(op.acc[l], op.acc[l] + n / 2);
      for (int i = 0; i < n / 2; ++i) op.acc[l][i] = std::nanf("");
    } else if (int(it->second.size()) != n / 2) {
      fail("wgmma accumulators in flight with another shape", n, long(it->second.size()) * 2);
    }
  }
  s.wg_digest = digest_mix(digest_mix(digest_mix(s.wg_digest, uint64_t(key)), op.desc_b), op.desc_a);
  ++s.wg_count;
  ++g_count.wgmma;
  g_count.mma += n / 8;
  const long wf = (wg_warp == 0 ? n / 4 : 0) + (a_regs ? 0 : 4);  // B (32 N bytes) once per warpgroup, A 512 B per warp
  g_count.smem_wavefronts += wf, g_count.smem_ideal_wavefronts += wf, g_count.smem_bytes += 128 * wf;
  s.wg_ops.push_back(std::move(op));
}

inline void wgmma_retire(WarpSlot& s, int warp, WgmmaOp& op) {
  std::vector<float> now;
  read_operand(op.desc_b, 0, op.n, now, false);
  if (std::memcmp(now.data(), op.b_operand.data(), now.size() * sizeof(float)) != 0)
    fail("wgmma B operand in shared memory changed while the wgmma was in flight", warp, op.n);
  float A[16][16];
  if (op.a_regs) {
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 8; ++i)
        if (!(op.a_src[l][i] == op.a[l][i] || (op.a_src[l][i] != op.a_src[l][i] && op.a[l][i] != op.a[l][i])))
          fail("wgmma A registers modified before wgmma.wait_group", warp, l);
      const int g = l / 4, q = l % 4;
      for (int i = 0; i < 2; ++i) {
        A[g][2 * q + i] = float(op.a[l][0 + i]);
        A[g + 8][2 * q + i] = float(op.a[l][2 + i]);
        A[g][2 * q + 8 + i] = float(op.a[l][4 + i]);
        A[g + 8][2 * q + 8 + i] = float(op.a[l][6 + i]);
      }
    }
  } else {
    read_operand(op.desc_a, 16 * (warp % 4), 16, now, false);
    if (std::memcmp(now.data(), op.a_operand.data(), now.size() * sizeof(float)) != 0)
      fail("wgmma A operand in shared memory changed while the wgmma was in flight", warp, op.n);
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 16; ++k) A[r][k] = op.a_operand[size_t(r) * 16 + k];
  }
  for (int l = 0; l < 32; ++l) {
    std::vector<float>& d = s.wg_shadow.at(op.acc[l]);
    const int g = l / 4, q = l % 4;
    for (int j = 0; j < op.n / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        const int r = g + (e >= 2 ? 8 : 0), c = 8 * j + 2 * q + (e & 1);
        float acc = op.accumulate ? d[size_t(4 * j + e)] : 0.0f;
        for (int k = 0; k < 16; ++k) acc += A[r][k] * op.b_operand[size_t(c) * 16 + k];
        d[size_t(4 * j + e)] = acc;
      }
  }
}

inline void wgmma_wait_group(WarpSlot& s, int warp, int keep) {
  for (const WgmmaOp& op : s.wg_ops)
    if (op.group < 0) fail("wgmma.wait_group with wgmma operations not committed", warp);
  std::vector<WgmmaOp> left;
  for (WgmmaOp& op : s.wg_ops) {
    if (op.group < s.wg_groups - keep) wgmma_retire(s, warp, op);
    else left.push_back(std::move(op));
  }
  s.wg_ops.swap(left);
  for (auto it = s.wg_shadow.begin(); it != s.wg_shadow.end();) {
    bool busy = false;
    for (const WgmmaOp& op : s.wg_ops)
      for (int l = 0; l < 32 && !busy; ++l) busy = op.acc[l] == it->first;
    if (busy) {
      ++it;
      continue;
    }
    std::copy(it->second.begin(), it->second.end(), it->first);
    it = s.wg_shadow.erase(it);
  }
  s.wg_fenced = false;
}

}  // namespace shim

namespace inr_fast {
namespace prims {

using h2 = __half2;

inline void mma_16816(float (&d)[4], const h2 (&a)[4], const h2 (&b)[2]) {
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  for (int i = 0; i < 4; ++i) {
    s.hin[l][2 * i] = a[i].x;
    s.hin[l][2 * i + 1] = a[i].y;
    s.fin[l][i] = d[i];
  }
  for (int i = 0; i < 2; ++i) {
    s.hin[l][8 + 2 * i] = b[i].x;
    s.hin[l][8 + 2 * i + 1] = b[i].y;
  }
  shim::warp_wait(shim::kOpMma, 0);
  for (int i = 0; i < 4; ++i) d[i] = s.fout[l][i];
}

template <int N>
inline void ldsm_impl(h2 (&r)[N], const half* row, bool trans) {
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  s.ptr[l] = row;
  shim::warp_wait(shim::kOpLdsm, N | (trans ? 8 : 0));
  for (int j = 0; j < N; ++j) r[j] = {s.hout[l][2 * j], s.hout[l][2 * j + 1]};
}
inline void ldsm_x4(h2 (&r)[4], const half* row) { ldsm_impl<4>(r, row, false); }
inline void ldsm_x4_t(h2 (&r)[4], const half* row) { ldsm_impl<4>(r, row, true); }
inline void ldsm_x2(h2 (&r)[2], const half* row) { ldsm_impl<2>(r, row, false); }
inline void ldsm_x2_t(h2 (&r)[2], const half* row) { ldsm_impl<2>(r, row, true); }

template <int M>
inline void stsm_impl(half* row, const h2 (&r)[M], bool trans) {
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  s.ptr[l] = row;
  for (int j = 0; j < M; ++j) s.hin[l][2 * j] = r[j].x, s.hin[l][2 * j + 1] = r[j].y;
  shim::warp_wait(shim::kOpStsm, M | (trans ? 8 : 0));
}
inline void stsm_x4(half* row, const h2 (&r)[4]) { stsm_impl<4>(row, r, false); }
inline void stsm_x4_t(half* row, const h2 (&r)[4]) { stsm_impl<4>(row, r, true); }
inline void stsm_x2_t(half* row, const h2 (&r)[2]) { stsm_impl<2>(row, r, true); }

// wgmma (sm_90a). Descriptors: K-major, no swizzle; start, LBO and SBO given in float16 elements
// (multiples of 8: 16 bytes), encoded in the bytes of the CUDA build's layout.
inline uint64_t wgmma_desc(const half* start, int lbo_elems, int sbo_elems) {
  const long e = long(start - reinterpret_cast<const half*>(shim::g_block->smem));
  if (e < 0 || e % 8 != 0 || lbo_elems % 8 != 0 || sbo_elems % 8 != 0 || lbo_elems < 0 || sbo_elems < 0)
    shim::fail("wgmma_desc: start, LBO and SBO must be 16-byte multiples inside shared memory", e, lbo_elems);
  if (e * 2 >= (1 << 18) || lbo_elems * 2 >= (1 << 18) || sbo_elems * 2 >= (1 << 18))
    shim::fail("wgmma_desc: field out of range", e, lbo_elems);
  return uint64_t(e * 2 >> 4) | uint64_t(lbo_elems * 2 >> 4) << 16 | uint64_t(sbo_elems * 2 >> 4) << 32;
}
inline void wgmma_fence() { shim::warp_wait(shim::kOpWgFence, 0); }
inline void wgmma_commit() { shim::warp_wait(shim::kOpWgCommit, 0); }
template <int K>
inline void wgmma_wait() {
  shim::warp_wait(shim::kOpWgWait, K);
}
inline void fence_proxy_async() { shim::proxy_fence(); }
// D (64 x N per warpgroup; this warp's 16 rows) (+)= A * B, A from shared memory (desc_a: the
// warpgroup's 64 rows) or from registers (the warp's 16 rows, m16n8k16 A layout), B by descriptor.
template <int N>
inline void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "m64nNk16: N a multiple of 8 up to 256");
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  s.fptr[l] = d;
  s.u64[l] = desc_b;
  s.ptr[l] = reinterpret_cast<const void*>(uintptr_t(desc_a));
  shim::warp_wait(shim::kOpWgmma, N | (accumulate ? 1L << 17 : 0));
}
template <int N>
inline void wgmma_rs(float (&d)[N / 2], const h2 (&a)[4], uint64_t desc_b, bool accumulate) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "m64nNk16: N a multiple of 8 up to 256");
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  s.fptr[l] = d;
  s.aptr[l] = &a[0].x;
  s.u64[l] = desc_b;
  shim::warp_wait(shim::kOpWgmma, N | 1L << 16 | (accumulate ? 1L << 17 : 0));
}

template <typename T>
inline T ld_global(const T* p) {
  shim::g_count.global_read += long(sizeof(T));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t sec = a / 32; sec <= (a + sizeof(T) - 1) / 32; ++sec) {
    shim::g_count.global_read_sectors += shim::warp_slot().read_sectors.insert(sec).second;
    if (shim::g_count_smem && !shim::g_dram_written.count(sec))
      shim::g_count.dram_read_sectors += shim::g_dram_read.insert(sec).second;
  }
  return *p;
}
template <typename T>
inline void st_global(T* p, T v) {
  shim::g_count.global_write += long(sizeof(T));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t sec = a / 32; sec <= (a + sizeof(T) - 1) / 32; ++sec) {
    shim::g_count.global_write_sectors += shim::warp_slot().write_sectors.insert(sec).second;
    if (shim::g_count_smem) shim::g_count.dram_write_sectors += shim::g_dram_written.insert(sec).second;
  }
  *p = v;
}

inline h2 lds_h2(const half* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset_half(p) : 0, active ? 4 : 0);
  return active ? h2{p[0], p[1]} : h2{half(0), half(0)};
}
inline void sts_h2(half* p, h2 v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset_half(p) : 0, active ? 4 : 0);
  if (active) p[0] = v.x, p[1] = v.y, shim::proxy_mark(p, 2 * sizeof(half), shim::me().lin);
}
inline float lds_f(const float* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 4) : 0, active ? 4 : 0);
  return active ? *p : 0.0f;
}
inline void sts_f(float* p, float v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 4) : 0, active ? 4 : 0);
  if (active) *p = v, shim::proxy_mark(p, 4, shim::me().lin);
}
inline float2 lds_f2(const float* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 8) : 0, active ? 8 : 0);
  if (active && reinterpret_cast<uintptr_t>(p) % 8 != 0) shim::fail("lds_f2: address not 8-byte aligned");
  return active ? float2{p[0], p[1]} : float2{0.0f, 0.0f};
}
inline void sts_f2(float* p, float2 v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 8) : 0, active ? 8 : 0);
  if (active && reinterpret_cast<uintptr_t>(p) % 8 != 0) shim::fail("sts_f2: address not 8-byte aligned");
  if (active) p[0] = v.x, p[1] = v.y, shim::proxy_mark(p, 8, shim::me().lin);
}
inline uint32_t lds_u32(const uint32_t* p) {
  shim::record_smem(shim::smem_offset(p, 4), 4);
  return *p;
}
inline void sts_u32(uint32_t* p, uint32_t v) {
  shim::record_smem(shim::smem_offset(p, 4), 4);
  *p = v;
  shim::proxy_mark(p, 4, shim::me().lin);
}

}  // namespace prims
}  // namespace inr_fast

#define INR_LAUNCH(kernel, grid, block, smem, stream) ::shim::make_launcher(kernel, grid, block, smem, stream)
#define INR_DYNAMIC_SMEM(name) unsigned char* name = ::shim::dynamic_smem()
