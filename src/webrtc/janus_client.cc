#include "webrtc/janus_client.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

namespace lipsync::webrtc {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using json = nlohmann::json;

constexpr size_t kMaxReplyBytes = 1 << 20;
constexpr const char* kPlugin = "janus.plugin.streaming";

std::string Clip(const std::string& s, size_t n = 200) {
  return s.size() <= n ? s : s.substr(0, n) + "...";
}

std::string RandomToken(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    std::random_device rd;  // OpenSSL's generator failed: still unpredictable enough
    for (auto& b : raw) b = static_cast<unsigned char>(rd());
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

// A mountpoint's secret (Janus asks for it to destroy the mountpoint), derived from the
// admin_key, so that a restarted server can remove what its previous run left and a
// viewer, who never sees the admin_key, cannot.
std::string MountpointSecret(const std::string& admin_key, const std::string& instance,
                             uint64_t id) {
  const std::string material =
      "lipsync-mountpoint\n" + admin_key + "\n" + instance + "\n" + std::to_string(id);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(material.data()), material.size(), digest);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 16; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

uint64_t RandomMountpointId() {
  uint64_t v = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1) v = std::random_device{}();
  // Janus ids are JSON numbers: stay below 2^53 so that every JSON reader keeps them exact.
  v &= (uint64_t(1) << 53) - 1;
  return v == 0 ? 1 : v;
}

// The Janus error in a reply, as a status; OK when the reply is not an error.
Status JanusError(const json& reply, const std::string& what) {
  if (reply.value("janus", "") != "error") return Status::Ok();
  const json& err = reply.contains("error") ? reply["error"] : json::object();
  const int code = err.value("code", 0);
  const std::string reason = Clip(err.value("reason", std::string("no reason given")));
  const std::string message = what + ": Janus error " + std::to_string(code) + " (" + reason + ")";
  if (code == 403) return Status::PermissionDenied(message + "; check webrtc.api_secret");
  if (code == 458 || code == 459) return Status::Unavailable(message + "; Janus restarted?");
  return Status::Internal(message);
}

}  // namespace

Expected<std::unique_ptr<JanusClient>> JanusClient::Connect(const JanusOptions& options) {
  LIPSYNC_ASSIGN_OR_RETURN(Url url, ParseUrl(options.url, "webrtc.janus_url", "/janus"));
  LIPSYNC_ASSIGN_OR_RETURN(Url admin_url,
                           ParseUrl(options.admin_url, "webrtc.admin_url", "/admin"));
  if (options.api_secret.empty() || options.admin_key.empty()) {
    return Status::InvalidArgument(
        "webrtc: api_secret and admin_key must be set (Janus's api_secret, the streaming "
        "plugin's admin_key)");
  }
  if (options.timeout_seconds <= 0 || options.timeout_seconds > 60) {
    return Status::InvalidArgument("webrtc.timeout_seconds: expected 0 < t <= 60");
  }
  JanusOptions o = options;
  if (o.rtp_host.empty()) o.rtp_host = url.host;
  std::unique_ptr<JanusClient> client(
      new JanusClient(std::move(o), std::move(url), std::move(admin_url)));
  LIPSYNC_RETURN_IF_ERROR(client->Reconnect());
  return client;
}

JanusClient::JanusClient(JanusOptions options, Url url, Url admin_url)
    : options_(std::move(options)), url_(std::move(url)), admin_url_(std::move(admin_url)) {}

Expected<JanusClient::Url> JanusClient::ParseUrl(const std::string& text, const char* key,
                                                 const char* default_path) {
  // http://host[:port]/path
  const std::string prefix = "http://";
  if (text.compare(0, prefix.size(), prefix) != 0 || text.size() > 1024) {
    return Status::InvalidArgument(std::string(key) + " '" + Clip(text, 100) +
                                   "': expected http://host:port" + default_path);
  }
  std::string rest = text.substr(prefix.size());
  Url url;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  url.path = slash == std::string::npos ? default_path : rest.substr(slash);
  while (url.path.size() > 1 && url.path.back() == '/') url.path.pop_back();
  const size_t colon = authority.rfind(':');
  url.host = colon == std::string::npos ? authority : authority.substr(0, colon);
  url.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (url.host.empty() || url.port.empty() ||
      url.port.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument(std::string(key) + " '" + Clip(text, 100) +
                                   "': expected http://host:port" + default_path);
  }
  return url;
}

