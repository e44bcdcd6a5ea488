#include "auth/authenticator.h"

#include <sys/stat.h>

#include <array>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "auth/credentials_file.h"
#include "auth/crypto_util.h"
#include "auth/jwt_verifier.h"
#include "common/log.h"

namespace lipsync::auth {

using internal::Bounded;

const char* ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kInfer:
      return "infer";
    case Scope::kStream:
      return "stream";
    case Scope::kAdmin:
      return "admin";
  }
  return "?";
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Iterative matcher with one backtrack point: O(|pattern| * |text|) at worst.
  size_t p = 0, t = 0;
  size_t star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool Principal::MayUse(std::string_view model_id) const {
  for (const auto& pattern : tenant_patterns) {
    if (GlobMatch(pattern, model_id)) return true;
  }
  return false;
}

Status Principal::Require(Scope scope) const {
  if (Has(scope)) return Status::Ok();
  std::string held;
  for (Scope s : {Scope::kInfer, Scope::kStream, Scope::kAdmin}) {
    if (Has(s)) held += std::string(held.empty() ? "" : ", ") + ScopeName(s);
  }
  return Status::PermissionDenied("credential '" + Bounded(id, 200) + "' lacks scope '" +
                                  ScopeName(scope) + "' (has: " + (held.empty() ? "none" : held) +
                                  ")");
}

Status Principal::RequireTenant(std::string_view model_id) const {
  if (MayUse(model_id)) return Status::Ok();
  std::string patterns;
  for (const auto& p : tenant_patterns) {
    if (patterns.size() > 200) {
      patterns += ", ...";
      break;
    }
    patterns += (patterns.empty() ? "" : ", ") + Bounded(p, 64);
  }
  return Status::PermissionDenied(
      "credential '" + Bounded(id, 200) + "' may not use tenant '" + Bounded(model_id, 128) +
      "'; expected one matching its tenants (" + (patterns.empty() ? "none" : patterns) + ")");
}

std::string HashApiKey(std::string_view key) {
  auto digest = internal::Sha256(key);
  return internal::Hex(digest.data(), digest.size());
}

// Immutable once built; shared by every caller through a shared_ptr.
struct Authenticator::Store {
  internal::Credentials credentials;
  // What the file looked like when read (reload when either changes).
  int64_t mtime_ns = -1;
  int64_t size = -1;
};

namespace {

struct FileStamp {
  int64_t mtime_ns = -1;
  int64_t size = -1;
  bool operator==(const FileStamp&) const = default;
};

FileStamp Stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
          static_cast<int64_t>(st.st_size)};
}

Principal FullAccess(std::string id) {
  Principal p;
  p.id = std::move(id);
  p.scopes = static_cast<uint8_t>(Scope::kInfer) | static_cast<uint8_t>(Scope::kStream) |
             static_cast<uint8_t>(Scope::kAdmin);
  p.tenant_patterns = {"*"};
  return p;
}

Principal FromGrant(std::string id, const internal::Grant& grant) {
  Principal p;
  p.id = std::move(id);
  p.scopes = grant.scopes;
  p.tenant_patterns = grant.tenants;
  return p;
}

// "Bearer <credential>" (scheme case-insensitive); nullopt for another shape.
std::optional<std::string_view> BearerValue(std::string_view header) {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kScheme[i]) return std::nullopt;
  }
  std::string_view value = header.substr(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  return value;
}

}  // namespace

class Authenticator::Impl {
 public:
  explicit Impl(AuthOptions options) : options_(std::move(options)) {
    if (!options_.legacy_api_key.empty()) {
      legacy_hash_ = internal::Sha256(options_.legacy_api_key);
      has_legacy_ = true;
    }
  }

  ~Impl() { StopThread(); }

  Status LoadNow() {
    if (options_.credentials_file.empty()) return Status::Ok();
    std::lock_guard<std::mutex> load_lock(load_mu_);  // one parse at a time, in order
    FileStamp stamp = Stamp(options_.credentials_file);
    Expected<internal::Credentials> creds = Status::Internal("not read");
    try {
      creds = internal::LoadCredentialsFile(options_.credentials_file);
    } catch (const std::exception& e) {  // allocation failure: nothing escapes the library
      creds = Status::Internal("reading " + options_.credentials_file + ": " + e.what());
    }
    {
      std::lock_guard<std::mutex> lock(reload_mu_);
      // Remember the attempt so a broken file is not re-parsed every poll.
      last_stamp_ = stamp;
    }
    if (!creds.ok()) return creds.status();
    auto store = std::make_shared<Store>();
    store->credentials = std::move(creds.value());
    store->mtime_ns = stamp.mtime_ns;
    store->size = stamp.size;
    size_t keys = store->credentials.api_keys.size();
    size_t jwt_keys = store->credentials.jwt.keys.size();
    size_t certs = store->credentials.client_certificates.size();
    {
      std::lock_guard<std::mutex> lock(store_mu_);
      store_ = std::move(store);
    }
    LOG_INFO("auth: loaded %s: %zu api keys, %zu jwt keys, %zu client certificates",
             options_.credentials_file.c_str(), keys, jwt_keys, certs);
    if (keys + jwt_keys + certs == 0 && !has_legacy_) {
      LOG_WARN("auth: %s lists no credentials: every call will be UNAUTHENTICATED",
               options_.credentials_file.c_str());
    }
    return Status::Ok();
  }

  void StartThread() {
    if (options_.credentials_file.empty() || options_.reload_interval.count() <= 0) return;
    thread_ = std::thread([this] { PollLoop(); });
  }

