// The gRPC live session (CompositingService.StreamSession; docs/STREAMING.md): a sync
// bidirectional stream translated by a SessionBridge. The handler thread reads; a
// writer thread drains the bridge's per-viewer queue to the stream (Write blocks while
// the viewer is slow: the queue then drops frames for it alone).
//  - Credentials from the metadata at stream start (ServerOps::HandleStream), scope
//    `stream` and the tenant once `open` arrives, rate limits per session start (one
//    second of frames), one audit line at the end (frames sent, code).
//  - Flow control: while the session's audio buffer is full the handler stops reading
//    (gRPC's window then holds the sender) and retries as it drains.
//  - The client cancels or disconnects: the session ends at once and its slot is free.
//  - Half-close acts as CLOSE: the stream ends with OK after CLOSED and the last stats.
//
// Thread-safe (one handler per stream); the compositing server outlives it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <set>

#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "rpc/server_ops.h"
#include "rpc/session_bridge.h"
#include "session/live_session.h"

namespace lipsync::rpc {

class SessionService {
 public:
  // Settings from the server's `session:` config section.
  explicit SessionService(compositing::CompositingServer* server);
  SessionService(compositing::CompositingServer* server, SessionBridgeOptions options);

  grpc::Status StreamSession(
      ServerOps& ops, grpc::ServerContext* context,
      grpc::ServerReaderWriter<::compositing::SessionOutput, ::compositing::SessionInput>* stream);

  // Sessions running now (all transports sharing this limiter).
  session::SessionLimiter& limiter() { return limiter_; }
  const SessionBridgeOptions& options() const { return options_; }
  // Server shutdown: refuses new streams (UNAVAILABLE) and ends every running one now
  // (its call is cancelled), so a draining server does not wait its whole grace period
  // for sessions that would never end on their own. Idempotent.
  void Shutdown();
  int active_streams() const;

  // Test hooks for the sessions started from now on (set before any stream).
  void set_hooks(session::SessionHooks hooks) { options_.hooks = std::move(hooks); }
  // The server's Janus connection for sessions asking for WebRTC (set at startup,
  // before any stream; null: off).
  void set_webrtc(std::shared_ptr<webrtc::WebRtcHub> hub) { options_.webrtc = std::move(hub); }

 private:
  compositing::CompositingServer* server_;
  SessionBridgeOptions options_;
  session::SessionLimiter limiter_;
  mutable std::mutex streams_mu_;
  bool stopping_ = false;
  std::set<grpc::ServerContext*> streams_;
};

}  // namespace lipsync::rpc
