// Fuzzes the `rollout:` block of the configuration (src/rollout/rollout_config.h) on its own:
// the input is the block's YAML, parsed into a node and handed to ParseRolloutConfig. An
// accepted config must pass ValidateRolloutConfig and give a usable stage list.
#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "rollout/rollout_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  YAML::Node node;
  try {
    node = YAML::Load(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const YAML::Exception&) {
    return 0;  // not YAML: LoadYamlConfig's error, not the block's
  }
  dwcp::rollout::RolloutConfig config;
  if (!dwcp::rollout::ParseRolloutConfig(node, &config).ok()) return 0;
  if (!dwcp::rollout::ValidateRolloutConfig(config).ok()) std::abort();
  auto stages = dwcp::rollout::StageList(config);
  if (dwcp::rollout::InitialStageIndex(config) >= stages.size()) std::abort();
  return 0;
}
