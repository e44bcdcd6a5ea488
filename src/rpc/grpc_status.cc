#include "rpc/grpc_status.h"

namespace lipsync::rpc {

grpc::Status ToGrpc(const Status& status) {
  using grpc::StatusCode;
  StatusCode code = StatusCode::UNKNOWN;
  switch (status.code()) {
    case lipsync::StatusCode::kOk:
      return grpc::Status::OK;
    case lipsync::StatusCode::kCancelled:
      code = StatusCode::CANCELLED;
      break;
    case lipsync::StatusCode::kInvalidArgument:
      code = StatusCode::INVALID_ARGUMENT;
      break;
    case lipsync::StatusCode::kDeadlineExceeded:
      code = StatusCode::DEADLINE_EXCEEDED;
      break;
    case lipsync::StatusCode::kNotFound:
      code = StatusCode::NOT_FOUND;
      break;
    case lipsync::StatusCode::kAlreadyExists:
      code = StatusCode::ALREADY_EXISTS;
      break;
    case lipsync::StatusCode::kResourceExhausted:
      code = StatusCode::RESOURCE_EXHAUSTED;
      break;
    case lipsync::StatusCode::kFailedPrecondition:
      code = StatusCode::FAILED_PRECONDITION;
      break;
    case lipsync::StatusCode::kUnavailable:
      code = StatusCode::UNAVAILABLE;
      break;
    case lipsync::StatusCode::kInternal:
      code = StatusCode::INTERNAL;
      break;
    case lipsync::StatusCode::kUnauthenticated:
      code = StatusCode::UNAUTHENTICATED;
      break;
    case lipsync::StatusCode::kPermissionDenied:
      code = StatusCode::PERMISSION_DENIED;
      break;
  }
  return grpc::Status(code, status.message());
}

Status FromGrpc(const grpc::Status& status) {
  using C = lipsync::StatusCode;
  C code = C::kInternal;
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      return Status::Ok();
    case grpc::StatusCode::CANCELLED:
      code = C::kCancelled;
      break;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      code = C::kInvalidArgument;
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      code = C::kDeadlineExceeded;
      break;
    case grpc::StatusCode::NOT_FOUND:
      code = C::kNotFound;
      break;
    case grpc::StatusCode::ALREADY_EXISTS:
      code = C::kAlreadyExists;
      break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      code = C::kResourceExhausted;
      break;
    case grpc::StatusCode::FAILED_PRECONDITION:
      code = C::kFailedPrecondition;
      break;
    case grpc::StatusCode::UNAVAILABLE:
      code = C::kUnavailable;
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      code = C::kUnauthenticated;
      break;
    case grpc::StatusCode::PERMISSION_DENIED:
      code = C::kPermissionDenied;
      break;
    default:
      code = C::kInternal;
      break;
  }
  return Status(code, status.error_message());
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace lipsync::rpc
