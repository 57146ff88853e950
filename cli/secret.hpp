// Secrets in the CLI: wiping them from memory, and reading one without ever taking it from
// argv (all of stdin when it is not a terminal, else one line typed with echo off).
// Not thread-safe: the prompt changes terminal settings and signal handlers for its duration.
#pragma once

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace agentgw::cli {

// Overwrites every byte `s` holds (its capacity, not only its size) and empties it.
void wipe(std::string& s) noexcept;

// A string that is wiped when destroyed. Move-only; copies would escape the wipe.
class SecretString {
  public:
    SecretString() = default;
    ~SecretString() { wipe(value_); }
    // A short string's bytes are copied by the move, so the source is wiped as well.
    SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) {
        wipe(other.value_);
    }
    SecretString& operator=(SecretString&&) = delete;
    SecretString(const SecretString&) = delete;
    SecretString& operator=(const SecretString&) = delete;

    std::string& value() noexcept { return value_; }
    const std::string& value() const noexcept { return value_; }

  private:
    std::string value_;
};

// Standard input when it is not a terminal, all of it (at most 1 MiB), minus one trailing
// newline. On a terminal: writes `prompt` to stderr and reads one line (of any length up to
// 1 MiB, editing keys applied) with echo off; the terminal is restored afterwards, also when a
// signal ends the program meanwhile.
// Empty input is Code::invalid_argument; a read error is Code::io_error.
Result<SecretString> read_secret(std::string_view prompt);

}  // namespace agentgw::cli
