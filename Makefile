# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nncompress-installed

.PHONY: setup demo test bench fashion-mnist browser clean

# torch is pinned first: the CPU wheel of 2.13.0 is what this machine holds;
# an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/nncompress demo --out runs/demo

test: setup browser
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples
	$(PY) -m mypy
	$(PY) -m pytest -q

# Debian's chromium: the report test opens the HTML page in a real headless browser.
# Installed when missing and apt-get can (root); without it that one test is skipped, saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "note: could not install chromium; the browser test of the report will be skipped"

# Fashion-MNIST for the benchmarks and the CLI examples (Debian package; needs root).
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

bench: setup fashion-mnist
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/prune_bench.py
	$(PY) bench/compress_bench.py
	$(PY) bench/codec_speed.py
	$(PY) bench/resnet_bench.py
	$(PY) bench/transformer_bench.py
	$(PY) bench/runtime_bench.py
	$(PY) bench/fuzz_bench.py --cases 300000 --minutes 45
	$(PY) bench/cli_bad_inputs.py --timeout 60
	$(PY) bench/scale_bench.py
	$(PY) bench/seeds_bench.py run --model lenet300 --work bench/runs/seeds
	$(PY) bench/seeds_bench.py table --work bench/runs/seeds --tag seeds_bench

clean:
	rm -rf $(VENV) runs build src/*.egg-info
