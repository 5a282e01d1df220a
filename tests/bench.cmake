# Tests of tools/bench (marlin-bench). Without a GPU: --help exits 0, and bad
# command lines are refused with exit code 2 before any device is touched.
# With a GPU: a small --check run (smollm2-135m shapes); without one the tool
# prints "SKIPPED: no CUDA device" and exits 77, which the wrapper turns into 0.
if(MARLIN_BUILD_TOOLS)
  add_test(NAME marlin_bench_help COMMAND $<TARGET_FILE:marlin-bench> --help)

  foreach(bad_args "--m;0" "--m;1,,2" "--m;3x" "--group;100" "--sets;nosuch" "--trials;3" "--csv" "--frobnicate"
                   "--shape;4096" "--shape;x64" "--shape;64x" "--shape;64x64,64x64,64x64,64x64,64x64")
    string(REPLACE ";" "_" case_name "${bad_args}")
    string(REGEX REPLACE "[^A-Za-z0-9_]" "" case_name "${case_name}")
    add_test(NAME marlin_bench_rejects${case_name}
             COMMAND sh -c "\"$0\" \"$@\"; test $? -eq 2" $<TARGET_FILE:marlin-bench> ${bad_args})
  endforeach()
  # --trace exists only in builds configured with -DMARLIN_TRACE=ON.
  if(NOT MARLIN_TRACE)
    add_test(NAME marlin_bench_rejects_trace_without_trace_build
             COMMAND sh -c "\"$0\" \"$@\"; test $? -eq 2" $<TARGET_FILE:marlin-bench> --trace trace.csv)
  endif()

  add_test(NAME marlin_bench_smoke
           COMMAND sh -c "\"$0\" \"$@\"; rc=$?; if [ $rc -eq 77 ]; then exit 0; fi; exit $rc"
                   $<TARGET_FILE:marlin-bench> --sets smollm2-135m --m 1,16,33 --check --trials 5)
  set_tests_properties(marlin_bench_smoke PROPERTIES LABELS gpu)
endif()
