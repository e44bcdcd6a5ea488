# The compositing server's core (engineer "compositing"), on top of lipsync_compositing.
# Included from src/rpc/compositing_rpc.cmake (or src/compositing/CMakeLists.txt).
if(NOT TARGET lipsync_compositing_server)
  lipsync_library(lipsync_compositing_server
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/compositing_server.cc
    DEPS lipsync_compositing lipsync_avatar lipsync_config lipsync_common)
endif()
