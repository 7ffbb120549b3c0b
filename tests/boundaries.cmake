# The library boundary check (issue 18): every #include "…" of a library's sources names a header
# of the library itself or of one it may depend on. The allowed graph is read from README.md's
# "How it fits together" (the block of `name ← dependencies` lines), its only written form.
#
#   cmake -DREADME=<README.md> -DROOT=<source tree> -P tests/boundaries.cmake
#
# Folders → libraries: transport/, actors/, storage/ (each one library); workers/*.{hpp,cpp}
# (not subfolders) → common; workers/<area>/ → <area> (claim, fleet, persistor, etl, web, cmd).
# A library may include its own headers, those of the libraries after its arrow, and theirs in
# turn (the transitive closure). Exits non-zero and names every forbidden include otherwise.
# tests/, bench/ and generated files are not checked.

cmake_minimum_required(VERSION 3.25)

if(NOT README OR NOT ROOT)
  message(FATAL_ERROR "usage: cmake -DREADME=README.md -DROOT=<tree> -P boundaries.cmake")
endif()

get_filename_component(ROOT "${ROOT}" ABSOLUTE)
get_filename_component(README "${README}" ABSOLUTE)

# -- the graph, from README.md -------------------------------------------------------------------
file(STRINGS ${README} readme_lines ENCODING UTF-8)
set(in_section OFF)
set(libs "")
foreach(line IN LISTS readme_lines)
  if(line MATCHES "^## ")
    if(line STREQUAL "## How it fits together")
      set(in_section ON)
    else()
      set(in_section OFF)
    endif()
  elseif(in_section AND line MATCHES "^  ([a-z]+) +← *(.*)$")
    set(lib ${CMAKE_MATCH_1})
    string(REGEX REPLACE "[ ,]+" ";" deps "${CMAKE_MATCH_2}")
    list(REMOVE_ITEM deps "")
    list(APPEND libs ${lib})
    set(direct_${lib} ${deps})
  endif()
endforeach()
if(NOT libs)
  message(FATAL_ERROR "${README}: no `name ← deps` lines in \"How it fits together\"")
endif()
foreach(lib IN LISTS libs)
  foreach(dep IN LISTS direct_${lib})
    if(NOT dep IN_LIST libs)
      message(FATAL_ERROR "${README}: ${lib} ← ${dep}: ${dep} has no line of its own")
    endif()
  endforeach()
endforeach()

# Transitive closure (a dependency's dependencies are allowed too); a cycle is an error.
function(closure lib stack out)
  if(lib IN_LIST stack)
    list(APPEND stack ${lib})
    string(REPLACE ";" " ← " path "${stack}")
    message(FATAL_ERROR "${README}: the allowed graph has a cycle: ${path}")
  endif()
  set(acc "")
  foreach(dep IN LISTS direct_${lib})
    closure(${dep} "${stack};${lib}" sub)
    list(APPEND acc ${dep} ${sub})
  endforeach()
  list(REMOVE_DUPLICATES acc)
  set(${out} "${acc}" PARENT_SCOPE)
endfunction()
foreach(lib IN LISTS libs)
  closure(${lib} "" allowed_${lib})
endforeach()

# -- the library a path (source or included header) belongs to -----------------------------------
function(library_of path out)
  set(r "")
  if(path MATCHES "^(transport|actors|storage)/[^/]+$")
    set(r ${CMAKE_MATCH_1})
  elseif(path MATCHES "^workers/[^/]+$")
    set(r common)
  elseif(path MATCHES "^workers/([a-z]+)/[^/]+$")
    set(r ${CMAKE_MATCH_1})
  endif()
  set(${out} "${r}" PARENT_SCOPE)
endfunction()

# -- the includes ----------------------------------------------------------------------------------
file(GLOB_RECURSE sources RELATIVE ${ROOT} ${ROOT}/transport/*.hpp ${ROOT}/transport/*.cpp
  ${ROOT}/actors/*.hpp ${ROOT}/actors/*.cpp ${ROOT}/storage/*.hpp ${ROOT}/storage/*.cpp
  ${ROOT}/workers/*.hpp ${ROOT}/workers/*.cpp)
set(violations 0)
set(checked 0)
foreach(src IN LISTS sources)
  library_of(${src} from)
  if(NOT from)
    continue() # a deeper folder (transport/fuzz/): not a library of the graph
  endif()
  if(NOT from IN_LIST libs)
    message(SEND_ERROR "${src}: folder of library '${from}', which README's graph does not list")
    math(EXPR violations "${violations} + 1")
    continue()
  endif()
  file(STRINGS ${ROOT}/${src} includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(inc IN LISTS includes)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*$" "\\1" header "${inc}")
    library_of(${header} to)
    math(EXPR checked "${checked} + 1")
    if(NOT to OR to STREQUAL from OR to IN_LIST allowed_${from})
      continue()
    endif()
    string(REPLACE ";" ", " may "${allowed_${from}}")
    message(SEND_ERROR "${src}: includes \"${header}\" (${to}), but ${from} may depend only on: ${may}")
    math(EXPR violations "${violations} + 1")
  endforeach()
endforeach()
if(violations GREATER 0)
  message(FATAL_ERROR "${violations} include(s) cross a library boundary (README.md, \"How it fits together\")")
endif()
list(LENGTH sources n)
message(STATUS "library boundaries: ${checked} includes of ${n} files follow README.md's graph")
