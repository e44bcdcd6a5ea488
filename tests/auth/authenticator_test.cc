// The auth library against real keys: RSA and EC key pairs are generated with OpenSSL
// into a temp dir, valid tokens are minted with libjwt, forged ones are built by hand
// (base64url + OpenSSL HMAC, or no signature at all). The clock is injected.
#include "auth/authenticator.h"

#include <gtest/gtest.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>

namespace lipsync::auth {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr int64_t kNow = 1780000000;  // 2026-05-28T20:26:40Z, the injected clock
const char kAcmeKey[] = "acme-secret-key-0123456789";
const char kGlobexKey[] = "globex-secret-key-9876543210";
// 32 bytes of HMAC secret, base64: "0123456789abcdef0123456789abcdef".
const char kHsSecret[] = "0123456789abcdef0123456789abcdef";
const char kHsSecretB64[] = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

struct KeyPair {
  std::string private_pem;
  std::string public_pem;
};

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

KeyPair Generate(const char* type, const char* param) {
  EVP_PKEY* key = nullptr;
  if (std::string(type) == "RSA") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", param);
  }
  EXPECT_NE(key, nullptr);
  KeyPair pair;
  BIO* priv = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  pair.private_pem = BioString(priv);
  BIO_free(priv);
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(pub, key);
  pair.public_pem = BioString(pub);
  BIO_free(pub);
  EVP_PKEY_free(key);
  return pair;
}

std::string B64Url(std::string_view data) {
  std::string out((data.size() + 2) / 3 * 4 + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

// Hand-built token: header.payload.signature, HMAC-SHA256 with `hmac_key`, or no
// signature when hmac_key is null.
std::string Forge(const std::string& header_json, const std::string& payload_json,
                  const std::string* hmac_key) {
  std::string signing_input = B64Url(header_json) + "." + B64Url(payload_json);
  if (hmac_key == nullptr) return signing_input + ".";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), hmac_key->data(), static_cast<int>(hmac_key->size()),
       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac,
       &len);
  return signing_input + "." + B64Url(std::string(reinterpret_cast<char*>(mac), len));
}

struct Claims {
  std::string sub = "alice";
  std::string iss = "https://auth.example.com";
  std::string aud = "lipsync";
  int64_t exp = kNow + 3600;
  int64_t nbf = 0;  // 0: absent
  std::string tenants_json = R"(["acme-*"])";
  std::string scope = "infer stream";
};

// A token minted by libjwt, as an identity provider would.
std::string Mint(jwt_alg_t alg, const std::string& kid, const std::string& key, const Claims& c) {
  jwt_t* jwt = nullptr;
  EXPECT_EQ(jwt_new(&jwt), 0);
  jwt_add_header(jwt, "kid", kid.c_str());
  jwt_add_grant(jwt, "sub", c.sub.c_str());
  jwt_add_grant(jwt, "iss", c.iss.c_str());
  jwt_add_grant(jwt, "aud", c.aud.c_str());
  jwt_add_grant_int(jwt, "exp", static_cast<long>(c.exp));
  if (c.nbf != 0) jwt_add_grant_int(jwt, "nbf", static_cast<long>(c.nbf));
  jwt_add_grant(jwt, "scope", c.scope.c_str());
  EXPECT_EQ(jwt_add_grants_json(jwt, (R"({"tenants":)" + c.tenants_json + "}").c_str()), 0);
  EXPECT_EQ(jwt_set_alg(jwt, alg, reinterpret_cast<const unsigned char*>(key.data()),
                        static_cast<int>(key.size())),
            0);
  char* encoded = jwt_encode_str(jwt);
  EXPECT_NE(encoded, nullptr);
  std::string token = encoded ? encoded : "";
  free(encoded);
  jwt_free(jwt);
  return token;
}

std::string PayloadJson(const Claims& c) {
  std::ostringstream s;
  s << R"({"sub":")" << c.sub << R"(","iss":")" << c.iss << R"(","aud":")" << c.aud << R"(","exp":)"
    << c.exp << R"(,"tenants":)" << c.tenants_json << R"(,"scope":")" << c.scope << R"("})";
  return s.str();
}

std::string Indent(const std::string& text, const std::string& pad) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out += pad + line + "\n";
  return out;
}

class AuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new KeyPair(Generate("RSA", nullptr));
    rsa_other_ = new KeyPair(Generate("RSA", nullptr));
    ec_ = new KeyPair(Generate("EC", "P-256"));
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete rsa_other_;
    delete ec_;
  }

  void SetUp() override {
    char tmpl[] = "/tmp/lipsync-auth-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    WriteFile(dir_ / "jwt-rsa.pub.pem", rsa_->public_pem);
    WriteFile(dir_ / "jwt-ec.pub.pem", ec_->public_pem);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void WriteFile(const fs::path& path, const std::string& text) {
    // Write-then-rename so a polling reader never sees half a file.
    fs::path tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary);
      out << text;
    }
    fs::rename(tmp, path);
  }

  std::string CredentialsYaml(bool with_globex = true) const {
    std::string y;
    y += "api_keys:\n";
    y += "  - id: acme-backend\n";
    y += "    sha256: " + HashApiKey(kAcmeKey) + "\n";
    y += "    tenants: [\"acme-*\"]\n";
    y += "    scopes: [infer, stream]\n";
    if (with_globex) {
      y += "  - id: globex-admin\n";
      y += "    sha256: " + HashApiKey(kGlobexKey) + "\n";
      y += "    tenants: [globex]\n";
      y += "    scopes: [infer, admin]\n";
    }
    y += "jwt:\n";
    y += "  issuer: \"https://auth.example.com\"\n";
    y += "  audience: lipsync\n";
    y += "  keys:\n";
    y += "    - {kid: rsa-1, alg: RS256, public_key_file: jwt-rsa.pub.pem}\n";
    y += "    - kid: ec-1\n";
    y += "      alg: ES256\n";
    y += "      public_key_pem: |\n" + Indent(ec_->public_pem, "        ");
    y += "    - {kid: hs-1, alg: HS256, secret_base64: \"" + std::string(kHsSecretB64) + "\"}\n";
    y += "client_certificates:\n";
    y +=
        "  - {subject: \"CN=compositing-1,O=Example\", tenants: [\"*\"], scopes: [infer, admin]}\n";
    return y;
  }

  AuthOptions Options() const {
    AuthOptions o;
    o.credentials_file = (dir_ / "credentials.yaml").string();
    o.reload_interval = std::chrono::milliseconds(0);  // tests call Reload()
    o.now = [] { return system_clock::time_point(seconds(kNow)); };
    return o;
  }

  std::unique_ptr<Authenticator> Make(const std::string& yaml) {
    WriteFile(dir_ / "credentials.yaml", yaml);
    auto created = Authenticator::Create(Options());
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return nullptr;
    return std::move(created.value());
  }

  std::unique_ptr<Authenticator> Make() { return Make(CredentialsYaml()); }

  static Expected<Principal> Bearer(const Authenticator& a, const std::string& value) {
    return a.Authenticate("Bearer " + value, "");
  }

  static inline KeyPair* rsa_ = nullptr;
  static inline KeyPair* rsa_other_ = nullptr;
  static inline KeyPair* ec_ = nullptr;
  fs::path dir_;
};

#define EXPECT_CODE(expr, code_value)                                                \
  do {                                                                               \
    auto _r = (expr);                                                                \
    EXPECT_FALSE(_r.ok());                                                           \
    EXPECT_EQ(_r.status().code(), StatusCode::code_value) << _r.status().ToString(); \
  } while (0)

// --- valid tokens ------------------------------------------------------------

TEST_F(AuthTest, ValidRs256Token) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  EXPECT_TRUE(auth->enabled());
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, Claims{}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->id, "jwt:rsa-1:alice");
  EXPECT_TRUE(p->Has(Scope::kInfer));
  EXPECT_TRUE(p->Has(Scope::kStream));
  EXPECT_FALSE(p->Has(Scope::kAdmin));
  EXPECT_EQ(p->tenant_patterns, std::vector<std::string>{"acme-*"});
  EXPECT_TRUE(p->MayUse("acme-1"));
  EXPECT_TRUE(p->RequireTenant("acme-1").ok());
  EXPECT_TRUE(p->Require(Scope::kStream).ok());
}

TEST_F(AuthTest, ValidEs256Token) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.sub = "bob";
  c.tenants_json = R"("globex")";  // a single string is one pattern
  auto p = Bearer(*auth, Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, c));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->id, "jwt:ec-1:bob");
  EXPECT_TRUE(p->MayUse("globex"));
  EXPECT_FALSE(p->MayUse("globex-2"));
}

TEST_F(AuthTest, ValidHs256TokenWithScopeList) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  std::string payload =
      R"({"sub":"svc","iss":"https://auth.example.com","aud":["other","lipsync"],)"
      R"("exp":)" +
      std::to_string(kNow + 60) + R"(,"tenants":["*"],"scope":["admin","unknown-scope"]})";
  std::string secret = kHsSecret;
  auto p = Bearer(*auth, Forge(R"({"alg":"HS256","typ":"JWT","kid":"hs-1"})", payload, &secret));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->id, "jwt:hs-1:svc");
  EXPECT_TRUE(p->Has(Scope::kAdmin));
  EXPECT_FALSE(p->Has(Scope::kInfer));
  EXPECT_TRUE(p->MayUse("anything"));
  // And one minted by libjwt.
  auto q = Bearer(*auth, Mint(JWT_ALG_HS256, "hs-1", kHsSecret, Claims{}));
  ASSERT_TRUE(q.ok()) << q.status().ToString();
}

