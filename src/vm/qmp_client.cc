#include "vm/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace dwcp::vm {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string Excerpt(const std::string& text) {
  constexpr size_t kMax = 200;
  return text.size() <= kMax ? text : text.substr(0, kMax) + "...";
}

// The Status of a QMP {"error": {"class", "desc"}} reply to `command`.
Status QemuError(const std::string& command, const json& error) {
  std::string cls = "unknown class", desc = "no description";
  if (error.is_object()) {
    if (error.contains("class") && error["class"].is_string()) cls = error["class"];
    if (error.contains("desc") && error["desc"].is_string()) desc = error["desc"];
  }
  const std::string message = "QEMU refused '" + command + "': " + cls + ": " + desc;
  if (cls == "CommandNotFound") return Unimplemented(message);
  if (cls == "DeviceNotFound") return NotFound(message);
  return FailedPrecondition(message);
}

// `object[key]`, or null when `object` is not an object or lacks it: never throws.
const json& Field(const json& object, const char* key) {
  static const json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

// An integer field, 0 when missing or not an integer (QMP's numbers are JSON integers).
int64_t IntField(const json& object, const char* key) {
  const json& v = Field(object, key);
  if (v.is_number_unsigned()) {  // checked first: is_number_integer() is true for both
    return static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX));
  }
  return v.is_number_integer() ? v.get<int64_t>() : 0;
}

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left.count(), 1 << 30));
}

}  // namespace

QmpClient::QmpClient(int fd, std::string path, QmpOptions options)
    : fd_(fd), path_(std::move(path)), options_(options) {}

QmpClient::~QmpClient() { Close(); }

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      const QmpOptions& options) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path)) {
    return Status(InvalidArgument("QMP socket path '" + socket_path + "' must be 1-" +
                                  std::to_string(sizeof(addr.sun_path) - 1) + " bytes long"));
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Internal(std::string("socket(AF_UNIX): ") + std::strerror(errno)));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    if (err == ENOENT) {
      return Status(NotFound("QMP socket " + socket_path + " does not exist"));
    }
    if (err == ECONNREFUSED) {
      return Status(Unavailable("nothing listens on the QMP socket " + socket_path +
                                " (QEMU is not running?)"));
    }
    return Status(
        Unavailable("cannot connect to the QMP socket " + socket_path + ": " + std::strerror(err)));
  }
  return Adopt(fd, socket_path, options);
}

Result<std::unique_ptr<QmpClient>> QmpClient::Adopt(int fd, const std::string& socket_path,
                                                    const QmpOptions& options) {
  std::unique_ptr<QmpClient> client(new QmpClient(fd, socket_path, options));
  const auto deadline = Clock::now() + options.connect_timeout;
  {
    std::lock_guard lock(client->mu_);
    auto greeting = client->ReadMessage(deadline);
    if (!greeting.ok()) {
      const Status& st = greeting.status();
      if (st.code() == StatusCode::kDeadlineExceeded) {
        return Status(DeadlineExceeded("no QMP greeting on " + socket_path + " within " +
                                       std::to_string(options.connect_timeout.count()) +
                                       " ms (is another client connected? QEMU serves one)"));
      }
      return st;
    }
    if (!greeting->contains("QMP") || !(*greeting)["QMP"].is_object()) {
      return Status(
          ProtocolError(socket_path + " did not greet with QMP: " + Excerpt(greeting->dump())));
    }
    const json& qemu = Field(Field((*greeting)["QMP"], "version"), "qemu");
    if (qemu.is_object()) {
      client->qemu_version_ = std::to_string(IntField(qemu, "major")) + "." +
                              std::to_string(IntField(qemu, "minor")) + "." +
                              std::to_string(IntField(qemu, "micro"));
    }
  }
  auto caps = client->Execute("qmp_capabilities", json::object(),
                              std::chrono::milliseconds(std::max(1, RemainingMs(deadline))));
  if (!caps.ok()) return caps.status();
  return client;
}

bool QmpClient::connected() const {
  std::lock_guard lock(mu_);
  return fd_ >= 0;
}

void QmpClient::Close() {
  std::lock_guard lock(mu_);
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
    if (closed_reason_.empty()) closed_reason_ = "closed by DWCP";
  }
}

Status QmpClient::Broken(Status why) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  closed_reason_ = why.message();
  return why;
}

Status QmpClient::ClosedError() const {
  return Unavailable("the QMP connection to " + path_ + " is closed: " + closed_reason_);
}

