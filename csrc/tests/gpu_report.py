"""Prints the GPU and software it runs on, then (given a pytest-benchmark JSON of the `gpu` kernel
benchmarks) each benchmark's median time, its useful TFLOP/s and the fraction of the card's dense
float16 tensor-core peak (`make gpu-test`; compare with the emulator's estimate in BENCHMARKS.md,
"Emulated CUDA kernels").

    python csrc/tests/gpu_report.py                       # machine only
    python csrc/tests/gpu_report.py benchmarks/results/gpu.json
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import torch

# Dense float16 tensor-core peak, TFLOP/s (vendor data sheets; SXM parts, no sparsity).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.4, "H200": 989.4}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except OSError as err:
        info["nvidia_smi"] = f"unavailable ({err})"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            sms=p.multi_processor_count,
            memory_gib=round(p.total_memory / 2**30, 1),
        )
    return info


def peak_for(name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def main(argv: list[str]) -> int:
    info = machine()
    for key, value in info.items():
        print(f"{key}: {value}")
    if not argv:
        return 0
    with open(argv[0]) as f:
        data = json.load(f)
    peak = peak_for(info.get("gpu", ""))
    print(f"dense float16 peak used: {peak} TFLOP/s" if peak else "dense float16 peak: unknown card")
    for bench in data.get("benchmarks", []):
        med = bench["stats"]["median"]
        gflop = bench.get("extra_info", {}).get("gflop")
        line = f"{bench['name']}: median {med * 1e3:.3f} ms"
        if gflop:
            tflops = gflop / med / 1e3
            line += f", {tflops:.1f} TFLOP/s useful"
            if peak:
                line += f" = {100 * tflops / peak:.1f} % of peak"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
