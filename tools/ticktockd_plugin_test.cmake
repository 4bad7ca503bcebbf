# ticktockd --plugin loads the example plugin's types; a bad plugin path is a
# clear startup error with exit code 2, before the data directory is made.
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --listen 127.0.0.1:0 --plugin ${PLUGIN}
                        --exit-after-ms 300
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ticktockd --plugin exited with ${rc}: ${err}\n${out}")
endif()
string(FIND "${out}" "event=plugin" pos)
string(FIND "${out}" "types=greeter" pos2)
if(pos EQUAL -1 OR pos2 EQUAL -1)
  message(FATAL_ERROR "the plugin's types were not reported:\n${out}")
endif()
# The command line wins over the config file for --plugin too (the lists do
# not add up): the plugin named in both is loaded once.
file(MAKE_DIRECTORY ${WORK}/conf)
file(WRITE ${WORK}/conf/config.json "{\"plugin\": [\"${PLUGIN}\"]}")
execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --listen 127.0.0.1:0 --config ${WORK}/conf/config.json
                        --plugin ${PLUGIN} --exit-after-ms 0
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "--plugin given on the command line and in the config file exited with ${rc}: ${err}\n${out}")
endif()
# The same plugin twice on the command line: refused, naming the type.
execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --listen 127.0.0.1:0 --plugin ${PLUGIN}
                        --plugin ${PLUGIN} --exit-after-ms 0
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
string(FIND "${err}" "'greeter', which is already registered" pos)
if(NOT rc EQUAL 2 OR pos EQUAL -1)
  message(FATAL_ERROR "a plugin loaded twice should exit 2 naming its type, got ${rc}: ${err}")
endif()
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --listen 127.0.0.1:0 --plugin /nonexistent.so
                        --exit-after-ms 300
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "a missing plugin should exit 2, got ${rc}")
endif()
string(FIND "${err}" "/nonexistent.so" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "the error does not name the plugin: ${err}")
endif()
if(EXISTS ${WORK})
  message(FATAL_ERROR "a plugin that does not load left a data directory behind")
endif()
execute_process(COMMAND ${TICKTOCKD} --data ${WORK} --listen 127.0.0.1:0 --plugin ""
                        --exit-after-ms 300
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 30)
string(FIND "${err}" "the path is empty" pos)
if(NOT rc EQUAL 2 OR pos EQUAL -1)
  message(FATAL_ERROR "an empty plugin path should exit 2 saying so, got ${rc}: ${err}")
endif()
file(REMOVE_RECURSE ${WORK})