// --- time, issuer, audience ----------------------------------------------------

TEST_F(AuthTest, ExpiredTokenIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.exp = kNow - 3600;
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("token expired at 2026-05-28T19:26:40Z"), std::string::npos)
      << p.status().message();
  EXPECT_NE(p.status().message().find("expected a current token"), std::string::npos);
  // Within the clock skew (30 s) it still passes.
  c.exp = kNow - 10;
  EXPECT_TRUE(Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c)).ok());
}

TEST_F(AuthTest, NotYetValidTokenIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.nbf = kNow + 600;
  auto p = Bearer(*auth, Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, c));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("not valid before"), std::string::npos);
  c.nbf = kNow + 10;  // within skew
  EXPECT_TRUE(Bearer(*auth, Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, c)).ok());
}

TEST_F(AuthTest, MissingExpIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  std::string secret = kHsSecret;
  auto p = Bearer(
      *auth, Forge(R"({"alg":"HS256","kid":"hs-1"})",
                   R"({"sub":"x","iss":"https://auth.example.com","aud":"lipsync"})", &secret));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("'exp'"), std::string::npos);
}

TEST_F(AuthTest, WrongAudienceIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.aud = "another-service";
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("audience 'another-service'"), std::string::npos);
}

TEST_F(AuthTest, WrongIssuerIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.iss = "https://evil.example.com";
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("issuer"), std::string::npos);
}

// --- signatures and algorithm pinning ------------------------------------------

TEST_F(AuthTest, WrongSignatureIsUnauthenticated) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  // Signed by another RSA key, claiming the configured key's kid.
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_other_->private_pem, Claims{}));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("does not verify with key 'rsa-1'"), std::string::npos);
  // A valid token with its payload swapped.
  std::string good = Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, Claims{});
  Claims more;
  more.tenants_json = R"(["*"])";
  size_t d1 = good.find('.');
  size_t d2 = good.find('.', d1 + 1);
  std::string tampered = good.substr(0, d1 + 1) + B64Url(PayloadJson(more)) + good.substr(d2);
  EXPECT_CODE(Bearer(*auth, tampered), kUnauthenticated);
  // ES256 signed by another P-256 key, and a truncated ES256 signature.
  KeyPair other_ec = Generate("EC", "P-256");
  EXPECT_CODE(Bearer(*auth, Mint(JWT_ALG_ES256, "ec-1", other_ec.private_pem, Claims{})),
              kUnauthenticated);
  std::string es = Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, Claims{});
  ASSERT_TRUE(Bearer(*auth, es).ok());
  EXPECT_CODE(Bearer(*auth, es.substr(0, es.size() - 4)), kUnauthenticated);
  // HS256 with the wrong secret.
  std::string wrong = "ffffffffffffffffffffffffffffffff";
  EXPECT_CODE(
      Bearer(*auth, Forge(R"({"alg":"HS256","kid":"hs-1"})", PayloadJson(Claims{}), &wrong)),
      kUnauthenticated);
}

TEST_F(AuthTest, AlgNoneIsRejected) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  for (const char* header : {R"({"alg":"none","kid":"rsa-1"})", R"({"alg":"none","kid":"hs-1"})",
                             R"({"alg":"None","typ":"JWT","kid":"ec-1"})", R"({"alg":"none"})"}) {
    auto p = Bearer(*auth, Forge(header, PayloadJson(Claims{}), nullptr));
    EXPECT_CODE(p, kUnauthenticated);
    EXPECT_NE(p.status().message().find("'none'"), std::string::npos) << p.status().message();
  }
  // With a junk signature appended too.
  std::string junk =
      Forge(R"({"alg":"none","kid":"rsa-1"})", PayloadJson(Claims{}), nullptr) + "AAAA";
  EXPECT_CODE(Bearer(*auth, junk), kUnauthenticated);
}

TEST_F(AuthTest, Hs256SignedWithRsaPublicKeyIsRejected) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  // The classic confusion: an HS256 token HMAC'd with the RSA public key PEM (public
  // knowledge), carrying the RSA key's kid.
  for (const std::string& secret :
       {rsa_->public_pem, rsa_->public_pem.substr(0, rsa_->public_pem.size() - 1)}) {
    auto p = Bearer(*auth, Forge(R"({"alg":"HS256","typ":"JWT","kid":"rsa-1"})",
                                 PayloadJson(Claims{}), &secret));
    EXPECT_CODE(p, kUnauthenticated);
    EXPECT_NE(p.status().message().find("token alg 'HS256' does not match key 'rsa-1' (RS256)"),
              std::string::npos)
        << p.status().message();
  }
  // Minted by libjwt the same way.
  auto p = Bearer(*auth, Mint(JWT_ALG_HS256, "rsa-1", rsa_->public_pem, Claims{}));
  EXPECT_CODE(p, kUnauthenticated);
  // An ES256 token presented under the RSA kid, and an RS256 one under the HS kid.
  EXPECT_CODE(Bearer(*auth, Mint(JWT_ALG_ES256, "rsa-1", ec_->private_pem, Claims{})),
              kUnauthenticated);
  EXPECT_CODE(Bearer(*auth, Mint(JWT_ALG_RS256, "hs-1", rsa_->private_pem, Claims{})),
              kUnauthenticated);
}

