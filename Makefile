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

# the shipped model (MODEL_CARD.md): two 5-fold BaselineNet runs (baseline recipe, 100 Hz; seeds 1000 and 1001) on the
# shared PTB-XL records — their ten fold networks exported as one checked ONNX file (weights stored as fp16, computed
# in fp32), measured on the external CinC records, card and price written; trained in fp32 on every CPU (--precision
# auto would train in bf16 where the CPU has it, and rebuild another model than the one shipped)
SHARED ?= ../shared/data
SHIP_SEEDS := 1000 1001
SHIP_LOG ?= log
SHIP_ENV ?= shipped
SHIP_RUNS = $(foreach s,$(SHIP_SEEDS),$(SHIP_LOG)/BaselineNet_$(SHIP_ENV)_s$(s))
# the shipped networks were trained with the augmentation in the loader (the recipe's default before 2026-12-07)
SHIP_TRAIN = --arch BaselineNet --recipe baseline --preprocessing modern_100hz --input $(SHARED)/ptbxl --folds 5 \
	--split_seed 1234 --on_bad skip --device cpu --precision fp32 --augment_on loader --log_dir $(SHIP_LOG) --quiet
SHIPPED := models/shipped/ecg_age_ptbxl.onnx
SHIP_EXPORT = --check_input $(SHARED)/cinc2021 --weight_storage fp16 --quiet
SHIP_CARD = --name "ecg-age PTB-XL: ten BaselineNets (two seeds per fold), 100 Hz" \
	--trained_on "PTB-XL (Wagner et al., Sci Data 2020; CC-BY 4.0): the 349 records with an age of records 1-500, \
folds 1-8; adults aged 17-91" --external "PhysioNet/CinC Challenge 2021 records" --command "make model" \
	--patients $(SHARED)/ptbxl

.PHONY: demo test lint venv clean model

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

model: venv
	for s in $(SHIP_SEEDS); do \
		$(PY) train_interface.py $(SHIP_TRAIN) --seed $$s --env $(SHIP_ENV)_s$$s --resume || \
		$(PY) train_interface.py $(SHIP_TRAIN) --seed $$s --env $(SHIP_ENV)_s$$s --overwrite || exit 1; done
	$(PY) export_interface.py --weights $(SHIP_RUNS) --output $(SHIP_LOG)/shipped.onnx $(SHIP_EXPORT)
	$(PY) test_interface.py --input $(SHARED)/cinc2021 --weights $(SHIP_LOG)/shipped.onnx --interval 0.9 \
		--on_bad skip --cache off --output $(SHIP_LOG)/shipped_cinc2021.csv --quiet
	$(PY) -m engine.deploy.card --runs $(SHIP_RUNS) --predictions $(SHIP_LOG)/shipped_cinc2021.csv \
		--records $(SHARED)/cinc2021 $(SHIP_CARD) --out $(SHIP_LOG)/shipped_card.json --markdown MODEL_CARD.md
	$(PY) export_interface.py --weights $(SHIP_RUNS) --output $(SHIPPED) --card $(SHIP_LOG)/shipped_card.json \
		$(SHIP_EXPORT)
	$(PY) test_interface.py --input $(SHARED)/cinc2021 --weights $(SHIPPED) --on_bad skip --cache off \
		--output $(SHIPPED:.onnx=.cinc2021.csv) --quiet
	$(PY) bench/shipped.py

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# the suite in TEST_WORKERS processes (pytest-xdist), each on one thread: on 2 cores 8.5 min (515 tests; 447 took
# 21.6 min in one process; Intel Xeon with AMX) — more workers than cores would only make them wait for each other;
# TEST_WORKERS=0 runs it in one pytest process (for a debugger)
TEST_WORKERS ?= 2
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n $(TEST_WORKERS)

clean:
	rm -rf cache log/*_demo score/submission.csv score/demo_report
