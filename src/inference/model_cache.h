// The optimized-graph cache: ONNX Runtime's optimized model (graph optimizations at
// ORT_ENABLE_ALL, NCHWc layout included) saved once per source model and loaded with
// optimizations off next time, which skips most of session creation.
//
// An optimized graph is valid only for the ORT build, execution provider and CPU that
// made it, so an entry's key is SHA-256 over: the source file's content hash, the ORT
// version, the provider label, the CPU's feature flags, the optimization level and this
// cache's format version. Identical model files (hard links, copies) share one entry.
//
// Layout: <dir>/<key>.lsoc, each file a 24-byte header (magic "LSOPTv2", payload size,
// CRC-32C of the payload) and the optimized ONNX model. Written atomically (temp file +
// rename; concurrent writers of one key, in one or several processes, each rename a
// complete file; entries are never truncated or rewritten in place). The folder
// belongs to the server, but an entry is still checked before use: a file whose size
// disagrees with its header (checked before it is mapped, so the mapping never passes
// the end of the file) or whose payload fails the checksum is reported (with its
// path), removed and rebuilt from the source model. The checksum catches torn or
// damaged files, not an attacker who can write the folder (nothing unkeyed could).
//
// Content hashes (SHA-256: a tenant must not be able to make its model's key collide
// with another's) are remembered per file identity (device, inode, size, mtime, ctime),
// so a model evicted and loaded again, or many tenants hard-linked to one file, are
// hashed once per process. Disk use: about one source model's size per distinct model,
// bounded by `max_total_bytes` (inference.model_cache_max_mb): a hit marks its entry
// used (its mtime), and after each new entry is written the least recently used
// entries are removed until the folder fits. The sweep (a directory scan, stats and
// unlinks) runs on the writing thread, which holds no registry lock (the loader runs
// with the registry unlocked); a removed entry still mapped by a loading session stays
// readable until unmapped, and a later load of it is a miss that rebuilds it.
//
// Thread-safe: any number of threads may call every method at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/status.h"

namespace lipsync::inference {

class ModelCache {
 public:
  // `dir` is created (with parents) on first write. `max_entry_bytes` bounds what is
  // read from an entry or a source model (0 = 4 GiB).
  // `max_total_bytes` caps the entries' total size (0 = no cap).
  explicit ModelCache(std::string dir, int64_t max_entry_bytes = 0, int64_t max_total_bytes = 0);

  const std::string& dir() const { return dir_; }

  // The entry key for the model at `model_path` under `provider` (e.g. "cpu",
  // "cuda:<gpu name>"): 64 hex digits. NOT_FOUND / FAILED_PRECONDITION when the file
  // cannot be read or is over the size bound.
  Expected<std::string> KeyFor(const std::string& model_path, const std::string& provider);
  std::string EntryPath(const std::string& key) const;
  // A fresh temp path in dir() for ORT to write the raw optimized model to (dir() is
  // created). Commit or remove it.
  Expected<std::string> TempPath();

  // A verified entry: the optimized model's bytes, mapped read-only (no copy) until
  // the Entry is destroyed. Move-only.
  class Entry {
   public:
    Entry() = default;
    ~Entry();
    Entry(Entry&& other) noexcept;
    Entry& operator=(Entry&& other) noexcept;
    const void* data() const;
    size_t size() const { return size_; }

   private:
    friend class ModelCache;
    void* base_ = nullptr;
    size_t mapped_ = 0;
    size_t size_ = 0;
  };

  // The verified optimized model of `key`. NOT_FOUND when there is no entry;
  // FAILED_PRECONDITION (naming the file and what was wrong) when it is truncated or
  // corrupt; the entry is removed then, so the caller rebuilds it.
  Expected<Entry> Read(const std::string& key);
  // Wraps the raw optimized model ORT wrote at `raw_path` into the entry for `key`
  // (temp + rename) and removes `raw_path` in every case.
  Status Commit(const std::string& key, const std::string& raw_path);
  // Removes the entry of `key` (an entry ORT refused to load).
  void Discard(const std::string& key);
  // Removes least recently used entries (oldest mtime first, never `keep`) until the
  // entries' total size is at most max_total_bytes; returns how many were removed.
  // Commit calls it; a no-op without a cap.
  int Trim(const std::string& keep = "");

  // Counters since construction.
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  int64_t corrupt() const { return corrupt_; }
  int64_t writes() const { return writes_; }
  int64_t evictions() const { return evictions_; }

  // The CPU's feature flags as the key uses them ("x86_64 avx2 fma ...").
  static const std::string& CpuFeatures();

 private:
  using FileIdentity = std::tuple<uint64_t, uint64_t, int64_t, int64_t, int64_t>;
  const std::string dir_;
  const int64_t max_entry_bytes_;
  const int64_t max_total_bytes_;
  std::mutex trim_mu_;  // one sweep at a time (never held with mu_ or by a request)
  std::mutex mu_;       // guards content_hashes_ (held only for map look-ups)
  std::map<FileIdentity, std::string> content_hashes_;
  std::atomic<int64_t> hits_{0}, misses_{0}, corrupt_{0}, writes_{0}, evictions_{0},
      temp_counter_{0};
};

}  // namespace lipsync::inference
