# Shared build helper for every addon of the project. A stage's CMakeLists.txt is:
#
#   cmake_minimum_required(VERSION 3.18)
#   project(dsa_mla_prolog CXX)
#   include(${DSA_CORE_DIR}/cmake/dsa-addon.cmake)   # DSA_CORE_DIR found via node, see below
#   dsa_add_addon(dsa_mla_prolog SOURCES native/binding.cc ... ISA_SOURCES native/kernel_isa.cc)
#
# SOURCES are compiled once (portable). ISA_SOURCES are compiled three times on x86, into namespaces
# dsa::scalar, dsa::avx2 and dsa::avx512 with that ISA's flags (never -march=native), and chosen
# at run time (dsa/isa.h); on other CPUs once, as dsa::scalar. The tensor-core runtime (CPU dispatch, thread pool, GEMM) is compiled into
# every addon the same way: per-ISA files need their own flags, so it cannot be purely header-only.

set(DSA_CORE_DIR "${CMAKE_CURRENT_LIST_DIR}/.." CACHE INTERNAL "")
get_filename_component(DSA_CORE_DIR "${DSA_CORE_DIR}" ABSOLUTE)

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()

# The x86 fast paths exist only on x86; elsewhere (arm64) ISA_SOURCES compile once, portable, and
# dsa/isa.h aliases the avx2/avx512 namespaces to scalar.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
  set(DSA_ISAS scalar avx2 avx512)
else()
  set(DSA_ISAS scalar)
endif()
set(DSA_ISA_FLAGS_scalar "")
set(DSA_ISA_FLAGS_avx2 "-mavx2;-mfma;-mf16c")
set(DSA_ISA_FLAGS_avx512 "-mavx2;-mfma;-mf16c;-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512bf16")
set(DSA_RUNTIME_SOURCES
  "${DSA_CORE_DIR}/native/runtime/cpu.cc"
  "${DSA_CORE_DIR}/native/runtime/thread_pool.cc"
  "${DSA_CORE_DIR}/native/runtime/gemm.cc"
  "${DSA_CORE_DIR}/native/runtime/gemm_fp8.cc"
  "${DSA_CORE_DIR}/native/runtime/version.cc")
set(DSA_RUNTIME_ISA_SOURCES "${DSA_CORE_DIR}/native/runtime/gemm_isa.cc" "${DSA_CORE_DIR}/native/runtime/gemm_fp8_isa.cc")

# DSA_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
if(DEFINED ENV{DSA_SANITIZE} AND NOT "$ENV{DSA_SANITIZE}" STREQUAL "" AND NOT "$ENV{DSA_SANITIZE}" STREQUAL "0")
  set(DSA_SANITIZE_FLAGS "-fsanitize=address,undefined;-fno-omit-frame-pointer")
endif()

# Portable Linux binaries (prebuilds, and source builds alike): libstdc++ linked statically, and
# references to symbols newer than glibc 2.28 redirected to their old versions (glibc_compat.cc).
# libgcc_s stays dynamic: GCC 12's static unwinder needs _dl_find_object (glibc 2.35).
include(CheckCXXSourceCompiles)
check_cxx_source_compiles("#include <cstddef>\n#ifndef __GLIBC__\n#error no glibc\n#endif\nint main() { return 0; }" DSA_GLIBC)
set(DSA_GLIBC_WRAPPED pthread_create pthread_detach pthread_join pthread_once pthread_key_create __pthread_key_create
    pthread_key_delete pthread_getspecific pthread_setspecific exp log pow exp2 log2 __libc_single_threaded arc4random)
if(DSA_GLIBC AND NOT DSA_SANITIZE_FLAGS AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|aarch64|arm64)$")
  list(APPEND DSA_RUNTIME_SOURCES "${DSA_CORE_DIR}/native/runtime/glibc_compat.cc")
  set(DSA_PORTABLE_LINK_FLAGS -static-libstdc++ -Wl,--exclude-libs,ALL)
  foreach(sym IN LISTS DSA_GLIBC_WRAPPED)
    list(APPEND DSA_PORTABLE_LINK_FLAGS "-Wl,--wrap=${sym}")
  endforeach()
endif()

# Resolved from tensor-core, which depends on node-addon-api (works in any node_modules layout).
execute_process(
  COMMAND node -p "require('node-addon-api').include_dir"
  WORKING_DIRECTORY "${DSA_CORE_DIR}"
  OUTPUT_VARIABLE DSA_NAPI_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE)

function(dsa_add_addon target)
  cmake_parse_arguments(ARG "" "" "SOURCES;ISA_SOURCES;INCLUDES" ${ARGN})
  set(all_sources ${ARG_SOURCES} ${DSA_RUNTIME_SOURCES} ${CMAKE_JS_SRC})
  foreach(src IN LISTS ARG_ISA_SOURCES DSA_RUNTIME_ISA_SOURCES)
    get_filename_component(abs "${src}" ABSOLUTE)
    get_filename_component(stem "${src}" NAME_WE)
    string(MD5 tag "${abs}")
    string(SUBSTRING "${tag}" 0 8 tag)
    foreach(isa IN LISTS DSA_ISAS)
      set(wrapper "${CMAKE_CURRENT_BINARY_DIR}/isa/${stem}_${tag}_${isa}.cc")
      file(WRITE "${wrapper}.tmp" "// generated: ${src} for ${isa}\n#define DSA_ISA_NS ${isa}\n#include \"${abs}\"\n")
      configure_file("${wrapper}.tmp" "${wrapper}" COPYONLY)
      set_source_files_properties("${wrapper}" PROPERTIES COMPILE_OPTIONS "${DSA_ISA_FLAGS_${isa}}"
                                  OBJECT_DEPENDS "${abs}")
      list(APPEND all_sources "${wrapper}")
    endforeach()
  endforeach()

  add_library(${target} SHARED ${all_sources})
  set_target_properties(${target} PROPERTIES PREFIX "" SUFFIX ".node" CXX_VISIBILITY_PRESET hidden)
  target_include_directories(${target} PRIVATE ${CMAKE_JS_INC} "${DSA_NAPI_INCLUDE}" "${DSA_CORE_DIR}/include"
                             "${DSA_CORE_DIR}/native/runtime" ${ARG_INCLUDES})
  # The version the addon reports is package.json's: a change to it (changeset version) reconfigures.
  file(READ "${CMAKE_CURRENT_SOURCE_DIR}/package.json" pkg)
  string(JSON version GET "${pkg}" version)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/package.json")
  target_compile_definitions(${target} PRIVATE NAPI_VERSION=9 NAPI_CPP_EXCEPTIONS DSA_ADDON_VERSION="${version}")
  target_compile_options(${target} PRIVATE -O3 -Wall -Wextra -Wno-unused-parameter -Wno-maybe-uninitialized ${DSA_SANITIZE_FLAGS})
  target_link_libraries(${target} PRIVATE ${CMAKE_JS_LIB} pthread ${DSA_SANITIZE_FLAGS} ${DSA_PORTABLE_LINK_FLAGS})
  if(MSVC AND CMAKE_JS_NODELIB_DEF AND CMAKE_JS_NODELIB_TARGET)
    execute_process(COMMAND ${CMAKE_AR} /def:${CMAKE_JS_NODELIB_DEF} /out:${CMAKE_JS_NODELIB_TARGET} ${CMAKE_STATIC_LINKER_FLAGS})
  endif()
endfunction()
