# Thin wrapper over CMake. Every target first makes sure the Debian packages are there.
#   make        release build: build/crewd
#   make run    build and start crewd on 127.0.0.1:8080 with its SQLite store in ./var/
#   make test   ASan+UBSan build (build-dev/) and every test: unit, fuzz corpora, integration
#   make fuzz   libFuzzer targets (build-fuzz/), each run for FUZZ_SECONDS
#   make bench  benchmark programs in bench/ (release build)
#   make demo   crewd and the fake LLM server run the example crews in every mode
#   make tsan   ThreadSanitizer build (build-tsan/): unit tests and the threaded benchmark
# The configurations are the presets of CMakePresets.json.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
LISTEN ?= 127.0.0.1:8080
STORE ?= sqlite:var/crewd.db

.PHONY: all build run test dev fuzz bench tsan clean deps format demo

all: build

deps:
	@./scripts/deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build build -j $(JOBS)

run: build
	@mkdir -p var
	./build/crewd --listen $(LISTEN) --store $(STORE)

dev: deps
	@cmake --preset dev >/dev/null
	@cmake --build build-dev -j $(JOBS)

test: dev
	cd build-dev && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

fuzz: deps
	@cmake --preset fuzz >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@for f in build-fuzz/fuzz_*; do \
	  name=$$(basename $$f); mkdir -p fuzz/corpus/$$name; \
	  echo "== $$name ($(FUZZ_SECONDS)s)"; \
	  dict=""; [ -f fuzz/$$name.dict ] && dict="-dict=fuzz/$$name.dict"; \
	  mkdir -p build-fuzz/new/$$name; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 $$dict build-fuzz/new/$$name fuzz/corpus/$$name || exit 1; \
	done

bench: deps
	@cmake --preset bench >/dev/null
	@cmake --build build -j $(JOBS)
	@for b in build/bench_*; do echo "== $$b"; $$b || exit 1; done

tsan: deps
	@cmake --preset tsan >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -E integration
	TSAN_OPTIONS=halt_on_error=1 ./build-tsan/bench_http_crews 1000 4

demo: build
	python3 scripts/demo.py build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-dev build-fuzz build-tsan
