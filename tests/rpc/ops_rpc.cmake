# Operations: rate limiting, audit log, metrics, health checking and TLS, tested on
# real gRPC servers on loopback. The grpc.health.v1 client is generated here.
set(OPS_GEN_DIR ${CMAKE_CURRENT_BINARY_DIR}/ops_gen)
file(MAKE_DIRECTORY ${OPS_GEN_DIR})
set(OPS_HEALTH_SRCS ${OPS_GEN_DIR}/health.pb.cc ${OPS_GEN_DIR}/health.pb.h
                    ${OPS_GEN_DIR}/health.grpc.pb.cc ${OPS_GEN_DIR}/health.grpc.pb.h)
add_custom_command(
  OUTPUT ${OPS_HEALTH_SRCS}
  COMMAND ${PROTOC} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}
          --cpp_out=${OPS_GEN_DIR} --grpc_out=${OPS_GEN_DIR}
          --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN}
          ${CMAKE_CURRENT_SOURCE_DIR}/health.proto
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/health.proto
  COMMENT "protoc health.proto (test client)")
add_library(ops_health_proto STATIC ${OPS_HEALTH_SRCS})
target_include_directories(ops_health_proto SYSTEM PUBLIC ${OPS_GEN_DIR})
target_link_libraries(ops_health_proto PUBLIC PkgConfig::GRPCPP PkgConfig::PROTOBUF)

lipsync_test(ops_unit_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/ops_unit_test.cc
  DEPS lipsync_rpc_inference TIMEOUT 60)
lipsync_test(ops_server_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/ops_server_test.cc
  DEPS lipsync_rpc_inference lipsync_modelgen ops_health_proto TIMEOUT 120)
