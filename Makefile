# qemu-fmu: every entry point.  `make demo` and `make test` do all set-up
# on a fresh Debian 12 machine (run as root).

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: all setup qemu firmware fmu closed-loop network test demo bench lint clean

all: fmu

setup: $(STAMP)
	@scripts/setup-host.sh

$(STAMP): requirements.txt pyproject.toml
	@scripts/setup-host.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

qemu: setup
	@qemu/build.sh

firmware: setup
	@$(MAKE) -s -C firmware

fmu: qemu firmware
	@$(PY) build_fmu.py
	@$(PY) build_fmu.py --network

# The firmware-in-the-loop demo: ECU FMU, plant FMU and the SSP file.
closed-loop: qemu firmware
	@$(PY) examples/closed_loop/build.py

# Multi-ECU network systems: node FMUs and SSPs around dist/Network.fmu.
network: fmu firmware
	@$(PY) examples/network/build.py

test: fmu closed-loop network
	$(PY) -m pytest

demo: fmu closed-loop network
	@$(PY) examples/demo.py
	@$(PY) examples/closed_loop/demo.py
	@$(PY) examples/closed_loop/demo.py --ssp dist/closed_loop_linux.ssp --stop-time 1.5
	@$(PY) examples/network/demo.py

bench: qemu firmware fmu closed-loop network
	@$(PY) benchmarks/sync_cost.py
	@$(PY) benchmarks/sweep_throughput.py
	@$(PY) benchmarks/linux_boot.py
	@$(PY) benchmarks/state_cost.py
	@$(PY) benchmarks/parallel_steps.py
	@$(PY) benchmarks/network_throughput.py
	@$(PY) benchmarks/step_paths.py
	@$(PY) benchmarks/spin_speed.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build dist firmware/build
