// Errors as values: Status for operations without a result, Result<T> for those with one.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace dwcp {

// Codes map onto HTTP statuses in the API (api::HttpStatusOf) and onto
// `error_type` label values in metrics.
enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // bad user input: 400
  kNotFound,            // unknown VM, node, migration: 404
  kAlreadyExists,       // 409
  kFailedPrecondition,  // e.g. VM already migrating, CAS mismatch: 409
  kAborted,             // operation aborted (peer gone, shutdown): 409/500
  kUnavailable,         // peer or store unreachable: 503
  kDeadlineExceeded,    // 504
  kDataLoss,            // digest or checksum mismatch
  kProtocol,            // malformed/oversized/out-of-order frame from a peer
  kUnauthenticated,     // 401
  kInternal,            // 500
  kUnimplemented,       // 501
};

// Stable snake_case name of a code ("not_found"); used in JSON errors and labels.
const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "not_found: vm vm-1 does not exist"
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status FailedPrecondition(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status ProtocolError(std::string m) { return {StatusCode::kProtocol, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace dwcp

// Returns from the enclosing function when `expr` yields a non-OK Status.
#define DWCP_RETURN_IF_ERROR(expr) \
  do {                             \
    ::dwcp::Status _st = (expr);   \
    if (!_st.ok()) return _st;     \
  } while (0)

// The coroutine form: co_returns the non-OK Status of `expr` (an awaited Status).
#define DWCP_CO_RETURN_IF_ERROR(expr) \
  do {                                \
    ::dwcp::Status _st = (expr);      \
    if (!_st.ok()) co_return _st;     \
  } while (0)
