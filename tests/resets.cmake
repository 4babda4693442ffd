# resets_helper: the program whose close() calls test_resets.c watches.
# Built with -g and without the sanitizers (an interceptor would stand
# between its code and close()), whatever the build type.
add_executable(resets_helper ${CMAKE_CURRENT_SOURCE_DIR}/resets_helper.c)
set_property(TARGET resets_helper PROPERTY COMPILE_OPTIONS -g -O0 -fno-omit-frame-pointer -Wall -Wextra)
set_property(TARGET resets_helper PROPERTY LINK_OPTIONS "")
if(TARGET test_resets)
  add_dependencies(test_resets resets_helper closewise)
endif()

# resets_lib_helper: a program whose close() happens inside libclosewise.so
# (built like the project, sanitizers and all: their frames are skipped).
add_executable(resets_lib_helper ${CMAKE_CURRENT_SOURCE_DIR}/resets_lib_helper.c)
target_link_libraries(resets_lib_helper PRIVATE closewise_shared)
target_compile_options(resets_lib_helper PRIVATE -g)
if(TARGET test_resets)
  add_dependencies(test_resets resets_lib_helper)
endif()

# trace_forker (tests/trace.cmake) in rst mode: a fork-per-connection server
# whose children reset and exit at once.
if(TARGET test_resets)
  add_dependencies(test_resets trace_forker)
  target_compile_definitions(test_resets PRIVATE FORKER="$<TARGET_FILE:trace_forker>")
endif()
