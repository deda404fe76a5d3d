"""Build inr_fast and its C++/CUDA extension against whatever torch is installed.

The CUDA kernels are compiled when torch is a CUDA build and a CUDA toolkit is found and valid
(bin/nvcc and include/cuda_runtime.h, the same major version as torch's CUDA): CUDA_HOME or CUDA_PATH
when set (then only there), else the toolkit of the nvcc on PATH, /usr/local/cuda, /usr/local/cuda-*,
/opt/cuda. A visible GPU is never needed nor queried. Otherwise the CPU kernels are built alone, with
one line saying why. Overrides: INR_FAST_FORCE_CPU=1 builds CPU only, INR_FAST_FORCE_CUDA=1 fails
with one clear message when CUDA cannot be built. TORCH_CUDA_ARCH_LIST is honoured; the default
covers Ampere (sm_80, also runs on sm_86/89) and Hopper (sm_90), plus PTX for newer GPUs.

Install with `pip install --no-build-isolation .` so that the installed torch is used. Under pip's
default build isolation the installed torch is hidden; it is then found in the interpreter's own
site-packages and used from there (never downloaded). Nothing in this file needs torch for an sdist.
What is built is said in one line before the build (pip shows it with -v, and on the terminal).
The torch (and CUDA) versions built against are written to inr_fast/_build_info.py, which
inr_fast._ext checks before loading the extension.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
# Where a CUDA toolkit is looked for after CUDA_HOME/CUDA_PATH and the nvcc on PATH (globs allowed).
STANDARD_CUDA_ROOTS = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")
# setup.py commands that compile the extension; the others (sdist, egg_info, dist_info, ...) need
# neither torch nor a toolkit.
BUILD_COMMANDS = {
    "build",
    "build_ext",
    "bdist_wheel",
    "bdist",
    "bdist_egg",
    "install",
    "develop",
    "editable_wheel",
}
BUILD_INFO = "_build_info.py"  # generated next to the extension (inr_fast/_C*.so); never in git/sdist
NO_ISOLATION = "python -m pip install --no-build-isolation ."


class BuildError(Exception):
    """A build that cannot go ahead; main() prints its message, without a traceback, and exits 1."""


def _flag(name: str, env=None) -> bool:
    env = os.environ if env is None else env
    return env.get(name, "0").lower() in ("1", "true", "yes", "on")


_tty_lines = 0


def announce(line: str, tty: str = "/dev/tty") -> None:
    """Print a line of the build's own. pip hides a build's output unless run with -v, so under pip
    (PIP_BUILD_TRACKER is set in its build subprocesses) the line also goes to the terminal, if any."""
    global _tty_lines
    print(line, flush=True)
    under_pip = "PIP_BUILD_TRACKER" in os.environ or "PIP_REQ_TRACKER" in os.environ
    if under_pip and not sys.stdout.isatty():
        try:
            with open(tty, "a") as out:  # no controlling terminal (CI, IDE): OSError
                # The first line leaves pip's spinner line; later ones overwrite the spinner's character.
                out.write(("\r" if _tty_lines else "\n") + line + "\n")
            _tty_lines += 1
        except OSError:
            pass


# ---------------------------------------------------------------------------------------- sources


def sources(cuda: bool, root: str = ROOT) -> list[str]:
    """The files compiled into inr_fast._C, relative to root: the torch-free CPU kernels, the torch
    bindings (those with `cuda` in their name only with CUDA), and with CUDA the .cu kernels."""
    rel = lambda pattern: sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern)))
    bindings = rel("csrc/torch/*.cpp")
    files = rel("csrc/cpu/*.cpp") + [p for p in bindings if "cuda" not in os.path.basename(p)]
    if cuda:
        files += rel("csrc/cuda/*.cu") + [p for p in bindings if "cuda" in os.path.basename(p)]
    return files


# ---------------------------------------------------------------------------------------- torch


def hidden_torch_dirs() -> list[str]:
    """The interpreter's own site-packages, which pip's build isolation removes from sys.path: user
    site (outside a venv) first, then site.getsitepackages() (a venv's, plus the base ones when the
    venv includes system site-packages), as a normal run of this interpreter sees them."""
    sites = ([site.getusersitepackages()] if sys.prefix == sys.base_prefix else []) + site.getsitepackages()
    dirs = []
    for d in filter(os.path.isdir, sites):
        dirs.append(d)
        # Directories that the site's .pth files add (their `import` lines are not run).
        for pth in sorted(glob.glob(os.path.join(d, "*.pth"))):
            with open(pth, errors="replace") as f:
                lines = [line.strip() for line in f]
            dirs += [os.path.join(d, p) for p in lines if p and not p.startswith(("#", "import"))]
    on_path = {os.path.normcase(os.path.abspath(p)) for p in sys.path}
    return [d for d in dirs if os.path.isdir(d) and os.path.normcase(os.path.abspath(d)) not in on_path]


def find_torch_dir(dirs: list[str]) -> str | None:
    """The first of dirs that holds a torch package."""
    for d in dirs:
        if os.path.isfile(os.path.join(d, "torch", "__init__.py")):
            return d
    return None


def no_torch_message(err: BaseException) -> str:
    return (
        f"inr_fast: the extension is built against the installed torch, but torch cannot be imported "
        f"by {sys.executable} ({err}).\n"
        "Install torch first (https://pytorch.org/get-started/locally/), then build against it without "
        "build isolation (pip's default, `python -m build` and uv build in a fresh environment without "
        f"your torch):\n    {NO_ISOLATION}\n(uv: `uv pip install --no-build-isolation .`; "
        "build: `python -m build --no-isolation`; extras as usual, e.g. '.[simulate]')."
    )


def import_torch():
    """Import torch; under pip's build isolation, from the interpreter's own site-packages."""
    try:
        import torch
    except ImportError as err:
        hidden = hidden_torch_dirs()
        found = find_torch_dir(hidden)
        if found is None:
            raise BuildError(no_torch_message(err)) from None
        # All of them (torch's dependencies may sit in another), appended: the isolated environment's
        # setuptools stays first. Their .pth files are not processed.
        sys.path.extend(hidden)
        try:
            import torch
        except ImportError as err2:
            raise BuildError(no_torch_message(err2)) from None
        announce(
            f"inr_fast: build isolation hides the installed torch; building against torch "
            f"{torch.__version__} from {found} (with --no-build-isolation this step is skipped)."
        )
    return torch


# ---------------------------------------------------------------------------------------- CUDA toolkit


@dataclass
class Toolkit:
    home: str
    nvcc: str
    version: str | None  # nvcc's release, e.g. "13.0"; None when it could not be read
    found_by: str


def toolkit_problem(home: str) -> str | None:
    """Why home is not a usable CUDA toolkit, or None."""
    if not os.path.isdir(home):
        return f"{home} does not exist"
    nvcc = os.path.join(home, "bin", "nvcc")
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        return f"{home} has no bin/nvcc"
    if not os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
        return f"{home} has no include/cuda_runtime.h"
    return None


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def nvcc_version(nvcc: str) -> str | None:
    """The release nvcc reports (`Cuda compilation tools, release 13.0, V13.0.88` -> "13.0")."""
    m = re.search(r"release (\d+\.\d+)", _run([nvcc, "--version"]))
    return m.group(1) if m else None


def nvcc_home(nvcc: str) -> str | None:
    """The toolkit an nvcc (perhaps a wrapper script) really runs, from its own dry run."""
    m = re.search(r"^#\$ _HERE_=(.+)$", _run([nvcc, "--dryrun", "-E", "-x", "cu", os.devnull]), re.M)
    return os.path.dirname(m.group(1).strip()) if m else None


def nvcc_arches(nvcc: str) -> set[str] | None:
    """The virtual architectures nvcc can build ("80", "90", ...), or None if it cannot list them."""
    found = set(re.findall(r"^compute_(\d+)$", _run([nvcc, "--list-gpu-arch"]), re.M))
    return found or None


def _version_key(path: str):
    return [int(n) for n in re.findall(r"\d+", os.path.basename(path))]


def cuda_candidates(env=None, which=shutil.which, roots=STANDARD_CUDA_ROOTS) -> tuple[list, list[str]]:
    """Toolkit directories to try, in order, as (home, how found), and notes on what was passed over.
    CUDA_HOME / CUDA_PATH, when set, is the only candidate."""
    env = os.environ if env is None else env
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(name):
            return [(env[name], name)], []
    found, notes = [], []
    nvcc = which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if toolkit_problem(home) is None:
            found.append((home, f"the nvcc on PATH, {nvcc}"))
        else:
            real = nvcc_home(nvcc)
            if real:
                found.append((real, f"the nvcc on PATH, a wrapper: {nvcc}"))
            else:
                notes.append(f"the nvcc on PATH ({nvcc}) is not inside a CUDA toolkit")
    for pattern in roots:
        for home in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            found.append((home, "a standard location"))
    seen, unique = set(), []
    for home, how in found:
        key = os.path.realpath(home)
        if key not in seen:
            seen.add(key)
            unique.append((home, how))
    return unique, notes


def find_cuda_toolkit(torch_cuda: str, env=None, which=shutil.which, roots=STANDARD_CUDA_ROOTS):
    """(Toolkit, "") for the first valid toolkit whose major version is torch's, else (None, why)."""
    candidates, notes = cuda_candidates(env, which, roots)
    want_major = torch_cuda.split(".")[0]
    for home, how in candidates:
        problem = toolkit_problem(home)
        if problem:
            notes.append(problem)
            continue
        nvcc = os.path.join(home, "bin", "nvcc")
        version = nvcc_version(nvcc)
        if version is not None and version.split(".")[0] != want_major:
            notes.append(f"{home} is CUDA {version}, torch was built with CUDA {torch_cuda}")
            continue
        return Toolkit(os.path.realpath(home), nvcc, version, how), ""
    if not candidates:
        notes.append("looked for nvcc on PATH and in " + ", ".join(roots))
    why = "no usable CUDA toolkit (" + "; ".join(notes) + ")"
    why += f"; for the CUDA kernels set CUDA_HOME to a CUDA {want_major}.x toolkit"
    return None, why