Result<json> QmpClient::ReadMessage(Deadline deadline) {
  for (;;) {
    if (fd_ < 0) return ClosedError();
    size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      if (line.size() > options_.max_message_bytes) {
        return Broken(ProtocolError("QMP message from " + path_ + " is larger than " +
                                    std::to_string(options_.max_message_bytes) + " bytes"));
      }
      json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded() || !msg.is_object()) {
        return Broken(ProtocolError("malformed QMP message from " + path_ + ": " + Excerpt(line)));
      }
      return msg;
    }
    if (buffer_.size() > options_.max_message_bytes) {
      return Broken(ProtocolError("QMP message from " + path_ + " is larger than " +
                                  std::to_string(options_.max_message_bytes) + " bytes"));
    }
    pollfd pfd{fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, RemainingMs(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Broken(Unavailable("poll on the QMP socket " + path_ + ": " + std::strerror(errno)));
    }
    if (ready == 0) return DeadlineExceeded("QMP on " + path_ + " timed out");
    char chunk[16384];
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Broken(Unavailable("reading the QMP socket " + path_ + ": " + std::strerror(errno)));
    }
    if (n == 0) return Broken(Unavailable("QEMU closed the QMP connection on " + path_));
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

bool QmpClient::QueueIfEvent(const json& msg) {
  if (!msg.contains("event")) return false;
  QmpEvent event;
  event.name = msg["event"].is_string() ? msg["event"].get<std::string>() : "";
  const json& data = Field(msg, "data");
  event.data = data.is_object() ? data : json::object();
  const json& ts = Field(msg, "timestamp");
  // Saturating: a timestamp past year 292277 is the peer's nonsense, not an overflow.
  const int64_t seconds = std::clamp<int64_t>(IntField(ts, "seconds"), 0, INT64_MAX / 1000000 - 1);
  event.timestamp_us =
      seconds * 1000000 + std::clamp<int64_t>(IntField(ts, "microseconds"), 0, 999999);
  events_.push_back(std::move(event));
  while (events_.size() > options_.max_queued_events) events_.pop_front();
  return true;
}

Result<json> QmpClient::Execute(const std::string& command, const json& arguments,
                                std::chrono::milliseconds timeout) {
  std::lock_guard lock(mu_);
  if (fd_ < 0) return ClosedError();
  const uint64_t id = next_id_++;
  json request = {{"execute", command}, {"id", id}};
  if (arguments.is_object() && !arguments.empty()) request["arguments"] = arguments;
  const std::string wire = request.dump() + "\n";
  size_t sent = 0;
  while (sent < wire.size()) {
    ssize_t n = send(fd_, wire.data() + sent, wire.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Broken(
          Unavailable("writing to the QMP socket " + path_ + ": " + std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto msg = ReadMessage(deadline);
    if (!msg.ok()) {
      if (msg.status().code() == StatusCode::kDeadlineExceeded) {
        return Status(DeadlineExceeded("QMP '" + command + "' on " + path_ + ": no reply within " +
                                       std::to_string(timeout.count()) + " ms"));
      }
      return msg.status();
    }
    if (QueueIfEvent(*msg)) continue;
    // A reply to an earlier command that timed out: drop it.
    if (!msg->contains("id") || (*msg)["id"] != id) continue;
    if (msg->contains("return")) return (*msg)["return"];
    if (msg->contains("error")) return QemuError(command, (*msg)["error"]);
    return Broken(ProtocolError("QMP reply from " + path_ + " to '" + command +
                                "' has neither return nor error: " + Excerpt(msg->dump())));
  }
}

Result<QmpEvent> QmpClient::WaitForEvent(const std::string& name,
                                         std::chrono::milliseconds timeout) {
  std::lock_guard lock(mu_);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    for (auto it = events_.begin(); it != events_.end(); ++it) {
      if (it->name == name) {
        QmpEvent event = std::move(*it);
        events_.erase(it);
        return event;
      }
    }
    auto msg = ReadMessage(deadline);
    if (!msg.ok()) {
      if (msg.status().code() == StatusCode::kDeadlineExceeded) {
        return Status(DeadlineExceeded("no QMP event " + name + " on " + path_ + " within " +
                                       std::to_string(timeout.count()) + " ms"));
      }
      return msg.status();
    }
    QueueIfEvent(*msg);  // anything else is a late reply to a timed-out command
  }
}

std::vector<QmpEvent> QmpClient::TakeEvents() {
  std::lock_guard lock(mu_);
  std::vector<QmpEvent> out(std::make_move_iterator(events_.begin()),
                            std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

}  // namespace dwcp::vm
