// Device primitives of the CUDA kernels (csrc/cuda/*.cu): tensor-core mma.sync m16n8k16 (float16
// in, float32 accumulate), ldmatrix, and the accessors through which the kernels read and write
// global memory and move bulk data in shared memory. Every fragment layout is the documented one of
// the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type", "ldmatrix"), so the
// kernels may compute element positions from them (bias, ReLU mask, loss).
//
// Built with INR_FAST_EMU, the same functions come from the CPU emulator in csrc/tests/emu (which
// implements these layouts, checks the accesses and counts bytes, wavefronts, barriers and mma
// calls); the kernels then compile as plain C++. Kernel launches are written
// INR_LAUNCH(kernel, grid, block, smem, stream)(args...) and dynamic shared memory is declared with
// INR_DYNAMIC_SMEM(name) for the same reason.
#pragma once

#if defined(INR_FAST_EMU)
#include "inr_emu/prims.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#define INR_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#define INR_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]

namespace inr_fast {
namespace prims {

// Two float16 values in one 32-bit register; .x is the low half (the lower column of a pair).
using h2 = __half2;

__device__ __forceinline__ uint32_t u32(const h2& v) { return *reinterpret_cast<const uint32_t*>(&v); }
__device__ __forceinline__ h2 as_h2(uint32_t v) { return *reinterpret_cast<const h2*>(&v); }
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// d (16 x 8, float32, C layout) += a (16 x 16, row-major A layout) * b (16 x 8, B layout).
__device__ __forceinline__ void mma_16816(float (&d)[4], const h2 (&a)[4], const h2 (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(u32(a[0])), "r"(u32(a[1])), "r"(u32(a[2])), "r"(u32(a[3])), "r"(u32(b[0])), "r"(u32(b[1])));
}

// ldmatrix: lane l passes the address of row l % 8 of 8 x 8 matrix l / 8 (16-byte aligned, shared).
__device__ __forceinline__ void ldsm_x4(h2 (&r)[4], const half* row) {
  uint32_t x0, x1, x2, x3;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3)
               : "r"(smem_addr(row))
               : "memory");
  r[0] = as_h2(x0), r[1] = as_h2(x1), r[2] = as_h2(x2), r[3] = as_h2(x3);
}
__device__ __forceinline__ void ldsm_x4_t(h2 (&r)[4], const half* row) {
  uint32_t x0, x1, x2, x3;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3)
               : "r"(smem_addr(row))
               : "memory");
  r[0] = as_h2(x0), r[1] = as_h2(x1), r[2] = as_h2(x2), r[3] = as_h2(x3);
}
__device__ __forceinline__ void ldsm_x2(h2 (&r)[2], const half* row) {
  uint32_t x0, x1;
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(x0), "=r"(x1)
               : "r"(smem_addr(row))
               : "memory");
  r[0] = as_h2(x0), r[1] = as_h2(x1);
}
__device__ __forceinline__ void ldsm_x2_t(h2 (&r)[2], const half* row) {
  uint32_t x0, x1;
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(x0), "=r"(x1)
               : "r"(smem_addr(row))
               : "memory");
  r[0] = as_h2(x0), r[1] = as_h2(x1);
}

// stmatrix (sm_90), the inverse of ldsm_x4: lane l passes the address of row l % 8 of 8 x 8 matrix
// l / 8 and holds, of every matrix j, elements (l/4, 2(l%4)..+1) in r[j]; _t stores the transpose.
__device__ __forceinline__ void stsm_x4(half* row, const h2 (&r)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_addr(row)),
               "r"(u32(r[0])), "r"(u32(r[1])), "r"(u32(r[2])), "r"(u32(r[3]))
               : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void stsm_x4_t(half* row, const h2 (&r)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_addr(row)),
               "r"(u32(r[0])), "r"(u32(r[1])), "r"(u32(r[2])), "r"(u32(r[3]))
               : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void stsm_x2_t(half* row, const h2 (&r)[2]) {  // lanes 0-15 pass addresses
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [%0], {%1, %2};\n" ::"r"(smem_addr(row)),
               "r"(u32(r[0])), "r"(u32(r[1]))
               : "memory");
#else
  __trap();
#endif
}

