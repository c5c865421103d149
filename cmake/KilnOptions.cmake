# Compiler flags shared by every kiln target (applied through kiln_options).
add_library(kiln_options INTERFACE)
target_compile_options(kiln_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
    -Woverloaded-virtual -Wimplicit-fallthrough>)
if(KILN_WERROR)
  target_compile_options(kiln_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
# The CPU kernels need AVX2, FMA and F16C; they are the baseline of every machine kiln targets.
target_compile_options(kiln_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-mavx2 -mfma -mf16c>)
if(KILN_NATIVE)
  target_compile_options(kiln_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=native>)
endif()
# Sanitised builds stop at the first report (UBSan would otherwise print and carry on, so a test
# would pass over undefined behaviour).
if(KILN_SANITIZE)
  target_compile_options(kiln_options INTERFACE -fsanitize=${KILN_SANITIZE} -fno-sanitize-recover=all
    -fno-omit-frame-pointer)
  target_link_options(kiln_options INTERFACE -fsanitize=${KILN_SANITIZE})
endif()

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
endif()
