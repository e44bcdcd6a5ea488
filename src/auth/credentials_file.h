// Internal to the auth library: the credentials file (YAML) parsed into an immutable
// value. Parsing is bounded (file <= 1 MiB, key files <= 64 KiB, counts and lengths
// capped) and strict: unknown keys and malformed entries are INVALID_ARGUMENT naming
// the file and the entry ("creds.yaml: api_keys[2] (acme): sha256: expected 64 hex
// digits"). Public key PEMs are parsed with OpenSSL here, once, so a bad key fails the
// load, never a call. Pure functions; the result is shared read-only between threads.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::auth::internal {

inline constexpr size_t kMaxCredentialsFileBytes = 1 << 20;
inline constexpr size_t kMaxKeyFileBytes = 64 << 10;
inline constexpr size_t kMinHmacSecretBytes = 32;

enum class JwtAlg : uint8_t { kRS256, kES256, kHS256 };
const char* JwtAlgName(JwtAlg alg);

// Who a credential lets in: its tenant patterns and scope bits (auth::Scope).
struct Grant {
  std::vector<std::string> tenants;
  uint8_t scopes = 0;
};

struct ApiKeyEntry {
  std::string id;
  std::array<uint8_t, 32> sha256{};
  Grant grant;
};

struct JwtKey {
  std::string kid;
  JwtAlg alg = JwtAlg::kRS256;
  // RS256/ES256: the public key, parsed once at load (RSA >= 2048 bits / EC P-256);
  // used read-only by many threads at once, which OpenSSL 3 allows.
  std::shared_ptr<EVP_PKEY> public_key;
  std::string secret;  // HS256: the raw secret bytes (>= 32)
};

struct JwtSettings {
  std::string issuer;    // required when keys are listed: `iss` must equal it
  std::string audience;  // required when keys are listed: `aud` must be or contain it
  std::string tenants_claim = "tenants";
  std::string scopes_claim = "scope";
  std::vector<JwtKey> keys;
};

struct CertEntry {
  std::string subject;
  Grant grant;
};

struct Credentials {
  std::vector<ApiKeyEntry> api_keys;
  JwtSettings jwt;
  std::vector<CertEntry> client_certificates;
};

// Reads and parses `path` (bounded). NOT_FOUND when it cannot be opened,
// INVALID_ARGUMENT when it is too large or malformed.
Expected<Credentials> LoadCredentialsFile(const std::string& path);

// Parses YAML text; `name` is used in messages, `base_dir` resolves relative
// public_key_file paths.
Expected<Credentials> ParseCredentials(std::string_view text, const std::string& name,
                                       const std::string& base_dir);

// Parses a scope name ("infer", "stream", "admin") into its bit; 0 when unknown.
uint8_t ScopeBit(std::string_view name);

// `text` cut to `max` bytes with non-printable bytes replaced by '?', for messages and ids.
std::string Bounded(std::string_view text, size_t max = 64);

// Reads at most `max_bytes` of a file. NOT_FOUND when it cannot be opened,
// INVALID_ARGUMENT when it is larger.
Expected<std::string> ReadFileBounded(const std::string& path, size_t max_bytes);

}  // namespace lipsync::auth::internal
