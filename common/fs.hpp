// File-system helpers for state and runtime directories: tight creation and permission
// checks. All functions are thread-safe (no shared state).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "common/result.hpp"

namespace agentgw {

// An Error of `code` whose message ends with strerror(errno_value).
Error errno_error(Code code, std::string_view what, int errno_value);

// Creates `dir` (and missing parents) with mode `mode` when absent. An existing directory
// must be owned by this process's effective uid (or root) and grant nothing beyond `mode`;
// a looser one is refused, not silently fixed, so an operator notices.
Status ensure_private_dir(const std::filesystem::path& dir, mode_t mode = 0700);

// Refuses an open file that is not regular, is readable or writable by group or others
// (mode & 077), or is not owned by the effective uid or root. Used for key files, which must be
// as private as an ssh key. Checking the descriptor leaves no race between check and read;
// `file` names it in messages.
Status check_private_fd(int fd, const std::filesystem::path& file);

}  // namespace agentgw