TEST_F(AuthTest, DuplicateHeaderFieldsCannotSwitchTheAlgorithm) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  // JSON parsers disagree on duplicate keys; whichever one libjwt honours, the pinned
  // alg is checked again on libjwt's decoded token, so an HMAC made with the (public)
  // RSA key PEM never passes.
  const std::string& pem = rsa_->public_pem;
  for (const char* header : {R"({"alg":"HS256","kid":"rsa-1","alg":"RS256"})",
                             R"({"alg":"RS256","kid":"rsa-1","alg":"HS256"})",
                             R"({"alg":"HS256","kid":"hs-1","kid":"rsa-1"})",
                             R"({"alg":"HS256","kid":"rsa-1","kid":"hs-1"})"}) {
    auto p = Bearer(*auth, Forge(header, PayloadJson(Claims{}), &pem));
    EXPECT_CODE(p, kUnauthenticated);
  }
}

TEST_F(AuthTest, PrincipalIdIsBoundedAndPrintable) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.sub = std::string(1000, 's') + "\n\x01";
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_LE(p->id.size(), 150u);
  for (char ch : p->id) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f);
}

TEST_F(AuthTest, UnknownKidIsRejected) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-2027", rsa_->private_pem, Claims{}));
  EXPECT_CODE(p, kUnauthenticated);
  EXPECT_NE(p.status().message().find("unknown key id 'rsa-2027'"), std::string::npos);
  // A long kid is quoted bounded.
  std::string long_kid(5000, 'k');
  std::string secret = kHsSecret;
  auto q = Bearer(*auth, Forge(R"({"alg":"HS256","kid":")" + long_kid + R"("})",
                               PayloadJson(Claims{}), &secret));
  EXPECT_CODE(q, kUnauthenticated);
  EXPECT_LT(q.status().message().size(), 300u);
  // No kid at all.
  EXPECT_CODE(Bearer(*auth, Forge(R"({"alg":"HS256"})", PayloadJson(Claims{}), &secret)),
              kUnauthenticated);
}

TEST_F(AuthTest, MalformedAndOversizedTokensAreRejected) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  std::string secret = kHsSecret;
  const std::vector<std::string> bad = {
      "a.b.c",                                         // not base64 JSON
      "!!!.???.###",                                   // not base64url at all: treated as a key
      B64Url("[1,2]") + "." + B64Url("{}") + ".AAAA",  // header not an object
      B64Url(std::string(2000, '[')) + "." + B64Url("{}") + ".AAAA",  // deep header
      Forge(R"({"alg":"HS256","kid":"hs-1"})", std::string(3000, '[') + std::string(3000, ']'),
            &secret),  // deep payload
      Forge(R"({"alg":"HS256","kid":"hs-1"})", "not json", &secret),
      std::string(9000, 'A') + "." + B64Url("{}") + ".AAAA",  // oversized
      "eyJhbGciOiJIUzI1NiJ9..",                               // empty segments
  };
  for (const auto& token : bad) {
    auto p = Bearer(*auth, token);
    EXPECT_CODE(p, kUnauthenticated);
    EXPECT_LT(p.status().message().size(), 400u);
  }
  // An oversized bearer value is refused before hashing or parsing.
  auto big = Bearer(*auth, std::string(100000, 'x'));
  EXPECT_CODE(big, kUnauthenticated);
  EXPECT_NE(big.status().message().find("at most 8192 bytes"), std::string::npos);
  // Not "Bearer ...".
  EXPECT_CODE(auth->Authenticate("Basic dXNlcjpwYXNz", ""), kUnauthenticated);
  EXPECT_CODE(auth->Authenticate("Bearer ", ""), kUnauthenticated);
  // Bearer scheme is case-insensitive.
  EXPECT_TRUE(auth->Authenticate(std::string("bearer ") + kAcmeKey, "").ok());
}