# ---------------------------------------------------------------------------------------- build plan


def arch_names(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST for people: "8.0;9.0+PTX" -> "sm_80, sm_90 + PTX"."""
    out = []
    for tok in filter(None, re.split(r"[;\s]+", arch_list)):
        m = re.fullmatch(r"(\d+)\.(\d+)(a?)(\+PTX)?", tok)
        if m is None:  # a named list ("Ampere"), passed to torch as it is
            out.append(tok)
        else:
            out.append(f"sm_{m[1]}{m[2]}{m[3]}" + (" + PTX" if m[4] else ""))
    return ", ".join(out)


def check_arch_list(arch_list: str, toolkit: Toolkit) -> None:
    """Refuse an architecture list the toolkit cannot build (nvcc would fail minutes into the build)."""
    known = nvcc_arches(toolkit.nvcc)
    if known is None:
        return
    bad = []
    for tok in filter(None, re.split(r"[;\s]+", arch_list)):
        m = re.fullmatch(r"(\d+)\.(\d+)a?(\+PTX)?", tok)
        if m and f"{m[1]}{m[2]}" not in known:
            bad.append(tok)
    if bad:
        supported = ", ".join(f"{int(a) // 10}.{int(a) % 10}" for a in sorted(known, key=int))
        raise BuildError(
            f"inr_fast: TORCH_CUDA_ARCH_LIST={arch_list} asks for {', '.join(bad)}, which CUDA "
            f"{toolkit.version} at {toolkit.home} cannot build (it supports {supported}). Set "
            f"TORCH_CUDA_ARCH_LIST (default {DEFAULT_ARCH_LIST}), or INR_FAST_FORCE_CPU=1."
        )


@dataclass
class BuildPlan:
    cuda: bool
    torch_version: str
    torch_cuda: str | None
    reason: str = ""  # why CPU only
    toolkit: Toolkit | None = None
    arch_list: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The one line said before the build starts."""
        if not self.cuda:
            return (
                f"inr_fast: building the CPU kernels only, against torch {self.torch_version}: {self.reason}."
            )
        tk = self.toolkit
        return (
            f"inr_fast: building the CPU + CUDA kernels for {arch_names(self.arch_list)} "
            f"(TORCH_CUDA_ARCH_LIST={self.arch_list}) with CUDA {tk.version or '?'} at {tk.home} "
            f"(via {tk.found_by}), against torch {self.torch_version}; this takes several minutes."
        )


def plan_build(torch_version: str, torch_cuda: str | None, env=None, find=find_cuda_toolkit) -> BuildPlan:
    """Decide CPU only or CPU + CUDA from the flags, torch's CUDA version and the toolkit, never
    from a GPU. Raises BuildError where INR_FAST_FORCE_CUDA=1 cannot be honoured."""
    env = os.environ if env is None else env
    force_cpu, force_cuda = _flag("INR_FAST_FORCE_CPU", env), _flag("INR_FAST_FORCE_CUDA", env)
    if force_cpu and force_cuda:
        raise BuildError("inr_fast: INR_FAST_FORCE_CPU and INR_FAST_FORCE_CUDA are both set.")
    plan = BuildPlan(False, torch_version, torch_cuda)
    if force_cpu:
        plan.reason = "INR_FAST_FORCE_CPU=1"
        return plan
    if torch_cuda is None:
        plan.reason = "torch is a CPU-only build"
    else:
        toolkit, why = find(torch_cuda, env)
        if toolkit is None:
            plan.reason = why
        else:
            plan.cuda, plan.toolkit = True, toolkit
            plan.arch_list = env.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST
            check_arch_list(plan.arch_list, toolkit)
            return plan
    if force_cuda:
        raise BuildError(f"inr_fast: INR_FAST_FORCE_CUDA=1 but {plan.reason}.")
    return plan


# ---------------------------------------------------------------------------------------- build info


def build_info(plan: BuildPlan) -> dict:
    """What the extension is built against, checked by inr_fast._ext before it loads the extension."""
    return {
        "TORCH_VERSION": plan.torch_version,
        "TORCH_CUDA": plan.torch_cuda,
        "CUDA_BUILT": plan.cuda,
        "CUDA_TOOLKIT": plan.toolkit.version if plan.cuda else None,
        "CUDA_ARCH_LIST": plan.arch_list if plan.cuda else None,
        "SOURCE_DIR": ROOT,
    }


def write_build_info(path: str, info: dict) -> None:
    lines = ['"""Generated by setup.py at build time: what inr_fast._C was built against. Not in git."""', ""]
    lines += [f"{key} = {value!r}" for key, value in info.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------- setup


def extensions(plan: BuildPlan, cpp_extension):
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    # torch's headers as system headers, so -Wall -Wextra report our code only.
    system = [f"-isystem{p}" for p in cpp_extension.include_paths(device_type="cuda" if plan.cuda else "cpu")]
    cxx = ["-O3", "-Wall", "-Wextra", "-fvisibility=hidden", *system]
    # at::parallel_for is inlined into our code: without -fopenmp its `omp parallel` is silently
    # ignored and the CPU kernels run on one thread. libgomp.so.1 resolves to the copy torch loaded.
    link = []
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if not plan.cuda:
        return [
            cpp_extension.CppExtension(
                "inr_fast._C",
                sources(cuda=False),
                include_dirs=include_dirs,
                extra_compile_args={"cxx": cxx},
                extra_link_args=link,
            )
        ]
    nvcc = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-Xcompiler=-Wall"]
    return [
        cpp_extension.CUDAExtension(
            "inr_fast._C",
            sources(cuda=True),
            include_dirs=include_dirs,
            define_macros=[("INR_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx + ["-DINR_FAST_WITH_CUDA=1"], "nvcc": nvcc},
            extra_link_args=link,
        )
    ]


def build_ext_class(base, info: dict):
    """torch's BuildExtension, writing _build_info.py next to the extension after building it."""

    class build_ext(base):
        def run(self):
            super().run()
            ext_dir = os.path.dirname(self.get_ext_fullpath("inr_fast._C"))
            os.makedirs(ext_dir, exist_ok=True)
            write_build_info(os.path.join(ext_dir, BUILD_INFO), info)
            if self.inplace:  # --inplace, editable installs: also next to the copy in the source tree
                pkg_dir = self.get_finalized_command("build_py").get_package_dir("inr_fast")
                write_build_info(os.path.join(pkg_dir, BUILD_INFO), info)

    return build_ext


def main() -> None:
    from setuptools import setup

    # INR_FAST_SKIP_EXT=1: package metadata and the console script only, for an editable install next
    # to an extension already built in place (`make build` does this so the kernels compile only once).
    if _flag("INR_FAST_SKIP_EXT") or not BUILD_COMMANDS.intersection(sys.argv[1:]):
        setup()
        return
    import logging

    torch = import_torch()
    plan = plan_build(torch.__version__, torch.version.cuda)
    if plan.cuda:
        # Before torch guesses (it takes the directory above any nvcc on PATH, unchecked).
        os.environ["CUDA_HOME"] = plan.toolkit.home
        os.environ["TORCH_CUDA_ARCH_LIST"] = plan.arch_list
    # cpp_extension logs "No CUDA runtime is found" on a machine without a GPU: not our decision.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    if plan.cuda:
        cpp_extension.CUDA_HOME = plan.toolkit.home
    announce(plan.summary())
    setup(
        ext_modules=extensions(plan, cpp_extension),
        cmdclass={"build_ext": build_ext_class(cpp_extension.BuildExtension, build_info(plan))},
    )


if __name__ == "__main__":
    try:
        main()
    except BuildError as err:
        sys.exit(str(err))
