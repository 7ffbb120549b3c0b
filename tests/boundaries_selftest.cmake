# Shows that tests/boundaries.cmake can fail: it checks small trees written here against the real
# README.md graph and requires a refusal for each forbidden include and a pass for allowed ones.
#
#   cmake -DREADME=<README.md> -DCHECK=<boundaries.cmake> -DWORK=<scratch folder> -P boundaries_selftest.cmake

cmake_minimum_required(VERSION 3.25)

function(run_check root expect_ok what)
  execute_process(COMMAND ${CMAKE_COMMAND} -DREADME=${README} -DROOT=${root} -P ${CHECK}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(expect_ok AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${what}: the check refused an allowed tree:\n${out}${err}")
  elseif(NOT expect_ok AND rc EQUAL 0)
    message(FATAL_ERROR "${what}: the check accepted a forbidden include:\n${out}${err}")
  endif()
  set(last_output "${out}${err}" PARENT_SCOPE)
endfunction()

function(tree name)
  file(REMOVE_RECURSE ${WORK}/${name})
  set(i 0)
  foreach(pair IN LISTS ARGN) # "file|included header"
    string(REPLACE "|" ";" parts "${pair}")
    list(GET parts 0 src)
    list(GET parts 1 header)
    file(WRITE ${WORK}/${name}/${src} "#include \"${header}\"\n#include <vector>\n")
  endforeach()
endfunction()

# Allowed: each library including its own, a direct dependency's and a transitive one's header.
tree(ok "storage/a.cpp|storage/b.hpp" "workers/claim/a.cpp|storage/table_client.hpp"
     "workers/fleet/a.cpp|workers/claim/work_table.hpp" "workers/fleet/b.cpp|storage/pipeline.hpp"
     "workers/etl/a.cpp|workers/blob_format.hpp" "workers/cmd/a.cpp|workers/etl/orchestrator.hpp"
     "actors/a.cpp|transport/socket.hpp")
run_check(${WORK}/ok TRUE "allowed includes")

# Forbidden, one tree each, so each refusal is the check's own.
set(n 0)
foreach(pair "storage/a.cpp|workers/claim/work_table.hpp"      # storage below claim
             "transport/a.hpp|actors/actor.hpp"                # transport below actors
             "workers/fleet/jobs.cpp|workers/etl/orchestrator.hpp" # fleet ↛ etl (the old cycle)
             "workers/etl/a.cpp|workers/fleet/job.hpp"         # etl ↛ fleet
             "workers/persistor/engine.cpp|workers/etl/steps.hpp"  # persistor ↛ etl
             "workers/claim/a.cpp|workers/fleet/worker.hpp"    # claim below fleet
             "workers/config.cpp|workers/claim/work_table.hpp" # common below everything in workers/
             "workers/fleet/a.cpp|workers/web/dashboard.hpp"   # the dashboard is started by cmd
             "workers/zzz/a.cpp|storage/http.hpp")             # a folder the graph does not list
  math(EXPR n "${n} + 1")
  tree(bad${n} "${pair}")
  run_check(${WORK}/bad${n} FALSE "${pair}")
  string(REPLACE "|" ";" parts "${pair}")
  list(GET parts 0 src)
  if(NOT last_output MATCHES "${src}")
    message(FATAL_ERROR "${pair}: refused, but the message does not name ${src}:\n${last_output}")
  endif()
endforeach()
message(STATUS "boundary check: 1 allowed tree passed, ${n} forbidden includes refused")
