// Internal to the auth library: small OpenSSL wrappers (SHA-256, base64 and base64url
// decoding, constant-time comparison). Pure functions, thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lipsync::auth::internal {

std::array<uint8_t, 32> Sha256(std::string_view data);
std::string Hex(const uint8_t* data, size_t size);
// 64 hex digits (either case) into 32 bytes; nullopt otherwise.
std::optional<std::array<uint8_t, 32>> ParseHex32(std::string_view hex);
// True when the 32-byte digests are equal; time does not depend on where they differ.
bool DigestEqual(const std::array<uint8_t, 32>& a, const std::array<uint8_t, 32>& b);

// Standard base64 (RFC 4648 section 4, padding optional) or base64url (section 5, no
// padding, as in JWTs). nullopt on any character outside the alphabet or a bad length.
std::optional<std::string> Base64Decode(std::string_view text);
std::optional<std::string> Base64UrlDecode(std::string_view text);

}  // namespace lipsync::auth::internal