TEST_F(AuthTest, MutatedTokensAreUnauthenticatedNeverAccepted) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  const std::vector<std::string> good = {
      Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, Claims{}),
      Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, Claims{}),
      Mint(JWT_ALG_HS256, "hs-1", kHsSecret, Claims{}),
  };
  std::mt19937 rng(20261130);
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \"{}";
  for (int i = 0; i < 3000; ++i) {
    std::string t = good[static_cast<size_t>(i) % good.size()];
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % t.size();
      switch (rng() % 3) {
        case 0:
          t[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          t = t.substr(0, at) + t.substr(std::min(t.size(), at + 1 + rng() % 8));
          break;
        default:
          t = t.substr(0, at) + alphabet[rng() % alphabet.size()] + t.substr(at);
          break;
      }
      if (t.empty()) t.push_back('x');
    }
    auto p = Bearer(*auth, t);
    if (p.ok()) {
      // Only a no-op edit (e.g. base64url padding bits) may still verify, as the same caller.
      EXPECT_EQ(p->id.rfind("jwt:", 0), 0u) << t;
      continue;
    }
    EXPECT_EQ(p.status().code(), StatusCode::kUnauthenticated) << t;
    EXPECT_LT(p.status().message().size(), 400u);
  }
}

TEST_F(AuthTest, MutatedCredentialsFilesLoadOrFailCleanly) {
  const std::string base = CredentialsYaml();
  std::mt19937 rng(7);
  const std::string alphabet = "abc:-[]{}*&!|>'\"\n #0123456789";
  for (int i = 0; i < 300; ++i) {
    std::string y = base;
    for (int e = 0; e < 3; ++e) {
      size_t at = rng() % y.size();
      if (rng() % 2) {
        y[at] = alphabet[rng() % alphabet.size()];
      } else {
        y = y.substr(0, at) + y.substr(std::min(y.size(), at + 1 + rng() % 20));
      }
    }
    WriteFile(dir_ / "credentials.yaml", y);
    auto created = Authenticator::Create(Options());
    if (!created.ok()) {
      EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument) << y;
      EXPECT_NE(created.status().message().find("credentials.yaml"), std::string::npos);
    }
  }
}

// --- tenants and scopes ---------------------------------------------------------

TEST_F(AuthTest, OtherTenantIsPermissionDenied) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, Claims{}));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->MayUse("acme-eu"));
  EXPECT_FALSE(p->MayUse("globex"));
  Status st = p->RequireTenant("globex");
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(st.message().find("jwt:rsa-1:alice"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'globex'"), std::string::npos);
  EXPECT_NE(st.message().find("(acme-*)"), std::string::npos) << st.message();
  // The same for an API key.
  auto k = Bearer(*auth, kAcmeKey);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->RequireTenant("globex").code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(k->RequireTenant("acme-1").ok());
}

TEST_F(AuthTest, MissingScopeIsPermissionDenied) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  Claims c;
  c.scope = "infer";
  auto p = Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, c));
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Require(Scope::kInfer).ok());
  Status st = p->Require(Scope::kAdmin);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(st.message().find("jwt:rsa-1:alice"), std::string::npos);
  EXPECT_NE(st.message().find("'admin'"), std::string::npos);
  EXPECT_EQ(p->Require(Scope::kStream).code(), StatusCode::kPermissionDenied);
}

TEST(GlobMatchTest, Patterns) {
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("*", "anything"));
  EXPECT_TRUE(GlobMatch("acme-*", "acme-1"));
  EXPECT_TRUE(GlobMatch("acme-*", "acme-"));
  EXPECT_FALSE(GlobMatch("acme-*", "acme"));
  EXPECT_FALSE(GlobMatch("acme-*", "xacme-1"));
  EXPECT_TRUE(GlobMatch("acme-?", "acme-1"));
  EXPECT_FALSE(GlobMatch("acme-?", "acme-12"));
  EXPECT_TRUE(GlobMatch("*-eu-*", "acme-eu-2"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXXbYY"));
  EXPECT_TRUE(GlobMatch("exact", "exact"));
  EXPECT_FALSE(GlobMatch("exact", "exact2"));
  EXPECT_FALSE(GlobMatch("", "x"));
  // Pathological backtracking stays quadratic at worst.
  EXPECT_FALSE(
      GlobMatch(std::string(50, '*') + std::string(30, 'a') + "b", std::string(3000, 'a')));
  Principal p;
  p.tenant_patterns = {"acme-*", "globex"};
  EXPECT_TRUE(p.MayUse("acme-x"));
  EXPECT_TRUE(p.MayUse("globex"));
  EXPECT_FALSE(p.MayUse("globex-2"));
}

// --- API keys, legacy key, certificates, auth off ------------------------------

TEST_F(AuthTest, ApiKeyRightWrongMissing) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  auto p = Bearer(*auth, kAcmeKey);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->id, "key:acme-backend");
  EXPECT_TRUE(p->Has(Scope::kInfer));
  EXPECT_FALSE(p->Has(Scope::kAdmin));
  auto g = Bearer(*auth, kGlobexKey);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->id, "key:globex-admin");
  EXPECT_TRUE(g->Has(Scope::kAdmin));

  auto wrong = Bearer(*auth, "acme-secret-key-0123456788");
  EXPECT_CODE(wrong, kUnauthenticated);
  EXPECT_EQ(wrong.status().message().find("acme-secret"), std::string::npos)
      << "never echo the secret: " << wrong.status().message();
  EXPECT_NE(wrong.status().message().find("unknown API key"), std::string::npos);

  auto missing = auth->Authenticate("", "");
  EXPECT_CODE(missing, kUnauthenticated);
  EXPECT_NE(missing.status().message().find("missing credential"), std::string::npos);
}