JanusClient::~JanusClient() {
  std::lock_guard<std::mutex> lock(mu_);
  if (session_ == 0) return;
  json destroy = {{"janus", "destroy"},
                  {"transaction", std::to_string(++transaction_)},
                  {"apisecret", options_.api_secret}};
  (void)Post(url_.path + "/" + std::to_string(session_), destroy.dump());
}

Expected<std::string> JanusClient::Post(const std::string& path, const std::string& body) {
  return PostTo(url_, path, body);
}

Expected<std::string> JanusClient::PostTo(const Url& target, const std::string& path,
                                          const std::string& body) {
  net::io_context ioc;
  net::ip::tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  const auto timeout = std::chrono::milliseconds(int64_t(options_.timeout_seconds * 1000));
  beast::error_code ec;
  const std::string where = "Janus at " + target.host + ":" + target.port;
  auto endpoints = resolver.resolve(target.host, target.port, ec);
  if (ec) return Status::Unavailable(where + ": " + ec.message());
  stream.expires_after(timeout);
  stream.connect(endpoints, ec);
  if (ec) return Status::Unavailable(where + ": " + ec.message());
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, target.host);
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  stream.expires_after(timeout);
  http::write(stream, req, ec);
  if (ec) return Status::Unavailable(where + ": sending: " + ec.message());
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  stream.expires_after(timeout);
  http::read(stream, buffer, parser, ec);
  if (ec) return Status::Unavailable(where + ": reading the reply: " + ec.message());
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  auto res = parser.release();
  if (res.result() != http::status::ok) {
    return Status::Unavailable(where + ": HTTP " + std::to_string(res.result_int()) + " for " +
                               Clip(path, 80));
  }
  return std::move(res.body());
}

Status JanusClient::Reconnect() {
  std::lock_guard<std::mutex> lock(mu_);
  session_ = handle_ = 0;
  json create = {{"janus", "create"},
                 {"transaction", std::to_string(++transaction_)},
                 {"apisecret", options_.api_secret}};
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, Post(url_.path, create.dump()));
  json reply = json::parse(text, nullptr, false);
  if (reply.is_discarded()) return Status::Internal("Janus create: the reply is not JSON");
  LIPSYNC_RETURN_IF_ERROR(JanusError(reply, "Janus create session"));
  const json data = reply.value("data", json::object());
  if (!data.contains("id") || !data["id"].is_number_unsigned()) {
    return Status::Internal("Janus create: no session id in '" + Clip(text) + "'");
  }
  session_ = data["id"].get<uint64_t>();
  return Attach();
}

Status JanusClient::Attach() {
  json attach = {{"janus", "attach"},
                 {"plugin", kPlugin},
                 {"transaction", std::to_string(++transaction_)},
                 {"apisecret", options_.api_secret}};
  LIPSYNC_ASSIGN_OR_RETURN(std::string text,
                           Post(url_.path + "/" + std::to_string(session_), attach.dump()));
  json reply = json::parse(text, nullptr, false);
  if (reply.is_discarded()) return Status::Internal("Janus attach: the reply is not JSON");
  LIPSYNC_RETURN_IF_ERROR(JanusError(reply, "Janus attach to the streaming plugin"));
  const json data = reply.value("data", json::object());
  if (!data.contains("id") || !data["id"].is_number_unsigned()) {
    return Status::Internal("Janus attach: no handle id in '" + Clip(text) +
                            "' (is the streaming plugin loaded?)");
  }
  handle_ = data["id"].get<uint64_t>();
  return Status::Ok();
}

