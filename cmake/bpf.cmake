# bpf.cmake - build BPF CO-RE programs into libbpf skeleton headers.
#
#   CW_BPF                  option; default ON when every tool below is found
#   CW_BPF_LIBBPF           imported target (PkgConfig::LIBBPF) to link, only
#                           into the CLI: libclosewise never needs libbpf
#   cw_bpf_skeleton(<target> <file.bpf.c>)
#                           compiles <file.bpf.c> for BPF, generates
#                           <build>/bpf/<name>.skel.h (struct <name>_bpf,
#                           <name>_bpf__open_and_load(), ...) and lets <target>
#                           #include "<name>.skel.h"; also links libbpf into
#                           <target> and defines CW_HAVE_BPF=1 on it.
#   cw_bpf_target(<target>) defines CW_HAVE_BPF=0/1 on <target> (also done by
#                           cw_bpf_skeleton); code tests it to fall back.
#
# vmlinux.h is made at build time from the running kernel's BTF (never
# committed); CO-RE relocations make the object load on other kernels.
# BPF objects are compiled with their own flags: the project's
# -fsanitize/-Werror flags (add_compile_options) do not reach custom commands.

set(CW_BPF_BTF "/sys/kernel/btf/vmlinux" CACHE FILEPATH "kernel BTF used to generate vmlinux.h")
find_program(CW_BPF_CLANG NAMES clang clang-16 clang-15 clang-14)
find_program(CW_BPF_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin /usr/local/sbin)
pkg_check_modules(LIBBPF QUIET IMPORTED_TARGET libbpf)

set(cw_bpf_missing "")
if(NOT CW_BPF_CLANG)
  list(APPEND cw_bpf_missing "clang")
endif()
if(NOT CW_BPF_BPFTOOL)
  list(APPEND cw_bpf_missing "bpftool")
endif()
if(NOT LIBBPF_FOUND)
  list(APPEND cw_bpf_missing "libbpf (pkg-config libbpf)")
endif()
if(NOT EXISTS "${CW_BPF_BTF}")
  list(APPEND cw_bpf_missing "${CW_BPF_BTF}")
endif()
if(cw_bpf_missing)
  set(cw_bpf_default OFF)
else()
  set(cw_bpf_default ON)
endif()
option(CW_BPF "Build the BPF features (closewise resets, ...)" ${cw_bpf_default})
if(CW_BPF AND cw_bpf_missing)
  string(REPLACE ";" ", " cw_bpf_list "${cw_bpf_missing}")
  message(FATAL_ERROR "CW_BPF=ON but missing: ${cw_bpf_list} (scripts/deps.sh build)")
endif()
if(CW_BPF)
  message(STATUS "BPF features: ON (${CW_BPF_CLANG}, ${CW_BPF_BPFTOOL}, libbpf ${LIBBPF_VERSION})")
elseif(cw_bpf_missing)
  string(REPLACE ";" ", " cw_bpf_list "${cw_bpf_missing}")
  message(STATUS "BPF features: OFF (missing ${cw_bpf_list}); commands fall back to kernel counters")
else()
  message(STATUS "BPF features: OFF (CW_BPF=OFF); commands fall back to kernel counters")
endif()

if(CW_BPF)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|i.86")
    set(CW_BPF_ARCH x86)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
    set(CW_BPF_ARCH arm64)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "ppc64")
    set(CW_BPF_ARCH powerpc)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "s390")
    set(CW_BPF_ARCH s390)
  else()
    set(CW_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
  endif()
  set(CW_BPF_OUT ${CMAKE_BINARY_DIR}/bpf)
  file(MAKE_DIRECTORY ${CW_BPF_OUT})
  set(CW_BPF_LIBBPF PkgConfig::LIBBPF)
  add_custom_command(OUTPUT ${CW_BPF_OUT}/vmlinux.h
    COMMAND ${CW_BPF_BPFTOOL} btf dump file ${CW_BPF_BTF} format c > ${CW_BPF_OUT}/vmlinux.h.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${CW_BPF_OUT}/vmlinux.h.tmp ${CW_BPF_OUT}/vmlinux.h
    COMMENT "Generating bpf/vmlinux.h from ${CW_BPF_BTF}"
    VERBATIM)
  add_custom_target(cw_bpf_vmlinux DEPENDS ${CW_BPF_OUT}/vmlinux.h)
endif()

function(cw_bpf_target target)
  if(CW_BPF)
    target_compile_definitions(${target} PRIVATE CW_HAVE_BPF=1)
  else()
    target_compile_definitions(${target} PRIVATE CW_HAVE_BPF=0)
  endif()
endfunction()

function(cw_bpf_skeleton target src)
  cw_bpf_target(${target})
  if(NOT CW_BPF)
    return()
  endif()
  get_filename_component(abs ${src} ABSOLUTE)
  get_filename_component(name ${abs} NAME)
  string(REGEX REPLACE "\\.bpf\\.c$" "" name "${name}")
  set(obj ${CW_BPF_OUT}/${name}.bpf.o)
  set(skel ${CW_BPF_OUT}/${name}.skel.h)
  file(GLOB hdrs ${PROJECT_SOURCE_DIR}/src/bpf/*.h)
  set(incs "")
  foreach(dir ${LIBBPF_INCLUDE_DIRS})
    list(APPEND incs -I${dir})
  endforeach()
  add_custom_command(OUTPUT ${obj}
    COMMAND ${CW_BPF_CLANG} -O2 -g -target bpf -D__TARGET_ARCH_${CW_BPF_ARCH}
            -Wall -Werror -I${CW_BPF_OUT} -I${PROJECT_SOURCE_DIR}/src/bpf ${incs}
            -c ${abs} -o ${obj}
    DEPENDS ${abs} ${hdrs} ${CW_BPF_OUT}/vmlinux.h
    IMPLICIT_DEPENDS C ${abs}
    COMMENT "Compiling BPF program ${name}.bpf.c"
    VERBATIM)
  add_custom_command(OUTPUT ${skel}
    COMMAND ${CW_BPF_BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating bpf/${name}.skel.h"
    VERBATIM)
  add_custom_target(cw_bpf_${name} DEPENDS ${skel})
  # vmlinux.h is an input of every program: make it once, before any of them
  # (a rule shared by parallel targets would run twice and race; CMake docs).
  add_dependencies(cw_bpf_${name} cw_bpf_vmlinux)
  add_dependencies(${target} cw_bpf_${name})
  target_include_directories(${target} PRIVATE ${CW_BPF_OUT})
  target_link_libraries(${target} PRIVATE ${CW_BPF_LIBBPF})
endfunction()
