# Two commands set everything up on a fresh machine:
#   make demo   — create .venv, install, run the main job on the synthetic demo set → score/submission.csv
#   make test   — create/reuse .venv, lint (ruff), check the import layers (import-linter), run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the demo's folder is defined once, in utils/paths.py
DEMO = $(shell $(PY) -m utils.paths demo)
DEMO_TRAIN = --data_root $(DEMO) --env demo --quiet --overwrite
# the seed recipe at reduced width for a 2-core CPU: 12 epochs, StepLR after 8, the output bias started at the
# training-mean age (off in the exact seed recipe)
DEMO_RECIPE := --nepoch 12 --decay_epoch 8 --batch_size 8 --head_bias_init mean

.PHONY: demo test lint venv clean

$(VENV)/installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/installed

demo: venv
	$(PY) -m dataloader.demo
	$(PY) train_interface.py --mode=adult --arch=ResDenseNet $(DEMO_TRAIN) $(DEMO_RECIPE) --out_ch 16 --mid_ch 8
	$(PY) train_interface.py --mode=child --arch=ResUDenseNet $(DEMO_TRAIN) $(DEMO_RECIPE) --out_ch 32 --mid_ch 16
	$(PY) test_interface.py --data_root $(DEMO) --weights_adult log/ResDenseNet_demo/best.pt \
		--weights_child log/ResUDenseNet_demo/best.pt --quiet
	$(PY) report_interface.py --predictions score/submission.csv --labels $(DEMO)/answer.csv --out score/demo_report \
		--cohort "SYNTHETIC demo ECGs (simulated; no real person)" --group_col MODE
	$(PY) -m dataloader.demo --score score/submission.csv
	@echo "demo done: score/submission.csv and score/demo_report/ (SYNTHETIC data; see README)"

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest tests

clean:
	rm -rf cache log/*_demo score/submission.csv score/demo_report
