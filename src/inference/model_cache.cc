#include "inference/model_cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "inference/ort_runtime.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'L', 'S', 'O', 'P', 'T', 'v', '2', '\0'};
constexpr size_t kHeaderSize = 8 + 8 + 4 + 4;  // magic, payload size, CRC-32C, zero
constexpr int64_t kDefaultMaxBytes = int64_t{4} << 30;
constexpr size_t kChunk = size_t{1} << 20;
constexpr const char* kFormat = "lipsync optimized-graph cache v2, ORT_ENABLE_ALL";

using Digest = std::array<uint8_t, 32>;

std::string Hex(const uint8_t* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (ctx_) EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr);
  }
  void Update(const void* data, size_t n) {
    if (ctx_) EVP_DigestUpdate(ctx_.get(), data, n);
  }
  Digest Final() {
    Digest d{};
    unsigned int len = 0;
    if (ctx_) EVP_DigestFinal_ex(ctx_.get(), d.data(), &len);
    return d;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

// CRC-32C (Castagnoli): SSE4.2's crc32 instruction where the CPU has it (~6 ms for a
// 48 MB entry), a table otherwise; the same value either way.
uint32_t Crc32cTable(uint32_t crc, const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  return Crc32cTable(static_cast<uint32_t>(c), p, n);
}
#endif

uint32_t Crc32c(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return ~Crc32cSse42(~0u, p, n);
#endif
  return ~Crc32cTable(~0u, p, n);
}

uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// A read-only private mapping of a whole file (empty on failure).
struct Mapping {
  void* base = MAP_FAILED;
  size_t size = 0;
  Mapping(int fd, size_t n) : size(n) {
    if (n > 0) base = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  }
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, size);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  bool ok() const { return base != MAP_FAILED; }
  const uint8_t* bytes() const { return static_cast<const uint8_t*>(base); }
};

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Reads exactly n bytes at offset (pread loop). False on an error or a short file.
bool ReadAt(int fd, void* buf, size_t n, int64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t got = pread(fd, p, n, offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
    offset += got;
  }
  return true;
}

bool WriteAll(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t put = write(fd, p, n);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) return false;
    p += put;
    n -= static_cast<size_t>(put);
  }
  return true;
}

void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

ModelCache::ModelCache(std::string dir, int64_t max_entry_bytes, int64_t max_total_bytes)
    : dir_(std::move(dir)),
      max_entry_bytes_(max_entry_bytes > 0 ? max_entry_bytes : kDefaultMaxBytes),
      max_total_bytes_(std::max<int64_t>(max_total_bytes, 0)) {}

const std::string& ModelCache::CpuFeatures() {
  static const std::string features = [] {
    std::string out;
    struct utsname u {};
    if (uname(&u) == 0) out = u.machine;
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      // x86: "flags", ARM: "Features". The first processor's line is the set MLAS
      // dispatches on (all cores of one machine are alike).
      if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
        auto colon = line.find(':');
        if (colon != std::string::npos) out += line.substr(colon + 1);
        break;
      }
    }
    return out;
  }();
  return features;
}

