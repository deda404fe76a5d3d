// CPU emulation of the CUDA C++ subset that csrc/cuda/*.cu use, so that the CUDA kernels compile as
// plain C++ and run, checked, without a GPU (csrc/tests/emu/README.md).
//
// Execution model: every CUDA thread of a block is a fiber (its own stack) and a block's fibers run
// one at a time on the calling OS thread, switched only at __syncthreads, warp collectives (shuffles,
// mma, ldmatrix) and thread exit. Blocks run one after another (in the policy's order too). The
// schedule is selectable (run_block): warps run ahead of each other up to the next barrier in
// ascending or descending order, or interleave at random, so a result that depends on the order of
// unsynchronised threads (a race, a missing barrier) changes from one schedule to another.
// Checked: __syncthreads reached by every live thread of the block at the same call site, warp
// collectives reached by the 32 lanes of a warp with the same operation, ldmatrix rows inside the
// block's shared memory and 16-byte aligned, launch configurations, dynamic shared memory above
// 48 KB only after cudaFuncSetAttribute. Dynamic shared memory is allocated at its exact size and
// filled with 0xff bytes (NaN in float16 and float32), so AddressSanitizer sees overruns and an
// unwritten element cannot pass a numerical test. Counters: bytes read and written through the
// counted global accessors, shared-memory wavefronts (bank-conflict aware), barriers, mma calls.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <new>
#include <random>
#include <type_traits>
#include <unordered_set>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define INR_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INR_EMU_ASAN 1
#endif
#endif
#if defined(INR_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__

// ------------------------------------------------------------------------------------------ float16
// INR_EMU_HALF_IS_FLOAT: "half" is float, so the kernels run their exact algorithm with float32
// storage (the logic build, compared with the CPU kernel to 1e-6); otherwise half is IEEE binary16.
#if defined(INR_EMU_HALF_IS_FLOAT)
using half = float;
#else
using half = _Float16;
#endif
using __half = half;
struct __half2 {
  half x, y;  // x: the low 16 bits of the 32-bit register (the lower column of an mma pair)
};
inline half __float2half_rn(float f) { return static_cast<half>(f); }  // round to nearest even
inline float __half2float(half h) { return static_cast<float>(h); }
inline __half2 __floats2half2_rn(float lo, float hi) { return {static_cast<half>(lo), static_cast<half>(hi)}; }
inline __half2 __halves2half2(half lo, half hi) { return {lo, hi}; }
inline float __low2float(__half2 v) { return static_cast<float>(v.x); }
inline float __high2float(__half2 v) { return static_cast<float>(v.y); }