// wgmma (sm_90a; the emulator's prims.h documents the semantics it checks). A shared-memory operand
// is described by a 64-bit descriptor: K-major without swizzling, 8 x 8 core matrices (8 rows of 16
// contiguous bytes), element (row r, k) at start + (r / 8) * SBO + (r % 8) * 16 B + (k / 8) * LBO +
// (k % 8) * 2 B; start, LBO and SBO are given here in float16 elements (multiples of 8).
__device__ __forceinline__ uint64_t wgmma_desc(const half* start, int lbo_elems, int sbo_elems) {
  const uint64_t a = smem_addr(start);
  return ((a & 0x3ffff) >> 4) | uint64_t((uint32_t(lbo_elems) * 2 & 0x3ffff) >> 4) << 16 |
         uint64_t((uint32_t(sbo_elems) * 2 & 0x3ffff) >> 4) << 32;
}
__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
template <int K>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(K) : "memory");
#else
  __trap();
#endif
}
// Makes this thread's shared-memory writes visible to the async proxy (wgmma operands); a barrier
// must follow before another thread's wgmma reads them.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
  __trap();
#endif
}
}  // namespace prims
}  // namespace inr_fast
#include "inr_fast/wgmma_sm90.cuh"
namespace inr_fast {
namespace prims {
// D (64 x N per warpgroup; this warp's rows 16 w .. 16 w + 15, N / 2 floats per lane in the layout
// of N / 8 mma.m16n8k16 C fragments) (+)= A * B: A the warpgroup's 64 rows by descriptor (_ss) or
// this warp's 16 rows in registers in the m16n8k16 A layout (_rs); B (16 x N) by descriptor, stored
// as N rows of K. Asynchronous: wgmma_fence() before, then wgmma_commit() and wgmma_wait<0>() before
// the accumulators are read or an operand is overwritten.
template <int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  Wgmma<N>::ss(d, desc_a, desc_b, accumulate);
}
template <int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const h2 (&a)[4], uint64_t desc_b, bool accumulate) {
  const uint32_t ar[4] = {u32(a[0]), u32(a[1]), u32(a[2]), u32(a[3])};
  Wgmma<N>::rs(d, ar, desc_b, accumulate);
}

// Global memory.
template <typename T>
__device__ __forceinline__ T ld_global(const T* p) {
  return *p;
}
template <typename T>
__device__ __forceinline__ void st_global(T* p, T v) {
  *p = v;
}

// Shared memory (bulk traffic); `active` false: this lane makes no access (the call stays uniform).
__device__ __forceinline__ h2 lds_h2(const half* p, bool active = true) {
  return active ? *reinterpret_cast<const h2*>(p) : __floats2half2_rn(0.0f, 0.0f);
}
__device__ __forceinline__ void sts_h2(half* p, h2 v, bool active = true) {
  if (active) *reinterpret_cast<h2*>(p) = v;
}
__device__ __forceinline__ float lds_f(const float* p, bool active = true) { return active ? *p : 0.0f; }
__device__ __forceinline__ void sts_f(float* p, float v, bool active = true) {
  if (active) *p = v;
}
__device__ __forceinline__ float2 lds_f2(const float* p, bool active = true) {
  return active ? *reinterpret_cast<const float2*>(p) : make_float2(0.0f, 0.0f);
}
__device__ __forceinline__ void sts_f2(float* p, float2 v, bool active = true) {
  if (active) *reinterpret_cast<float2*>(p) = v;
}
__device__ __forceinline__ uint32_t lds_u32(const uint32_t* p) { return *p; }
__device__ __forceinline__ void sts_u32(uint32_t* p, uint32_t v) { *p = v; }

}  // namespace prims
}  // namespace inr_fast
#endif

#include <cstdlib>
#include <cstring>

namespace inr_fast {
namespace prims {

// INR_FAST_CUDA_SYNC=1 (debugging): every launch is followed by a stream synchronisation, so an
// asynchronous fault is reported by the launch that caused it instead of a later call.
inline bool debug_sync() {
  static const bool on = [] {
    const char* v = std::getenv("INR_FAST_CUDA_SYNC");
    return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
  }();
  return on;
}

// The status of the launch just made on `stream` (and, with INR_FAST_CUDA_SYNC, of its execution).
inline cudaError_t launch_status(cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && debug_sync()) {
    err = cudaStreamSynchronize(stream);
    if (err == cudaSuccess) err = cudaGetLastError();
  }
  return err;
}

}  // namespace prims
}  // namespace inr_fast
