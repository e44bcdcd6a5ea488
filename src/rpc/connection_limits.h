// gRPC transport limits of one server (config::ConnectionConfig, docs/OPERATIONS.md
// "Connection limits"): HTTP/2 streams per connection, keepalive and the ping policy,
// idle connections, a resource quota (memory and threads), the handshake deadline, and
// a bound on how long a request message may take to arrive.
//
// gRPC 1.51 has no setting for the last one: a unary request whose message never
// completes is held by gRPC core (no handler runs) until the client gives up. So
// BoundRequestReads registers the unary methods of our services with a handler that
// starts when the call's headers arrive, reads the request message itself, and cancels
// the call (HTTP/2 RST_STREAM) when the message is not complete within
// request_read_timeout_seconds. The timer covers only that one read: a call that has
// its request runs as long as it runs, and streaming methods (grpc.health.v1 Watch,
// session streams) are not touched, so long-lived streams are never cut.
// The same handler answers a request that is not a valid message INVALID_ARGUMENT
// ("request is not a valid <Message> (N bytes): <what>; expected a serialized
// <Message>") where gRPC would answer INTERNAL with an empty message.
//
// Thread-safety: ApplyConnectionLimits and BoundRequestReads are called while a server
// is being built, before it serves (not concurrently for the same service); the
// handlers they install are thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>

#include "common/status.h"
#include "config/config.h"

namespace lipsync::rpc {

// Sets the channel arguments and the resource quota of `config` on `builder`:
// GRPC_ARG_MAX_CONCURRENT_STREAMS, keepalive (time, timeout, pings on quiet
// connections allowed in both directions: client pings every 10 s or slower are never
// answered with GOAWAY), GRPC_ARG_MAX_CONNECTION_IDLE_MS, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS
// (= request_read_timeout_seconds) and a grpc::ResourceQuota of resource_quota_mb and
// max_threads. Never sets GRPC_ARG_MAX_CONNECTION_AGE_MS (it would cut long streams).
void ApplyConnectionLimits(grpc::ServerBuilder* builder, const config::ConnectionConfig& config);

// Installs the bounded request read (see the file comment) on every unary method of
// `service` when it is one of ours (inference.InferenceService,
// compositing.CompositingService); other services are left as they are. Call before
// ServerBuilder::RegisterService. Calling it again for the same service replaces the
// bound. INTERNAL when the generated service no longer matches the method table here
// (a method added or reordered in a .proto without updating connection_limits.cc).
Status BoundRequestReads(grpc::Service* service, const config::ConnectionConfig& config);

// Calls cancelled because their request did not arrive in time, since the process
// started (all servers together).
int64_t RequestReadTimeouts();

// The INVALID_ARGUMENT message for `bytes` that failed to parse as `message_name`
// (says where the wire data breaks; quotes none of it). Exposed for tests.
std::string MalformedRequestMessage(const std::string& message_name, const std::string& bytes);

}  // namespace lipsync::rpc
