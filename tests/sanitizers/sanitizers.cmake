# The test side of a sanitizer build (SSM_SANITIZE; included by tests/CMakeLists.txt).
#
# Runtime options: ctest reads them with the test list (TEST_INCLUDE_FILES) and sets them in its
# own environment, so every test, and every ssm-server and client tool a test starts, runs with
# them. ASan, LeakSanitizer and TSan reports, from whichever process, go to files under
# build-*/sanitizer-reports/ (log_path, named by program and pid) instead of stderr: the
# integration tests do not check every server's exit code and stderr, and they compare the
# tools' stderr with expected messages. The fixture test sanitizer_reports_check runs after all
# the others and fails, printing them, if any report was written. UBSan reports (GCC's runtime
# ignores log_path under ASan) go to stderr and abort the process, which fails its test.
set(ssm_sanitizer_reports ${CMAKE_BINARY_DIR}/sanitizer-reports)
set(ssm_sanitizer_files ${CMAKE_CURRENT_LIST_DIR})

if(SSM_SANITIZE STREQUAL "thread")
  # ignore_noninstrumented_modules=1: Debian's gRPC, protobuf, abseil and libstdc++ are not built
  # with TSan; what they touch through intercepted calls (free, memcpy, ...) is not checked
  # (their synchronisation is invisible, so it would all look racy). tsan.supp covers their code
  # compiled into ours from their headers. history_size=7: both stacks of a report, not only the
  # current one. halt_on_error=0: a race is reported and the process goes on, so that one run
  # shows them all; the process still exits 66 and the report check fails the run.
  # The cpu kernels' parallel loops run on the worker pool (kernels/base/worker_pool.h), whose
  # synchronisation is ours and checked like the rest.
  set(ssm_sanitizer_environment
      "TSAN_OPTIONS=suppressions=${ssm_sanitizer_files}/tsan.supp:ignore_noninstrumented_modules=1:history_size=7:halt_on_error=0:second_deadlock_stack=1:log_path=${ssm_sanitizer_reports}/tsan:log_exe_name=1")
else()
  set(ssm_sanitizer_environment
      "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=${ssm_sanitizer_reports}/asan:log_exe_name=1"
      "LSAN_OPTIONS=suppressions=${ssm_sanitizer_files}/lsan.supp:print_suppressions=0"
      "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1")
endif()

set(ssm_sanitizer_script "# Generated from tests/sanitizers/sanitizers.cmake: the sanitizer runtime options.\n")
foreach(setting IN LISTS ssm_sanitizer_environment)
  string(REGEX MATCH "^[A-Z_]+" variable "${setting}")
  string(REGEX REPLACE "^[A-Z_]+=" "" value "${setting}")
  string(APPEND ssm_sanitizer_script "set(ENV{${variable}} \"${value}\")\n")
endforeach()
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/sanitizer_environment.cmake "${ssm_sanitizer_script}")
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES
             ${CMAKE_CURRENT_BINARY_DIR}/sanitizer_environment.cmake)

# The reports folder is emptied before the first test and checked after the last.
add_test(NAME sanitizer_reports_clear
         COMMAND ${CMAKE_COMMAND} -DREPORTS=${ssm_sanitizer_reports} -DACTION=clear
                 -P ${ssm_sanitizer_files}/check_reports.cmake)
add_test(NAME sanitizer_reports_check
         COMMAND ${CMAKE_COMMAND} -DREPORTS=${ssm_sanitizer_reports} -DACTION=check
                 -P ${ssm_sanitizer_files}/check_reports.cmake)
set_tests_properties(sanitizer_reports_clear PROPERTIES FIXTURES_SETUP sanitizer_reports
                                                        LABELS sanitizer)
set_tests_properties(sanitizer_reports_check PROPERTIES FIXTURES_CLEANUP sanitizer_reports
                                                        LABELS sanitizer)
# For ssm_test_folder's gtest_discover_tests (single values only: it flattens lists).
set(ssm_sanitizer_test_properties FIXTURES_REQUIRED sanitizer_reports)