Expected<std::string> ModelCache::KeyFor(const std::string& model_path,
                                         const std::string& provider) {
  Fd file(open(model_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) {
    return Status::NotFound("cannot open model file '" + model_path +
                            "' to hash it: " + ErrnoText());
  }
  struct stat st {};
  if (fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::FailedPrecondition("model file '" + model_path + "' is not a regular file");
  }
  if (st.st_size > max_entry_bytes_) {
    return Status::FailedPrecondition("model file '" + model_path + "' is " +
                                      std::to_string(st.st_size) + " bytes, over the cache's " +
                                      std::to_string(max_entry_bytes_) + " byte bound");
  }
  const FileIdentity identity{
      static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
      static_cast<int64_t>(st.st_size),
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
      static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
  std::string content;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = content_hashes_.find(identity);
    if (it != content_hashes_.end()) content = it->second;
  }
  if (content.empty()) {
    Sha256 sha;
    std::string buf(kChunk, '\0');
    int64_t offset = 0;
    while (offset < st.st_size) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(kChunk, st.st_size - offset));
      if (!ReadAt(file.fd, buf.data(), n, offset)) {
        return Status::FailedPrecondition("reading model file '" + model_path +
                                          "' to hash it failed at byte " + std::to_string(offset) +
                                          " (changed while read?)");
      }
      sha.Update(buf.data(), n);
      offset += static_cast<int64_t>(n);
    }
    const Digest d = sha.Final();
    content = Hex(d.data(), d.size());
    std::lock_guard<std::mutex> lock(mu_);
    if (content_hashes_.size() >= 100000) content_hashes_.clear();  // bounded
    content_hashes_[identity] = content;
  }
  const OrtRuntime* runtime = OrtRuntime::Get();
  const std::string parts = content + "\n" + provider + "\n" + CpuFeatures() + "\nort " +
                            (runtime ? runtime->version() : std::string("?")) + "\n" + kFormat;
  Sha256 key;
  key.Update(parts.data(), parts.size());
  const Digest d = key.Final();
  return Hex(d.data(), d.size());
}

std::string ModelCache::EntryPath(const std::string& key) const {
  return (fs::path(dir_) / (key + ".lsoc")).string();
}

Expected<std::string> ModelCache::TempPath() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    return Status::FailedPrecondition("cannot create model_cache_dir '" + dir_ +
                                      "': " + ec.message());
  }
  return (fs::path(dir_) / (".tmp-" + std::to_string(getpid()) + "-" +
                            std::to_string(temp_counter_.fetch_add(1)) + ".onnx"))
      .string();
}

ModelCache::Entry::~Entry() {
  if (base_) munmap(base_, mapped_);
}

