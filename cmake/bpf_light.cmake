# bpf_light.cmake - light skeletons (`bpftool gen skeleton -L`) for BPF
# programs that must load fast.
#
#   cw_bpf_light_skeleton(<target> <file.bpf.c>)
#       generates <build>/bpf/<name>.lskel.h (struct <name>_lskel,
#       <name>_lskel__open(), __load(), ...) from the object that
#       cw_bpf_skeleton() compiles (bpf.cmake), for <target> to include.
#
# A light skeleton is loaded by a small loader program that runs in the
# kernel: maps, CO-RE relocations and the attach point are resolved there
# against the kernel's own indexed BTF. A regular skeleton makes libbpf
# parse the kernel's whole BTF in user space first (126,586 types, 25-40 ms
# per run here); the light one loads in about 1 ms (Linux 5.17+ for
# kernel-side CO-RE). It needs only <bpf/skel_internal.h>, no libbpf calls.

function(cw_bpf_light_skeleton target src)
  if(NOT CW_BPF)
    return()
  endif()
  get_filename_component(abs ${src} ABSOLUTE)
  get_filename_component(name ${abs} NAME)
  string(REGEX REPLACE "\\.bpf\\.c$" "" name "${name}")
  set(obj ${CW_BPF_OUT}/${name}.bpf.o)
  set(skel ${CW_BPF_OUT}/${name}.lskel.h)
  add_custom_command(OUTPUT ${skel}
    COMMAND ${CW_BPF_BPFTOOL} gen skeleton -L ${obj} name ${name}_lskel > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating bpf/${name}.lskel.h"
    VERBATIM)
  add_custom_target(cw_bpf_${name}_light DEPENDS ${skel})
  # The object is built by cw_bpf_${name} (cw_bpf_skeleton): wait for it
  # rather than run the same rule twice in parallel.
  if(TARGET cw_bpf_${name})
    add_dependencies(cw_bpf_${name}_light cw_bpf_${name})
  endif()
  add_dependencies(${target} cw_bpf_${name}_light)
endfunction()