TEST_F(AuthTest, FileHoldsOnlyTheHash) {
  EXPECT_EQ(HashApiKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string yaml = CredentialsYaml();
  EXPECT_EQ(yaml.find(kAcmeKey), std::string::npos);
  EXPECT_NE(yaml.find(HashApiKey(kAcmeKey)), std::string::npos);
  // Upper-case hex is accepted too.
  std::string upper = HashApiKey(kAcmeKey);
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  std::string y2 =
      "api_keys:\n  - {id: up, sha256: " + upper + ", tenants: [a], scopes: [infer]}\n";
  auto auth = Make(y2);
  ASSERT_TRUE(auth);
  auto p = Bearer(*auth, kAcmeKey);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->id, "key:up");
}

TEST_F(AuthTest, LegacyKeyHasEveryTenantAndScope) {
  AuthOptions o;
  o.legacy_api_key = "legacy-key";
  auto created = Authenticator::Create(o);
  ASSERT_TRUE(created.ok());
  auto& auth = *created.value();
  EXPECT_TRUE(auth.enabled());
  auto p = auth.Authenticate("Bearer legacy-key", "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->id, "key:api_key");
  EXPECT_TRUE(p->Has(Scope::kInfer) && p->Has(Scope::kStream) && p->Has(Scope::kAdmin));
  EXPECT_TRUE(p->MayUse("any-tenant"));
  EXPECT_CODE(auth.Authenticate("Bearer legacy-kez", ""), kUnauthenticated);
  EXPECT_CODE(auth.Authenticate("", ""), kUnauthenticated);

  // Together with a file, both work.
  WriteFile(dir_ / "credentials.yaml", CredentialsYaml());
  AuthOptions both = Options();
  both.legacy_api_key = "legacy-key";
  auto with_file = Authenticator::Create(both);
  ASSERT_TRUE(with_file.ok());
  EXPECT_EQ((*with_file)->Authenticate("Bearer legacy-key", "")->id, "key:api_key");
  EXPECT_EQ((*with_file)->Authenticate(std::string("Bearer ") + kAcmeKey, "")->id,
            "key:acme-backend");
}

TEST_F(AuthTest, ClientCertificateSubject) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  auto p = auth->Authenticate("", "CN=compositing-1,O=Example");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->id, "cert:CN=compositing-1,O=Example");
  EXPECT_TRUE(p->Has(Scope::kAdmin));
  EXPECT_FALSE(p->Has(Scope::kStream));
  EXPECT_TRUE(p->MayUse("anyone"));
  auto unknown = auth->Authenticate("", "CN=intruder,O=Example");
  EXPECT_CODE(unknown, kUnauthenticated);
  EXPECT_NE(unknown.status().message().find("CN=intruder"), std::string::npos);
  // A presented bearer credential is what counts: a bad one fails despite the certificate.
  EXPECT_CODE(auth->Authenticate("Bearer wrong", "CN=compositing-1,O=Example"), kUnauthenticated);
}

TEST_F(AuthTest, AuthOffIsAnonymousWithEverything) {
  auto created = Authenticator::Create(AuthOptions{});
  ASSERT_TRUE(created.ok());
  auto& auth = *created.value();
  EXPECT_FALSE(auth.enabled());
  for (const char* header : {"", "Bearer whatever"}) {
    auto p = auth.Authenticate(header, "");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->id, "anonymous");
    EXPECT_TRUE(p->Require(Scope::kInfer).ok());
    EXPECT_TRUE(p->Require(Scope::kStream).ok());
    EXPECT_TRUE(p->Require(Scope::kAdmin).ok());
    EXPECT_TRUE(p->RequireTenant("any-tenant").ok());
  }
  EXPECT_TRUE(auth.Reload().ok());
}

// --- the file: errors and reload -------------------------------------------------

TEST_F(AuthTest, MissingFileIsNotFound) {
  auto created = Authenticator::Create(Options());
  EXPECT_CODE(std::move(created), kNotFound);
}

