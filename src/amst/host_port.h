// "host:port" addresses of listeners and peers. Pure, thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dwcp::amst {

// Splits "host:port" ("[v6]:port" loses its brackets); InvalidArgument on a missing or bad
// port.
Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace dwcp::amst
