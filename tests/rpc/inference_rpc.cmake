# The inference service over real gRPC on loopback (and the `lipsync inference` binary).
lipsync_test(inference_service_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/inference_service_test.cc
  DEPS lipsync_rpc_inference lipsync_modelgen TIMEOUT 300)
# The binary test runs <build>/lipsync.
add_dependencies(inference_service_test lipsync)
