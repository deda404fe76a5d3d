"""Install and build: CUDA toolkit detection (fake toolkits and nvcc wrappers), torch hidden by build
isolation, the build summary line, the sdist's contents, the build record checked at load, and the
warning + backend report when the compiled extension does not load.

The default run takes seconds (two setup.py subprocesses stop before compiling); the `slow` test
builds a wheel from the sdist with pip's build isolation (CPU only, ~1 min)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import warnings

import pytest
import torch

import inr_fast._ext as ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "setup.py")


@pytest.fixture(scope="module")
def st():
    """setup.py as a module (its setup() runs only as __main__)."""
    spec = importlib.util.spec_from_file_location("inr_fast_setup", SETUP)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["inr_fast_setup"] = mod  # dataclasses look the module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules["inr_fast_setup"]


@pytest.fixture(autouse=True)
def _fresh_extension_state():
    ext._reset()
    yield
    ext._reset()


def _script(path, body: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def fake_toolkit(root, version="13.0", header=True, arches=(75, 80, 86, 89, 90, 100, 120)):
    """A CUDA toolkit tree whose bin/nvcc answers --version, --list-gpu-arch and --dryrun."""
    listing = "\\n".join(f"compute_{a}" for a in arches)
    _script(
        root / "bin" / "nvcc",
        f"""\
        case "$*" in
          *--dryrun*) echo '#$ _HERE_={root}/bin' ;;
          *--list-gpu-arch*) printf '{listing}\\n' ;;
          *--version*) echo 'Cuda compilation tools, release {version}, V{version}.1' ;;
        esac
        """,
    )
    if header:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "cuda_runtime.h").write_text("// fake\n")
    return root


def wrapper_nvcc(bindir, target):
    """An nvcc on PATH outside any toolkit (like /usr/local/bin/nvcc here) that execs another."""
    return _script(bindir / "nvcc", f'exec "{target}" "$@"\n')


# ------------------------------------------------------------------ 1. toolkit detection, never a GPU


def test_wrapper_nvcc_outside_a_toolkit_gives_a_cpu_build_with_one_line(st, tmp_path):
    # torch guesses CUDA_HOME=<dir above the nvcc on PATH>=/usr/local: no cuda_runtime.h there.
    nvcc = wrapper_nvcc(tmp_path / "usr_local" / "bin", tmp_path / "gone" / "bin" / "nvcc")
    which = lambda name: nvcc  # noqa: E731
    find = lambda cuda, env: st.find_cuda_toolkit(cuda, env, which=which, roots=())  # noqa: E731
    plan = st.plan_build("2.14.1+cu130", "13.0", env={}, find=find)
    line = plan.summary()
    assert not plan.cuda and "\n" not in line
    assert line.startswith("inr_fast: building the CPU kernels only, against torch 2.14.1+cu130: ")
    assert f"the nvcc on PATH ({nvcc}) is not inside a CUDA toolkit" in line
    assert "set CUDA_HOME to a CUDA 13.x toolkit" in line
    with pytest.raises(st.BuildError, match=r"^inr_fast: INR_FAST_FORCE_CUDA=1 but no usable CUDA toolkit"):
        st.plan_build("2.14.1+cu130", "13.0", env={"INR_FAST_FORCE_CUDA": "1"}, find=find)


def test_the_toolkit_behind_a_wrapper_or_in_a_standard_place_is_found(st, tmp_path):
    real = fake_toolkit(tmp_path / "cuda-13.0")
    nvcc = wrapper_nvcc(tmp_path / "usr_local" / "bin", real / "bin" / "nvcc")
    tk, why = st.find_cuda_toolkit("13.0", env={}, which=lambda n: nvcc, roots=())
    assert why == "" and tk.home == str(real) and tk.version == "13.0" and "wrapper" in tk.found_by
    # no nvcc on PATH: the standard places, newest first, the one matching torch's CUDA major
    fake_toolkit(tmp_path / "cuda-12.4", version="12.4")
    roots = (str(tmp_path / "cuda"), str(tmp_path / "cuda-*"))
    tk, _ = st.find_cuda_toolkit("13.0", env={}, which=lambda n: None, roots=roots)
    assert tk.home == str(real)
    tk, _ = st.find_cuda_toolkit("12.6", env={}, which=lambda n: None, roots=roots)
    assert tk.home == str(tmp_path / "cuda-12.4")
    tk, why = st.find_cuda_toolkit("11.8", env={}, which=lambda n: None, roots=roots)
    assert tk is None and "is CUDA 13.0, torch was built with CUDA 11.8" in why


def test_cuda_home_is_validated_and_is_the_only_candidate(st, tmp_path):
    good = fake_toolkit(tmp_path / "cuda-13.0")
    headerless = fake_toolkit(tmp_path / "usr_local", header=False)
    roots = (str(tmp_path / "cuda-*"),)
    for name in ("CUDA_HOME", "CUDA_PATH"):
        tk, why = st.find_cuda_toolkit("13.0", env={name: str(headerless)}, which=lambda n: None, roots=roots)
        assert tk is None and f"{headerless} has no include/cuda_runtime.h" in why
    tk, _ = st.find_cuda_toolkit("13.0", env={"CUDA_HOME": str(good)}, which=lambda n: None, roots=())
    assert tk.home == str(good) and tk.found_by == "CUDA_HOME"
    assert st.toolkit_problem(str(tmp_path / "nowhere")).endswith("does not exist")
    (tmp_path / "nonvcc" / "include").mkdir(parents=True)
    assert st.toolkit_problem(str(tmp_path / "nonvcc")).endswith("has no bin/nvcc")


def test_plan_honours_the_flags_and_the_arch_list_and_never_asks_for_a_gpu(st, tmp_path, monkeypatch):
    def no_gpu_queries(*a, **k):
        raise AssertionError("the build decision must not query a GPU")

    for name in ("is_available", "device_count", "get_device_capability"):
        monkeypatch.setattr(torch.cuda, name, no_gpu_queries)
    good = fake_toolkit(tmp_path / "cuda-13.0")
    find = lambda cuda, env: st.find_cuda_toolkit(cuda, env, which=lambda n: None, roots=())  # noqa: E731
    env = {"CUDA_HOME": str(good)}
    plan = st.plan_build("2.14.1+cu130", "13.0", env=env, find=find)
    assert plan.cuda and plan.arch_list == st.DEFAULT_ARCH_LIST == "8.0;9.0+PTX"
    plan = st.plan_build(
        "2.14.1+cu130", "13.0", env={**env, "TORCH_CUDA_ARCH_LIST": "8.6 12.0+PTX"}, find=find
    )
    assert plan.arch_list == "8.6 12.0+PTX" and "sm_86, sm_120 + PTX" in plan.summary()
    with pytest.raises(st.BuildError, match=r"asks for 7\.0, which CUDA 13\.0 at .* cannot build"):
        st.plan_build("2.14.1+cu130", "13.0", env={**env, "TORCH_CUDA_ARCH_LIST": "7.0;8.0"}, find=find)
    plan = st.plan_build("2.14.1+cu130", "13.0", env={**env, "INR_FAST_FORCE_CPU": "1"}, find=find)
    assert not plan.cuda and plan.reason == "INR_FAST_FORCE_CPU=1"
    plan = st.plan_build("2.14.1+cpu", None, env=env, find=find)
    assert not plan.cuda and plan.reason == "torch is a CPU-only build"
    with pytest.raises(st.BuildError, match="INR_FAST_FORCE_CUDA=1 but torch is a CPU-only build"):
        st.plan_build("2.14.1+cpu", None, env={**env, "INR_FAST_FORCE_CUDA": "1"}, find=find)
    with pytest.raises(st.BuildError, match="both set"):
        st.plan_build("2.14.1+cu130", "13.0", env={"INR_FAST_FORCE_CPU": "1", "INR_FAST_FORCE_CUDA": "1"})


def _setup_py(args, env_extra, cwd=ROOT, drop=("CUDA_HOME", "CUDA_PATH", "PIP_BUILD_TRACKER")):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, SETUP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_force_cuda_without_a_toolkit_fails_with_one_message_and_no_traceback(tmp_path):
    broken = fake_toolkit(tmp_path / "usr_local", header=False)
    done = _setup_py(["build_ext", "--inplace"], {"CUDA_HOME": str(broken), "INR_FAST_FORCE_CUDA": "1"})
    assert done.returncode == 1
    if torch.version.cuda is None:
        assert done.stderr.strip() == "inr_fast: INR_FAST_FORCE_CUDA=1 but torch is a CPU-only build."
    else:
        assert done.stderr.strip() == (
            f"inr_fast: INR_FAST_FORCE_CUDA=1 but no usable CUDA toolkit ({broken} has no "
            f"include/cuda_runtime.h); for the CUDA kernels set CUDA_HOME to a CUDA "
            f"{torch.version.cuda.split('.')[0]}.x toolkit."
        )
    assert "Traceback" not in done.stdout + done.stderr


# ------------------------------------------------------------------ 2. torch hidden by build isolation


def test_torch_hidden_by_isolation_is_found_in_the_interpreters_site_packages(st, tmp_path, monkeypatch):
    site_dir, extra = tmp_path / "site-packages", tmp_path / "extra"
    (extra / "torch").mkdir(parents=True)
    (extra / "torch" / "__init__.py").write_text("")
    site_dir.mkdir()
    (site_dir / "extra.pth").write_text(f"# a comment\nimport os\n{extra}\n")
    monkeypatch.setattr(st.site, "getsitepackages", lambda: [str(site_dir)])
    monkeypatch.setattr(st.sys, "base_prefix", st.sys.prefix + "-base")  # a venv: no user site
    dirs = st.hidden_torch_dirs()
    assert dirs == [str(site_dir), str(extra)]
    assert st.find_torch_dir(dirs) == str(extra)
    monkeypatch.setattr(st.sys, "path", [*sys.path, str(extra)])
    assert st.hidden_torch_dirs() == [str(site_dir)]  # already importable: not hidden
    msg = st.no_torch_message(ImportError("No module named 'torch'"))
    assert "python -m pip install --no-build-isolation ." in msg and "https://pytorch.org" in msg


def test_setup_py_builds_against_the_torch_that_pip_isolation_hides(tmp_path):
    """pip's isolation: a sitecustomize drops the interpreter's site-packages from sys.path and puts
    the build requirements (setuptools) first. Stopped before compiling by two conflicting flags."""
    import setuptools

    reqs = tmp_path / "overlay"
    reqs.mkdir()
    site_dir = os.path.dirname(os.path.dirname(setuptools.__file__))
    for name in ("setuptools", "pkg_resources", "_distutils_hack"):
        if os.path.exists(os.path.join(site_dir, name)):
            os.symlink(os.path.join(site_dir, name), reqs / name)
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(f"""\
        import os, site, sys
        drop = {{os.path.normcase(p) for p in site.getsitepackages()}}
        sys.path[:] = [{str(reqs)!r}] + [p for p in sys.path if os.path.normcase(p) not in drop]
        """)
    )
    env = {"PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env={**os.environ, **env}, capture_output=True, timeout=60
    )
    assert probe.returncode != 0  # the emulation hides torch, as pip does
    done = _setup_py(["build_ext"], {**env, "INR_FAST_FORCE_CPU": "1", "INR_FAST_FORCE_CUDA": "1"})
    assert done.stdout.startswith(
        "inr_fast: build isolation hides the installed torch; building against torch "
        f"{torch.__version__} from "
    )
    assert done.returncode == 1 and done.stderr.strip().endswith("are both set.")


# ------------------------------------------------------------------ 3. what is built, said before it starts


def test_summary_names_kernels_archs_toolkit_and_torch(st, tmp_path):
    tk = st.Toolkit(str(tmp_path / "cuda-13.0"), "nvcc", "13.0", "CUDA_HOME")
    line = st.BuildPlan(True, "2.14.1+cu130", "13.0", toolkit=tk, arch_list="8.0;9.0+PTX").summary()
    assert line == (
        "inr_fast: building the CPU + CUDA kernels for sm_80, sm_90 + PTX "
        f"(TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX) with CUDA 13.0 at {tk.home} (via CUDA_HOME), "
        "against torch 2.14.1+cu130; this takes several minutes."
    )


def test_announce_reaches_the_terminal_under_pip_only(st, tmp_path, monkeypatch, capsys):
    tty = tmp_path / "tty"
    monkeypatch.delenv("PIP_BUILD_TRACKER", raising=False)
    monkeypatch.delenv("PIP_REQ_TRACKER", raising=False)
    monkeypatch.setattr(st, "_tty_lines", 0)
    st.announce("inr_fast: one", tty=str(tty))
    assert capsys.readouterr().out == "inr_fast: one\n" and not tty.exists()
    monkeypatch.setenv("PIP_BUILD_TRACKER", str(tmp_path))  # pip captures stdout (not a tty) ...
    st.announce("inr_fast: two", tty=str(tty))
    st.announce("inr_fast: three", tty=str(tty))
    assert capsys.readouterr().out == "inr_fast: two\ninr_fast: three\n"
    assert tty.read_bytes() == b"\ninr_fast: two\n\rinr_fast: three\n"  # off pip's spinner line
    st.announce("inr_fast: four", tty=str(tmp_path / "no" / "tty"))  # no terminal: no error


# ------------------------------------------------------------------ 4. the sdist can build


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return [p for p in out.stdout.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


def _includes(path: str, include_dirs: list[str]) -> set[str]:
    """path and every project header it includes, transitively (quoted includes found on disk)."""
    seen, todo = set(), [path]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        with open(p, errors="replace") as f:
            names = re.findall(r'^\s*#\s*include\s*"([^"]+)"', f.read(), re.M)
        for name in names:
            for d in [os.path.dirname(p), *include_dirs]:
                if os.path.isfile(os.path.join(d, name)):
                    todo.append(os.path.normpath(os.path.join(d, name)))
                    break
    return seen


def build_sdist(tmp_path) -> tuple[str, list[str]]:
    """The sdist of a copy of the tracked tree plus the files a build leaves behind."""
    src = tmp_path / "src"
    for rel in _tracked_files():
        os.makedirs(src / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), src / rel)
    for junk in ("inr_fast/_build_info.py", "inr_fast/_C.cpython-311-x86_64-linux-gnu.so", "build/t/x.o"):
        os.makedirs(src / os.path.dirname(junk), exist_ok=True)
        (src / junk).write_text("build output\n")
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = [n[len(top) + 1 :] for n in tar.getnames() if n.startswith(top + "/")]
    return str(path), names


def test_sdist_holds_every_file_the_build_needs_and_nothing_built(st, tmp_path):
    path, names = build_sdist(tmp_path)
    inc = [os.path.join(ROOT, "csrc", "include")]
    needed = set()
    for source in st.sources(cuda=True):  # the CUDA build compiles the most
        needed |= {os.path.relpath(p, ROOT) for p in _includes(os.path.join(ROOT, source), inc)}
    needed |= {p for p in _tracked_files() if p.startswith(("inr_fast/", "csrc/")) and not p.endswith(".md")}
    needed |= {
        "setup.py",
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "CMakeLists.txt",
        "tests/conftest.py",
    }
    assert any(p.endswith(".h") for p in needed)
    assert sorted(needed - set(names)) == []
    built = [
        n for n in names if n.endswith((".so", ".o", ".pyc")) or n.startswith("build/") or "_build_info" in n
    ]
    assert built == []


@pytest.mark.slow
def test_wheel_from_the_sdist_builds_under_pip_isolation_and_loads(tmp_path):
    """The user's `pip install` of the sdist, pip's build isolation on (default), CPU only."""
    sdist, _ = build_sdist(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env.update(INR_FAST_FORCE_CPU="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-deps",
        "--no-cache-dir",
        "-w",
        str(tmp_path / "wh"),
    ]
    done = subprocess.run(
        [*cmd, sdist], env=env, capture_output=True, text=True, timeout=1200, start_new_session=True
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    log = done.stdout + done.stderr  # pip -v relays the build output
    assert f"inr_fast: building the CPU kernels only, against torch {torch.__version__}" in log
    assert "inr_fast: build isolation hides the installed torch" in log
    (wheel,) = (tmp_path / "wh").glob("inr_fast-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-t", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import json, torch, inr_fast._ext as e; s = e.extension_status(); "
        "x = torch.rand(5, 2); y = torch.ops.inr_fast.positional_encoding(x, 2); "
        "print(json.dumps([s.loaded, s.path, s.built_against, list(y.shape), e.backend_choice().backend]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, so_path, info, shape, backend = json.loads(out.stdout)
    assert loaded and so_path.startswith(str(target)) and shape == [5, 10] and backend == "fused"
    assert info["TORCH_VERSION"] == torch.__version__ and info["CUDA_BUILT"] is False


# ------------------------------------------------------------------ 5. the torch it was built against


def test_build_record_round_trips(st, tmp_path):
    plan = st.BuildPlan(False, "2.14.1+cu130", "13.0", reason="INR_FAST_FORCE_CPU=1")
    st.write_build_info(str(tmp_path / "_build_info.py"), st.build_info(plan))
    ns = {}
    exec((tmp_path / "_build_info.py").read_text(), ns)
    assert ns["TORCH_VERSION"] == "2.14.1+cu130" and ns["TORCH_CUDA"] == "13.0" and ns["CUDA_BUILT"] is False
    assert ns["SOURCE_DIR"] == ROOT


def test_the_in_place_build_recorded_this_torch():
    if ext._find_extension() is None:
        pytest.skip("extension not built")
    info = ext._read_build_info()
    assert info["TORCH_VERSION"] == torch.__version__ and info["TORCH_CUDA"] == torch.version.cuda


def test_an_extension_built_against_another_torch_is_not_loaded(monkeypatch):
    info = {"TORCH_VERSION": "2.13.0+cpu", "TORCH_CUDA": None, "CUDA_BUILT": False, "SOURCE_DIR": "/nowhere"}
    monkeypatch.setattr(ext, "_read_build_info", lambda: info)
    monkeypatch.setattr(ext, "_find_extension", lambda: "/x/inr_fast/_C.so")

    def must_not_import():
        raise AssertionError("a mismatched extension must not be imported")

    monkeypatch.setattr(ext, "_import_extension", must_not_import)
    status = ext.extension_status()
    assert not status.loaded
    assert status.error.startswith(
        f"inr_fast._C was built against torch 2.13.0+cpu (CUDA none) but torch {torch.__version__} "
        f"(CUDA {torch.version.cuda or 'none'}) is installed; rebuild it against this torch: "
    )
    assert status.error.endswith(ext.rebuild_command(info))
    assert "build_ext --inplace" in ext.rebuild_command(info)  # this checkout
    with pytest.raises(ext.ExtensionMissingError, match=re.escape("2.13.0+cpu")):
        ext.load()
    with pytest.warns(ext.ExtensionLoadWarning, match=re.escape("2.13.0+cpu")):
        assert not ext.extension_available()


def test_rebuild_command_for_an_installed_wheel(monkeypatch, tmp_path):
    monkeypatch.setattr(ext, "_package_dir", lambda: str(tmp_path / "site-packages" / "inr_fast"))
    assert ext.rebuild_command({"SOURCE_DIR": ROOT}) == f"`{ext.REBUILD_PIP} {ROOT}`"
    assert "--no-cache-dir" in ext.REBUILD_PIP and "--no-build-isolation" in ext.REBUILD_PIP
    assert ext.rebuild_command({"SOURCE_DIR": "/tmp/pip-req-build-gone"}).startswith(
        f"`{ext.REBUILD_PIP} SOURCE`"
    )


# ------------------------------------------------------------------ 6. a load failure is said, once


def test_load_failure_warns_once_and_names_the_backend_that_runs(monkeypatch):
    monkeypatch.setattr(ext, "_find_extension", lambda: "/x/inr_fast/_C.so")

    def broken():
        raise ImportError("/x/inr_fast/_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")

    monkeypatch.setattr(ext, "_import_extension", broken)
    with pytest.warns(ext.ExtensionLoadWarning, match="undefined symbol") as rec:
        assert not ext.extension_available()
    assert len(rec) == 1 and "runs the PyTorch reference" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        assert not ext.extension_available()
        choice = ext.backend_choice("auto")
        assert not ext.cuda_built()
    assert choice.backend == "reference" and "undefined symbol" in choice.reason
    assert str(choice).startswith(
        "reference (auto fell back to the PyTorch reference: importing /x/inr_fast/_C.so"
    )
    assert json.loads(json.dumps(choice.as_dict()))["extension"]["loaded"] is False
    fused = ext.backend_choice("fused")
    assert fused.backend == "fused" and fused.reason.startswith("requested, but it cannot run: importing")
    with pytest.raises(ext.ExtensionMissingError, match="undefined symbol"):
        ext.load()


def test_the_trainer_fallback_is_no_longer_silent(monkeypatch):
    from inr_fast.train.backend import resolve_backend
    from inr_fast.train.config import FAST

    monkeypatch.setattr(ext, "_find_extension", lambda: None)
    with pytest.warns(ext.ExtensionLoadWarning, match="inr_fast._C is not built"):
        assert resolve_backend("auto", FAST.model, torch.device("cpu")) == "reference"


def test_backend_choice_when_the_extension_loads():
    if ext._find_extension() is None:
        pytest.skip("extension not built")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choice = ext.backend_choice("auto", device=torch.device("cpu"))
    status = choice.extension
    assert status.loaded and status.error is None and choice.backend == "fused"
    assert choice.reason == f"auto: {status.describe()}"
    cuda = (
        f"CPU + CUDA (arch {status.built_against.get('CUDA_ARCH_LIST')}; CUDA "
        if status.cuda_built
        else "CPU"
    )
    assert status.describe().startswith(f"compiled {cuda}") and " kernels from " in status.describe()
    assert ext.backend_choice("auto", unsupported="width 24 has no fused kernel").backend == "reference"
    assert ext.backend_choice("reference").backend == "reference"
    with pytest.raises(ValueError, match="backend must be"):
        ext.backend_choice("fast")
