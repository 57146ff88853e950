// JsonBody: a request body checked the way every control route wants it: a JSON object with
// no duplicate keys and no fields beyond those the route names, read through typed getters
// whose errors name the field (Code::invalid_argument -> 400).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace agentgw {

// Text rules shared by bodies and path parameters.
Status check_name(std::string_view field, std::string_view value);  // 1-64 bytes, printable
Status check_email(std::string_view field, std::string_view value);
Status check_text(std::string_view field, std::string_view value, size_t max_bytes);
// Whether a name the request gave (an unknown field or query parameter) may be quoted back in
// an answer and the audit log: at most 32 of a-z and '_'. Anything else, a token pasted in the
// wrong place or megabytes of text, is not named. (No digits: a 32-character hex key is a
// common shape of API key.)
bool quotable_name(std::string_view name);

class JsonBody {
  public:
    // An empty body counts as {} when `empty_ok`.
    static Result<JsonBody> parse(std::string_view body,
                                  std::initializer_list<std::string_view> fields,
                                  bool empty_ok = false);

    bool has(std::string_view field) const;
    Result<std::string> string(std::string_view field) const;  // required
    Result<std::optional<std::string>> optional_string(std::string_view field) const;
    Result<std::optional<int64_t>> optional_int(std::string_view field, int64_t min,
                                                int64_t max) const;
    Result<std::optional<bool>> optional_bool(std::string_view field) const;
    Result<int64_t> integer(std::string_view field, int64_t min, int64_t max) const;  // required
    Result<std::vector<std::string>> string_list(std::string_view field) const;       // absent: {}

  private:
    explicit JsonBody(nlohmann::json j) : j_(std::move(j)) {}
    const nlohmann::json* find(std::string_view field) const;
    nlohmann::json j_;
};

}  // namespace agentgw
