# Two commands on a fresh machine with Python 3.11:  make demo  /  make test
# Both create .venv and install what is missing first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU torch by default; on a CUDA machine: make TORCH_SPEC="torch" ...
TORCH_SPEC ?= torch==2.13.0
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test install train-tiny eval benchmark clean strip

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
		$(BIN)/papermill --cwd notebooks --log-level WARNING "$$nb" "outputs/$$(basename $$nb)" || exit 1; \
	done
	@echo; echo "Executed notebooks: $$(pwd)/outputs/"; echo "Figures:            $$(pwd)/figures/"; ls figures

test: install
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

train-tiny: install
	$(BIN)/python -m animegen_utils.toyworld.train

eval: install
	$(BIN)/python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json

benchmark: install
	$(BIN)/python benchmarks/bench_inference.py

# Drop volatile notebook metadata (execution counts stay: nbval shows them in diffs).
strip: install
	$(BIN)/nbstripout --keep-output --keep-count --extra-keys "metadata.papermill cell.metadata.papermill cell.metadata.execution metadata.widgets" $(NOTEBOOKS)

clean:
	rm -rf outputs .pytest_cache
