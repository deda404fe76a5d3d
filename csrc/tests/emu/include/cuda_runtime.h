// Emulator stand-in for the CUDA header of the same name (csrc/tests/emu/README.md).
#pragma once
#include "inr_emu/prims.h"
