# dm-rthin: top-level driver. The kernel's build system reads ./Kbuild, not this file.
#
#   make            build dm-rthin.ko against the cached guest kernel (or KDIR=/path/to/built/kernel)
#   make demo       boot the guest and show the module at work (installs what is missing first)
#   make check      every test and lint; the last line is "N passed, N failed"
#   make check-debug  the guest tests again on a lockdep/debug kernel
#   make check-fresh  make demo + make check on a fresh clone in a clean Debian 12 root
#   make bench-metadata  metadata engine benchmark table (host)
#   make bench      fio + metadata timings: dm-linear, dm-thin, rthin in one guest run (BENCH_ARGS=--quick)
#   make clippy | fmt | userspace | kernel | setup | clean
#
# All slow artefacts (kernel source and build, tools, guest image) live in
# $${XDG_CACHE_HOME:-$$HOME/.cache}/rthin, outside the clone.

SHELL := /bin/bash
export KDIR
# Same defaults as scripts/env.sh: caches outside the clone, userspace builds included.
RTHIN_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rthin
export RTHIN_CACHE
export CARGO_TARGET_DIR ?= $(RTHIN_CACHE)/cargo-target
# ... and the same Debian toolchain for userspace as for the kernel (see scripts/env.sh).
export PATH := /usr/bin:/usr/sbin:/bin:/sbin:$(PATH)
export RUSTC := /usr/bin/rustc
export RUSTDOC := /usr/bin/rustdoc
export CARGO_HOME := $(RTHIN_CACHE)/cargo-home

.PHONY: all module setup kernel kernel-debug userspace demo check check-fresh check-debug clippy fmt \
	bench bench-metadata clean

all: module

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/build-kernel.sh release >/dev/null

kernel-debug: setup
	@scripts/build-kernel.sh debug >/dev/null

module: setup
	@scripts/build-module.sh modules

userspace:
	@cd userspace && cargo build --release --locked

demo: setup module userspace
	@scripts/demo.sh

check:
	@scripts/check.sh

# The README's two commands on a fresh clone in a clean debootstrapped Debian 12 root (a cold run,
# 30+ minutes; CHECK_FRESH_ARGS=--reuse-kernel skips the kernel build, --keep keeps the root).
check-fresh:
	@scripts/check-fresh.sh $(CHECK_FRESH_ARGS)

check-debug:
	@RTHIN_KERNEL_VARIANT=debug scripts/check.sh --guest-only

clippy: setup
	@scripts/build-module.sh clean >/dev/null
	@scripts/build-module.sh CLIPPY=1 modules
	@cd userspace && cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: setup
	@scripts/rustfmt-module.sh
	@cd userspace && cargo fmt --all

# Results: results/bench/latest.{md,json,png}; knobs in scripts/bench.sh (BENCH_ARGS=--quick: ~5 min).
bench: setup module
	@scripts/bench.sh $(BENCH_ARGS)

bench-metadata:
	@cd userspace && cargo build --release --locked -p rthinctl && cargo run --release --locked -p rthin-metadata-bench

clean:
	@git clean -fdXq -- rust dm-rthin.* dm-rthin-test.* Module.symvers modules.order .check-logs
