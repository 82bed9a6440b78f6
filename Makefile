# The two commands of the README. Both run the idempotent set-up first (seconds when done).
# `make demo`: the pipeline end to end on params/demo.yaml with 2 MPI ranks, into runs/demo.
# `make test`: the test suite (real mpirun, parallel HDF5, a real single-node SLURM).
VENV ?= .venv
RANKS ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

demo: setup
	VENV=$(VENV) bash jobs/pipeline.sh --params params/demo.yaml --ranks $(RANKS) --workdir runs/demo

test: setup
	VENV=$(VENV) bash scripts/test.sh $(PYTEST_ARGS)
