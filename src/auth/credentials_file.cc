#include "auth/credentials_file.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>

#include "auth/authenticator.h"
#include "auth/crypto_util.h"

namespace lipsync::auth::internal {
namespace {

constexpr size_t kMaxEntries = 10000;        // per list (api keys, jwt keys, certs)
constexpr size_t kMaxTenantPatterns = 1000;  // per credential
constexpr size_t kMaxNameBytes = 256;        // ids, kids, tenant patterns, claim names
constexpr size_t kMaxSubjectBytes = 1024;

// Collects every problem of the document, so an operator fixes them in one pass.
struct Errors {
  std::string file;
  std::vector<std::string> messages;
  void Add(const std::string& where, const std::string& what) {
    if (messages.size() < 50) messages.push_back(file + ": " + where + ": " + what);
  }
};

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return "nothing";
    default:
      return "'" + Bounded(node.Scalar(), 60) + "'";
  }
}

// Checks that a mapping has only `allowed` keys (each a scalar, no duplicates).
bool CheckKeys(const YAML::Node& map, const std::string& where,
               std::initializer_list<const char*> allowed, Errors* errors) {
  if (!map.IsMap()) {
    errors->Add(where, "expected a mapping, got " + Describe(map));
    return false;
  }
  bool ok = true;
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) {
      errors->Add(where, "expected scalar keys, got " + Describe(kv.first));
      ok = false;
      continue;
    }
    const std::string& key = kv.first.Scalar();
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    std::string expected;
    for (const char* a : allowed) expected += std::string(expected.empty() ? "" : ", ") + a;
    if (!known) {
      errors->Add(where, "unknown key '" + Bounded(key, 60) + "'; expected one of: " + expected);
      ok = false;
    } else if (!seen.insert(key).second) {
      errors->Add(where, "duplicate key '" + key + "'");
      ok = false;
    }
  }
  return ok;
}

// A required (or optional, when `required` is false) printable string of at most `max` bytes.
bool ReadString(const YAML::Node& map, const char* key, const std::string& where, size_t max,
                bool required, std::string* out, Errors* errors) {
  YAML::Node v = map[key];
  if (!v.IsDefined() || v.IsNull()) {
    if (required) errors->Add(where, std::string("missing '") + key + "'");
    return !required;
  }
  if (!v.IsScalar()) {
    errors->Add(where + "." + key, "expected a string, got " + Describe(v));
    return false;
  }
  const std::string& s = v.Scalar();
  if (s.empty() && required) {
    errors->Add(where + "." + key, "expected a non-empty string");
    return false;
  }
  if (s.size() > max) {
    errors->Add(where + "." + key, "expected at most " + std::to_string(max) + " bytes, got " +
                                       std::to_string(s.size()));
    return false;
  }
  *out = s;
  return true;
}

