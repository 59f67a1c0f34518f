# Every target sets up what it needs; a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV ?= .venv
# numpy-2 suite: Python 3.12 where this machine has one (as on the GPU machine), else $(PYTHON).
NUMPY2_PYTHON ?= $(shell .ci/find-python 3.12 2>/dev/null || command -v $(PYTHON))
VENV2 ?= .venv-numpy2
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup setup-numpy2 test test-numpy2 test-fast lint demo bench figures clean

$(VENV)/.installed: setup.cfg pyproject.toml requirements/constraints.txt requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/requirements/constraints.txt $(VENV)/bin/pip install \
	    --disable-pip-version-check -q -e '.[test,mpi]'
	# torch (CPU) for the PyTorch cross-check tests; --no-deps: see requirements/torch.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -r requirements/torch.txt
	touch $@

$(VENV2)/.installed: setup.cfg pyproject.toml requirements/constraints-numpy2.txt
	$(NUMPY2_PYTHON) -m venv $(VENV2)
	PIP_CONSTRAINT=$(CURDIR)/requirements/constraints-numpy2.txt $(VENV2)/bin/pip install \
	    --disable-pip-version-check -q -e '.[test,mpi]'
	touch $@

setup: $(VENV)/.installed

setup-numpy2: $(VENV2)/.installed

# MIXNORM_REQUIRE_TORCH: the PyTorch cross-check tests fail instead of skipping without torch.
# The ChainerMN tests need an MPI runtime (mpiexec) and skip without one, unless
# MIXNORM_REQUIRE_MPI=1 (set by .ci/run, which installs openmpi).
test: setup
	MIXNORM_REQUIRE_TORCH=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The whole suite again on numpy 2 (and Python 3.12 when present), through _compat.py.
test-numpy2: setup-numpy2
	$(VENV2)/bin/python -c "import sys, numpy; print('numpy-2 suite on Python', sys.version.split()[0], 'numpy', numpy.__version__)"
	$(VENV2)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/mixnorm-demo --out results/demo $(DEMO_ARGS)

bench: setup
	$(VENV)/bin/python experiments/bench_core.py

# Quick offline runs on digits (3 seeds; 29 min of CPU, ~50 min on a busy 2-core VM), then figures/figure{1,2,3,4,5,8,9}.png
figures: setup
	PYTHON=$(VENV)/bin/python MIXNORM_EXP=$(VENV)/bin/mixnorm-exp figures/make_figures.sh results/figures

clean:
	rm -rf $(VENV) $(VENV2) results .pytest_cache *.egg-info

# --- Opt-in, not in CI (~560 MB of downloads): compile every CUDA kernel the package builds
# with NVRTC for sm_80 and sm_90, no GPU needed (experiments/check_kernels_nvrtc.py).
# Python 3.12 + numpy 2 (constraints-numpy2.txt) + cupy 14 + the NVRTC wheel of its CUDA major.
NVRTC_PYTHON ?= $(shell .ci/find-python 3.12 2>/dev/null)
VENV_NVRTC ?= .venv-nvrtc
VENV_NVRTC12 ?= .venv-nvrtc-cuda12
NVRTC_ARGS ?=

.PHONY: check-kernels-nvrtc check-kernels-nvrtc-cuda12 clean-nvrtc doctor

$(VENV_NVRTC)/.installed $(VENV_NVRTC12)/.installed: setup.cfg pyproject.toml \
    requirements/constraints-numpy2.txt requirements/nvrtc-cuda13.txt requirements/nvrtc-cuda12.txt
	@test -n "$(NVRTC_PYTHON)" || { echo "$(@D): needs Python 3.12 (cupy 14 needs numpy 2);" \
	    ".ci/find-python 3.12 found none; set NVRTC_PYTHON=/path/to/python3.12" >&2; exit 1; }
	$(NVRTC_PYTHON) -m venv $(@D)
	echo '*' > $(@D)/.gitignore
	PIP_CONSTRAINT=$(CURDIR)/requirements/constraints-numpy2.txt $(@D)/bin/pip install \
	    --disable-pip-version-check -q -e '.[test]' \
	    -r requirements/nvrtc-$(if $(findstring cuda12,$(@D)),cuda12,cuda13).txt
	touch $@

check-kernels-nvrtc: $(VENV_NVRTC)/.installed
	$(VENV_NVRTC)/bin/python experiments/check_kernels_nvrtc.py $(NVRTC_ARGS)

check-kernels-nvrtc-cuda12: $(VENV_NVRTC12)/.installed
	$(VENV_NVRTC12)/bin/python experiments/check_kernels_nvrtc.py $(NVRTC_ARGS)

clean-nvrtc:
	rm -rf $(VENV_NVRTC) $(VENV_NVRTC12)

# Environment report: versions, CUDA/cuDNN/NCCL state, kernel switch, GPU self-check.
doctor: setup
	$(VENV)/bin/mixnorm-doctor

# --- On a GPU machine, in the environment where the package and a CuPy are installed
# (pip install -e '.[gpu-cuda13]' or '.[gpu-cuda12]'): experiments/gpu_check.py (< 5 min).
GPU_PYTHON ?= python3
GPU_DEVICE ?= @cupy:0

.PHONY: gpu-check bench-gpu

gpu-check:
	$(GPU_PYTHON) experiments/gpu_check.py --device $(GPU_DEVICE) --json gpu_check.json

bench-gpu:
	$(GPU_PYTHON) experiments/bench_gpu.py --device $(GPU_DEVICE) --json bench_gpu.json
