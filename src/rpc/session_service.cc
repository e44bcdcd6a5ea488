#include "rpc/session_service.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "rpc/grpc_status.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::compositing;
using namespace std::chrono_literals;

// After the last message, how long a client that has not half-closed is waited for.
constexpr auto kHalfCloseGrace = 2s;

SessionBridgeOptions OptionsFrom(const compositing::CompositingServer& server) {
  SessionBridgeOptions options;
  options.config = session::FromConfig(server.config());
  return options;
}

}  // namespace

SessionService::SessionService(compositing::CompositingServer* server)
    : SessionService(server, OptionsFrom(*server)) {}

SessionService::SessionService(compositing::CompositingServer* server, SessionBridgeOptions options)
    : server_(server), options_(std::move(options)), limiter_(options_.config.max_sessions) {}

grpc::Status SessionService::StreamSession(
    ServerOps& ops, grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::SessionOutput, pb::SessionInput>* stream) {
  return ops.HandleStream(context, "StreamSession", [&](StreamCall& call) -> grpc::Status {
    {
      std::lock_guard<std::mutex> lock(streams_mu_);
      if (stopping_) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "server is shutting down; expected a new session on another server");
      }
      streams_.insert(context);
    }
    struct Unregister {
      SessionService* service;
      grpc::ServerContext* context;
      ~Unregister() {
        std::lock_guard<std::mutex> lock(service->streams_mu_);
        service->streams_.erase(context);
      }
    } unregister{this, context};
    SessionBridge bridge(server_, &limiter_, options_, [&](const pb::SessionOpen& open) -> Status {
      const int fps = open.fps() > 0 ? open.fps() : 25;
      return FromGrpc(call.Open(open.model_id(), auth::Scope::kStream, fps));
    });
    bridge.ReportStagesTo(&call);
    // Writer: the viewer's queue to the stream. Write blocks while the client is slow;
    // the bridge then drops frames for this viewer only.
    std::atomic<bool> client_gone{false};
    std::mutex mu;
    std::condition_variable cv;
    bool reader_done = false;
    bool forced_end = false;
    std::thread writer([&] {
      pb::SessionOutput out;
      while (true) {
        if (context->IsCancelled()) {
          client_gone = true;
          break;
        }
        if (!bridge.Pop(&out, 100ms)) {
          if (bridge.ended()) break;
          continue;
        }
        const int64_t bytes = static_cast<int64_t>(out.ByteSizeLong());
        const bool is_frame = out.has_frame();
        if (!stream->Write(out)) {
          client_gone = true;
          break;
        }
        call.AddBytes(0, bytes);
        if (is_frame) call.AddFrames(1);
      }
      if (client_gone) {
        bridge.Cancel();
        return;
      }
      // Everything is sent. The handler may still be blocked in Read (a client that did
      // not half-close after CLOSE): give it a moment, then cancel the call to free it.
      std::unique_lock<std::mutex> lock(mu);
      if (!cv.wait_for(lock, kHalfCloseGrace, [&] { return reader_done; })) {
        forced_end = true;
        context->TryCancel();
      }
    });

    // Reader: this thread.
    pb::SessionInput in;
    bool input_open = true;
    while (!client_gone && !bridge.ending()) {
      if (!stream->Read(&in)) {
        input_open = false;
        break;
      }
      call.AddBytes(static_cast<int64_t>(in.ByteSizeLong()), 0);
      SessionBridge::Feed feed = bridge.Push(in);
      // Flow control: the session's audio buffer is full; read nothing until it drains.
      while (feed == SessionBridge::Feed::kRetry && !client_gone && !context->IsCancelled()) {
        std::this_thread::sleep_for(10ms);
        feed = bridge.Push(in);
      }
      if (feed == SessionBridge::Feed::kEnd) break;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      reader_done = true;
    }
    cv.notify_all();
    if (!forced_end && context->IsCancelled()) client_gone = true;
    if (client_gone) {
      bridge.Cancel();
    } else if (!input_open) {
      bridge.InputDone();  // half-close: finish what is queued, then end
    }
    writer.join();  // the queue drained (or the client left)
    if (client_gone && !forced_end) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the session");
    }
    return ToGrpc(bridge.end_status());
  });
}

void SessionService::Shutdown() {
  std::lock_guard<std::mutex> lock(streams_mu_);
  stopping_ = true;
  for (grpc::ServerContext* context : streams_) context->TryCancel();
  if (!streams_.empty()) {
    LOG_INFO("sessions: ending %zu live session(s) for shutdown", streams_.size());
  }
}

int SessionService::active_streams() const {
  std::lock_guard<std::mutex> lock(streams_mu_);
  return static_cast<int>(streams_.size());
}

}  // namespace lipsync::rpc
