// QmpClient's error paths that a real QEMU does not produce (malformed JSON, oversized
// messages, silence), against a scripted fake server on a unix socket. Its behaviour with a
// real QEMU is in tests/integration/qemu_guest_test.cc.
#include "vm/qmp_client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

namespace dwcp::vm {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr char kGreeting[] =
    R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""},)"
    R"( "capabilities": ["oob"]}})"
    "\r\n";

// Reads one line (a QMP command) from `fd`; empty at EOF.
std::string ReadLine(int fd) {
  std::string line;
  char c;
  while (read(fd, &c, 1) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

void Send(int fd, const std::string& text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

// The id of a command line, as the reply must carry it.
json IdOf(const std::string& command) { return json::parse(command).value("id", json()); }

std::string Reply(const std::string& command, const json& value) {
  return json{{"return", value}, {"id", IdOf(command)}}.dump() + "\r\n";
}

// A unix socket that accepts one client and runs `script` on it.
class FakeQmpServer {
 public:
  explicit FakeQmpServer(std::function<void(int fd)> script) {
    char dir[] = "/tmp/qmp-test-XXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/qmp.sock";
    listen_fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 1), 0);
    thread_ = std::thread([this, script] {
      int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      script(fd);
      // Keep the connection open until the client closes it.
      char c;
      while (read(fd, &c, 1) > 0) {
      }
      close(fd);
    });
  }
  ~FakeQmpServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    close(listen_fd_);
    thread_.join();
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

// The greeting and capabilities negotiation of a well-behaved server.
void Handshake(int fd) {
  Send(fd, kGreeting);
  Send(fd, Reply(ReadLine(fd), json::object()));
}

TEST(QmpClientTest, MissingSocketIsNotFound) {
  auto client = QmpClient::Connect("/tmp/no-such-dir-for-qmp/qmp.sock");
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client.status().message(),
            "QMP socket /tmp/no-such-dir-for-qmp/qmp.sock does not exist");
}

TEST(QmpClientTest, SocketWithoutListenerIsUnavailable) {
  char dir[] = "/tmp/qmp-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/stale.sock";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);  // the file stays, nobody listens: what a dead QEMU leaves behind
  auto client = QmpClient::Connect(path);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(client.status().message().find("nothing listens"), std::string::npos);
  unlink(path.c_str());
  rmdir(dir);
}

TEST(QmpClientTest, HandshakeAndReturnValue) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    std::string cmd = ReadLine(fd);
    EXPECT_EQ(json::parse(cmd)["execute"], "query-status");
    Send(fd, R"({"timestamp": {"seconds": 1, "microseconds": 5}, "event": "STOP"})"
             "\r\n");
    Send(fd, Reply(cmd, {{"running", false}, {"status", "paused"}}));
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ((*client)->qemu_version(), "7.2.22");
  auto status = (*client)->Execute("query-status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ((*status)["status"], "paused");
  // The event that came before the reply was kept.
  auto events = (*client)->TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].name, "STOP");
  EXPECT_EQ(events[0].timestamp_us, 1000005);
}

TEST(QmpClientTest, NoGreetingTimesOut) {
  FakeQmpServer server([](int fd) { std::this_thread::sleep_for(milliseconds(500)); });
  QmpOptions options;
  options.connect_timeout = milliseconds(200);
  auto client = QmpClient::Connect(server.path(), options);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(client.status().message().find("no QMP greeting"), std::string::npos);
}

TEST(QmpClientTest, GreetingThatIsNotQmp) {
  FakeQmpServer server([](int fd) { Send(fd, "{\"hello\": 1}\r\n"); });
  auto client = QmpClient::Connect(server.path());
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kProtocol);
  EXPECT_NE(client.status().message().find("did not greet with QMP"), std::string::npos);
}

TEST(QmpClientTest, MalformedReplyBreaksTheConnection) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    ReadLine(fd);
    Send(fd, "{\"return\": {\"status\": \"runn\r\n");
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto status = (*client)->Execute("query-status");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.status().code(), StatusCode::kProtocol);
  EXPECT_NE(status.status().message().find("malformed QMP message"), std::string::npos);
  EXPECT_FALSE((*client)->connected());
  auto again = (*client)->Execute("query-status");
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(again.status().message().find("malformed"), std::string::npos);
}