bool Printable(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// tenants: [patterns], scopes: [infer, stream, admin]; both required.
bool ReadGrant(const YAML::Node& map, const std::string& where, Grant* grant, Errors* errors) {
  bool ok = true;
  YAML::Node tenants = map["tenants"];
  if (!tenants.IsDefined() || tenants.IsNull()) {
    errors->Add(where, "missing 'tenants' (a list of tenant ids or patterns such as \"acme-*\")");
    ok = false;
  } else if (!tenants.IsSequence()) {
    errors->Add(where + ".tenants", "expected a list of tenant patterns, got " + Describe(tenants));
    ok = false;
  } else if (tenants.size() > kMaxTenantPatterns) {
    errors->Add(where + ".tenants",
                "expected at most " + std::to_string(kMaxTenantPatterns) + " patterns");
    ok = false;
  } else {
    for (size_t i = 0; i < tenants.size(); ++i) {
      const YAML::Node t = tenants[i];
      std::string at = where + ".tenants[" + std::to_string(i) + "]";
      if (!t.IsScalar() || t.Scalar().empty() || t.Scalar().size() > kMaxNameBytes ||
          !Printable(t.Scalar())) {
        errors->Add(at, "expected a tenant id or glob pattern (1.." +
                            std::to_string(kMaxNameBytes) + " printable bytes), got " +
                            Describe(t));
        ok = false;
        continue;
      }
      grant->tenants.push_back(t.Scalar());
    }
  }
  YAML::Node scopes = map["scopes"];
  if (!scopes.IsDefined() || scopes.IsNull()) {
    errors->Add(where, "missing 'scopes' (a list of: infer, stream, admin)");
    ok = false;
  } else if (!scopes.IsSequence() || scopes.size() > 16) {
    errors->Add(where + ".scopes",
                "expected a list of: infer, stream, admin; got " + Describe(scopes));
    ok = false;
  } else {
    for (size_t i = 0; i < scopes.size(); ++i) {
      const YAML::Node s = scopes[i];
      uint8_t bit = s.IsScalar() ? ScopeBit(s.Scalar()) : 0;
      if (bit == 0) {
        errors->Add(where + ".scopes[" + std::to_string(i) + "]",
                    "expected one of infer, stream, admin; got " + Describe(s));
        ok = false;
        continue;
      }
      grant->scopes |= bit;
    }
  }
  return ok;
}

std::string EntryWhere(const char* list, size_t i, const std::string& name) {
  std::string where = std::string(list) + "[" + std::to_string(i) + "]";
  if (!name.empty()) where += " (" + Bounded(name, 64) + ")";
  return where;
}

// The name field of a list entry, read first so the entry's messages can name it.
std::string PeekName(const YAML::Node& entry, const char* key) {
  if (!entry.IsMap()) return "";
  YAML::Node v = entry[key];
  return v.IsDefined() && v.IsScalar() ? v.Scalar() : "";
}

// The list at `key`, or nullopt when absent (or malformed, reported). Copy-constructed:
// yaml-cpp throws when an absent node is assigned.
std::optional<YAML::Node> ListAt(const YAML::Node& root, const char* key, Errors* errors) {
  YAML::Node list(root[key]);
  if (!list.IsDefined() || list.IsNull()) return std::nullopt;
  if (!list.IsSequence()) {
    errors->Add(key, "expected a list, got " + Describe(list));
    return std::nullopt;
  }
  if (list.size() > kMaxEntries) {
    errors->Add(key, "expected at most " + std::to_string(kMaxEntries) + " entries");
    return std::nullopt;
  }
  return list;
}

void ReadApiKeys(const YAML::Node& root, Credentials* out, Errors* errors) {
  auto list = ListAt(root, "api_keys", errors);
  if (!list) return;
  std::set<std::string> ids;
  for (size_t i = 0; i < list->size(); ++i) {
    const YAML::Node e = (*list)[i];
    std::string where = EntryWhere("api_keys", i, PeekName(e, "id"));
    if (!CheckKeys(e, where, {"id", "sha256", "tenants", "scopes"}, errors)) continue;
    ApiKeyEntry entry;
    std::string hex;
    bool ok = ReadString(e, "id", where, kMaxNameBytes, true, &entry.id, errors);
    if (ok && !Printable(entry.id)) {
      errors->Add(where + ".id", "expected printable characters");
      ok = false;
    }
    if (ReadString(e, "sha256", where, 128, true, &hex, errors)) {
      auto digest = ParseHex32(hex);
      if (!digest) {
        errors->Add(
            where + ".sha256",
            "expected the key's SHA-256 as 64 hex digits (printf %s KEY | sha256sum), got " +
                std::to_string(hex.size()) + " characters");
        ok = false;
      } else {
        entry.sha256 = *digest;
      }
    } else {
      ok = false;
    }
    ok = ReadGrant(e, where, &entry.grant, errors) && ok;
    if (!ok) continue;
    if (!ids.insert(entry.id).second) {
      errors->Add(where, "duplicate id '" + Bounded(entry.id) + "'");
      continue;
    }
    for (const auto& other : out->api_keys) {
      if (other.sha256 == entry.sha256) {
        errors->Add(where, "same sha256 as api key '" + Bounded(other.id) +
                               "'; expected one entry per key");
        ok = false;
      }
    }
    if (ok) out->api_keys.push_back(std::move(entry));
  }
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

// Parses a public key PEM and checks it fits `alg`.
std::shared_ptr<EVP_PKEY> CheckPublicKey(const std::string& pem, JwtAlg alg, std::string* problem) {
  std::unique_ptr<BIO, BioFree> in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!in) {
    *problem = "out of memory reading the key";
    return nullptr;
  }
  std::shared_ptr<EVP_PKEY> key(PEM_read_bio_PUBKEY(in.get(), nullptr, nullptr, nullptr),
                                PkeyFree());
  if (!key) {
    *problem = "expected a PEM public key (-----BEGIN PUBLIC KEY-----), OpenSSL could not read it";
    return nullptr;
  }
  int type = EVP_PKEY_get_base_id(key.get());
  if (alg == JwtAlg::kRS256) {
    if (type != EVP_PKEY_RSA) {
      *problem = "alg RS256 needs an RSA public key, got another key type";
      return nullptr;
    }
    if (EVP_PKEY_get_bits(key.get()) < 2048) {
      *problem = "expected an RSA key of at least 2048 bits, got " +
                 std::to_string(EVP_PKEY_get_bits(key.get()));
      return nullptr;
    }
  } else {
    char group[64] = {0};
    size_t len = 0;
    if (type != EVP_PKEY_EC || EVP_PKEY_get_group_name(key.get(), group, sizeof group, &len) != 1 ||
        std::string(group) != "prime256v1") {
      *problem = "alg ES256 needs an EC P-256 (prime256v1) public key, got another key type";
      return nullptr;
    }
  }
  return key;
}

void ReadJwt(const YAML::Node& root, const std::string& base_dir, Credentials* out,
             Errors* errors) {
  YAML::Node jwt = root["jwt"];
  if (!jwt.IsDefined() || jwt.IsNull()) return;
  if (!CheckKeys(jwt, "jwt", {"issuer", "audience", "tenants_claim", "scopes_claim", "keys"},
                 errors)) {
    return;
  }
  JwtSettings& s = out->jwt;
  ReadString(jwt, "issuer", "jwt", 1024, true, &s.issuer, errors);
  ReadString(jwt, "audience", "jwt", 1024, true, &s.audience, errors);
  ReadString(jwt, "tenants_claim", "jwt", kMaxNameBytes, false, &s.tenants_claim, errors);
  ReadString(jwt, "scopes_claim", "jwt", kMaxNameBytes, false, &s.scopes_claim, errors);
  if (s.tenants_claim.empty() || s.scopes_claim.empty()) {
    errors->Add("jwt", "tenants_claim and scopes_claim must not be empty");
  }
  auto keys = ListAt(jwt, "keys", errors);
  if (!keys) {
    errors->Add("jwt",
                "missing 'keys' (a list of {kid, alg, public_key_file | public_key_pem | "
                "secret_base64})");
    return;
  }
  std::set<std::string> kids;
  for (size_t i = 0; i < keys->size(); ++i) {
    const YAML::Node e = (*keys)[i];
    std::string where = EntryWhere("jwt.keys", i, PeekName(e, "kid"));
    if (!CheckKeys(e, where, {"kid", "alg", "public_key_file", "public_key_pem", "secret_base64"},
                   errors)) {
      continue;
    }
    JwtKey key;
    std::string alg;
    bool ok = ReadString(e, "kid", where, kMaxNameBytes, true, &key.kid, errors);
    if (ok && !Printable(key.kid)) {
      errors->Add(where + ".kid", "expected printable characters");
      ok = false;
    }
    if (!ReadString(e, "alg", where, 16, true, &alg, errors)) {
      continue;
    }
    if (alg == "RS256") {
      key.alg = JwtAlg::kRS256;
    } else if (alg == "ES256") {
      key.alg = JwtAlg::kES256;
    } else if (alg == "HS256") {
      key.alg = JwtAlg::kHS256;
    } else {
      errors->Add(where + ".alg", "expected RS256, ES256 or HS256, got " + Describe(e["alg"]));
      continue;
    }
    std::string file, pem, secret;
    ReadString(e, "public_key_file", where, 4096, false, &file, errors);
    ReadString(e, "public_key_pem", where, kMaxKeyFileBytes, false, &pem, errors);
    ReadString(e, "secret_base64", where, 4096, false, &secret, errors);
    int given = !file.empty() + !pem.empty() + !secret.empty();
    if (key.alg == JwtAlg::kHS256) {
      if (secret.empty() || given != 1) {
        errors->Add(where, "alg HS256 needs exactly 'secret_base64' (at least 32 bytes)");
        continue;
      }
      auto bytes = Base64Decode(secret);
      if (!bytes) {
        errors->Add(where + ".secret_base64", "expected base64 text");
        continue;
      }
      if (bytes->size() < kMinHmacSecretBytes) {
        errors->Add(where + ".secret_base64",
                    "expected at least 32 bytes of secret, got " + std::to_string(bytes->size()));
        continue;
      }
      key.secret = std::move(*bytes);
    } else {
      if (!secret.empty() || given != 1) {
        errors->Add(where, std::string("alg ") + alg +
                               " needs exactly one of 'public_key_file' or 'public_key_pem'");
        continue;
      }
      if (!file.empty()) {
        std::filesystem::path p(file);
        if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
        auto read = ReadFileBounded(p.string(), kMaxKeyFileBytes);
        if (!read.ok()) {
          errors->Add(where + ".public_key_file", read.status().message());
          continue;
        }
        pem = std::move(read.value());
      }
      std::string problem;
      key.public_key = CheckPublicKey(pem, key.alg, &problem);
      if (!key.public_key) {
        errors->Add(where, problem);
        continue;
      }
    }
    if (!ok) continue;
    if (!kids.insert(key.kid).second) {
      errors->Add(where, "duplicate kid '" + Bounded(key.kid) + "'; expected one key per kid");
      continue;
    }
    s.keys.push_back(std::move(key));
  }
}

void ReadCerts(const YAML::Node& root, Credentials* out, Errors* errors) {
  auto list = ListAt(root, "client_certificates", errors);
  if (!list) return;
  std::set<std::string> subjects;
  for (size_t i = 0; i < list->size(); ++i) {
    const YAML::Node e = (*list)[i];
    std::string where = EntryWhere("client_certificates", i, PeekName(e, "subject"));
    if (!CheckKeys(e, where, {"subject", "tenants", "scopes"}, errors)) continue;
    CertEntry entry;
    bool ok = ReadString(e, "subject", where, kMaxSubjectBytes, true, &entry.subject, errors);
    ok = ReadGrant(e, where, &entry.grant, errors) && ok;
    if (!ok) continue;
    if (!subjects.insert(entry.subject).second) {
      errors->Add(where, "duplicate subject");
      continue;
    }
    out->client_certificates.push_back(std::move(entry));
  }
}

}  // namespace

