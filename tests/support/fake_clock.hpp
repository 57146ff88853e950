// FakeClock: a Clock the test moves by hand. Thread-safe.
#pragma once

#include <atomic>

#include "daemon/util/clock.hpp"

namespace agentgw::test {

class FakeClock final : public Clock {
  public:
    explicit FakeClock(int64_t start_secs = 1'800'000'000) : ms_(start_secs * 1000) {}
    int64_t now_ms() const override { return ms_.load(); }
    void advance_secs(int64_t secs) { ms_ += secs * 1000; }
    void advance_ms(int64_t ms) { ms_ += ms; }

  private:
    std::atomic<int64_t> ms_;
};

}  // namespace agentgw::test