Expected<std::string> JanusClient::PluginRequest(const std::string& body_json) {
  if (session_ == 0 || handle_ == 0) {
    return Status::Unavailable("no Janus session (Janus was unreachable or restarted)");
  }
  json message = {{"janus", "message"},
                  {"transaction", std::to_string(++transaction_)},
                  {"apisecret", options_.api_secret},
                  {"body", json::parse(body_json)}};
  return Post(url_.path + "/" + std::to_string(session_) + "/" + std::to_string(handle_),
              message.dump());
}

namespace {
// The streaming plugin's answer inside a Janus reply; its error as a status.
Expected<json> PluginData(const std::string& text, const std::string& what) {
  json reply = json::parse(text, nullptr, false);
  if (reply.is_discarded()) return Status::Internal(what + ": the reply is not JSON");
  LIPSYNC_RETURN_IF_ERROR(JanusError(reply, what));
  if (!reply.contains("plugindata") || !reply["plugindata"].contains("data")) {
    return Status::Internal(what + ": no plugin data in '" + Clip(text) + "'");
  }
  json data = reply["plugindata"]["data"];
  if (data.contains("error_code")) {
    const int code = data.value("error_code", 0);
    const std::string message = what + ": streaming plugin error " + std::to_string(code) + " (" +
                                Clip(data.value("error", std::string())) + ")";
    if (code == 457) return Status::PermissionDenied(message + "; check webrtc.admin_key");
    if (code == 455) return Status::NotFound(message);
    return Status::Internal(message);
  }
  return data;
}
}  // namespace

Expected<Mountpoint> JanusClient::CreateMountpoint(const std::string& label, uint64_t id) {
  Mountpoint m;
  m.id = id != 0 ? id : RandomMountpointId();
  m.secret = MountpointSecret(options_.admin_key, options_.instance, m.id);
  m.pin = RandomToken(8);
  m.rtp_host = options_.rtp_host;
  json video = {{"type", "video"},
                {"mid", "v"},
                {"label", "video"},
                {"port", 0},
                {"pt", 96},
                {"codec", "h264"},
                {"fmtp", "profile-level-id=42e01f;packetization-mode=1"}};
  json audio = {{"type", "audio"}, {"mid", "a"}, {"label", "audio"},
                {"port", 0},       {"pt", 111},  {"codec", "opus"}};
  if (!options_.rtp_interface.empty()) {
    video["iface"] = options_.rtp_interface;
    audio["iface"] = options_.rtp_interface;
  }
  json body = {{"request", "create"},
               {"type", "rtp"},
               {"id", m.id},
               {"name", "lipsync-" + std::to_string(m.id)},
               {"description", "lipsync:" + options_.instance + ":" + label.substr(0, 64)},
               {"secret", m.secret},
               {"pin", m.pin},
               {"is_private", true},
               {"permanent", false},
               {"admin_key", options_.admin_key},
               {"media", json::array({video, audio})}};
  std::lock_guard<std::mutex> lock(mu_);
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, PluginRequest(body.dump()));
  LIPSYNC_ASSIGN_OR_RETURN(json data, PluginData(text, "Janus create mountpoint"));
  const json stream = data.value("stream", json::object());
  for (const auto& p : stream.value("ports", json::array())) {
    const std::string mid = p.value("mid", "");
    const int port = p.value("port", 0);
    if (mid == "v") m.video_port = port;
    if (mid == "a") m.audio_port = port;
  }
  if (m.video_port <= 0 || m.audio_port <= 0) {
    return Status::Internal("Janus create mountpoint: no ports in '" + Clip(text) + "'");
  }
  return m;
}

Status JanusClient::DestroyMountpoint(const Mountpoint& mountpoint) {
  json body = {{"request", "destroy"},
               {"id", mountpoint.id},
               {"secret", mountpoint.secret},
               {"admin_key", options_.admin_key}};
  std::lock_guard<std::mutex> lock(mu_);
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, PluginRequest(body.dump()));
  return PluginData(text, "Janus destroy mountpoint " + std::to_string(mountpoint.id)).status();
}

