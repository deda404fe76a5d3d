"""Kernel timings: the fused PE + MLP operators against the batched pure-PyTorch reference, forward and
training step, per (width, depth, batch). :func:`kernel_problem` builds the inputs and the four timed
callables that both ``inr-fast bench`` and the pytest-benchmark suite (benchmarks/) measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from inr_fast.layout import IMAGE_SIZE
from inr_fast.model.reference import batched_mlp, init_params
from inr_fast.model.spec import layer_shapes


def step_flops(
    width: int, depth: int, batch: int, n_coords: int, n_freqs: int = 10, backward: bool = True
) -> int:
    """Useful FLOPs of a forward (``backward`` False) or a training step (forward, weight gradients and
    the input gradients of every layer but the first) of B networks on N coordinates."""
    shapes = layer_shapes(n_freqs, width, depth)
    fwd = sum(2 * fo * fi for fo, fi in shapes)
    dx = sum(2 * fo * fi for fo, fi in shapes[1:])
    return batch * n_coords * (2 * fwd + dx if backward else fwd)


def kernel_problem(
    width: int, depth: int, batch: int, n_coords: int, n_freqs: int = 10, device: str = "cpu", gen=None
) -> dict[str, Callable[[], object]]:
    """Random coordinates, parameters and targets of one shape, and the timed callables:
    ``forward_reference``, ``forward_fused``, ``step_reference`` (MSE + autograd gradients; under fp16
    autocast on CUDA, as AMP would run it) and ``step_fused`` (:func:`inr_fast.ops.mse_step`)."""
    from inr_fast import ops  # loads the compiled extension (optional for the rest of the package)

    gen = torch.Generator().manual_seed(0) if gen is None else gen
    x = (torch.rand(n_coords, 2, generator=gen) * 2 - 1).to(device)
    w, b = init_params(batch, n_freqs, width, depth, generator=gen)
    w, b = [t.to(device) for t in w], [t.to(device) for t in b]
    target = torch.rand(batch, n_coords, 3, generator=gen).to(device)
    params = [t.clone().requires_grad_(True) for t in w + b]
    nw = len(w)
    amp = device == "cuda"

    def step_reference():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            y = batched_mlp(x, params[:nw], params[nw:], n_freqs)
            loss = (y.float() - target).square().mean(dim=(1, 2)).sum()
        return torch.autograd.grad(loss, params)

    def forward_reference():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            return batched_mlp(x, w, b, n_freqs)

    def forward_fused():
        with torch.no_grad():
            return ops.pe_mlp(x, w, b, n_freqs)

    def step_fused():
        return ops.mse_step(x, w, b, target, n_freqs)

    return {
        "forward_reference": forward_reference,
        "forward_fused": forward_fused,
        "step_reference": step_reference,
        "step_fused": step_fused,
    }


def _median_seconds(fn: Callable[[], object], rounds: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_timings(
    device: str = "cpu",
    widths=(16, 32, 64, 128),
    depths=(2, 3, 4),
    batches=(1, 16, 64),
    n_coords: int = IMAGE_SIZE * IMAGE_SIZE,
    n_freqs: int = 10,
    rounds: int = 3,
    progress: bool = True,
) -> list[dict]:
    """Median seconds of forward and training step (MSE loss + all parameter gradients) of the fused
    operators and of the batched reference (``reference.batched_mlp`` + autograd; under fp16 autocast
    on CUDA, as AMP would run it), for every (W, D, B), on ``n_coords`` coordinates."""

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    rows = []
    combos = [(w, d, b) for w in widths for d in depths for b in batches]
    bar = tqdm(total=len(combos), desc="kernels", unit="shape", leave=False, disable=not progress)
    for width, depth, batch in combos:
        calls = kernel_problem(width, depth, batch, n_coords, n_freqs, device, gen)
        row = {"device": device, "W": width, "D": depth, "B": batch, "N": n_coords}
        for name in ("forward_reference", "forward_fused", "step_reference", "step_fused"):
            row[f"{name}_s"] = _median_seconds(calls[name], rounds, sync)
        row["step_gflop"] = step_flops(width, depth, batch, n_coords, n_freqs) / 1e9
        row["step_speedup"] = row["step_reference_s"] / row["step_fused_s"]
        row["forward_speedup"] = row["forward_reference_s"] / row["forward_fused_s"]
        rows.append(row)
        bar.update()
    bar.close()
    return rows


def format_kernel_table(rows: list[dict]) -> str:
    """Markdown table of :func:`kernel_timings` rows (milliseconds and speed-ups)."""
    out = [
        "| W | D | B | forward ref ms | forward fused ms | × | step ref ms | step fused ms | × "
        "| fused GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['W']} | {r['D']} | {r['B']} | {r['forward_reference_s'] * 1e3:.1f} | "
            f"{r['forward_fused_s'] * 1e3:.1f} | {r['forward_speedup']:.2f} | "
            f"{r['step_reference_s'] * 1e3:.1f} | {r['step_fused_s'] * 1e3:.1f} | {r['step_speedup']:.2f} | "
            f"{r['step_gflop'] / r['step_fused_s']:.0f} |"
        )
    return "\n".join(out)
