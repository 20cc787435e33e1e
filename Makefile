# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the project-local virtual environment .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := dev,export,tflite,openvino,bench
# Pin whole stacks that conflict with ours; they run fine beside it (TOOLCHAIN.md traps 1, 2).
# onnx2tf 2.x declares Python >= 3.12 but runs on 3.11 (its flatbuffer_direct back end: fp32 TFLite in
# seconds instead of minutes; edgeinc/export/tflite_target.py), hence --ignore-requires-python.
EXTRA_NODEPS := tf-keras==2.21.0 onnx2tf==2.6.9

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip install --quiet --no-deps --ignore-requires-python $(EXTRA_NODEPS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m edgeinc demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
