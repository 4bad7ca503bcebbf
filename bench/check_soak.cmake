# cmake -DBENCH=path/to/ticktock-bench -P check_soak.cmake
#
# Runs `ticktock-bench soak --seconds 5 --json` (500 agents) and checks the
# shape of its output only: one JSON object with the run's figures, ten
# intervals each with RSS, request count and p50/p99, and the memory verdict.
# No timing or memory assertion: a 5 s soak proves nothing about either.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "set -DBENCH=<path to ticktock-bench>")
endif()

execute_process(
  COMMAND ${BENCH} soak --seconds 5 --json --soak-agents 500
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  RESULT_VARIABLE rc
  TIMEOUT 55)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ticktock-bench soak failed (${rc}):\n${err}\n${out}")
endif()
string(STRIP "${out}" out)
string(JSON type ERROR_VARIABLE json_err TYPE "${out}")
if(json_err OR NOT type STREQUAL "OBJECT")
  message(FATAL_ERROR "soak output is not one JSON object: ${out}\n${json_err}")
endif()
foreach(key scenario seconds interval_s agents max_resident idle_timeout_ms requests errors p50_us
            p99_us rss_half_bytes rss_end_bytes rss_growth_second_half_bytes
            rss_growth_bound_bytes memory_flat verdict intervals)
  string(JSON value ERROR_VARIABLE key_err GET "${out}" ${key})
  if(key_err)
    message(FATAL_ERROR "soak: missing key '${key}' in ${out}")
  endif()
endforeach()
string(JSON scenario GET "${out}" scenario)
string(JSON flat_type TYPE "${out}" memory_flat)
string(JSON n LENGTH "${out}" intervals)
if(NOT scenario STREQUAL "soak" OR NOT flat_type STREQUAL "BOOLEAN" OR NOT n EQUAL 10)
  message(FATAL_ERROR "soak: scenario '${scenario}', memory_flat ${flat_type}, ${n} intervals "
                      "(expected soak, BOOLEAN, 10) in ${out}")
endif()
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  foreach(key t_s rss_bytes requests req_per_s p50_us p99_us ticks_per_s alarms_per_s resident)
    string(JSON value ERROR_VARIABLE key_err GET "${out}" intervals ${i} ${key})
    if(key_err)
      message(FATAL_ERROR "soak: interval ${i} has no '${key}' in ${out}")
    endif()
  endforeach()
  string(JSON rss GET "${out}" intervals ${i} rss_bytes)
  if(NOT rss GREATER 0)
    message(FATAL_ERROR "soak: interval ${i} has RSS ${rss}")
  endif()
endforeach()
string(JSON requests GET "${out}" requests)
if(NOT requests GREATER 0)
  message(FATAL_ERROR "soak: no request completed: ${out}")
endif()
message(STATUS "bench-soak: ${n} intervals, ${requests} requests ok")
