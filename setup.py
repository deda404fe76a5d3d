"""Build inr_fast and its C++/CUDA extension against whatever torch is installed.

CUDA sources are compiled when a CUDA toolkit is found (CUDA_HOME or nvcc) and torch is a CUDA
build; a visible GPU is never required. Overrides: INR_FAST_FORCE_CPU=1 builds CPU only,
INR_FAST_FORCE_CUDA=1 fails loudly when CUDA cannot be built. TORCH_CUDA_ARCH_LIST is honoured;
the default covers Ampere (sm_80, also runs on sm_86/89) and Hopper (sm_90), plus PTX for newer.

Install with `pip install --no-build-isolation .` so that the installed torch is used.
"""

import glob
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
        include_paths,
    )
except ImportError:  # pragma: no cover - build-time message
    sys.exit("inr_fast: torch must be installed before building (pip install --no-build-isolation).")

DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def want_cuda() -> bool:
    force_cpu, force_cuda = _flag("INR_FAST_FORCE_CPU"), _flag("INR_FAST_FORCE_CUDA")
    if force_cpu and force_cuda:
        sys.exit("inr_fast: INR_FAST_FORCE_CPU and INR_FAST_FORCE_CUDA are both set.")
    if force_cpu:
        print("inr_fast: INR_FAST_FORCE_CPU=1, building CPU kernels only.")
        return False
    problems = []
    if CUDA_HOME is None:
        problems.append("no CUDA toolkit found (set CUDA_HOME, e.g. CUDA_HOME=/usr/local/cuda)")
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if problems:
        if force_cuda:
            sys.exit("inr_fast: INR_FAST_FORCE_CUDA=1 but " + "; ".join(problems) + ".")
        print("inr_fast: building CPU kernels only: " + "; ".join(problems) + ".")
        return False
    return True


def extensions():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))  # noqa: E731
    use_cuda = want_cuda()
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    # torch's headers as system headers, so -Wall -Wextra report our code only.
    system = [f"-isystem{p}" for p in include_paths(device_type="cuda" if use_cuda else "cpu")]
    cxx = ["-O3", "-Wall", "-Wextra", "-fvisibility=hidden", *system]
    # at::parallel_for is inlined into our code: without -fopenmp its `omp parallel` is silently
    # ignored and the CPU kernels run on one thread. libgomp.so.1 resolves to the copy torch loaded.
    link = []
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    sources = rel("csrc/cpu/*.cpp") + ["csrc/torch/library.cpp", "csrc/torch/pe.cpp", "csrc/torch/mlp.cpp"]
    if not use_cuda:
        return [
            CppExtension(
                "inr_fast._C",
                sources,
                include_dirs=include_dirs,
                extra_compile_args={"cxx": cxx},
                extra_link_args=link,
            )
        ]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    print(
        f"inr_fast: building CUDA kernels with {CUDA_HOME} for TORCH_CUDA_ARCH_LIST="
        f"{os.environ['TORCH_CUDA_ARCH_LIST']} (torch CUDA {torch.version.cuda})."
    )
    sources += rel("csrc/cuda/*.cu") + ["csrc/torch/pe_cuda.cpp", "csrc/torch/mlp_cuda.cpp"]
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-Xcompiler=-Wall"]
    return [
        CUDAExtension(
            "inr_fast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=[("INR_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx + ["-DINR_FAST_WITH_CUDA=1"], "nvcc": nvcc},
            extra_link_args=link,
        )
    ]


# INR_FAST_SKIP_EXT=1: package metadata and the console script only, for an editable install next to
# an extension already built in place (`make build` does this so the kernels compile only once).
setup(
    ext_modules=[] if _flag("INR_FAST_SKIP_EXT") else extensions(),
    cmdclass={"build_ext": BuildExtension},
)
