// Fuzzes the QMP client (src/vm/qmp_client.h) with what a hostile or broken QEMU could say:
// the input is everything QEMU writes on the socket — greeting, replies, events — after which
// it closes its end. The client must greet, run commands and collect events or fail with a
// Status, never crash, throw or hang. Replies match commands by id: qmp_capabilities is 1,
// query-status 2, query-migrate 3.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "vm/qmp_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A socket buffer holds the whole input (libFuzzer's -max_len default is 4096).
  if (size > 64 * 1024) return 0;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = write(fds[1], data + sent, size - sent);
    if (n <= 0) std::abort();
    sent += static_cast<size_t>(n);
  }
  shutdown(fds[1], SHUT_WR);  // QEMU said all it will say; the client's requests still fit

  dwcp::vm::QmpOptions options;
  options.connect_timeout = std::chrono::milliseconds(1000);
  options.max_message_bytes = 2048;  // small, so the size limit is reachable
  options.max_queued_events = 4;
  auto client = dwcp::vm::QmpClient::Adopt(fds[0], "fuzz", options);
  if (client.ok()) {
    auto& c = **client;
    auto status = c.Execute("query-status", {}, std::chrono::milliseconds(1000));
    if (status.ok()) (void)status->dump();
    (void)c.Execute("query-migrate", {}, std::chrono::milliseconds(1000));
    (void)c.WaitForEvent("STOP", std::chrono::milliseconds(0));
    for (const auto& event : c.TakeEvents()) (void)event.data.dump();
    c.Close();
    if (c.Execute("query-status").ok()) std::abort();  // a closed client answers nothing
  }
  close(fds[1]);
  return 0;
}