Expected<std::vector<uint64_t>> JanusClient::OwnMountpoints() {
  json body = {{"request", "list"}, {"admin_key", options_.admin_key}};
  std::lock_guard<std::mutex> lock(mu_);
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, PluginRequest(body.dump()));
  LIPSYNC_ASSIGN_OR_RETURN(json data, PluginData(text, "Janus list mountpoints"));
  std::vector<uint64_t> ids;
  const std::string mine = "lipsync:" + options_.instance + ":";
  for (const auto& m : data.value("list", json::array())) {
    const std::string description = m.value("description", "");
    if (description.compare(0, mine.size(), mine) == 0 && m.contains("id") &&
        m["id"].is_number_unsigned()) {
      ids.push_back(m["id"].get<uint64_t>());
    }
  }
  return ids;
}

Expected<int> JanusClient::RemoveStale() {
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<uint64_t> ids, OwnMountpoints());
  int removed = 0;
  for (uint64_t id : ids) {
    json body = {{"request", "destroy"},
                 {"id", id},
                 {"secret", MountpointSecret(options_.admin_key, options_.instance, id)},
                 {"admin_key", options_.admin_key}};
    std::lock_guard<std::mutex> lock(mu_);
    auto text = PluginRequest(body.dump());
    if (text.ok() && PluginData(*text, "Janus destroy").ok()) ++removed;
  }
  return removed;
}

Status JanusClient::Keepalive() {
  std::lock_guard<std::mutex> lock(mu_);
  if (session_ == 0) return Status::Unavailable("no Janus session");
  json keepalive = {{"janus", "keepalive"},
                    {"transaction", std::to_string(++transaction_)},
                    {"apisecret", options_.api_secret}};
  LIPSYNC_ASSIGN_OR_RETURN(std::string text,
                           Post(url_.path + "/" + std::to_string(session_), keepalive.dump()));
  json reply = json::parse(text, nullptr, false);
  if (reply.is_discarded()) return Status::Internal("Janus keepalive: the reply is not JSON");
  return JanusError(reply, "Janus keepalive");
}

Status JanusClient::AdminRequest(const std::string& what, const std::string& body_json) {
  if (options_.admin_secret.empty()) {
    return Status::FailedPrecondition(what + ": webrtc.admin_secret is not set");
  }
  json request = json::parse(body_json);
  request["transaction"] = std::to_string(++transaction_);
  request["admin_secret"] = options_.admin_secret;
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, PostTo(admin_url_, admin_url_.path, request.dump()));
  json reply = json::parse(text, nullptr, false);
  if (reply.is_discarded()) return Status::Internal(what + ": the reply is not JSON");
  if (reply.value("janus", "") != "error") return Status::Ok();
  const json& err = reply.contains("error") ? reply["error"] : json::object();
  const int code = err.value("code", 0);
  const std::string message = what + ": Janus admin error " + std::to_string(code) + " (" +
                              Clip(err.value("reason", std::string("no reason given"))) + ")";
  if (code == 403) return Status::PermissionDenied(message + "; check webrtc.admin_secret");
  if (code == 470) return Status::NotFound(message);
  return Status::FailedPrecondition(message + "; is token_auth = true in janus.jcfg?");
}

Expected<std::string> JanusClient::AddToken() {
  const std::string token = RandomToken(16);
  json body = {{"janus", "add_token"}, {"token", token}, {"plugins", json::array({kPlugin})}};
  std::lock_guard<std::mutex> lock(mu_);
  LIPSYNC_RETURN_IF_ERROR(AdminRequest("Janus add_token", body.dump()));
  return token;
}

Status JanusClient::RemoveToken(const std::string& token) {
  json body = {{"janus", "remove_token"}, {"token", token}};
  std::lock_guard<std::mutex> lock(mu_);
  return AdminRequest("Janus remove_token", body.dump());
}

}  // namespace lipsync::webrtc
