// Fuzzes dwcpd's YAML configuration (src/node/config.h): the text of a --config file goes
// through LoadYamlConfigText (the same code as LoadYamlConfig) and, when it loads, through
// ValidateNodeConfig. Any outcome but a crash is fine: bad input must be an error value.
#include <cstddef>
#include <cstdint>
#include <string>

#include "node/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  dwcp::node::NodeConfig config;
  config.node_id = "fuzz";  // ValidateNodeConfig would ask the host otherwise
  if (!dwcp::node::LoadYamlConfigText(text, "fuzz.yaml", &config).ok()) return 0;
  (void)dwcp::node::ValidateNodeConfig(&config);
  return 0;
}