// ------------------------------------------------------------------------------------------ math
inline void sincospif(float x, float* s, float* c) {
  const double a = M_PI * static_cast<double>(x);
  *s = static_cast<float>(std::sin(a));
  *c = static_cast<float>(std::cos(a));
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// ------------------------------------------------------------------------------------------ runtime types
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

namespace shim {

[[noreturn]] inline void fail(const char* what, long a = 0, long b = 0) {
  std::fprintf(stderr, "CUDA-EMU ERROR: %s (%ld, %ld)\n", what, a, b);
  std::fflush(stderr);
  std::abort();
}

// ------------------------------------------------------------------------------------------ settings
// The emulated device (defaults: an H100/H200-class part) and the schedule.
struct Device {
  int sm_count = 132;
  int smem_optin = 227 * 1024;    // bytes of dynamic shared memory a block may opt in to
  int smem_per_sm = 228 * 1024;   // for the occupancy estimate
  int max_threads_per_sm = 2048;
};
inline Device g_device;
enum Policy { kAscending = 0, kDescending = 1, kRandom = 2 };
inline int g_policy = kAscending;
inline unsigned g_seed = 1;
inline bool g_count_smem = false;  // wavefront accounting of counted shared accesses (slower)

struct Counters {
  // Global memory through ld_global / st_global: bytes the threads ask for, and 32-byte sectors a
  // warp moves (one per distinct sector a warp touches between two of its synchronisation points:
  // the coalescing of one instruction and the L1 hits right after it).
  long long global_read = 0, global_write = 0;
  long long global_read_sectors = 0, global_write_sectors = 0;
  // With g_count_smem: the sectors DRAM would move if the L2 cache held everything touched since the
  // counters were reset (reset_counters): a sector read before any write of it is read from DRAM
  // once, a sector written is written back once. (H100/H200: 50 MB of L2; one MSE step at W = 64,
  // B = 64 touches ~20 MB.)
  long long dram_read_sectors = 0, dram_write_sectors = 0;
  long long smem_wavefronts = 0, smem_bytes = 0, smem_ideal_wavefronts = 0;
  long long barriers = 0, mma = 0, ldmatrix = 0, launches = 0, blocks = 0;
  long long shuffles = 0;  // warp shuffles (one per warp-wide instruction; they share the shared-memory pipe)
  long long stmatrix = 0;
  // wgmma.mma_async (sm_90a), counted per warp: each warp's share of a warpgroup instruction. Its tensor
  // work is added to `mma` in m16n8k16 units (a warp's 16 rows x N x 16 = N / 8 of them) and its
  // shared-memory operand reads to smem_wavefronts (B once per warpgroup, A per warp).
  long long wgmma = 0;
};
inline Counters g_count;
inline std::unordered_set<uintptr_t> g_dram_read, g_dram_written;
inline void reset_counters() {
  g_count = Counters();
  g_dram_read.clear(), g_dram_written.clear();
}

// ------------------------------------------------------------------------------------------ fibers
#if defined(__x86_64__)
// Callee-saved registers and the stack pointer; switching is a function call (no system call).
extern "C" void inr_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .weak inr_emu_switch
  .type inr_emu_switch,@function
inr_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size inr_emu_switch, .-inr_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

enum State { kRun, kBarrier, kWarp, kDone };

struct Fiber {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;
  size_t stack_size = 0;
  State st = kRun;
  int site = 0;  // __syncthreads call site (source line)
  dim3 tid;
  int lin = 0;
  long seq = 0;  // counted shared accesses made so far
  long proxy_fences = 0;  // fence.proxy.async made so far
};

// A wgmma.mma_async in flight (issued by one warp, its share of the warpgroup's instruction).
struct WgmmaOp {
  int n = 0;            // N of m64nNk16
  bool a_regs = false;  // A from registers (else from shared memory by descriptor)
  bool accumulate = false;
  uint64_t desc_a = 0, desc_b = 0;
  int group = -1;  // commit group (-1: not yet committed)
  float* acc[32];
  half a[32][8];  // A from registers, per lane
  const half* a_src[32];
  std::vector<float> a_operand, b_operand;  // shared-memory operands as read at issue (16 x 16, N x 16)
};

// Per-warp state of collectives: the operation each lane waits in, its inputs and outputs.
struct WarpSlot {
  int op[32];
  long key[32];
  const void* ptr[32];
  float fin[32][8];   // float inputs (mma C, shuffle value)
  half hin[32][12];   // half inputs (mma A 8 + B 4)
  float fout[32][8];  // float outputs
  half hout[32][8];   // half outputs (ldmatrix)
  int iin[32], iout[32];
  std::map<long, std::vector<std::pair<long, int>>> pending;  // counted smem: seq -> (byte offset, bytes)
  std::unordered_set<uintptr_t> read_sectors, write_sectors;  // global sectors of the current window
  uint64_t u64[32];  // 64-bit inputs (wgmma descriptors)
  void* fptr[32];        // wgmma accumulator registers of each lane
  const void* aptr[32];  // wgmma A registers of each lane
  // wgmma state of this warp: operations in flight, the accumulators they hold (shadowed: the lanes'
  // registers read NaN until wgmma.wait_group retires every operation on them), whether a
  // wgmma.fence came since the last wait, commit groups made so far, and a digest of every wgmma
  // operation, which the four warps of a warpgroup must share.
  std::vector<WgmmaOp> wg_ops;
  std::map<float*, std::vector<float>> wg_shadow;
  bool wg_fenced = false;
  int wg_groups = 0;
  uint64_t wg_digest = 0;
  long wg_count = 0;
};

struct Block {
  dim3 bid;
  int n = 0;
  std::vector<Fiber>* f = nullptr;
  std::vector<WarpSlot>* ws = nullptr;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  int cur = 0;
  unsigned char* smem = nullptr;
  size_t smem_size = 0;
  // Per 16-byte chunk: the thread that last wrote it through the generic proxy (+1; 0: none) and
  // how many fence.proxy.async that thread had made then (a wgmma may read the chunk only after the
  // writer's next fence).
  std::vector<std::pair<int, long>> proxy_writer;
  const std::function<void()>* body = nullptr;
#if defined(INR_EMU_ASAN)
  void* fake_stack = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
};
inline Block* g_block = nullptr;
inline dim3 g_grid, g_bdim;

inline Fiber& me() { return (*g_block->f)[g_block->cur]; }

// Switch from the running fiber back to the block scheduler.
inline void to_scheduler() {
  Block* b = g_block;
  Fiber& f = me();
#if defined(INR_EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(f.st == kDone ? nullptr : &fake, b->sched_stack_bottom, b->sched_stack_size);
#endif
#if defined(__x86_64__)
  inr_emu_switch(&f.sp, b->sched_sp);
#else
  swapcontext(&f.ctx, &b->sched);
#endif
#if defined(INR_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

inline void yield_as(State st, int site) {
  Fiber& f = me();
  f.st = st;
  f.site = site;
  to_scheduler();
}

inline void fiber_main() {
#if defined(INR_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_block->sched_stack_bottom, &g_block->sched_stack_size);
#endif
  (*g_block->body)();
  me().st = kDone;
  to_scheduler();
  fail("a finished fiber was resumed");
}

inline void fiber_start(Fiber& f) {
#if defined(__x86_64__)
  // Stack: [.. 6 zeroed callee-saved registers][entry][0] with the entry slot 16-byte aligned, so
  // that the `ret` of inr_emu_switch enters fiber_main with the ABI's stack alignment.
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack + f.stack_size) & ~uintptr_t(15);
  void** slot = reinterpret_cast<void**>(top - 16);
  slot[0] = reinterpret_cast<void*>(&fiber_main);
  slot[1] = nullptr;
  void** regs = slot - 6;
  for (int i = 0; i < 6; ++i) regs[i] = nullptr;
  f.sp = regs;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = f.stack_size;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_main, 0);
#endif
}

inline void resume(Block& b, int i) {
  b.cur = i;
  Fiber& f = (*b.f)[i];
#if defined(INR_EMU_ASAN)
  __sanitizer_start_switch_fiber(&b.fake_stack, f.stack, f.stack_size);
#endif
#if defined(__x86_64__)
  inr_emu_switch(&b.sched_sp, f.sp);
#else
  swapcontext(&b.sched, &f.ctx);
#endif
#if defined(INR_EMU_ASAN)
  __sanitizer_finish_switch_fiber(b.fake_stack, nullptr, nullptr);
#endif
}

// ------------------------------------------------------------------------------------------ collectives
// A warp collective completes when its 32 lanes wait in it; complete() then computes every lane's
// outputs (into WarpSlot::*out) before the lanes resume.
enum Op { kOpShfl = 1, kOpSyncwarp, kOpMma, kOpLdsm, kOpStsm, kOpWgmma, kOpWgFence, kOpWgCommit, kOpWgWait };
inline void complete_collective(WarpSlot& s, int warp);

// Completes warp w's collective if its 32 lanes wait in one; returns whether it did.
inline bool try_complete(Block& b, int w) {
  std::vector<Fiber>& f = *b.f;
  const int lo = w * 32, hi = lo + 32;
  for (int i = lo; i < hi; ++i)
    if (f[i].st != kWarp) return false;
  WarpSlot& s = (*b.ws)[w];
  for (int l = 1; l < 32; ++l)
    if (s.op[l] != s.op[0] || s.key[l] != s.key[0])
      fail("warp collective not uniform across the warp (operation / shape)", w, l);
  complete_collective(s, w);
  s.read_sectors.clear(), s.write_sectors.clear();
  for (int i = lo; i < hi; ++i) f[i].st = kRun;
  return true;
}

// Runs the runnable lanes of warp w once each (lane order per policy); returns whether any ran.
inline bool run_lanes(Block& b, int w, std::mt19937& rng) {
  std::vector<Fiber>& f = *b.f;
  int order[32];
  for (int l = 0; l < 32; ++l) order[l] = g_policy == kDescending ? 31 - l : l;
  if (g_policy == kRandom) std::shuffle(order, order + 32, rng);
  bool ran = false;
  for (int l : order)
    if (f[w * 32 + l].st == kRun) {
      resume(b, w * 32 + l);
      ran = true;
    }
  return ran;
}

// Schedules: kAscending / kDescending take the warps in that order and run each one ahead, through
// all its warp collectives, up to the next barrier before the next warp starts (so a warp that reads
// another warp's shared-memory writes without a barrier in between reads them before they are made);
// kRandom picks warps at random and sometimes runs one ahead, sometimes one step only, completing
// collectives late (interleaving warps as finely as the collectives allow).
inline void run_block(Block& b, std::mt19937& rng) {
  std::vector<Fiber>& f = *b.f;
  const int nw = b.n / 32;
  std::vector<int> worder(nw);
  for (int w = 0; w < nw; ++w) worder[w] = g_policy == kDescending ? nw - 1 - w : w;
  for (;;) {
    if (g_policy == kRandom) std::shuffle(worder.begin(), worder.end(), rng);
    bool progress = false;
    for (int w : worder) {
      const bool ahead = g_policy != kRandom || (rng() & 1);
      for (;;) {
        bool step = run_lanes(b, w, rng);
        if (ahead) step = try_complete(b, w) || step;
        progress = progress || step;
        if (!ahead || !step) break;
      }
    }
    if (progress) continue;
    bool released = false;
    for (int w = 0; w < nw; ++w) released = try_complete(b, w) || released;
    if (released) continue;
    int done = 0, bar = 0;
    for (const Fiber& x : f) done += x.st == kDone, bar += x.st == kBarrier;
    if (done == b.n) return;
    if (bar > 0 && bar + done == b.n) {
      if (done > 0) fail("__syncthreads reached while some threads of the block have exited", done, bar);
      const int site = f[0].site;
      for (const Fiber& x : f)
        if (x.site != site) fail("threads wait at different __syncthreads call sites (lines)", site, x.site);
      for (Fiber& x : f) x.st = kRun;
      for (WarpSlot& w : *b.ws) w.read_sectors.clear(), w.write_sectors.clear();
      ++g_count.barriers;
      continue;
    }
    for (const Fiber& x : f)
      if (x.st != kDone) std::fprintf(stderr, "  thread %d state %d site %d\n", x.lin, int(x.st), x.site);
    fail("deadlock: a barrier or warp collective that not every thread reaches", bar, done);
  }
}

inline int lane() { return me().lin % 32; }
inline WarpSlot& warp_slot() { return (*g_block->ws)[me().lin / 32]; }

inline void warp_wait(int op, long key) {
  WarpSlot& s = warp_slot();
  s.op[lane()] = op;
  s.key[lane()] = key;
  yield_as(kWarp, op);
}

// ------------------------------------------------------------------------------------------ launches
// Per-kernel attributes (dynamic shared memory opt-in), keyed by the kernel's address.
inline std::map<const void*, size_t>& smem_attr() {
  static std::map<const void*, size_t> m;
  return m;
}
inline cudaError_t g_last = cudaSuccess;

inline unsigned char* dynamic_smem() { return g_block->smem; }

template <typename K, typename... A>
void launch(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, A... args) {
  const int n = int(block.x * block.y * block.z);
  if (n < 1 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    g_last = cudaErrorInvalidConfiguration;
    return;
  }
  if (n % 32 != 0) fail("emulated blocks must be whole warps", n);
  const void* key = reinterpret_cast<const void*>(kernel);
  const size_t allowed = smem_attr().count(key) ? smem_attr()[key] : 48 * 1024;
  if (smem > 48 * 1024 && smem > allowed) {
    g_last = cudaErrorInvalidValue;
    return;
  }
  ++g_count.launches;
#if defined(INR_EMU_ASAN)
  constexpr size_t kStack = 512 * 1024;
#else
  constexpr size_t kStack = 128 * 1024;
#endif
  std::vector<std::vector<char>> stacks(n, std::vector<char>(kStack));
  std::vector<Fiber> fibers(n);
  std::vector<WarpSlot> warps(n / 32);
  std::mt19937 rng(g_seed);
  g_grid = grid;
  g_bdim = block;
  const std::function<void()> body = [&]() { kernel(args...); };
  // Block order follows the policy too (blocks must not depend on each other).
  std::vector<long> border(size_t(grid.x) * grid.y * grid.z);
  for (size_t i = 0; i < border.size(); ++i) border[i] = long(i);
  if (g_policy == kDescending) std::reverse(border.begin(), border.end());
  if (g_policy == kRandom) std::shuffle(border.begin(), border.end(), rng);
  for (long lin : border) {
    Block b;
    b.bid = dim3(unsigned(lin % grid.x), unsigned((lin / grid.x) % grid.y), unsigned(lin / (long(grid.x) * grid.y)));
    b.n = n;
    b.f = &fibers;
    b.ws = &warps;
    b.body = &body;
    b.smem_size = smem;
    b.smem = static_cast<unsigned char*>(::operator new(smem ? smem : 1, std::align_val_t(128)));
    std::memset(b.smem, 0xff, smem);
    b.proxy_writer.assign((smem + 15) / 16, {0, 0});
    g_block = &b;
    for (int i = 0; i < n; ++i) {
      Fiber& f = fibers[i];
      f = Fiber();
      f.lin = i;
      f.tid = dim3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
      f.stack = stacks[i].data();
      f.stack_size = kStack;
      fiber_start(f);
    }
    for (WarpSlot& w : warps) {
      w.pending.clear(), w.read_sectors.clear(), w.write_sectors.clear();
      w.wg_ops.clear(), w.wg_shadow.clear();
      w.wg_fenced = false, w.wg_groups = 0, w.wg_digest = 0, w.wg_count = 0;
    }
    run_block(b, rng);
    for (size_t w = 0; w < warps.size(); ++w) {
      if (!warps[w].wg_ops.empty()) fail("a warp exited with wgmma operations not waited for", long(w));
      const size_t w0 = w / 4 * 4;
      if (warps[w].wg_count != warps[w0].wg_count || warps[w].wg_digest != warps[w0].wg_digest)
        fail("the warps of a warpgroup issued different wgmma operations", long(w0), long(w));
      if (warps[w].wg_count > 0 && n % 128 != 0) fail("wgmma in a block that is not whole warpgroups", n);
    }
    for (size_t w = 0; w < warps.size(); ++w)
      if (!warps[w].pending.empty())
        fail("a counted shared-memory access was not made by all 32 lanes of a warp", long(w),
             long(warps[w].pending.size()));
    ::operator delete(b.smem, std::align_val_t(128));
    g_block = nullptr;
    ++g_count.blocks;
  }
}

}  // namespace shim

