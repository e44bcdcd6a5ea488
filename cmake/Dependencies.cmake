# Third-party libraries, all from Debian 12 packages (scripts/setup.sh installs them).
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
# gRPC server reflection (libgrpc++-dev ships it without a pkg-config file).
find_library(GRPCPP_REFLECTION_LIBRARY grpc++_reflection REQUIRED)
find_path(GRPCPP_REFLECTION_INCLUDE_DIR grpcpp/ext/proto_server_reflection_plugin.h REQUIRED)
pkg_check_modules(PROTOBUF REQUIRED IMPORTED_TARGET protobuf)
pkg_check_modules(YAMLCPP REQUIRED IMPORTED_TARGET yaml-cpp)
pkg_check_modules(LIBPNG REQUIRED IMPORTED_TARGET libpng)
pkg_check_modules(ZLIB REQUIRED IMPORTED_TARGET zlib)  # CRC-32 of prepared avatar files
pkg_check_modules(LIBJPEG REQUIRED IMPORTED_TARGET libjpeg)
pkg_check_modules(FFTW3F REQUIRED IMPORTED_TARGET fftw3f)
pkg_check_modules(SOXR REQUIRED IMPORTED_TARGET soxr)
pkg_check_modules(SNDFILE REQUIRED IMPORTED_TARGET sndfile)
pkg_check_modules(LIBJWT REQUIRED IMPORTED_TARGET libjwt)
pkg_check_modules(X264 REQUIRED IMPORTED_TARGET x264)
pkg_check_modules(OPENH264 REQUIRED IMPORTED_TARGET openh264)  # bench/media; product if LIPSYNC_H264_ENCODER=openh264
pkg_check_modules(OPUS REQUIRED IMPORTED_TARGET opus)  # WebRTC audio (src/webrtc)
pkg_check_modules(LIBAVFORMAT REQUIRED IMPORTED_TARGET libavformat)  # RTP muxer (src/webrtc)
pkg_check_modules(LIBAVCODEC REQUIRED IMPORTED_TARGET libavcodec)  # tests: RTP receiver + decoders
pkg_check_modules(LIBAVUTIL REQUIRED IMPORTED_TARGET libavutil)
find_package(OpenSSL REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
# Debian prometheus-cpp-dev: the metrics registry and text serializer (core only).
find_package(prometheus-cpp CONFIG REQUIRED)

find_path(LIBYUV_INCLUDE_DIR libyuv.h REQUIRED)
find_library(LIBYUV_LIBRARY yuv REQUIRED)
add_library(libyuv INTERFACE)
target_include_directories(libyuv SYSTEM INTERFACE ${LIBYUV_INCLUDE_DIR})
target_link_libraries(libyuv INTERFACE ${LIBYUV_LIBRARY})

# Debian's libonnx-dev: ONNX protobuf classes + checker, used to build the demo models.
find_library(ONNX_LIBRARY onnx REQUIRED)
find_library(ONNX_PROTO_LIBRARY onnx_proto REQUIRED)
add_library(onnx_ir INTERFACE)
target_link_libraries(onnx_ir INTERFACE ${ONNX_LIBRARY} ${ONNX_PROTO_LIBRARY} PkgConfig::PROTOBUF)
target_compile_definitions(onnx_ir INTERFACE ONNX_ML=1 ONNX_NAMESPACE=onnx)

find_program(PROTOC protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
