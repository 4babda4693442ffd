# What tests/test_trace.c (and test_probe.c) run under libclosewise-trace.so:
# the examples, a C++ client, a Python client, a multithreaded client that
# never reads the FIN, and a static binary. The line each must name is read
# from its source here (a marker comment), never written into a test.
function(cw_marker_line var file marker)
  # Edits to the source move the line: configure again.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${file})
  file(READ ${file} text)
  string(FIND "${text}" "${marker}" pos)
  if(pos LESS 0)
    message(FATAL_ERROR "no marker '${marker}' in ${file}")
  endif()
  string(SUBSTRING "${text}" 0 ${pos} before)
  string(REGEX MATCHALL "\n" nls "${before}")
  list(LENGTH nls n)
  math(EXPR n "${n} + 1")
  set(${var} ${n} PARENT_SCOPE)
endfunction()

cw_marker_line(leaky_line ${PROJECT_SOURCE_DIR}/examples/leaky_client.c "/* the read that returns 0 */")
cw_marker_line(cxx_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_client.cc "// the C++ read that returns 0")
cw_marker_line(poller_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_poller.c "/* the last read before the FIN */")
cw_marker_line(parent_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_stress.c "/* the parent's read */")
cw_marker_line(child_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_stress.c "/* the child's read to the end */")
cw_marker_line(reuse_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_stress.c "/* the read on a reused number */")
cw_marker_line(dup_first_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_stress.c "/* the read before the copies */")
cw_marker_line(dup_end_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_stress.c "/* the end, through the last copy */")
cw_marker_line(forker_line ${CMAKE_CURRENT_SOURCE_DIR}/trace_forker.c "/* the child's read to the end */")

foreach(helper trace_poller trace_stress trace_churn trace_forker)
  add_executable(${helper} ${CMAKE_CURRENT_SOURCE_DIR}/${helper}.c)
  target_link_libraries(${helper} PRIVATE Threads::Threads)
  # They test the trace's bookkeeping by function name: keep their functions
  # out of main() whatever the build type (frames of inlined functions are
  # named by the function they were inlined into).
  target_compile_options(${helper} PRIVATE -fno-inline)
endforeach()
# file:line needs debug info whatever the build type (without it the
# answer is the function's name, tested by nothing here).
foreach(prog trace_poller trace_stress trace_forker leaky_client tidy_client)
  target_compile_options(${prog} PRIVATE -g)
endforeach()

# Outside CMake's languages (the project is C): plain compiler calls, no
# sanitizers (the static one cannot have them).
find_program(CW_CXX NAMES g++ c++)
set(cxx_client ${CMAKE_CURRENT_BINARY_DIR}/trace_client_cxx)
if(CW_CXX)
  add_custom_command(OUTPUT ${cxx_client}
    COMMAND ${CW_CXX} -g -O0 -o ${cxx_client} ${CMAKE_CURRENT_SOURCE_DIR}/trace_client.cc
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/trace_client.cc VERBATIM)
else()
  set(cxx_client "")
endif()
set(static_client ${CMAKE_CURRENT_BINARY_DIR}/trace_static_client)
add_custom_command(OUTPUT ${static_client}
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/static_cc.sh ${CMAKE_C_COMPILER} -g -O0 -static
          -o ${static_client} ${PROJECT_SOURCE_DIR}/examples/leaky_client.c
  DEPENDS ${PROJECT_SOURCE_DIR}/examples/leaky_client.c ${CMAKE_CURRENT_SOURCE_DIR}/static_cc.sh
  VERBATIM)
add_custom_target(trace_clients ALL DEPENDS ${cxx_client} ${static_client})

foreach(t test_trace test_probe)
  if(TARGET ${t})
    add_dependencies(${t} trace_clients trace_poller trace_stress trace_churn trace_forker closewise closewise_trace leaky_client tidy_client)
    target_compile_definitions(${t} PRIVATE
      LEAKY_RECV_LINE=${leaky_line} CXX_RECV_LINE=${cxx_line} POLLER_READ_LINE=${poller_line}
      CXX_CLIENT="${cxx_client}" STATIC_CLIENT="${static_client}"
      POLLER=\"$<TARGET_FILE:trace_poller>\" STRESS=\"$<TARGET_FILE:trace_stress>\"
      CHURN=\"$<TARGET_FILE:trace_churn>\" FORKER=\"$<TARGET_FILE:trace_forker>\"
      FORKER_READ_LINE=${forker_line}
      PARENT_READ_LINE=${parent_line} CHILD_READ_LINE=${child_line} REUSE_READ_LINE=${reuse_line}
      DUP_FIRST_LINE=${dup_first_line} DUP_END_LINE=${dup_end_line}
      PY_CLIENT="${CMAKE_CURRENT_SOURCE_DIR}/trace_client.py")
  endif()
endforeach()

# The reference server's close() of a final line: what resets, demo and
# probe --server name behind a plain or linger0 close's RST (the line after
# the marker; the library's own close() below it is not named).
cw_marker_line(server_mark ${PROJECT_SOURCE_DIR}/src/server/server.c "/* cw-mark: the close() of a final line")
math(EXPR server_close_line "${server_mark} + 1")
foreach(t test_probe test_demo test_resets)
  if(TARGET ${t})
    target_compile_definitions(${t} PRIVATE SERVER_CLOSE_LINE=${server_close_line})
  endif()
endforeach()
