# The sanitizer reports folder of a sanitizer build (tests/sanitizers/sanitizers.cmake):
#   cmake -DREPORTS=DIR -DACTION=clear|check -P check_reports.cmake
# clear: empties DIR before the first test; check: after the last, prints the reports written
# there (by a test or by any process it started; the first 8 files, 20 kB of each) and fails if
# there is one.
if(ACTION STREQUAL "clear")
  file(REMOVE_RECURSE "${REPORTS}")
  file(MAKE_DIRECTORY "${REPORTS}")
  return()
endif()

file(GLOB reports "${REPORTS}/*")
if(NOT reports)
  message(STATUS "no sanitizer reports in ${REPORTS}")
  return()
endif()
list(LENGTH reports count)
set(shown 0)
foreach(report IN LISTS reports)
  if(shown LESS 8)
    file(READ "${report}" text LIMIT 20000)  # the first reports of a process tell the story
    message("==== ${report}\n${text}")
    math(EXPR shown "${shown} + 1")
  else()
    message("==== ${report} (not shown)")
  endif()
endforeach()
message(FATAL_ERROR "${count} sanitizer report file(s) in ${REPORTS} (see above)")
