# GPTQ (src/gptq.c, src/gptq_cuda.cu): CPU test in CI; the GPU test compares
# the GPU path with the CPU one and prints SKIPPED without a device.
marlin_add_test(test_gptq test_gptq.c)
marlin_add_test(test_gptq_gpu test_gptq_gpu.c)
set_tests_properties(test_gptq_gpu PROPERTIES LABELS gpu)