TEST_F(AuthTest, MalformedFilesNameTheFileAndEntry) {
  struct Case {
    std::string yaml;
    std::string expect;
  };
  std::string h = HashApiKey("k");
  const std::vector<Case> cases = {
      {"api_keys:\n  - {id: a, sha256: abc, tenants: [x], scopes: [infer]}\n",
       "api_keys[0] (a).sha256: expected the key's SHA-256 as 64 hex digits"},
      {"api_keys:\n  - {id: a, sha256: " + h + ", tenants: [x], scopes: [infer], extra: 1}\n",
       "api_keys[0] (a): unknown key 'extra'"},
      {"api_keys:\n  - {id: a, sha256: " + h + ", tenants: [x], scopes: [fly]}\n",
       "api_keys[0] (a).scopes[0]: expected one of infer, stream, admin"},
      {"api_keys:\n  - {id: a, sha256: " + h + ", scopes: [infer]}\n",
       "api_keys[0] (a): missing 'tenants'"},
      {"api_keys:\n  - {id: a, sha256: " + h +
           ", tenants: [x], scopes: [infer]}\n"
           "  - {id: a, sha256: " +
           HashApiKey("j") + ", tenants: [x], scopes: [infer]}\n",
       "duplicate id 'a'"},
      {"apikeys: []\n", "(top level): unknown key 'apikeys'"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: PS256, public_key_file: "
       "jwt-rsa.pub.pem}\n",
       "jwt.keys[0] (k).alg: expected RS256, ES256 or HS256"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: none}\n",
       "jwt.keys[0] (k).alg: expected RS256, ES256 or HS256"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: HS256, secret_base64: "
       "c2hvcnQ=}\n",
       "expected at least 32 bytes of secret, got 5"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: RS256, public_key_file: "
       "jwt-ec.pub.pem}\n",
       "jwt.keys[0] (k): alg RS256 needs an RSA public key"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: ES256, public_key_file: "
       "jwt-rsa.pub.pem}\n",
       "alg ES256 needs an EC P-256"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: RS256, public_key_file: "
       "nope.pem}\n",
       "jwt.keys[0] (k).public_key_file: cannot open"},
      {"jwt:\n  issuer: i\n  audience: a\n  keys:\n    - {kid: k, alg: RS256, public_key_pem: "
       "\"not a key\"}\n",
       "expected a PEM public key"},
      {"jwt:\n  audience: a\n  keys: []\n", "jwt: missing 'issuer'"},
      {"client_certificates:\n  - {subject: CN=x, tenants: [\"*\"]}\n",
       "client_certificates[0] (CN=x): missing 'scopes'"},
      {"api_keys: [\n", "not valid YAML"},
  };
  for (const auto& c : cases) {
    WriteFile(dir_ / "credentials.yaml", c.yaml);
    auto created = Authenticator::Create(Options());
    ASSERT_FALSE(created.ok()) << c.yaml;
    EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_NE(created.status().message().find("credentials.yaml"), std::string::npos)
        << created.status().message();
    EXPECT_NE(created.status().message().find(c.expect), std::string::npos)
        << "want: " << c.expect << "\ngot: " << created.status().message();
  }
  // Deeply nested YAML: refused by the parser's depth guard, no stack overflow.
  WriteFile(dir_ / "credentials.yaml", "api_keys: " + std::string(200000, '[') + "\n");
  EXPECT_CODE(Authenticator::Create(Options()), kInvalidArgument);
  WriteFile(dir_ / "credentials.yaml", "api_keys:\n  - {id: a, sha256: " + h +
                                           ", tenants: " + std::string(1500, '[') +
                                           std::string(1500, ']') + ", scopes: [infer]}\n");
  EXPECT_CODE(Authenticator::Create(Options()), kInvalidArgument);
  // Oversized file.
  WriteFile(dir_ / "credentials.yaml", "# " + std::string(2 << 20, 'x') + "\n");
  auto big = Authenticator::Create(Options());
  EXPECT_CODE(std::move(big), kInvalidArgument);
}

