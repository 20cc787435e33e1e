# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the project-local virtual environment .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev,export,tflite,openvino,bench,detect,executorch
# Pin whole stacks that conflict with ours; they run fine beside it (TOOLCHAIN.md traps 1, 2).
# onnx2tf 2.x declares Python >= 3.12 but runs on 3.11 (its flatbuffer_direct back end: fp32 TFLite in
# seconds instead of minutes; edgeinc/export/tflite_target.py), hence --ignore-requires-python.
EXTRA_NODEPS := tf-keras==2.21.0 onnx2tf==2.6.9

.PHONY: demo test install clean arm-check

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(EXTRA_NODEPS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edgeinc demo

# One worker per core: many tests wait on subprocesses (spawned runtimes, SIGKILL/resume, DDP), so two
# workers keep both cores busy; the export workspace's tests share one worker (tests/export_helpers.py).
# ExecuTorch's tests run in a process of their own: its runtime (thread pool, kernel and backend
# registries) is process-wide, and a worker that had loaded it beside the other runtimes died twice.
# A worker that dies ends the run, naming the test it was running: a replacement worker once left
# the group scheduler waiting forever (CI timed out at 90 minutes).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup --max-worker-restart=0 --ignore=tests/test_executorch.py
	$(BIN)/python -m pytest -q tests/test_executorch.py

# The device runner, the TFLite models and the ExecuTorch .pte on aarch64 under qemu-user (root: debootstrap,
# chroot); minutes the first time, then the root file system is cached. Not part of `make test` (deploy/README.md).
arm-check: $(STAMP)
	bash deploy/arm_check.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