const char* JwtAlgName(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::kRS256:
      return "RS256";
    case JwtAlg::kES256:
      return "ES256";
    case JwtAlg::kHS256:
      return "HS256";
  }
  return "?";
}

uint8_t ScopeBit(std::string_view name) {
  if (name == "infer") return static_cast<uint8_t>(Scope::kInfer);
  if (name == "stream") return static_cast<uint8_t>(Scope::kStream);
  if (name == "admin") return static_cast<uint8_t>(Scope::kAdmin);
  return 0;
}

std::string Bounded(std::string_view text, size_t max) {
  std::string out;
  size_t n = std::min(text.size(), max);
  out.reserve(n + 3);
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    out.push_back(c < 0x20 || c >= 0x7f ? '?' : static_cast<char>(c));
  }
  if (text.size() > max) out += "...";
  return out;
}

Expected<std::string> ReadFileBounded(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::string data(max_bytes + 1, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (in.bad()) return Status::InvalidArgument("cannot read '" + path + "'");
  size_t got = static_cast<size_t>(in.gcount());
  if (got > max_bytes) {
    return Status::InvalidArgument("'" + path + "' is larger than " + std::to_string(max_bytes) +
                                   " bytes; expected a small text file");
  }
  data.resize(got);
  return data;
}

Expected<Credentials> ParseCredentials(std::string_view text, const std::string& name,
                                       const std::string& base_dir) {
  if (text.size() > kMaxCredentialsFileBytes) {
    return Status::InvalidArgument(name + ": larger than 1 MiB; expected a credentials file");
  }
  Errors errors{name, {}};
  Credentials creds;
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (root.IsNull() || !root.IsDefined()) {
      root = YAML::Node(YAML::NodeType::Map);
    }
    if (CheckKeys(root, "(top level)", {"api_keys", "jwt", "client_certificates"}, &errors)) {
      ReadApiKeys(root, &creds, &errors);
      ReadJwt(root, base_dir, &creds, &errors);
      ReadCerts(root, &creds, &errors);
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument(name + ": not valid YAML: " + Bounded(e.what(), 200));
  }
  if (!errors.messages.empty()) {
    std::string all;
    for (const auto& m : errors.messages) all += (all.empty() ? "" : "; ") + m;
    return Status::InvalidArgument(all);
  }
  return creds;
}

Expected<Credentials> LoadCredentialsFile(const std::string& path) {
  auto text = ReadFileBounded(path, kMaxCredentialsFileBytes);
  if (!text.ok()) {
    return Status(text.status().code(), "credentials file: " + text.status().message());
  }
  std::string base_dir = std::filesystem::path(path).parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  return ParseCredentials(text.value(), path, base_dir);
}

}  // namespace lipsync::auth::internal
