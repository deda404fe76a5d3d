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
inline void complete_mma(WarpSlot& s);

inline void complete_collective(WarpSlot& s, int) {
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

inline void complete_ldsm(WarpSlot& s, long key) {
  const int nmat = int(key & 7);
  const bool trans = (key & 8) != 0;
  const half* base = reinterpret_cast<const half*>(g_block->smem);
  const long n_half = long(g_block->smem_size / sizeof(half));
  long wf = 0;
  for (int j = 0; j < nmat; ++j) {
    std::map<int, std::vector<long>> groups;
    for (int r = 0; r < 8; ++r) {
      const half* p = static_cast<const half*>(s.ptr[8 * j + r]);
      const long e = long(p - base);
      if (p < base || e + 8 > n_half) fail("ldmatrix row outside the block's shared memory", j, r);
      if (e % 8 != 0) fail("ldmatrix row address not 16-byte aligned", j, e);
      auto& v = groups[int((e * 2 / 16) % 8)];
      if (std::find(v.begin(), v.end(), e) == v.end()) v.push_back(e);
    }
    long m = 0;
    for (const auto& [grp, rows] : groups) m = std::max<long>(m, long(rows.size()));
    wf += m;
  }
  g_count.smem_wavefronts += wf;
  g_count.smem_ideal_wavefronts += nmat;
  g_count.smem_bytes += 128L * nmat;
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

template <typename T>
inline T ld_global(const T* p) {
  shim::g_count.global_read += long(sizeof(T));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t sec = a / 32; sec <= (a + sizeof(T) - 1) / 32; ++sec)
    shim::g_count.global_read_sectors += shim::warp_slot().read_sectors.insert(sec).second;
  return *p;
}
template <typename T>
inline void st_global(T* p, T v) {
  shim::g_count.global_write += long(sizeof(T));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t sec = a / 32; sec <= (a + sizeof(T) - 1) / 32; ++sec)
    shim::g_count.global_write_sectors += shim::warp_slot().write_sectors.insert(sec).second;
  *p = v;
}

inline h2 lds_h2(const half* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset_half(p) : 0, active ? 4 : 0);
  return active ? h2{p[0], p[1]} : h2{half(0), half(0)};
}
inline void sts_h2(half* p, h2 v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset_half(p) : 0, active ? 4 : 0);
  if (active) p[0] = v.x, p[1] = v.y;
}
inline float lds_f(const float* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 4) : 0, active ? 4 : 0);
  return active ? *p : 0.0f;
}
inline void sts_f(float* p, float v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 4) : 0, active ? 4 : 0);
  if (active) *p = v;
}
inline float2 lds_f2(const float* p, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 8) : 0, active ? 8 : 0);
  if (active && reinterpret_cast<uintptr_t>(p) % 8 != 0) shim::fail("lds_f2: address not 8-byte aligned");
  return active ? float2{p[0], p[1]} : float2{0.0f, 0.0f};
}
inline void sts_f2(float* p, float2 v, bool active = true) {
  shim::record_smem(active ? shim::smem_offset(p, 8) : 0, active ? 8 : 0);
  if (active && reinterpret_cast<uintptr_t>(p) % 8 != 0) shim::fail("sts_f2: address not 8-byte aligned");
  if (active) p[0] = v.x, p[1] = v.y;
}
inline uint32_t lds_u32(const uint32_t* p) {
  shim::record_smem(shim::smem_offset(p, 4), 4);
  return *p;
}
inline void sts_u32(uint32_t* p, uint32_t v) {
  shim::record_smem(shim::smem_offset(p, 4), 4);
  *p = v;
}

}  // namespace prims
}  // namespace inr_fast

#define INR_LAUNCH(kernel, grid, block, smem, stream) ::shim::make_launcher(kernel, grid, block, smem, stream)
#define INR_DYNAMIC_SMEM(name) unsigned char* name = ::shim::dynamic_smem()
