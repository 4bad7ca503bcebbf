# cmake -DBENCH=path/to/ticktock-bench [-DHTTP=ON] -P check_json.cmake
#
# Runs `ticktock-bench --all --json` with small numbers (the http scenario for
# 0.5 s per load run over min(--http-agents, --agents) = 2000 agents) and
# fails unless it exits 0 and every line of its output is a JSON object with
# the required keys (values may be null where a metric does not apply). With
# HTTP on, the http rows must be there too.
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "set -DBENCH=<path to ticktock-bench>")
endif()

execute_process(
  COMMAND ${BENCH} --all --json --agents 2000 --messages 20000 --runs 1 --seconds 0.5
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err
  RESULT_VARIABLE rc
  TIMEOUT 55)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ticktock-bench failed (${rc}):\n${err}\n${out}")
endif()

set(required scenario ops_per_s p50_us p99_us baseline baseline_ops_per_s ratio_vs_baseline
             ratio_kind runs spread)
set(density_required bytes_per_resident_agent bytes_per_hibernated_agent
                     baseline_bytes_per_resident_agent baseline_bytes_per_hibernated_agent)
set(expected_scenarios tick durable-tick-sync durable-tick-async wake density)
if(HTTP)
  list(APPEND expected_scenarios http-1-agent http-2000-agents http-half-rate http-healthz)
endif()

string(REGEX REPLACE "\n$" "" out "${out}")
string(REPLACE ";" "\\;" out "${out}")
string(REPLACE "\n" ";" lines "${out}")
set(seen "")
foreach(line IN LISTS lines)
  string(JSON type ERROR_VARIABLE json_err TYPE "${line}")
  if(json_err OR NOT type STREQUAL "OBJECT")
    message(FATAL_ERROR "not a JSON object: ${line}\n${json_err}")
  endif()
  string(JSON scenario GET "${line}" scenario)
  list(APPEND seen ${scenario})
  set(keys ${required})
  if(scenario STREQUAL "density")
    list(APPEND keys ${density_required})
  endif()
  foreach(key IN LISTS keys)
    string(JSON value ERROR_VARIABLE key_err GET "${line}" ${key})
    if(key_err)
      message(FATAL_ERROR "${scenario}: missing key '${key}' in ${line}")
    endif()
  endforeach()
  string(JSON runs GET "${line}" runs)
  if(NOT runs EQUAL 1)
    message(FATAL_ERROR "${scenario}: runs is ${runs}, expected 1")
  endif()
endforeach()
foreach(s IN LISTS expected_scenarios)
  if(NOT s IN_LIST seen)
    message(FATAL_ERROR "no line for scenario ${s} in:\n${out}")
  endif()
endforeach()
message(STATUS "bench-smoke: ${seen} ok")
