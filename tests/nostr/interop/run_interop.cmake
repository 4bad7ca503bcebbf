# Runs interop_test.mjs against nostr-tools, as the CTest "nostr-interop".
#
# Inputs (-D): NODE, NPM (may be empty or *-NOTFOUND: looked up again here),
# SOURCE_DIR (this folder), WORK_DIR (a folder in the build tree), TOOL (the
# nostr_interop_tool executable). Also runs nostr-e2e: SCRIPT names another
# script of this folder and ARGS (separated by |) its arguments instead of TOOL.
#
# The npm packages are installed with `npm ci` from the committed lock file
# into WORK_DIR and kept there: later runs reinstall only when the lock file
# changes. Missing node or npm, or a failed install, fails the test (it does not
# skip) and says why.

if(NOT SCRIPT)
  set(SCRIPT interop_test.mjs)
  set(ARGS "${TOOL}")
endif()
string(REPLACE "|" ";" ARGS "${ARGS}")
foreach(var SOURCE_DIR WORK_DIR ARGS)
  if(NOT ${var})
    message(FATAL_ERROR "nostr-interop: ${var} not set")
  endif()
endforeach()

if(NOT NODE OR NODE MATCHES "NOTFOUND$")
  find_program(NODE node)
endif()
if(NOT NPM OR NPM MATCHES "NOTFOUND$")
  find_program(NPM npm)
endif()
if(NOT NODE OR NODE MATCHES "NOTFOUND$" OR NOT NPM OR NPM MATCHES "NOTFOUND$")
  message(FATAL_ERROR
    "nostr-interop: node and npm are required (Node.js >= 20.19) but were not found "
    "(node: '${NODE}', npm: '${NPM}'). Install them, e.g. with scripts/setup.sh.")
endif()
foreach(arg ${ARGS})
  if(IS_ABSOLUTE "${arg}" AND NOT EXISTS "${arg}")
    message(FATAL_ERROR "nostr-interop: ${arg} does not exist: build it first")
  endif()
endforeach()

file(MAKE_DIRECTORY "${WORK_DIR}")
foreach(f package.json package-lock.json ${SCRIPT})
  configure_file("${SOURCE_DIR}/${f}" "${WORK_DIR}/${f}" COPYONLY)
endforeach()

# Reinstall only when the lock file differs from the one last installed.
set(stamp "${WORK_DIR}/node_modules/.ticktock-installed-lock")
set(need_install TRUE)
if(EXISTS "${stamp}")
  file(SHA256 "${stamp}" installed_hash)
  file(SHA256 "${WORK_DIR}/package-lock.json" wanted_hash)
  if(installed_hash STREQUAL wanted_hash)
    set(need_install FALSE)
  endif()
endif()
if(need_install)
  message(STATUS "nostr-interop: npm ci in ${WORK_DIR}")
  execute_process(
    COMMAND "${NPM}" ci --no-audit --no-fund
    WORKING_DIRECTORY "${WORK_DIR}"
    RESULT_VARIABLE npm_result
    OUTPUT_VARIABLE npm_out
    ERROR_VARIABLE npm_out)
  if(NOT npm_result EQUAL 0)
    message(FATAL_ERROR "nostr-interop: `npm ci` failed (${npm_result}) in ${WORK_DIR}:\n${npm_out}")
  endif()
  configure_file("${WORK_DIR}/package-lock.json" "${stamp}" COPYONLY)
else()
  message(STATUS "nostr-interop: npm packages already installed in ${WORK_DIR}")
endif()

execute_process(
  COMMAND "${NODE}" "${WORK_DIR}/${SCRIPT}" ${ARGS}
  WORKING_DIRECTORY "${WORK_DIR}"
  RESULT_VARIABLE node_result)
if(NOT node_result EQUAL 0)
  message(FATAL_ERROR "nostr-interop: ${SCRIPT} failed (node exited with ${node_result})")
endif()
