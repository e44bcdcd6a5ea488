// Fuzz target: a prepared avatar file (avatar/prepared_store.h), which the compositing
// server reads back from its store directory; a file truncated, rewritten or corrupted
// under the server must end as an error naming the file, never a crash or an
// allocation beyond the file's own size.
//
// Each input is tried twice through PreparedFile::OpenFd (on a memfd) and ReadFrame of
// its frames: as given, and with every checksum recomputed (header, rects + table,
// each frame in bounds), so that the fuzzer also reaches the structural checks behind
// the CRCs. A frame that reads back is used as the compositor uses it: the region
// encode over its held pixels, spliced into its JPEG.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "avatar/prepared_store.h"
#include "fuzz/fuzz_util.h"

namespace {

using lipsync::avatar::kPreparedEntryBytes;
using lipsync::avatar::kPreparedHeaderBytes;

template <typename T>
T Get(const std::vector<uint8_t>& b, size_t off) {
  T v{};
  if (off + sizeof(T) <= b.size()) std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}
template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  if (off + sizeof(T) <= b.size()) std::memcpy(b.data() + off, &v, sizeof(T));
}

// Recomputes the CRCs the way WritePreparedFile does (offsets from the format comment in
// prepared_store.h), wherever the claimed ranges lie inside the input.
void FixChecksums(std::vector<uint8_t>& b) {
  if (b.size() < kPreparedHeaderBytes) return;
  const uint64_t n = uint64_t(std::max(0, Get<int32_t>(b, 40)));
  const uint64_t rects = Get<uint64_t>(b, 64), table = Get<uint64_t>(b, 72),
                 data = Get<uint64_t>(b, 80);
  if (table < b.size() && n < b.size() && table + n * kPreparedEntryBytes <= b.size()) {
    for (uint64_t i = 0; i < n; ++i) {
      const size_t e = size_t(table + i * kPreparedEntryBytes);
      const uint64_t offset = Get<uint64_t>(b, e);
      const uint64_t blob = uint64_t(Get<uint32_t>(b, e + 12)) * 8 + Get<uint32_t>(b, e + 8) +
                            uint64_t(std::max(0, Get<int32_t>(b, e + 24))) *
                                uint64_t(std::max(0, Get<int32_t>(b, e + 28))) * 3;
      if (offset <= b.size() && blob <= b.size() - offset) {
        Put<uint32_t>(b, e + 32, lipsync::avatar::Crc32(b.data() + offset, size_t(blob)));
      }
    }
  }
  if (rects <= data && data <= b.size()) {
    Put<uint32_t>(b, 88, lipsync::avatar::Crc32(b.data() + rects, size_t(data - rects)));
  }
  Put<uint64_t>(b, 16, b.size());  // the header's file size
  Put<uint32_t>(b, 92, 0);
  Put<uint32_t>(b, 92, lipsync::avatar::Crc32(b.data(), kPreparedHeaderBytes));
}

void TryFile(const std::vector<uint8_t>& bytes) {
  const int fd = ::memfd_create("prepared_fuzz", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0, "memfd_create failed");
  if (!bytes.empty()) {
    FUZZ_CHECK(::write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()),
               "memfd write failed");
  }
  auto file = lipsync::avatar::PreparedFile::OpenFd(fd, "fuzz.lsavatar");
  if (!file.ok()) {
    FUZZ_CHECK_MESSAGE(file.status());
    FUZZ_CHECK(file.status().message().find("fuzz.lsavatar") != std::string::npos,
               "error does not name the file: " + file.status().message().substr(0, 200));
    return;
  }
  const auto& f = **file;
  const auto& s = f.settings();
  FUZZ_CHECK(f.file_bytes() == bytes.size(), "accepted a size other than the file's");
  FUZZ_CHECK(int(f.rects().size()) == s.num_frames, "one rect per frame");
  int read = 0, encoded = 0;
  for (int i = 0; i < s.num_frames && i < 8; ++i) {
    auto frame = f.ReadFrame(i);
    if (!frame.ok()) {
      FUZZ_CHECK_MESSAGE(frame.status());
      continue;
    }
    ++read;
    const lipsync::avatar::BackgroundFrame& bg = **frame;
    FUZZ_CHECK(bg.frame_width == s.width && bg.frame_height == s.height, "frame size");
    const auto& held = bg.pixels_rect;
    FUZZ_CHECK(held.x >= 0 && held.y >= 0 && held.x + held.width <= s.width &&
                   held.y + held.height <= s.height &&
                   bg.pixels.pixels.size() == size_t(held.width) * held.height * 3,
               "held pixels outside the frame");
    if (!bg.jpeg) continue;
    const lipsync::avatar::CropRect& r = f.rects()[size_t(i)];
    const lipsync::image::PixelRect changed{r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1};
    const lipsync::image::PixelRect read = bg.jpeg->ReadRect(changed);
    if (read.x < held.x || read.y < held.y || read.x + read.width > held.x + held.width ||
        read.y + read.height > held.y + held.height) {
      continue;  // the compositor would re-read the source for this one
    }
    auto rows = [&](int x0, int y) -> const uint8_t* {
      return bg.pixels.row(y - held.y) + size_t(x0 - held.x) * 3;
    };
    auto out = bg.jpeg->EncodeWithRegion(rows, changed);
    if (!out.ok()) FUZZ_CHECK_MESSAGE(out.status());
    encoded += out.ok();
  }
  if (lipsync::fuzz::Verbose()) {
    std::fprintf(stderr, "  opened: %d frames, %d read, %d region-encoded\n", s.num_frames, read,
                 encoded);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 1 << 20) return -1;
  std::vector<uint8_t> bytes(data, data + size);
  TryFile(bytes);
  FixChecksums(bytes);
  TryFile(bytes);
  return 0;
}
