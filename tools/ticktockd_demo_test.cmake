# Starts ticktockd --demo on a fresh data dir for a moment, then restarts it
# on the same dir, and checks both runs ticked the demo agents and exited 0.
file(REMOVE_RECURSE ${WORK})
foreach(run 1 2)
  execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --demo --listen 127.0.0.1:0 --exit-after-ms 1500
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "ticktockd run ${run} exited with ${rc}: ${err}\n${out}")
  endif()
  # The ping-pong rally runs on the first start; the counter gets a message
  # on every start.
  set(needles "event=start" "agent=demo-counter" "event=stopped")
  if(run EQUAL 1)
    list(APPEND needles "agent=demo-pong")
  endif()
  foreach(needle ${needles})
    string(FIND "${out}" "${needle}" pos)
    if(pos EQUAL -1)
      message(FATAL_ERROR "run ${run}: '${needle}' missing from ticktockd output:\n${out}")
    endif()
  endforeach()
endforeach()
string(FIND "${out}" "agents=6" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "the restarted ticktockd did not find the 6 demo agents:\n${out}")
endif()
file(REMOVE_RECURSE ${WORK})
