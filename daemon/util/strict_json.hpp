// Strict JSON parsing for everything that comes from outside: request bodies, tokens, files.
// nlohmann keeps the last of duplicate keys, which would let `{"alg":"none","alg":"HS256"}`
// mean different things to different readers; this parser refuses them. Thread-safe.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace agentgw {

// Parses a JSON object, refusing duplicate keys at any depth, malformed JSON, and any top
// level other than an object (Code::invalid_argument). Never throws on bad input.
Result<nlohmann::json> parse_json_object_strict(std::string_view text);

}  // namespace agentgw
