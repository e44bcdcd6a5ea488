// Internal to the auth library: verifies one JWT against the credentials file's keys.
// The header's `alg` is never trusted: the key is found by `kid`, the header's alg must
// equal the key's pinned alg, and the signature is then verified with OpenSSL by the
// key's own algorithm (RS256: RSASSA-PKCS1-v1_5, ES256: ECDSA P-256 R||S, HS256: HMAC
// compared in constant time); the header's alg never selects code. Keys are parsed
// once at load (libjwt 1.10 re-parses the PEM on every call, ~0.5 ms, and compares
// HMACs with strcmp). `exp` (required), `nbf`, `iss`, `aud` and `sub` (required)
// are checked here. Every input is bounded: the token (8 KiB), its JSON (depth 16).
// Pure function of its arguments; thread-safe.
#pragma once

#include <chrono>
#include <string_view>

#include "auth/authenticator.h"
#include "auth/credentials_file.h"

namespace lipsync::auth::internal {

inline constexpr size_t kMaxTokenBytes = 8192;

// True when `token` has the shape of a JWT (three base64url segments), so a bearer
// value that is not one is treated as an API key.
bool LooksLikeJwt(std::string_view token);

// The principal "jwt:<kid>:<sub>" with the token's tenants and scopes, or
// UNAUTHENTICATED saying what was wrong and what was expected.
Expected<Principal> VerifyJwt(std::string_view token, const JwtSettings& settings,
                              std::chrono::system_clock::time_point now,
                              std::chrono::seconds clock_skew);

// "2026-01-02T03:04:05Z".
std::string FormatUtc(double seconds_since_epoch);

}  // namespace lipsync::auth::internal
