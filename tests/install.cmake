# `make install` into a temporary prefix and a program built against it.
add_test(NAME install COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install_test.sh ${PROJECT_SOURCE_DIR})
set_tests_properties(install PROPERTIES TIMEOUT 300)
