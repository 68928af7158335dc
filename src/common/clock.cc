#include "common/clock.h"

namespace dwcp {

RealClock& RealClock::Instance() {
  static RealClock clock;
  return clock;
}

int64_t RealClock::WallMillis() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace dwcp
