# ONNX Runtime: headers at build time, the shared library loaded at run time
# (dlopen), so `onnx.library_path` can switch to a GPU build without a rebuild.
#
# Where it comes from, first match wins:
#   -DONNXRUNTIME_ROOT=/path   or env ONNXRUNTIME_ROOT   (official tarball layout:
#                                                        include/, lib/libonnxruntime.so*)
#   third_party/onnxruntime/   (scripts/setup.sh puts the npm-shipped 1.29.0 there)
set(ONNXRUNTIME_ROOT "$ENV{ONNXRUNTIME_ROOT}" CACHE PATH "ONNX Runtime install (include/, lib/)")
if(NOT ONNXRUNTIME_ROOT)
  set(ONNXRUNTIME_ROOT "${PROJECT_SOURCE_DIR}/third_party/onnxruntime" CACHE PATH "" FORCE)
endif()

find_path(ORT_INCLUDE_DIR onnxruntime_cxx_api.h
  PATHS "${ONNXRUNTIME_ROOT}/include" "${ONNXRUNTIME_ROOT}/include/onnxruntime"
        "${ONNXRUNTIME_ROOT}/include/onnxruntime/core/session"
  NO_DEFAULT_PATH)
find_file(ORT_LIBRARY NAMES libonnxruntime.so.1 libonnxruntime.so
  PATHS "${ONNXRUNTIME_ROOT}/lib" NO_DEFAULT_PATH)
if(NOT ORT_INCLUDE_DIR OR NOT ORT_LIBRARY)
  message(FATAL_ERROR
    "ONNX Runtime not found under ONNXRUNTIME_ROOT='${ONNXRUNTIME_ROOT}'.\n"
    "Run scripts/setup.sh (fetches the bundled 1.29.0), or pass "
    "-DONNXRUNTIME_ROOT=/path/to/onnxruntime with include/ and lib/libonnxruntime.so.")
endif()
get_filename_component(ORT_LIBRARY_DIR "${ORT_LIBRARY}" DIRECTORY)
message(STATUS "ONNX Runtime: headers ${ORT_INCLUDE_DIR}, library ${ORT_LIBRARY}")

add_library(onnxruntime_headers INTERFACE)
target_include_directories(onnxruntime_headers SYSTEM INTERFACE "${ORT_INCLUDE_DIR}")
# The C++ API is initialised by us from the dlopen'ed library (see src/inference/ort_runtime).
target_compile_definitions(onnxruntime_headers INTERFACE
  ORT_API_MANUAL_INIT
  LIPSYNC_DEFAULT_ORT_LIBRARY="${ORT_LIBRARY}")
target_link_libraries(onnxruntime_headers INTERFACE ${CMAKE_DL_LIBS})

# Executables find the bundled library by RPATH too (no LD_LIBRARY_PATH needed).
set(CMAKE_BUILD_RPATH "${ORT_LIBRARY_DIR}")
set(CMAKE_INSTALL_RPATH "${ORT_LIBRARY_DIR}")