#define threadIdx (::shim::me().tid)
#define blockIdx (::shim::g_block->bid)
#define blockDim (::shim::g_bdim)
#define gridDim (::shim::g_grid)
#define __syncthreads() ::shim::yield_as(::shim::kBarrier, __LINE__)

// ------------------------------------------------------------------------------------------ warp intrinsics
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, int>::value, "float or int shuffles");
  if (mask != 0xffffffffu) shim::fail("__shfl_xor_sync: only the full mask is emulated");
  shim::WarpSlot& s = shim::warp_slot();
  const int l = shim::lane();
  std::memcpy(&s.fin[l][0], &v, sizeof(T));
  shim::warp_wait(shim::kOpShfl, lane_mask);
  T r;
  std::memcpy(&r, &s.fout[l][0], sizeof(T));
  return r;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) shim::fail("__syncwarp: only the full mask is emulated");
  shim::warp_wait(shim::kOpSyncwarp, 0);
}

// ------------------------------------------------------------------------------------------ runtime API
inline cudaError_t cudaGetLastError() {
  cudaError_t e = shim::g_last;
  shim::g_last = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return shim::g_last; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return shim::g_last; }
template <typename K>
cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > shim::g_device.smem_optin)
    return cudaErrorInvalidValue;
  shim::smem_attr()[reinterpret_cast<const void*>(kernel)] = size_t(v);
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? shim::g_device.sm_count : shim::g_device.smem_optin;
  return cudaSuccess;
}
// Occupancy from shared memory and threads only (the emulator knows no register counts).
template <typename K>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int threads, size_t smem) {
  const int by_threads = shim::g_device.max_threads_per_sm / (threads > 0 ? threads : 1);
  const int by_smem = smem ? int(shim::g_device.smem_per_sm / (smem + 1024)) : 32;
  *n = std::max(0, std::min({by_threads, by_smem, 32}));
  return cudaSuccess;
}

namespace shim {
// `INR_LAUNCH(kernel, grid, block, smem, stream)(args...)` (csrc/include/inr_fast/cuda_prims.cuh).
template <typename K>
struct Launcher {
  K kernel;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  template <typename... A>
  void operator()(A... args) const {
    launch(kernel, grid, block, smem, stream, args...);
  }
};
template <typename K>
Launcher<K> make_launcher(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream) {
  return Launcher<K>{kernel, grid, block, smem, stream};
}
}  // namespace shim
