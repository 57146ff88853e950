#include "daemon/control/json_body.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "common/utf8.hpp"
#include "daemon/util/strict_json.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

Error bad(std::string_view field, std::string_view why) {
    return make_error(Code::invalid_argument, fmt::format("field \"{}\": {}", field, why));
}

// C0, DEL and C1 (utf8_is_control): text goes out raw in --json output.
bool has_control_chars(std::string_view s) {
    while (!s.empty()) {
        const size_t n = utf8_sequence_length(s);
        if (utf8_is_control(s, n)) {
            return true;
        }
        s.remove_prefix(n == 0 ? 1 : n);
    }
    return false;
}

}  // namespace

Status check_name(std::string_view field, std::string_view v) {
    if (v.empty() || v.size() > 64) {
        return bad(field, "must be 1 to 64 bytes");
    }
    if (has_control_chars(v)) {
        return bad(field, "must not contain control characters");
    }
    if (v.front() == ' ' || v.back() == ' ') {
        return bad(field, "must not start or end with a space");
    }
    // Lookups take a name or an id, so a name shaped like an id could shadow another record.
    const bool id_shaped = v.size() == 36 && v[8] == '-' && v[13] == '-' && v[18] == '-' &&
                           v[23] == '-' && std::all_of(v.begin(), v.end(), [](char c) {
                               return c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                           });
    if (id_shaped) {
        return bad(field, "must not look like an id");
    }
    return {};
}

Status check_email(std::string_view field, std::string_view v) {
    if (v.size() < 3 || v.size() > 254 || v.find('@') == std::string_view::npos ||
        v.find(' ') != std::string_view::npos || has_control_chars(v)) {
        return bad(field, "must be an email address");
    }
    return {};
}

Status check_text(std::string_view field, std::string_view v, size_t max_bytes) {
    if (v.size() > max_bytes) {
        return bad(field, fmt::format("must be at most {} bytes", max_bytes));
    }
    if (has_control_chars(v)) {
        return bad(field, "must not contain control characters");
    }
    return {};
}

bool quotable_name(std::string_view name) {
    return name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
               return (c >= 'a' && c <= 'z') || c == '_';
           });
}

Result<JsonBody> JsonBody::parse(std::string_view body,
                                 std::initializer_list<std::string_view> fields, bool empty_ok) {
    if (empty_ok && body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
        return JsonBody(json::object());
    }
    auto parsed = parse_json_object_strict(body);
    if (!parsed) {
        return make_error(Code::invalid_argument,
                          fmt::format("request body: {}", parsed.error().message));
    }
    for (const auto& [key, _] : parsed->items()) {
        if (std::find(fields.begin(), fields.end(), key) == fields.end()) {
            return !key.empty() && quotable_name(key)
                       ? bad(key, "unknown field")
                       : make_error(Code::invalid_argument, "request body: an unknown field");
        }
    }
    return JsonBody(std::move(*parsed));
}

const json* JsonBody::find(std::string_view field) const {
    const auto it = j_.find(field);
    return it == j_.end() ? nullptr : &*it;
}

bool JsonBody::has(std::string_view field) const {
    return find(field) != nullptr;
}

Result<std::string> JsonBody::string(std::string_view field) const {
    TRY_ASSIGN(auto value, optional_string(field));
    if (!value) {
        return bad(field, "is required");
    }
    return std::move(*value);
}

Result<std::optional<std::string>> JsonBody::optional_string(std::string_view field) const {
    const json* v = find(field);
    if (v == nullptr) {
        return std::optional<std::string>{};
    }
    if (!v->is_string()) {
        return bad(field, "must be a string");
    }
    return std::optional<std::string>(v->get<std::string>());
}

Result<std::optional<int64_t>> JsonBody::optional_int(std::string_view field, int64_t min,
                                                      int64_t max) const {
    const json* v = find(field);
    if (v == nullptr) {
        return std::optional<int64_t>{};
    }
    if (!v->is_number_integer()) {
        return bad(field, "must be an integer");
    }
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max)) {
        return bad(field, fmt::format("must be between {} and {}", min, max));
    }
    const int64_t n = v->get<int64_t>();
    if (n < min || n > max) {
        return bad(field, fmt::format("must be between {} and {}", min, max));
    }
    return std::optional<int64_t>(n);
}

Result<std::optional<bool>> JsonBody::optional_bool(std::string_view field) const {
    const json* v = find(field);
    if (v == nullptr) {
        return std::optional<bool>{};
    }
    if (!v->is_boolean()) {
        return bad(field, "must be true or false");
    }
    return std::optional<bool>(v->get<bool>());
}

Result<int64_t> JsonBody::integer(std::string_view field, int64_t min, int64_t max) const {
    TRY_ASSIGN(auto value, optional_int(field, min, max));
    if (!value) {
        return bad(field, "is required");
    }
    return *value;
}

Result<std::vector<std::string>> JsonBody::string_list(std::string_view field) const {
    std::vector<std::string> out;
    const json* v = find(field);
    if (v == nullptr) {
        return out;
    }
    if (!v->is_array()) {
        return bad(field, "must be an array of strings");
    }
    for (const auto& item : *v) {
        if (!item.is_string()) {
            return bad(field, "must be an array of strings");
        }
        out.push_back(item.get<std::string>());
    }
    return out;
}

}  // namespace agentgw
