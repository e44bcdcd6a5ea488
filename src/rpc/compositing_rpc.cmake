# The compositing service (translation only) over the compositing server's core.
include(${PROJECT_SOURCE_DIR}/src/compositing/server.cmake)
lipsync_library(lipsync_rpc_compositing
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/compositing_service.cc
  DEPS lipsync_compositing_server lipsync_rpc_inference lipsync_rpc_common lipsync_proto)
