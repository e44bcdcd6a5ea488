// Fuzz target: a tenant's PNG background frame through image::DecodePng, then (small
// frames) the region-JPEG encoder. Every input must end as an image or an error status
// with a bounded message; no crash, hang or unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/image_fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1024 * 1024) return -1;  // FuzzDecodeLimits().max_file_bytes
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  lipsync::fuzz::CheckDecoded(bytes, lipsync::image::ImageFormat::kPng,
                              lipsync::image::DecodePng(bytes, lipsync::fuzz::FuzzDecodeLimits()),
                              "DecodePng");
  return 0;
}
