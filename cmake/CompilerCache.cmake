# Compiles through ccache when it is installed (.ci/setup installs it), so
# that the three builds of a CI run (main, sanitizers, fuzzers) on a fresh
# clone reuse the objects of earlier runs instead of recompiling MLIR-heavy
# sources on two cores. A miss costs nothing but the lookup; the result is
# the same compile either way.
#
# base_dir makes the cache key independent of where the clone lives, and
# nohashdir ignores the working directory, which only reaches the debug
# information of the fuzzers' build (a source path in DW_AT_comp_dir).
# -DMOEGEN_CCACHE=OFF compiles without it.
option(MOEGEN_CCACHE "Compile through ccache when it is found" ON)
if(MOEGEN_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  find_program(MOEGEN_CCACHE_PROGRAM ccache)
  if(MOEGEN_CCACHE_PROGRAM)
    get_filename_component(_moegen_repo_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
    set(_moegen_launcher ${CMAKE_COMMAND} -E env
        "CCACHE_BASEDIR=${_moegen_repo_root}" CCACHE_NOHASHDIR=1
        ${MOEGEN_CCACHE_PROGRAM})
    set(CMAKE_C_COMPILER_LAUNCHER ${_moegen_launcher})
    set(CMAKE_CXX_COMPILER_LAUNCHER ${_moegen_launcher})
    message(STATUS "Compiling through ${MOEGEN_CCACHE_PROGRAM}")
  endif()
endif()
