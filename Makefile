# Two commands on a fresh machine with Python 3.11:  make demo  /  make test
# Both create .venv and install what is missing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU torch by default; on a CUDA machine: make TORCH_SPEC="torch" ...
TORCH_SPEC ?= torch==2.13.0
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Run some notebooks, or override their parameters:
#   make demo NOTEBOOKS=notebooks/01_baseline_inference.ipynb PAPERMILL_ARGS="-p steps 8"
PAPERMILL_ARGS ?=
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install train-tiny eval benchmark reproduce reproduce-train clean strip

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@

demo: install
	@mkdir -p outputs figures
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb"; \
		$(BIN)/papermill --cwd notebooks --log-level WARNING "$$nb" "outputs/$$(basename $$nb)" $(PAPERMILL_ARGS) || exit 1; \
	done
	@echo; echo "Executed notebooks: $$(pwd)/outputs/"; echo "Figures:            $$(pwd)/figures/"; ls figures

# pytest over tests/ and nbval over notebooks/ (native CPU kernels), and at the same time a second
# nbval pass under another CPU configuration (AVX2 kernels, one thread), so outputs that depend on
# the CPU fail here before they fail for a user. Each pass writes figures and outputs into its own
# scratch folder, leaving the committed figures alone.
NBVAL := notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider
ALT_CPU ?= ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1

# The second lane also takes some long tests (the README in a fresh copy, CI's quick reproduce,
# the SD1.5-shaped LoRA and pipeline tests, the sweep engines), so the two lanes end together.
ALT_TESTS := tests/test_readme.py tests/test_reproduce_quick.py tests/test_sd15_lora.py tests/test_sd15_pipelines.py \
             tests/test_sweep_engines.py

test: install
	@scratch=$$(mktemp -d); \
	( export ANIMEGEN_FIGURES_DIR=$$scratch/alt/figures ANIMEGEN_OUTPUTS_DIR=$$scratch/alt/outputs $(ALT_CPU); \
	  $(BIN)/python -m pytest $(ALT_TESTS) $(NBVAL) -q > $$scratch/alt.log 2>&1 ) & alt=$$!; \
	ANIMEGEN_FIGURES_DIR=$$scratch/main/figures ANIMEGEN_OUTPUTS_DIR=$$scratch/main/outputs \
	  $(BIN)/python -m pytest tests $(foreach t,$(ALT_TESTS),--ignore=$(t)) $(NBVAL); main=$$?; \
	wait $$alt; altrc=$$?; \
	echo; echo "== $(ALT_TESTS) and nbval again under $(ALT_CPU)"; tail -n 25 $$scratch/alt.log; \
	rm -rf $$scratch; test $$main -eq 0 && test $$altrc -eq 0

train-tiny: install
	$(BIN)/python -m animegen_utils.toyworld.train

eval: install
	$(BIN)/python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json

benchmark: install
	$(BIN)/python benchmarks/bench_inference.py

# Re-make every published number on the shipped weights and print the drift table
# (REPRODUCE=quick: CI's cheaper variant). reproduce-train retrains every shipped artefact first.
REPRODUCE ?= full
reproduce: install
	$(BIN)/python benchmarks/reproduce.py $(if $(filter quick,$(REPRODUCE)),--quick)

reproduce-train: install
	$(BIN)/python benchmarks/reproduce.py --train

# Drop volatile notebook metadata (execution counts stay: nbval shows them in diffs).
strip: install
	$(BIN)/nbstripout --keep-output --keep-count --extra-keys "metadata.papermill cell.metadata.papermill cell.metadata.execution metadata.widgets" $(NOTEBOOKS)

clean:
	rm -rf outputs .pytest_cache
