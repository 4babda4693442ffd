# test_symbolize compiles src/cli/symbolize.c in, as the CLI does: with
# libdw when there is one (without it the test skips), and with -g (it
# reads its own lines) whatever the build type.
if(TARGET test_symbolize)
  target_compile_options(test_symbolize PRIVATE -g)
  if(DW_FOUND)
    target_link_libraries(test_symbolize PRIVATE PkgConfig::DW)
    target_compile_definitions(test_symbolize PRIVATE CW_HAVE_DW=1)
  else()
    target_compile_definitions(test_symbolize PRIVATE CW_HAVE_DW=0)
  endif()
endif()