ModelCache::Entry::Entry(Entry&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      size_(std::exchange(other.size_, 0)) {}

ModelCache::Entry& ModelCache::Entry::operator=(Entry&& other) noexcept {
  if (this != &other) {
    if (base_) munmap(base_, mapped_);
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

const void* ModelCache::Entry::data() const {
  return base_ ? static_cast<const uint8_t*>(base_) + kHeaderSize : nullptr;
}

Expected<ModelCache::Entry> ModelCache::Read(const std::string& key) {
  const std::string path = EntryPath(key);
  Fd file(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (file.fd < 0) {
    ++misses_;
    return Status::NotFound("no cache entry '" + path + "'");
  }
  auto corrupt = [&](const std::string& what) -> Status {
    ++corrupt_;
    ++misses_;
    std::error_code ec;
    fs::remove(path, ec);
    return Status::FailedPrecondition("model cache entry '" + path + "' " + what +
                                      "; removed, the model is loaded from its source and the "
                                      "entry rebuilt");
  };
  struct stat st {};
  if (fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) return corrupt("is not a regular file");
  uint8_t header[kHeaderSize];
  if (st.st_size < static_cast<off_t>(kHeaderSize) || !ReadAt(file.fd, header, kHeaderSize, 0)) {
    return corrupt("is shorter than its " + std::to_string(kHeaderSize) + "-byte header");
  }
  if (std::memcmp(header, kMagic, sizeof(kMagic)) != 0) {
    return corrupt("does not start with the cache magic (expected LSOPTv2)");
  }
  const uint64_t size = GetU64(header + 8);
  // The size is checked against the file before mapping it: the mapping never reaches
  // past the end of the file (no SIGBUS). Entries are only ever replaced by rename,
  // never truncated in place, so a mapped entry keeps its size.
  if (size == 0 || size > static_cast<uint64_t>(max_entry_bytes_) ||
      static_cast<uint64_t>(st.st_size) != kHeaderSize + size) {
    return corrupt("is " + std::to_string(st.st_size) + " bytes but its header says " +
                   std::to_string(kHeaderSize) + " + " + std::to_string(size) +
                   " (truncated or appended to)");
  }
  Entry entry;
  void* base = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE,
                    file.fd, 0);
  if (base == MAP_FAILED) return corrupt("cannot be mapped (" + ErrnoText() + ")");
  entry.base_ = base;
  entry.mapped_ = static_cast<size_t>(st.st_size);
  entry.size_ = static_cast<size_t>(size);
  if (Crc32c(entry.data(), entry.size()) != GetU32(header + 16)) {
    return corrupt("fails its CRC-32C checksum");
  }
  ++hits_;
  if (max_total_bytes_ > 0) futimens(file.fd, nullptr);  // used now (LRU); best effort
  return entry;
}

Status ModelCache::Commit(const std::string& key, const std::string& raw_path) {
  struct RemoveRaw {
    const std::string& path;
    ~RemoveRaw() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } remove_raw{raw_path};
  Fd raw(open(raw_path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (raw.fd < 0 || fstat(raw.fd, &st) != 0) {
    return Status::Internal("ONNX Runtime wrote no optimized model at '" + raw_path + "'");
  }
  if (st.st_size <= 0 || st.st_size > max_entry_bytes_) {
    return Status::FailedPrecondition("optimized model '" + raw_path + "' is " +
                                      std::to_string(st.st_size) + " bytes; not cached");
  }
  const Mapping payload(raw.fd, static_cast<size_t>(st.st_size));
  if (!payload.ok()) {
    return Status::Internal("cannot map the optimized model '" + raw_path + "': " + ErrnoText());
  }
  uint8_t header[kHeaderSize] = {};
  std::memcpy(header, kMagic, sizeof(kMagic));
  PutU64(header + 8, payload.size);
  PutU32(header + 16, Crc32c(payload.bytes(), payload.size));

  const std::string final_path = EntryPath(key);
  const std::string temp = raw_path + ".entry";
  {
    Fd out(open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    bool ok = out.fd >= 0 && WriteAll(out.fd, header, kHeaderSize) &&
              WriteAll(out.fd, payload.bytes(), payload.size);
    if (!ok) {
      Status st = Status::Internal("cannot write model cache entry '" + temp + "': " + ErrnoText());
      std::error_code ec;
      fs::remove(temp, ec);
      return st;
    }
  }
  if (rename(temp.c_str(), final_path.c_str()) != 0) {
    Status st =
        Status::Internal("cannot rename '" + temp + "' to '" + final_path + "': " + ErrnoText());
    std::error_code ec;
    fs::remove(temp, ec);
    return st;
  }
  ++writes_;
  Trim(key);
  return Status::Ok();
}

void ModelCache::Discard(const std::string& key) {
  std::error_code ec;
  fs::remove(EntryPath(key), ec);
}

int ModelCache::Trim(const std::string& keep) {
  if (max_total_bytes_ <= 0) return 0;
  std::lock_guard<std::mutex> lock(trim_mu_);
  struct Found {
    int64_t used_ns;
    int64_t bytes;
    std::string path;
  };
  std::vector<Found> entries;
  int64_t total = 0;
  const std::string kept = keep.empty() ? std::string() : keep + ".lsoc";
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < 5 || name.compare(name.size() - 5, 5, ".lsoc") != 0) continue;
    struct stat st {};
    if (stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    total += st.st_size;
    if (name == kept) continue;
    entries.push_back({static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                       static_cast<int64_t>(st.st_size), it->path().string()});
  }
  if (total <= max_total_bytes_) return 0;
  std::sort(entries.begin(), entries.end(), [](const Found& a, const Found& b) {
    return a.used_ns != b.used_ns ? a.used_ns < b.used_ns : a.path < b.path;
  });
  int removed = 0;
  for (const Found& entry : entries) {
    if (total <= max_total_bytes_) break;
    if (unlink(entry.path.c_str()) != 0) continue;  // already gone (another process)
    total -= entry.bytes;
    ++removed;
  }
  evictions_ += removed;
  return removed;
}

}  // namespace lipsync::inference
