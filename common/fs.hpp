// File-system helpers for state and runtime directories: tight creation, permission checks
// and durable replacement of small files. All functions are thread-safe (no shared state).
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

// Refuses a file readable or writable by group or others (mode & 077), or not owned by the
// effective uid or root. Used for key files, which must be as private as an ssh key.
Status check_private_file(const std::filesystem::path& file);

// Writes `data` to `path` with `mode`, durably: temp file in the same directory, fsync,
// rename over the target, fsync the directory. On failure the old file is untouched.
Status write_file_atomic(const std::filesystem::path& path, std::string_view data,
                         mode_t mode = 0600);

// Reads a whole small regular file (at most `max_bytes`).
Result<std::string> read_small_file(const std::filesystem::path& path, size_t max_bytes);

}  // namespace agentgw
