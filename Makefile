# Two commands set everything up on a fresh machine:
#   make demo   — create .venv, install, run the main job on the synthetic demo set → score/submission.csv
#   make test   — create/reuse .venv, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := dataset/SYNTHETIC_demo_maic
DEMO_ARGS := --data_root $(DEMO) --quiet

.PHONY: demo test venv clean

$(VENV)/installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/installed

demo: venv
	$(PY) -m dataloader.demo --out $(DEMO)
	$(PY) train_interface.py --mode=adult --arch=ResDenseNet --env demo --nepoch 1 --batch_size 4 $(DEMO_ARGS)
	$(PY) train_interface.py --mode=child --arch=ResUDenseNet --env demo --nepoch 3 --batch_size 8 $(DEMO_ARGS)
	$(PY) test_interface.py --data_root $(DEMO) --test_for_adult $(DEMO)/ECG_adult_numpy_valid \
		--test_for_child $(DEMO)/ECG_child_numpy_valid --weights_adult log/ResDenseNet_demo/best.pt \
		--weights_child log/ResUDenseNet_demo/best.pt --output score/submission.csv --quiet
	$(PY) report_interface.py --predictions score/submission.csv --labels $(DEMO)/answer.csv --out score/demo_report
	@echo "demo done: score/submission.csv and score/demo_report/ (SYNTHETIC data; see README)"

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf cache log/*_demo score/submission.csv