TEST(QmpClientTest, OversizedReplyIsRefused) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    std::string cmd = ReadLine(fd);
    // 64 KiB in one message, over the 16 KiB limit; newline-terminated or not, it is refused
    // before it is all buffered.
    Send(fd, Reply(cmd, std::string(64 << 10, 'x')));
  });
  QmpOptions options;
  options.max_message_bytes = 16 << 10;
  auto client = QmpClient::Connect(server.path(), options);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto reply = (*client)->Execute("query-status");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kProtocol);
  EXPECT_NE(reply.status().message().find("larger than 16384 bytes"), std::string::npos);
  EXPECT_FALSE((*client)->connected());
}

// A command that gets no reply times out; its late reply does not answer the next command.
TEST(QmpClientTest, TimeoutThenLateReplyIsDropped) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    std::string slow = ReadLine(fd);
    std::string next = ReadLine(fd);  // sent after the client gave up on `slow`
    Send(fd, Reply(slow, "late"));
    Send(fd, Reply(next, "fresh"));
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto slow = (*client)->Execute("query-migrate", json::object(), milliseconds(200));
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(slow.status().message().find("'query-migrate'"), std::string::npos);
  EXPECT_TRUE((*client)->connected());
  auto next = (*client)->Execute("query-status", json::object(), milliseconds(5000));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(*next, "fresh");
}

TEST(QmpClientTest, ErrorClassMapsToStatus) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    std::string cmd = ReadLine(fd);
    Send(fd, json{{"error", {{"class", "DeviceNotFound"}, {"desc", "no disk0"}}}, {"id", IdOf(cmd)}}
                     .dump() +
                 "\r\n");
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto reply = (*client)->Execute("block_resize", {{"device", "disk0"}, {"size", 1}});
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reply.status().message(), "QEMU refused 'block_resize': DeviceNotFound: no disk0");
}

TEST(QmpClientTest, ServerClosingIsUnavailable) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    ReadLine(fd);
    shutdown(fd, SHUT_RDWR);
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto reply = (*client)->Execute("query-status");
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(reply.status().message().find("QEMU closed the QMP connection"), std::string::npos);
}

TEST(QmpClientTest, WaitForEventTimesOutAndFindsQueuedOnes) {
  FakeQmpServer server([](int fd) {
    Handshake(fd);
    std::string cmd = ReadLine(fd);
    Send(fd, R"({"event": "RESUME", "timestamp": {"seconds": 2, "microseconds": 0}})"
             "\r\n");
    Send(fd, Reply(cmd, json::object()));
  });
  auto client = QmpClient::Connect(server.path());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE((*client)->Execute("cont").ok());
  auto resume = (*client)->WaitForEvent("RESUME", milliseconds(100));
  ASSERT_TRUE(resume.ok()) << resume.status().ToString();
  EXPECT_EQ(resume->timestamp_us, 2000000);
  auto stop = (*client)->WaitForEvent("STOP", milliseconds(100));
  EXPECT_EQ(stop.status().code(), StatusCode::kDeadlineExceeded);
}

// Found by fuzz/qmp_fuzzer.cc: fields of the wrong type (a string version, a string or
// huge timestamp, data that is not an object) threw json::type_error out of the client, or
// overflowed the timestamp. They are read as missing now.
TEST(QmpClientTest, MistypedFieldsAreReadAsMissing) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  Send(fds[1], R"({"QMP": {"version": {"qemu": {"major": "7", "minor": 2.5, "micro": null}}}})"
               "\n"
               R"({"return": {}, "id": 1})"
               "\n"
               R"({"event": "STOP", "data": [1], "timestamp": {"seconds": "x", "microseconds": 3}})"
               "\n"
               R"({"event": "RESUME", "timestamp": {"seconds": 18446744073709551615}})"
               "\n");
  shutdown(fds[1], SHUT_WR);
  auto client = QmpClient::Adopt(fds[0], "socketpair");
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ((*client)->qemu_version(), "0.0.0");
  auto stop = (*client)->WaitForEvent("STOP", milliseconds(100));
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ(stop->timestamp_us, 3);
  EXPECT_TRUE(stop->data.is_object());
  auto resume = (*client)->WaitForEvent("RESUME", milliseconds(100));
  ASSERT_TRUE(resume.ok()) << resume.status().ToString();
  EXPECT_GT(resume->timestamp_us, 0);
  close(fds[1]);
}

}  // namespace
}  // namespace dwcp::vm
