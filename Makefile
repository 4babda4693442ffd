# The front door: every target drives CMake into a build directory.
#   make            release build in build/
#   make check      every test: Debug + ASan + UBSan build in build-check/ (ctest),
#                   library tests under valgrind, the auth pool's threads under
#                   ThreadSanitizer, warning-free clang -Werror build
#   make demo       build, then run the main job: `closewise demo`
#   make demo-svg   run the demo and rewrite its picture, docs/demo.svg (as root,
#                   so that part 2 can name the server line behind each RST)
#   make examples   build, then run the leaky and the tidy example clients
#   make install    install into $(PREFIX) (default /usr/local)
#   make uninstall  remove what the last install wrote
#   make valgrind   library tests under valgrind (no sanitizers)
#   make tsan       test_auth, test_authpool and test_server_load (its
#                   closewise server too) under ThreadSanitizer (build-tsan/)
#   make bench      benchmarks, rewrites docs/BENCHMARKS.md
#   make soak       1,000,000 mixed connections against the server (~3 min;
#                   not in check): 0 CLOSE_WAIT, fds and RSS flat
#   make clang      warning-free build check with clang -Werror

PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST_ARGS ?=

.PHONY: all build check check-sanitize tsan demo demo-svg examples install uninstall valgrind bench soak clang clean deps-build deps-test deps-bench

# The build prints one line per build tree; the compiler's output goes to
# BUILD.log and is shown only when the build fails (V=1 shows it all).
ifeq ($(V),1)
cw_build = $(CMAKE) --build $(1) -j $(JOBS)
else
cw_build = printf 'closewise: building %s ... ' $(1) && \
	{ $(CMAKE) --build $(1) -j $(JOBS) >$(1).log 2>&1 || { echo failed; cat $(1).log; exit 1; }; } && \
	echo ok
endif

all: build

deps-build:
	@sh scripts/deps.sh build
deps-test:
	@sh scripts/deps.sh test
deps-bench:
	@sh scripts/deps.sh bench

build: deps-build
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCW_TESTS=OFF -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@$(call cw_build,build)

check: check-sanitize valgrind tsan clang

check-sanitize: deps-test
	@$(CMAKE) -S . -B build-check -DCMAKE_BUILD_TYPE=Debug -DCW_SANITIZE=ON -DCW_WERROR=ON >/dev/null
	@$(call cw_build,build-check)
	@cd build-check && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	@./build/closewise demo

demo-svg: build
	@./build/closewise demo --svg docs/demo.svg >/dev/null && echo "closewise: wrote docs/demo.svg"

examples: build
	@sh scripts/run-examples.sh build

install: build
	@$(CMAKE) --install build --prefix $(PREFIX)

uninstall:
	@sh scripts/uninstall.sh build/install_manifest.txt

valgrind: deps-test
	@$(CMAKE) -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@$(call cw_build,build-valgrind)
	@sh scripts/valgrind.sh build-valgrind

# Only these tests' targets and the server they spawn: TSan and ASan
# exclude each other, so this is a build tree of its own.
tsan: deps-test
	@$(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCW_TSAN=ON -DCW_WERROR=ON >/dev/null
	@printf 'closewise: building build-tsan ... ' && \
	{ $(CMAKE) --build build-tsan -j $(JOBS) --target test_auth test_authpool test_server_load closewise >build-tsan.log 2>&1 || { echo failed; cat build-tsan.log; exit 1; }; } && \
	echo ok
	@sh scripts/tsan.sh build-tsan

clang: deps-test
	@$(CMAKE) -S . -B build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCW_WERROR=ON >/dev/null
	@$(call cw_build,build-clang)
	@echo "closewise: clang -Wall -Wextra -Werror build: ok"

bench: deps-bench
	@$(CMAKE) -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCW_TESTS=OFF >/dev/null
	@$(call cw_build,build-bench)
	@sh bench/run.sh build-bench

soak: deps-bench
	@$(CMAKE) -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCW_TESTS=OFF >/dev/null
	@$(call cw_build,build-bench)
	@sh bench/soak.sh build-bench

clean:
	rm -rf build build-check build-valgrind build-tsan build-clang build-bench build*.log
