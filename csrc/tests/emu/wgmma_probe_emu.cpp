// csrc/cuda/wgmma_probe.cu compiled as C++ for the CPU emulator (INR_FAST_EMU; see README.md here).
#include "../../cuda/wgmma_probe.cu"
