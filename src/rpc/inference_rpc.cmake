# The inference service (translation only), the client backend over gRPC, and the
# server plumbing (listen/TLS/api key/shutdown) shared with the compositing server.
lipsync_library(lipsync_rpc_inference
  SOURCES
    ${CMAKE_CURRENT_SOURCE_DIR}/server_setup.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/server_ops.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/rate_limiter.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/audit_log.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/metrics.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/metrics_http_server.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/inference_service.cc
    ${CMAKE_CURRENT_SOURCE_DIR}/grpc_inference_backend.cc
  DEPS lipsync_inference lipsync_config lipsync_rpc_common lipsync_proto
       nlohmann_json::nlohmann_json)
