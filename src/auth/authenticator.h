// Who is calling, and what they may do: the one authentication library used by both
// gRPC servers and the live session's WebSocket front.
//
// A credential is one of:
//  - an API key, sent as "Bearer <key>"; only its SHA-256 is stored (credentials file);
//  - a JWT, sent as "Bearer <jwt>", signed with a key found by the header's `kid` in the
//    credentials file. Each key is pinned to one algorithm (RS256, ES256 or HS256): the
//    header's `alg` must equal the key's, so `none` and HS/RS confusion never verify.
//    The signature is verified with OpenSSL by the key's own algorithm (keys parsed
//    once at load); `exp`, `nbf`, `iss`, `aud` and `sub` are then checked here (with
//    a small clock skew);
//  - a TLS client certificate's subject (mTLS), matched against the file's list.
// Each credential names the tenants it may use (exact ids or glob patterns such as
// "acme-*" or "*") and its scopes (infer, stream, admin).
//
// With no credentials file and no legacy key, authentication is off: every caller is
// the anonymous principal with every tenant and scope (the local demo).
//
// Thread-safe. The credentials file is re-read by a background thread when it changes
// (checked every reload_interval); a file that fails to parse keeps the previous
// credentials and is logged. Authenticate never does file I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::auth {

enum class Scope : uint8_t { kInfer = 1, kStream = 2, kAdmin = 4 };
const char* ScopeName(Scope scope);

// What a verified caller may do. Copyable value; holds no secret.
struct Principal {
  std::string id;  // for audit and rate limits: "key:<id>", "jwt:<kid>:<sub>", "cert:<subject>",
                   // "anonymous"
  uint8_t scopes = 0;                        // bit set of Scope
  std::vector<std::string> tenant_patterns;  // "*" matches every tenant

  bool Has(Scope scope) const { return (scopes & static_cast<uint8_t>(scope)) != 0; }
  // True when `model_id` matches one of tenant_patterns (glob: '*' any run, '?' one char).
  bool MayUse(std::string_view model_id) const;
  // OK, or PERMISSION_DENIED naming the principal and what it lacks.
  Status Require(Scope scope) const;
  Status RequireTenant(std::string_view model_id) const;
};

// True when `text` matches the glob `pattern` ('*' any run, '?' one character).
bool GlobMatch(std::string_view pattern, std::string_view text);

struct AuthOptions {
  std::string credentials_file;  // empty: no file
  std::string legacy_api_key;    // server.api_key: one key with every tenant and scope
  std::chrono::milliseconds reload_interval{5000};
  std::chrono::seconds clock_skew{30};  // leeway for exp/nbf
  // Wall clock for exp/nbf (tests inject one).
  std::function<std::chrono::system_clock::time_point()> now = [] {
    return std::chrono::system_clock::now();
  };
};

class Authenticator {
 public:
  // Reads the credentials file (format: deploy/credentials.example.yaml) and, when
  // options.reload_interval > 0, starts the thread that re-reads it on change.
  // INVALID_ARGUMENT naming the file and the entry when it is malformed (unknown
  // algorithm or key, bad key PEM, a hash that is not 64 hex digits, over 1 MiB...),
  // NOT_FOUND when it is missing.
  static Expected<std::unique_ptr<Authenticator>> Create(AuthOptions options);
  ~Authenticator();  // stops the reload thread

  // False when authentication is off (no file, no legacy key).
  bool enabled() const;

  // Verifies one call's credential. `authorization` is the value of the
  // "authorization" metadata (or the WebSocket session's first message): "Bearer
  // <api key or JWT>" (scheme case-insensitive, at most 8 KiB), or empty.
  // `cert_subject` is the verified TLS client certificate's subject (compared exactly
  // with the file's entries), or empty. A non-empty `authorization` is what counts: a
  // bad one fails even with a listed certificate. UNAUTHENTICATED, saying what was
  // wrong and what was expected (never echoing the secret; quoted values truncated),
  // when nothing valid is presented. No file I/O; no lock held beyond copying a
  // shared_ptr to the current immutable credentials.
  Expected<Principal> Authenticate(std::string_view authorization,
                                   std::string_view cert_subject) const;

  // Re-reads the credentials file now (tests, SIGHUP). On error the old credentials
  // stay in force, the error is logged and returned. OK when there is no file.
  Status Reload();

 private:
  struct Store;
  explicit Authenticator(AuthOptions options);
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Lower-case hex SHA-256 of `key`: what the credentials file stores for an API key.
std::string HashApiKey(std::string_view key);

}  // namespace lipsync::auth
