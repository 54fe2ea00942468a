# Two commands do everything on a fresh machine:  `make glue` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= output

.PHONY: setup test test-deepspeed glue image clip fashion-mnist bench-overhead clean

# The virtual environment, rebuilt when the dependencies change. torch 2.14.1 / torchvision 0.29.1
# are the releases these machines carry on disk; constraints.txt pins what the tests ran with.
# --no-compile: Python compiles the modules a run imports on first use, not pip every file of ~6 GB,
# so the recipes must let it keep that bytecode: with PYTHONDONTWRITEBYTECODE set (some shells set
# it), every process, each test's subprocess included, recompiles torch, transformers and open_clip
# on import (about 30 s on the 2-core machine, instead of about 9).
unexport PYTHONDONTWRITEBYTECODE
$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

# DeepSpeed ZeRO-1/2/3 on two CPU processes (opt-in: the extra's install and its first JIT build of one op
# take minutes; `make test` skips these tests where deepspeed is not installed).
test-deepspeed: setup
	DS_BUILD_OPS=0 DS_SKIP_CUDA_CHECK=1 $(PY) -m pip install --quiet -c constraints.txt -e '.[deepspeed]'
	DS_ACCELERATOR=cpu $(PY) -m pytest -q -m deepspeed

# Fashion-MNIST comes from Debian's package (run as root, or install it yourself first).
fashion-mnist:
	test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

glue: setup
	$(PY) run_glue.py --output_dir $(OUT)/glue

image: setup fashion-mnist
	$(PY) run_image.py --output_dir $(OUT)/image

clip: setup fashion-mnist
	$(PY) run_clip.py --output_dir $(OUT)/clip

bench-overhead: setup
	$(PY) bench/overhead.py

clean:
	rm -rf $(VENV) $(OUT)
