# The two commands a user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup test fuzz demo lint proto bench scala wheel clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@tools/check_java.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is needed (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,dev]"
	@touch $@

test: setup scala
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fuzz suite at length: 5,000 random inputs per property instead of make test's 60 fixed ones (FUZZ_EXAMPLES=N
# to change); prints how many inputs were tried.
FUZZ_EXAMPLES ?= 5000
fuzz: setup
	SPARK_ML_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SPARK_ML_FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/test_fuzz.py -q -p no:cacheprovider

demo: setup
	$(BIN)/spark-ml demo

lint: setup
	$(BIN)/ruff check .

# Regenerate algorithms/proto/record_descriptor.py from record.proto (needs the test extra's grpcio-tools).
proto: setup
	$(BIN)/python tools/gen_proto_descriptor.py

# The Scala jar (scala/target/spark-ml-scala_2.13-<version>.jar), compiled with the Scala compiler inside
# pyspark's jars; rebuilt only when scala/ sources changed.
scala: setup
	@VENV_PYTHON=$(abspath $(BIN)/python) bash scala/build.sh

# A wheel carrying the Scala jar (dist/spark_ml-<version>-py3-none-any.whl): pip users get the JVM writer.
wheel: scala
	$(BIN)/python tools/build_wheel.py --out dist

bench: setup
	$(BIN)/python benchmarks/convert.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info scala/target
