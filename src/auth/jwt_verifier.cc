#include "auth/jwt_verifier.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "auth/crypto_util.h"

namespace lipsync::auth::internal {
namespace {

using nlohmann::json;

constexpr size_t kMaxHeaderBytes = 1024;  // decoded JOSE header
constexpr int kMaxJsonDepth = 16;
constexpr size_t kMaxClaimTenants = 1000;
constexpr size_t kMaxSubBytes = 128;  // in the principal id

Status Unauth(const std::string& message) { return Status::Unauthenticated(message); }

bool IsBase64Url(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Nesting depth of JSON text (brackets outside strings); stops counting past `limit`.
bool DepthWithin(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escape = false;
  for (char c : text) {
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// A JSON object from base64url text, bounded in size and depth; nullopt otherwise.
std::optional<json> DecodeObject(std::string_view segment, size_t max_bytes) {
  if (segment.size() > max_bytes * 4 / 3 + 4) return std::nullopt;
  auto text = Base64UrlDecode(segment);
  if (!text || text->size() > max_bytes || !DepthWithin(*text, kMaxJsonDepth)) return std::nullopt;
  json parsed = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
  return parsed;
}

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};

bool DigestVerify(EVP_PKEY* key, std::string_view input, const unsigned char* sig, size_t sig_len) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), sig, sig_len,
                          reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
}

// RFC 7518 section 3: RS256 = RSASSA-PKCS1-v1_5 with SHA-256; ES256 = ECDSA P-256 with
// SHA-256, signature R||S (32 bytes each); HS256 = HMAC-SHA-256, compared in constant time.
bool VerifySignature(const JwtKey& key, std::string_view signing_input,
                     const std::string& signature) {
  const auto* sig = reinterpret_cast<const unsigned char*>(signature.data());
  switch (key.alg) {
    case JwtAlg::kRS256:
      return key.public_key &&
             DigestVerify(key.public_key.get(), signing_input, sig, signature.size());
    case JwtAlg::kES256: {
      if (!key.public_key || signature.size() != 64) return false;
      std::unique_ptr<ECDSA_SIG, EcdsaSigFree> ecdsa(ECDSA_SIG_new());
      BIGNUM* r = BN_bin2bn(sig, 32, nullptr);
      BIGNUM* s = BN_bin2bn(sig + 32, 32, nullptr);
      if (!ecdsa || r == nullptr || s == nullptr || ECDSA_SIG_set0(ecdsa.get(), r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return false;
      }
      unsigned char* der = nullptr;
      int der_len = i2d_ECDSA_SIG(ecdsa.get(), &der);
      if (der_len <= 0) return false;
      bool ok =
          DigestVerify(key.public_key.get(), signing_input, der, static_cast<size_t>(der_len));
      OPENSSL_free(der);
      return ok;
    }
    case JwtAlg::kHS256: {
      if (key.secret.empty() || signature.size() != 32) return false;
      unsigned char mac[EVP_MAX_MD_SIZE];
      unsigned int mac_len = 0;
      if (HMAC(EVP_sha256(), key.secret.data(), static_cast<int>(key.secret.size()),
               reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(),
               mac, &mac_len) == nullptr ||
          mac_len != 32) {
        return false;
      }
      return CRYPTO_memcmp(mac, sig, 32) == 0;
    }
  }
  return false;
}

// A NumericDate claim (RFC 7519: seconds since the epoch, integer or not).
std::optional<double> NumericDate(const json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

bool Printable(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

std::string FormatUtc(double seconds) {
  if (!(seconds > -1e11 && seconds < 1e11)) return seconds > 0 ? "far future" : "far past";
  std::time_t t = static_cast<std::time_t>(std::floor(seconds));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool LooksLikeJwt(std::string_view token) {
  size_t first = token.find('.');
  if (first == std::string_view::npos) return false;
  size_t second = token.find('.', first + 1);
  if (second == std::string_view::npos) return false;
  if (token.find('.', second + 1) != std::string_view::npos) return false;
  return first > 0 && IsBase64Url(token.substr(0, first)) &&
         IsBase64Url(token.substr(first + 1, second - first - 1)) &&
         IsBase64Url(token.substr(second + 1));
}

Expected<Principal> VerifyJwt(std::string_view token, const JwtSettings& settings,
                              std::chrono::system_clock::time_point now,
                              std::chrono::seconds clock_skew) {
  if (token.size() > kMaxTokenBytes) {
    return Unauth("token is " + std::to_string(token.size()) +
                  " bytes; expected a JWT of at most " + std::to_string(kMaxTokenBytes) + " bytes");
  }
  if (!LooksLikeJwt(token)) {
    return Unauth("malformed token; expected a JWT: three base64url segments joined by '.'");
  }
  size_t first = token.find('.');
  size_t second = token.find('.', first + 1);
  std::string_view header_b64 = token.substr(0, first);
  std::string_view payload_b64 = token.substr(first + 1, second - first - 1);
  std::string_view signature_b64 = token.substr(second + 1);

  auto header = DecodeObject(header_b64, kMaxHeaderBytes);
  if (!header) {
    return Unauth("malformed token header; expected base64url of a small flat JSON object");
  }
  auto alg_it = header->find("alg");
  if (alg_it == header->end() || !alg_it->is_string()) {
    return Unauth("token header has no 'alg'; expected RS256, ES256 or HS256");
  }
  const std::string header_alg = alg_it->get<std::string>();
  std::string lower_alg;
  for (char c : header_alg) lower_alg.push_back(static_cast<char>(std::tolower(c)));
  if (lower_alg == "none") {
    return Unauth(
        "token alg 'none' (unsigned) is never accepted; expected a token signed with a "
        "key from the credentials file");
  }
  auto kid_it = header->find("kid");
  if (kid_it == header->end() || !kid_it->is_string()) {
    return Unauth("token header has no 'kid'; expected the id of a key in the credentials file");
  }
  const std::string kid = kid_it->get<std::string>();
  const JwtKey* key = nullptr;
  for (const auto& k : settings.keys) {
    if (k.kid == kid) key = &k;
  }
  if (key == nullptr) {
    return Unauth("unknown key id '" + Bounded(kid) +
                  "'; expected the kid of a key listed under jwt.keys in the credentials file");
  }
  if (header_alg != JwtAlgName(key->alg)) {
    return Unauth("token alg '" + Bounded(header_alg, 16) + "' does not match key '" +
                  Bounded(kid) + "' (" + JwtAlgName(key->alg) + ")");
  }
  if (signature_b64.empty()) {
    return Unauth("token has no signature; expected one made with key '" + Bounded(kid) + "'");
  }
  auto payload_text = Base64UrlDecode(payload_b64);
  if (!payload_text || !DepthWithin(*payload_text, kMaxJsonDepth)) {
    return Unauth("malformed token payload; expected base64url of a JSON object nested at most " +
                  std::to_string(kMaxJsonDepth) + " deep");
  }
  json claims = json::parse(*payload_text, nullptr, /*allow_exceptions=*/false);
  if (claims.is_discarded() || !claims.is_object()) {
    return Unauth("malformed token payload; expected a JSON object of claims");
  }

  // The signature, by OpenSSL, with the key the kid names and that key's pinned alg
  // (the header only had to agree with it).
  auto signature = Base64UrlDecode(signature_b64);
  if (!signature || !VerifySignature(*key, token.substr(0, second), *signature)) {
    return Unauth("token signature does not verify with key '" + Bounded(kid) + "' (" +
                  JwtAlgName(key->alg) + "); expected a token signed by that key");
  }

  // Claims: ours to check on top of the verified signature.
  const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  const double skew = static_cast<double>(clock_skew.count());
  auto exp = NumericDate(claims, "exp");
  if (!exp) {
    return Unauth("token has no numeric 'exp'; expected an expiry time (seconds since 1970)");
  }
  if (now_s > *exp + skew) {
    return Unauth("token expired at " + FormatUtc(*exp) + " (now " + FormatUtc(now_s) +
                  "); expected a current token");
  }
  if (claims.contains("nbf")) {
    auto nbf = NumericDate(claims, "nbf");
    if (!nbf) return Unauth("token 'nbf' is not a number; expected seconds since 1970");
    if (now_s + skew < *nbf) {
      return Unauth("token not valid before " + FormatUtc(*nbf) + " (now " + FormatUtc(now_s) +
                    "); expected a token that is already valid");
    }
  }
  auto iss = claims.find("iss");
  if (iss == claims.end() || !iss->is_string() || iss->get<std::string>() != settings.issuer) {
    std::string got = iss != claims.end() && iss->is_string()
                          ? "'" + Bounded(iss->get<std::string>()) + "'"
                          : std::string("none");
    return Unauth("token issuer " + got + " is not the expected '" + Bounded(settings.issuer) +
                  "'");
  }
  auto aud = claims.find("aud");
  bool aud_ok = false;
  if (aud != claims.end()) {
    if (aud->is_string()) {
      aud_ok = aud->get<std::string>() == settings.audience;
    } else if (aud->is_array()) {
      for (const auto& a : *aud) aud_ok = aud_ok || (a.is_string() && a == settings.audience);
    }
  }
  if (!aud_ok) {
    std::string got =
        aud != claims.end() && aud->is_string()
            ? "'" + Bounded(aud->get<std::string>()) + "'"
            : (aud != claims.end() ? std::string("a list without it") : std::string("none"));
    return Unauth("token audience " + got + " is not the expected '" + Bounded(settings.audience) +
                  "'");
  }
  auto sub = claims.find("sub");
  if (sub == claims.end() || !sub->is_string() || sub->get<std::string>().empty()) {
    return Unauth("token has no 'sub'; expected the caller's subject (used in the audit log)");
  }

  Principal principal;
  principal.id = "jwt:" + Bounded(kid) + ":" + Bounded(sub->get<std::string>(), kMaxSubBytes);
  auto tenants = claims.find(settings.tenants_claim);
  if (tenants != claims.end()) {
    auto add = [&](const json& t) -> bool {
      if (!t.is_string()) return false;
      const std::string& s = t.get_ref<const std::string&>();
      if (s.empty() || s.size() > 256 || !Printable(s)) return false;
      principal.tenant_patterns.push_back(s);
      return true;
    };
    bool ok = true;
    if (tenants->is_array() && tenants->size() <= kMaxClaimTenants) {
      for (const auto& t : *tenants) ok = ok && add(t);
    } else {
      ok = add(*tenants);
    }
    if (!ok) {
      return Unauth("token claim '" + Bounded(settings.tenants_claim) +
                    "' is malformed; expected a tenant pattern or a list of at most " +
                    std::to_string(kMaxClaimTenants) + " patterns");
    }
  }
  auto scopes = claims.find(settings.scopes_claim);
  if (scopes != claims.end()) {
    // OAuth style: "infer stream", or a list; scopes we do not know are ignored.
    auto add_words = [&](std::string_view text) {
      size_t pos = 0;
      while (pos < text.size()) {
        size_t end = text.find(' ', pos);
        if (end == std::string_view::npos) end = text.size();
        principal.scopes |= ScopeBit(text.substr(pos, end - pos));
        pos = end + 1;
      }
    };
    if (scopes->is_string()) {
      add_words(scopes->get_ref<const std::string&>());
    } else if (scopes->is_array()) {
      for (const auto& s : *scopes) {
        if (s.is_string()) principal.scopes |= ScopeBit(s.get_ref<const std::string&>());
      }
    } else {
      return Unauth("token claim '" + Bounded(settings.scopes_claim) +
                    "' is malformed; expected a space-separated string or a list of scopes");
    }
  }
  return principal;
}

}  // namespace lipsync::auth::internal
