#include "common/log.hpp"

#include <cstdlib>
#include <string>

#include <spdlog/sinks/stdout_sinks.h>

namespace agentgw {

void setup_logging(std::string_view program, spdlog::level::level_enum level) {
    auto logger = spdlog::stderr_logger_mt(std::string(program));
    if (std::getenv("JOURNAL_STREAM") != nullptr) {
        logger->set_pattern("%n: %l: %v");
    } else {
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %n: %l: %v", spdlog::pattern_time_type::utc);
    }
    logger->set_level(level);
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(std::move(logger));
}

std::optional<spdlog::level::level_enum> parse_log_level(std::string_view name) {
    static constexpr std::pair<std::string_view, spdlog::level::level_enum> k_levels[] = {
        {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
        {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
        {"error", spdlog::level::err},   {"critical", spdlog::level::critical},
        {"off", spdlog::level::off},
    };
    for (const auto& [text, level] : k_levels) {
        if (text == name) {
            return level;
        }
    }
    return std::nullopt;
}

}  // namespace agentgw
