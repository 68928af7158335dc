// A client of QEMU's machine protocol (QMP): JSON objects over a unix socket, one per line.
// Used by the qemu VM driver (qemu_guest.h, docs/qemu.md) for status, pause/resume and quit,
// and later for migration.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::vm {

struct QmpOptions {
  // Deadline for the greeting and the qmp_capabilities handshake of Connect().
  std::chrono::milliseconds connect_timeout{5000};
  // A message from QEMU larger than this is a protocol error (the connection closes). The
  // largest replies DWCP asks for (query-migrate, query-status) are a few KiB.
  size_t max_message_bytes = 1 << 20;
  // Events kept for TakeEvents()/WaitForEvent(); older ones are dropped first.
  size_t max_queued_events = 1024;
};

struct QmpEvent {
  std::string name;     // "STOP", "RESUME", "SHUTDOWN", "MIGRATION", ...
  nlohmann::json data;  // the event's "data" object (empty object when it has none)
  int64_t timestamp_us = 0;
};

// One QMP connection, in command mode after Connect(). Thread-safe: commands are serialized
// (QMP answers in order); events that arrive while waiting for a reply are queued.
//
// Errors are Status values naming the socket:
//   kNotFound          the socket file does not exist
//   kUnavailable       nothing listens there, or QEMU closed the connection (after `quit`)
//   kDeadlineExceeded  no greeting or no reply in time (the connection stays usable; a late
//                      reply is recognized by its id and dropped)
//   kProtocol          not QMP: no greeting, malformed JSON, a message over the size limit
//                      (the connection is closed: its framing can no longer be trusted)
//   others             QEMU's own error: "QEMU refused 'cont': GenericError: <desc>"; the
//                      code follows the class (CommandNotFound: kUnimplemented,
//                      DeviceNotFound: kNotFound, anything else: kFailedPrecondition)
class QmpClient {
 public:
  // Connects to `socket_path`, reads the greeting and enters command mode.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                    const QmpOptions& options = {});
  // The same over an already connected stream socket `fd` (taken over: closed on failure
  // and with the client); `name` stands for the socket path in errors. For a socket QEMU
  // was handed (-qmp fd:N) and for the QMP fuzz target (fuzz/qmp_fuzzer.cc).
  static Result<std::unique_ptr<QmpClient>> Adopt(int fd, const std::string& name,
                                                  const QmpOptions& options = {});
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` with `arguments` (an object; empty: none) and returns its "return" value.
  Result<nlohmann::json> Execute(const std::string& command,
                                 const nlohmann::json& arguments = nlohmann::json::object(),
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Returns the first queued or arriving event named `name` (removing it from the queue), or
  // kDeadlineExceeded. Commands from other threads wait meanwhile.
  Result<QmpEvent> WaitForEvent(const std::string& name, std::chrono::milliseconds timeout);
  // Removes and returns every queued event, oldest first.
  std::vector<QmpEvent> TakeEvents();

  // The greeting's QEMU version, "7.2.22".
  const std::string& qemu_version() const { return qemu_version_; }
  const std::string& socket_path() const { return path_; }
  // False once the connection closed or broke; every later call fails with kUnavailable.
  bool connected() const;
  void Close();

 private:
  QmpClient(int fd, std::string path, QmpOptions options);
  using Deadline = std::chrono::steady_clock::time_point;
  // Reads the next message (a JSON object) from the socket. Caller holds mu_.
  Result<nlohmann::json> ReadMessage(Deadline deadline);
  // Queues `msg` if it is an event; true if it was one. Caller holds mu_.
  bool QueueIfEvent(const nlohmann::json& msg);
  Status Broken(Status why);  // closes the socket, remembers why; caller holds mu_
  Status ClosedError() const;

  mutable std::mutex mu_;
  int fd_ = -1;
  const std::string path_;
  const QmpOptions options_;
  std::string buffer_;  // received bytes not yet parsed
  std::deque<QmpEvent> events_;
  uint64_t next_id_ = 1;
  std::string closed_reason_;
  std::string qemu_version_;
};

}  // namespace dwcp::vm
