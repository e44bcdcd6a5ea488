// Status <-> grpc::Status, one place for the code mapping.
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace lipsync::rpc {

grpc::Status ToGrpc(const Status& status);
Status FromGrpc(const grpc::Status& status);
// "OK", "RESOURCE_EXHAUSTED", ... (the names gRPC documents).
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace lipsync::rpc
