# Included by CMake right after llama.cpp's `project()` (CMAKE_PROJECT_llama.cpp_INCLUDE, set in
# .cargo/config.toml; the llama-cpp-sys-2 build script passes every CMAKE_* variable on to
# CMake): build only the parts of llama.cpp that trawl links.
#
# llama.cpp's `common` library (argument parsing, chat parsers, Jinja, the HTTP downloader) is
# over half of llama.cpp's compile time, and trawl calls none of it: it renders chat templates
# and samples in Rust. The llama-cpp-2 crate leaves it out when its `common` feature is off,
# as trawl has it, but still switches it on in llama-cpp-sys-2 through that crate's default
# features; a normal variable set here shadows that cache entry (policy CMP0077), so `common`
# and what only it uses (cpp-httplib) are not configured at all. The build script then finds
# no common library and links none.
set(LLAMA_BUILD_COMMON OFF)

# llama's own library (model loading, graph building, the KV cache, the tokenizer) at -O1: a third
# less of its compile time. The work per token is in ggml's kernels, which keep -O3, and trawl
# samples in Rust. (CMake 3.19 or later; an older CMake builds it all at -O3.)
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.19)
  cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL target_compile_options llama PRIVATE -O1)
endif()
