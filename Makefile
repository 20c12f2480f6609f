# pazari: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
PYTEST_ARGS ?=

# System packages the tests and the local stack use (Debian names).
APT_TEST := python3-venv redis-server podman runc busybox-static uidmap ruby ruby-redis rsync socat \
            libmagic1 procps openssl chromium wrk nginx btrfs-progs \
            mmdebstrap lintian dpkg-dev binutils
APT_RUN  := redis-server podman runc busybox-static
# What `make deb` needs: Debian's interpreter with headers and venv, a compiler, dpkg-deb.
APT_DEB  := python3 python3-venv python3-dev gcc binutils dpkg-dev git

.PHONY: all deps venv build lint test test-fast test-race fuzz bench bench-gate bench-report run \
        wheel deb clean

all: build

deps:
	@packaging/dev/ensure-packages $(APT_TEST)

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -U pip setuptools wheel "cython==3.3.1"
	$(VPY) -m pip install -q --no-build-isolation -e '.[test,dev]'
	touch $@

venv: $(VENV)/.installed

# Compile ext/ in place: the modules land in src/pazari/<hot path>/ beside their pure twins.
build: venv
	$(VPY) setup.py -q build_ext --inplace

lint: build
	$(VENV)/bin/ruff check src tests bench setup.py
	$(VENV)/bin/mypy

test: deps build lint
	$(VPY) -m pytest $(PYTEST_ARGS)

# The tests without the slow reliability and wheel checks, for the edit-test loop.
test-fast: build
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The end-to-end, reliability and load tests of every service with each daemon under the race
# checker (pazari.runtime.race: -X dev, asyncio debug, PAZARI_RACE=1); any finding fails the
# test that started the daemon (issue 19).
RACE_TESTS := tests/race tests/downloader/test_end_to_end.py tests/downloader/test_reliability.py \
              tests/downloader/test_hostile.py \
              tests/rafka/test_produce.py tests/rafka/test_reliability.py tests/rafka/test_shutdown.py \
              tests/scratchd/test_end_to_end.py tests/scratchd/test_reliability.py \
              tests/scratchd/test_hostile.py \
              tests/scratchd/test_workers.py tests/mistry/test_server.py tests/mistry/test_reliability.py
test-race: deps build
	PAZARI_RACE=1 $(VPY) -m pytest -p no:cacheprovider $(RACE_TESTS) $(PYTEST_ARGS)

# The hostile-input fuzzers of the RESP and HTTP front ends, longer than make test's 60 s each
# (issue 12): FUZZ_SECONDS=600 by default.
FUZZ_SECONDS ?= 600
fuzz: deps build
	RAFKA_FUZZ_SECONDS=$(FUZZ_SECONDS) PAZARI_FUZZ_SECONDS=$(FUZZ_SECONDS) $(VPY) -m pytest \
	    -p no:cacheprovider tests/rafka/test_hostile.py tests/scratchd/test_hostile.py -k fuzz \
	    --timeout $$(( $(FUZZ_SECONDS) * 2 + 300 )) $(PYTEST_ARGS)

bench: deps build
	$(VPY) -m pytest bench -p no:cacheprovider --benchmark-columns=min,median,mean,ops \
	    --benchmark-sort=name $(PYTEST_ARGS)

# Short gates: each asserts a ratio measured within one run and writes bench/results/*.json.
bench-gate: deps build
	$(VPY) -m pytest bench -m gate -p no:cacheprovider --benchmark-disable $(PYTEST_ARGS)

# bench/results/*.json (from bench-gate) as one Markdown page with plots: bench/results/REPORT.md.
bench-report: venv
	$(VPY) -m pip install -q matplotlib
	$(VPY) -m bench.report

wheel: venv
	$(VPY) -m pip wheel --no-deps --no-build-isolation . -w dist

# dist/pazari_<version>_amd64.deb: a venv in /opt/pazari on Debian's /usr/bin/python3, the
# systemd units, sysusers, tmpfiles and configs (packaging/deb/build-deb; reproducible).
deb:
	@packaging/dev/ensure-packages $(APT_DEB)
	packaging/deb/build-deb dist

run: build
	@packaging/dev/ensure-packages $(APT_RUN)
	$(VPY) -m pazari.devstack

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache bench/results/*.json
	find src -name '*.so' -delete
