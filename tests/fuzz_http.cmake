# libFuzzer target for the exporter's HTTP request-head parser
# (src/cli/exporter/exporter_http.c), run like fuzz_protocol (tests/fuzz.cmake,
# which is included first and finds clang).
if(CW_FUZZ_OK)
  set(fuzz_http_bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz_http)
  add_custom_command(OUTPUT ${fuzz_http_bin}
    COMMAND ${CW_CLANG} ${CW_FUZZ_FLAGS} -I${PROJECT_SOURCE_DIR}/src/cli/exporter
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_http.c
            ${PROJECT_SOURCE_DIR}/src/cli/exporter/exporter_http.c -o ${fuzz_http_bin}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_http.c
            ${PROJECT_SOURCE_DIR}/src/cli/exporter/exporter_http.c
            ${PROJECT_SOURCE_DIR}/src/cli/exporter/exporter_http.h
    COMMENT "Building libFuzzer target fuzz_http with ${CW_CLANG}"
    VERBATIM)
  add_custom_target(fuzz_http_bin ALL DEPENDS ${fuzz_http_bin})
  set(fuzz_http_work ${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-corpus)
  add_test(NAME fuzz_http
    COMMAND sh -c "mkdir -p '${fuzz_http_work}' && exec '${fuzz_http_bin}' -runs=200000 -max_total_time=60 -max_len=4200 -print_final_stats=1 -artifact_prefix='${CMAKE_CURRENT_BINARY_DIR}/fuzz-http-' '${fuzz_http_work}' '${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus_http'")
  set_tests_properties(fuzz_http PROPERTIES TIMEOUT 120
    ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()
