# Runs COMMAND (a ;-list) and passes only if it exits non-zero within SECONDS and its output
# matches the regular expression EXPECT. Usage: cmake -DCOMMAND=... -DEXPECT=... -DSECONDS=20 -P
string(TIMESTAMP start "%s" UTC)
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err
  TIMEOUT ${SECONDS})
string(TIMESTAMP stop "%s" UTC)
math(EXPR elapsed "${stop} - ${start}")
message("${out}${err}")
message(STATUS "exit: ${result} after ${elapsed} s")
if(result STREQUAL "0")
  message(FATAL_ERROR "expected a non-zero exit, got 0")
endif()
if(result MATCHES "timeout")
  message(FATAL_ERROR "the job did not end within ${SECONDS} s")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "output does not match: ${EXPECT}")
endif()
