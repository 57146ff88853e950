// StateLock: proof that one owner alone uses a state directory. Held through an
// open-file-description write lock on <dir>/agentgwd.lock, released when the lock is destroyed
// or the process exits. Not thread-safe; acquire once at start.
#pragma once

#include <filesystem>

#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace agentgw {

class StateLock {
  public:
    // Fails with Code::unavailable when another process, or another StateLock, holds it.
    // The lock file is created empty (0600) if missing and never written, so it carries no
    // state of its own.
    static Result<StateLock> acquire(const std::filesystem::path& dir);

    const std::filesystem::path& dir() const noexcept { return dir_; }

  private:
    StateLock(std::filesystem::path dir, UniqueFd fd) : dir_(std::move(dir)), fd_(std::move(fd)) {}
    std::filesystem::path dir_;
    UniqueFd fd_;
};

}  // namespace agentgw
