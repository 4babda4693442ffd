# find_package(closewise) entry point. The shared library needs nothing
# more; the static one needs libmnl, libcrypt and threads at link time,
# found here the same way closewise's own build finds them.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  if(NOT TARGET PkgConfig::MNL)
    pkg_check_modules(MNL QUIET IMPORTED_TARGET GLOBAL libmnl)
  endif()
  if(NOT TARGET PkgConfig::CRYPT)
    pkg_check_modules(CRYPT QUIET IMPORTED_TARGET GLOBAL libcrypt)
  endif()
endif()
include("${CMAKE_CURRENT_LIST_DIR}/closewiseTargets.cmake")
