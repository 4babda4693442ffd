# libFuzzer target for the request parser (src/server/protocol.c), run in the test
# suite for a bounded number of iterations. The main build may use gcc, so
# clang is invoked directly; without a clang that links libFuzzer
# (libclang-rt-14-dev), the test is skipped at configure time with a note.
find_program(CW_CLANG NAMES clang clang-14 clang-15 clang-16)
set(CW_FUZZ_FLAGS -g -O1 -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined)
set(CW_FUZZ_OK FALSE)
if(CW_CLANG)
  set(probe ${CMAKE_CURRENT_BINARY_DIR}/fuzz-probe.c)
  file(WRITE ${probe}
    "#include <stddef.h>\n#include <stdint.h>\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
  execute_process(COMMAND ${CW_CLANG} ${CW_FUZZ_FLAGS} ${probe}
                  -o ${CMAKE_CURRENT_BINARY_DIR}/fuzz-probe
                  RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(CW_FUZZ_OK TRUE)
  endif()
endif()

if(CW_FUZZ_OK)
  set(fuzz_bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz_protocol)
  add_custom_command(OUTPUT ${fuzz_bin}
    COMMAND ${CW_CLANG} ${CW_FUZZ_FLAGS} -I${PROJECT_SOURCE_DIR}/src/server
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_protocol.c
            ${PROJECT_SOURCE_DIR}/src/server/protocol.c ${PROJECT_SOURCE_DIR}/src/net/utf8.c
            -o ${fuzz_bin}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_protocol.c
            ${PROJECT_SOURCE_DIR}/src/server/protocol.c ${PROJECT_SOURCE_DIR}/src/server/protocol.h
    COMMENT "Building libFuzzer target fuzz_protocol with ${CW_CLANG}"
    VERBATIM)
  add_custom_target(fuzz_protocol_bin ALL DEPENDS ${fuzz_bin})
  # New inputs go to a scratch corpus in the build tree; the seeds in the
  # source tree are only read. -runs bounds the work, -max_total_time the
  # wall clock on a loaded machine.
  set(fuzz_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus)
  add_test(NAME fuzz_protocol
    COMMAND sh -c "mkdir -p '${fuzz_work}' && exec '${fuzz_bin}' -runs=200000 -max_total_time=60 -max_len=2200 -print_final_stats=1 -artifact_prefix='${CMAKE_CURRENT_BINARY_DIR}/fuzz-' '${fuzz_work}' '${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus'")
  set_tests_properties(fuzz_protocol PROPERTIES TIMEOUT 120
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
else()
  message(STATUS "fuzz_protocol: no clang with libFuzzer (libclang-rt-14-dev); fuzz test not built")
endif()
