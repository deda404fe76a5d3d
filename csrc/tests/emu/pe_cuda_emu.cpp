// csrc/cuda/pe_cuda.cu compiled as C++ for the CPU emulator (INR_FAST_EMU; see README.md here).
#include "../../cuda/pe_cuda.cu"