  void StopThread() {
    {
      std::lock_guard<std::mutex> lock(reload_mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::shared_ptr<const Store> store() const {
    std::lock_guard<std::mutex> lock(store_mu_);
    return store_;
  }

  bool enabled() const { return !options_.credentials_file.empty() || has_legacy_; }

  Expected<Principal> Authenticate(std::string_view authorization,
                                   std::string_view cert_subject) const {
    if (!enabled()) return FullAccess("anonymous");
    std::shared_ptr<const Store> store = this->store();
    if (!authorization.empty()) return FromBearer(authorization, store.get());
    if (!cert_subject.empty()) return FromCertificate(cert_subject, store.get());
    return Status::Unauthenticated(
        "missing credential; expected metadata 'authorization: Bearer <api key or JWT>' or a "
        "listed TLS client certificate");
  }

 private:
  Expected<Principal> FromBearer(std::string_view authorization, const Store* store) const {
    auto value = BearerValue(authorization);
    if (!value || value->empty()) {
      return Status::Unauthenticated(
          "malformed 'authorization' metadata; expected 'Bearer <api key or JWT>'");
    }
    if (value->size() > internal::kMaxTokenBytes) {
      return Status::Unauthenticated("credential is " + std::to_string(value->size()) +
                                     " bytes; expected an API key or JWT of at most " +
                                     std::to_string(internal::kMaxTokenBytes) + " bytes");
    }
    // API keys: compare digests in constant time, all of them (no early exit).
    auto digest = internal::Sha256(*value);
    const internal::ApiKeyEntry* match = nullptr;
    if (store != nullptr) {
      for (const auto& entry : store->credentials.api_keys) {
        if (internal::DigestEqual(entry.sha256, digest)) match = &entry;
      }
    }
    if (match != nullptr) return FromGrant("key:" + match->id, match->grant);
    if (has_legacy_ && internal::DigestEqual(legacy_hash_, digest)) {
      return FullAccess("key:api_key");
    }
    if (internal::LooksLikeJwt(*value)) {
      if (store == nullptr || store->credentials.jwt.keys.empty()) {
        return Status::Unauthenticated(
            "bearer value looks like a JWT but no JWT keys are configured; expected an API key");
      }
      try {
        return internal::VerifyJwt(*value, store->credentials.jwt, options_.now(),
                                   options_.clock_skew);
      } catch (const std::exception& e) {
        return Status::Unauthenticated(std::string("token could not be read (") +
                                       Bounded(e.what(), 100) + "); expected a valid JWT");
      }
    }
    return Status::Unauthenticated(
        "unknown API key (" + std::to_string(value->size()) +
        " bytes, not shown); expected a key whose SHA-256 is listed in the credentials file" +
        (has_legacy_ ? std::string(" or server.api_key") : std::string()));
  }

  Expected<Principal> FromCertificate(std::string_view subject, const Store* store) const {
    if (store != nullptr) {
      for (const auto& entry : store->credentials.client_certificates) {
        if (entry.subject == subject)
          return FromGrant("cert:" + Bounded(subject, 200), entry.grant);
      }
    }
    return Status::Unauthenticated("client certificate subject '" + Bounded(subject, 200) +
                                   "' is not listed in the credentials file; expected a listed "
                                   "subject or an 'authorization: Bearer' credential");
  }

  void PollLoop() {
    std::unique_lock<std::mutex> lock(reload_mu_);
    while (!stopping_) {
      cv_.wait_for(lock, options_.reload_interval, [this] { return stopping_; });
      if (stopping_) break;
      FileStamp stamp = Stamp(options_.credentials_file);
      if (stamp == last_stamp_) continue;
      lock.unlock();
      Status st = LoadNow();
      if (!st.ok()) {
        LOG_ERROR("auth: reloading %s failed, keeping the previous credentials: %s",
                  options_.credentials_file.c_str(), st.ToString().c_str());
      }
      lock.lock();
    }
  }

  const AuthOptions options_;
  bool has_legacy_ = false;
  std::array<uint8_t, 32> legacy_hash_{};

  mutable std::mutex store_mu_;  // guards store_ (the pointer only)
  std::shared_ptr<const Store> store_;

  std::mutex load_mu_;    // serializes LoadNow (poll thread and Reload())
  std::mutex reload_mu_;  // guards last_stamp_, stopping_
  std::condition_variable cv_;
  FileStamp last_stamp_;
  bool stopping_ = false;
  std::thread thread_;
};

Authenticator::Authenticator(AuthOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

Authenticator::~Authenticator() = default;

Expected<std::unique_ptr<Authenticator>> Authenticator::Create(AuthOptions options) {
  std::string file = options.credentials_file;
  std::unique_ptr<Authenticator> auth(new Authenticator(std::move(options)));
  if (!file.empty()) {
    LIPSYNC_RETURN_IF_ERROR(auth->impl_->LoadNow());
    auth->impl_->StartThread();
  }
  return auth;
}

bool Authenticator::enabled() const { return impl_->enabled(); }

Expected<Principal> Authenticator::Authenticate(std::string_view authorization,
                                                std::string_view cert_subject) const {
  return impl_->Authenticate(authorization, cert_subject);
}

Status Authenticator::Reload() {
  if (!impl_) return Status::Ok();
  Status st = impl_->LoadNow();
  if (!st.ok()) {
    LOG_ERROR("auth: reloading failed, keeping the previous credentials: %s",
              st.ToString().c_str());
  }
  return st;
}

}  // namespace lipsync::auth
