# Tests of tools/llama (marlin-llama). They link its core library.
marlin_add_test(test_llama_gguf test_llama_gguf.c)
target_link_libraries(test_llama_gguf PRIVATE marlin_llama_core)
marlin_add_test(test_llama_tokenizer test_llama_tokenizer.c)
target_link_libraries(test_llama_tokenizer PRIVATE marlin_llama_core)
marlin_add_test(test_llama_forward test_llama_forward.c)
target_link_libraries(test_llama_forward PRIVATE marlin_llama_core)
