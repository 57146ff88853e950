// Logging set-up shared by both programs: one spdlog logger writing to stderr.
// Call setup_logging once from main before any threads start.
#pragma once

#include <optional>
#include <string_view>

#include <spdlog/spdlog.h>

namespace agentgw {

// Installs the default logger. Under systemd (JOURNAL_STREAM set) lines carry no timestamp,
// since journald adds its own.
void setup_logging(std::string_view program, spdlog::level::level_enum level);

// Parses "trace", "debug", "info", "warn", "error", "critical" or "off".
std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name);

}  // namespace agentgw