TEST_F(AuthTest, DeployExampleParsesOnceFilledIn) {
  std::ifstream in(std::string(LIPSYNC_SOURCE_DIR) + "/deploy/credentials.example.yaml");
  ASSERT_TRUE(in.good());
  std::string example((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // As shipped, the placeholders refuse to load.
  WriteFile(dir_ / "credentials.yaml", example);
  EXPECT_CODE(Authenticator::Create(Options()), kInvalidArgument);

  auto replace_all = [&](const std::string& from, const std::string& to) {
    size_t at = example.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    for (; at != std::string::npos; at = example.find(from, at + to.size())) {
      example.replace(at, from.size(), to);
    }
  };
  replace_all("\"<64 hex digits: printf %s KEY | sha256sum>\"", HashApiKey(kAcmeKey));
  replace_all("<32 or more random bytes, base64: openssl rand -base64 32>", kHsSecretB64);
  replace_all(
      "        -----BEGIN PUBLIC KEY-----\n        (the key's base64 lines)\n"
      "        -----END PUBLIC KEY-----\n",
      Indent(ec_->public_pem, "        "));
  // Both example keys got the same hash: make the second one different.
  size_t second = example.rfind(HashApiKey(kAcmeKey));
  example.replace(second, 64, HashApiKey(kGlobexKey));
  auto auth = Make(example);
  ASSERT_TRUE(auth);
  EXPECT_EQ(Bearer(*auth, kAcmeKey)->id, "key:acme-backend");
  EXPECT_EQ(Bearer(*auth, kGlobexKey)->id, "key:ops-admin");
  Claims c;
  EXPECT_EQ(Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-2026", rsa_->private_pem, c))->id,
            "jwt:rsa-2026:alice");
  EXPECT_EQ(Bearer(*auth, Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, c))->id, "jwt:ec-1:alice");
  EXPECT_EQ(Bearer(*auth, Mint(JWT_ALG_HS256, "hs-1", kHsSecret, c))->id, "jwt:hs-1:alice");
  EXPECT_EQ(auth->Authenticate("", "CN=compositing-1,O=Example")->id,
            "cert:CN=compositing-1,O=Example");
}

TEST_F(AuthTest, ReloadPicksUpNewKeysAndDropsRemovedOnes) {
  auto auth = Make(CredentialsYaml(/*with_globex=*/false));
  ASSERT_TRUE(auth);
  EXPECT_TRUE(Bearer(*auth, kAcmeKey).ok());
  EXPECT_CODE(Bearer(*auth, kGlobexKey), kUnauthenticated);

  // Add globex, remove acme.
  std::string y = "api_keys:\n  - {id: globex-admin, sha256: " + HashApiKey(kGlobexKey) +
                  ", tenants: [globex], scopes: [admin]}\n";
  WriteFile(dir_ / "credentials.yaml", y);
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_EQ(Bearer(*auth, kGlobexKey)->id, "key:globex-admin");
  EXPECT_CODE(Bearer(*auth, kAcmeKey), kUnauthenticated);
  // JWT keys went with the old file.
  EXPECT_CODE(Bearer(*auth, Mint(JWT_ALG_RS256, "rsa-1", rsa_->private_pem, Claims{})),
              kUnauthenticated);

  // A broken file keeps the previous credentials.
  WriteFile(dir_ / "credentials.yaml", "api_keys:\n  - {id: x, sha256: nothex}\n");
  Status st = auth->Reload();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Bearer(*auth, kGlobexKey).ok());
  // A deleted file too.
  fs::remove(dir_ / "credentials.yaml");
  EXPECT_EQ(auth->Reload().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Bearer(*auth, kGlobexKey).ok());
}

TEST_F(AuthTest, BackgroundThreadReloadsOnChange) {
  WriteFile(dir_ / "credentials.yaml", CredentialsYaml(/*with_globex=*/false));
  AuthOptions o = Options();
  o.reload_interval = std::chrono::milliseconds(10);
  auto created = Authenticator::Create(o);
  ASSERT_TRUE(created.ok());
  auto& auth = *created.value();
  EXPECT_CODE(Bearer(auth, kGlobexKey), kUnauthenticated);

  // Waits (bounded) until `done` holds; polls, asserts no timing.
  auto eventually = [](const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return done();
  };
  WriteFile(dir_ / "credentials.yaml", CredentialsYaml(/*with_globex=*/true));
  EXPECT_TRUE(eventually([&] { return Bearer(auth, kGlobexKey).ok(); }));

  // A broken file is logged and ignored; a good one after it is picked up.
  WriteFile(dir_ / "credentials.yaml", "jwt: [broken\n");
  std::string only_acme = "api_keys:\n  - {id: acme-2, sha256: " + HashApiKey(kAcmeKey) +
                          ", tenants: [acme], scopes: [infer]}\n";
  // The broken file never takes effect: the old credentials answer until the next good one.
  EXPECT_TRUE(Bearer(auth, kGlobexKey).ok());
  WriteFile(dir_ / "credentials.yaml", only_acme);
  EXPECT_TRUE(eventually([&] {
    auto p = Bearer(auth, kAcmeKey);
    return p.ok() && p->id == "key:acme-2";
  }));
  EXPECT_CODE(Bearer(auth, kGlobexKey), kUnauthenticated);
}

TEST_F(AuthTest, ConcurrentAuthenticateDuringReload) {
  auto auth = Make();
  ASSERT_TRUE(auth);
  std::string token = Mint(JWT_ALG_ES256, "ec-1", ec_->private_pem, Claims{});
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      while (!stop) {
        if (!Bearer(*auth, kAcmeKey).ok()) ++failures;
        if (!Bearer(*auth, token).ok()) ++failures;
      }
    });
  }
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(auth->Reload().ok());
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace lipsync::auth
