# cmake -DBENCH=path/to/ticktock-bench [-DHTTP=ON] -P check_json.cmake
#
# Runs `ticktock-bench --all --json` with small numbers (the http scenario for
# 0.5 s per load run over min(--http-agents, --agents) = 2000 agents,
# alarm-skew with 5000 alarms over 0.5 s) and fails unless it exits 0 and
# every line of its output is a JSON object with the required keys (values may
# be null where a metric does not apply). With HTTP on, the http rows must be
# there too. Every scenario that `--help` lists must have a row in --all's
# output (a row named after it, or after it plus a suffix: durable-tick-sync).
cmake_minimum_required(VERSION 3.25)

if(NOT BENCH)
  message(FATAL_ERROR "set -DBENCH=<path to ticktock-bench>")
endif()

execute_process(
  COMMAND ${BENCH} --all --json --agents 2000 --messages 20000 --runs 1 --seconds 0.5
          --alarms 5000 --alarm-spread 0.5
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
set(expected_scenarios tick durable-tick-sync durable-tick-async wake density alarm-skew)
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
  if(scenario STREQUAL "http-half-rate")
    # ticktockd's own view of the run, from its /metrics histogram
    list(APPEND keys server_within_2ms_pct server_p99_le_us)
  endif()
  foreach(key IN LISTS keys)
    string(JSON value ERROR_VARIABLE key_err GET "${line}" ${key})
    if(key_err)
      message(FATAL_ERROR "${scenario}: missing key '${key}' in ${line}")
    endif()
  endforeach()
  if(scenario STREQUAL "http-half-rate")
    string(JSON p99_le GET "${line}" server_p99_le_us)
    if(NOT p99_le GREATER 0)
      message(FATAL_ERROR "http-half-rate: server_p99_le_us is ${p99_le}: no /a/{id} request in "
                          "ticktockd's histogram? ${line}")
    endif()
  endif()
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

# The scenarios --help names (two-space indent, then the name, between the
# "scenarios:" and "options:" lines; soak is a mode of its own).
execute_process(COMMAND ${BENCH} --help OUTPUT_VARIABLE help RESULT_VARIABLE help_rc TIMEOUT 10)
if(NOT help_rc EQUAL 0)
  message(FATAL_ERROR "ticktock-bench --help failed (${help_rc})")
endif()
string(REGEX MATCH "scenarios:\n.*\noptions:" help_scenarios "${help}")
string(REGEX MATCHALL "\n  [a-z][a-z-]+ " named "${help_scenarios}")
set(count 0)
foreach(n IN LISTS named)
  string(STRIP "${n}" n)
  if(n STREQUAL "soak" OR (n STREQUAL "http" AND NOT HTTP))
    continue()
  endif()
  math(EXPR count "${count} + 1")
  set(found OFF)
  foreach(s IN LISTS seen)
    if(s STREQUAL n OR s MATCHES "^${n}-")
      set(found ON)
    endif()
  endforeach()
  if(NOT found)
    message(FATAL_ERROR "--help lists scenario ${n}, but --all printed no row for it: ${seen}")
  endif()
endforeach()
if(count LESS 6)
  message(FATAL_ERROR "found only ${count} scenario names in --help:\n${help}")
endif()
message(STATUS "bench-smoke: ${seen} ok")
