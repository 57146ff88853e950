#include "daemon/services/service_catalog.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <initializer_list>
#include <memory>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <fmt/format.h>

#include "common/fs.hpp"
#include "common/unique_fd.hpp"
#include "daemon/http/message.hpp"

namespace agentgw {

namespace fs = std::filesystem;
using nlohmann::json;

struct ServiceCatalog::Options {
    bool check_files = false;  // ca_file must exist (load) or is taken as written (parse)
    fs::path base_dir;         // relative ca_file paths are resolved against it
};

namespace {

constexpr std::size_t k_max_file_bytes = 16 * 1024 * 1024;
constexpr std::size_t k_max_id = 64;
constexpr std::size_t k_max_name = 128;
constexpr std::size_t k_max_description = 1024;
constexpr std::size_t k_max_short = 256;  // header/query names, prefixes, client ids, scopes
constexpr std::size_t k_max_url = 2048;
constexpr std::size_t k_max_path_glob = 1024;
constexpr std::size_t k_max_file_path = 4096;  // PATH_MAX on Linux
constexpr int64_t k_max_requests = 1'000'000;
constexpr int64_t k_max_window_secs = 86400;
constexpr int64_t k_max_refresh_before_secs = 86400;
constexpr int64_t k_max_timeout_secs = 3600;
constexpr int64_t k_max_connect_timeout_secs = 300;
constexpr int64_t k_max_body = int64_t{1} << 30;

// ---- Messages ------------------------------------------------------------------------------

// Where a value sits, for messages: the file, then the service (by id once its id is known to
// be valid, else by index).
struct Where {
    std::string_view origin;
    std::string subject;  // "" (top level), "services[2]" or "service \"openai\""
};

Error fail(const Where& where, std::string_view what) {
    if (where.subject.empty()) {
        return make_error(Code::invalid_argument, fmt::format("{}: {}", where.origin, what));
    }
    return make_error(Code::invalid_argument,
                      fmt::format("{}: {}: {}", where.origin, where.subject, what));
}

Error fail(const Where& where, std::string_view field, std::string_view what) {
    return fail(where, fmt::format("field \"{}\": {}", field, what));
}

// A value from the file, quoted and escaped for a message (so control characters in a bad
// value cannot garble a log line), shortened when long.
std::string quote(std::string_view value) {
    constexpr std::size_t k_max_quoted = 80;
    const bool cut = value.size() > k_max_quoted;
    std::string shown = json(std::string(value.substr(0, k_max_quoted)))
                            .dump(-1, ' ', false, json::error_handler_t::replace);
    return cut ? shown + "..." : shown;
}

std::string_view kind(const json& value) {
    switch (value.type()) {
        case json::value_t::null:
            return "null";
        case json::value_t::boolean:
            return "a boolean";
        case json::value_t::string:
            return "a string";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned:
            return "an integer";
        case json::value_t::number_float:
            return "a non-integer number";
        case json::value_t::object:
            return "an object";
        case json::value_t::array:
            return "an array";
        case json::value_t::binary:
        case json::value_t::discarded:
            break;
    }
    return "an unexpected value";
}

std::string index_field(std::string_view field, std::size_t i) {
    return fmt::format("{}[{}]", field, i);
}

// ---- Strict JSON ---------------------------------------------------------------------------

// A first pass over the text that the DOM parser cannot make: it reports a syntax error with
// its line and column, and refuses duplicate keys (the DOM parser silently keeps the last,
// which would let a second "base_url" hide the first from a reviewer).
class StrictJsonChecker final : public nlohmann::json_sax<json> {
  public:
    const std::string& error() const { return error_; }

    bool null() override { return value(); }
    bool boolean(bool) override { return value(); }
    bool number_integer(number_integer_t) override { return value(); }
    bool number_unsigned(number_unsigned_t) override { return value(); }
    bool number_float(number_float_t, const string_t&) override { return value(); }
    bool string(string_t&) override { return value(); }
    bool binary(binary_t&) override { return value(); }

    bool start_object(std::size_t) override {
        value();
        frames_.emplace_back().object = true;
        return true;
    }
    bool key(string_t& key) override {
        Frame& top = frames_.back();
        if (!top.keys.insert(key).second) {
            frames_.pop_back();
            std::string at = path();
            error_ = fmt::format("duplicate key \"{}{}{}\"", at, at.empty() ? "" : ".", key);
            return false;
        }
        top.key = key;
        return true;
    }
    bool end_object() override {
        frames_.pop_back();
        return true;
    }
    bool start_array(std::size_t) override {
        value();
        frames_.emplace_back().object = false;
        return true;
    }
    bool end_array() override {
        frames_.pop_back();
        return true;
    }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& ex) override {
        // what() is "[json.exception.parse_error.101] parse error at line 2, column 7: ...".
        std::string_view text = ex.what();
        if (const auto close = text.find("] "); close != std::string_view::npos) {
            text.remove_prefix(close + 2);
        }
        error_ = text;
        return false;
    }

  private:
    struct Frame {
        bool object = false;
        std::set<std::string> keys;  // objects: the keys seen so far
        std::string key;             // objects: the current key
        std::size_t count = 0;       // arrays: elements started so far
    };

    bool value() {
        if (!frames_.empty() && !frames_.back().object) {
            ++frames_.back().count;
        }
        return true;
    }

    // "services[0].auth": the position of the current value.
    std::string path() const {
        std::string out;
        for (const Frame& f : frames_) {
            if (f.object) {
                out += out.empty() ? f.key : "." + f.key;
            } else {
                out += fmt::format("[{}]", f.count - 1);
            }
        }
        return out;
    }

    std::vector<Frame> frames_;
    std::string error_;
};

// ---- Typed reads ---------------------------------------------------------------------------

const json* member(const json& object, std::string_view key) {
    const auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

Status check_known(const Where& where, const json& object, std::string_view prefix,
                   std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : object.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            return fail(where, fmt::format("{}{}", prefix, key), "unknown field");
        }
    }
    return {};
}

Status expect_object(const Where& where, const json& value, std::string_view field) {
    if (!value.is_object()) {
        return fail(where, field, fmt::format("must be an object, got {}", kind(value)));
    }
    return {};
}

Status expect_array(const Where& where, const json& value, std::string_view field) {
    if (!value.is_array()) {
        return fail(where, field, fmt::format("must be an array, got {}", kind(value)));
    }
    return {};
}

Result<const json*> require(const Where& where, const json& object, std::string_view key,
                            std::string_view field) {
    const json* value = member(object, key);
    if (value == nullptr) {
        return fail(where, field, "required");
    }
    return value;
}

bool has_control(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
    });
}

// A string of at most `max_len` bytes without control characters; empty only if allowed.
Result<std::string> read_string(const Where& where, const json& value, std::string_view field,
                                std::size_t max_len, bool allow_empty = false) {
    if (!value.is_string()) {
        return fail(where, field, fmt::format("must be a string, got {}", kind(value)));
    }
    const auto& s = value.get_ref<const std::string&>();
    if (s.empty() && !allow_empty) {
        return fail(where, field, "must not be empty");
    }
    if (s.size() > max_len) {
        return fail(where, field, fmt::format("longer than {} bytes", max_len));
    }
    if (has_control(s)) {
        // Not echoed: a URL with a control character may also carry user info.
        return fail(where, field, "contains a control character");
    }
    return s;
}

// An integer (not 60.0, not "60") in [lo, hi].
Result<int64_t> read_int(const Where& where, const json& value, std::string_view field, int64_t lo,
                         int64_t hi) {
    if (!value.is_number_integer()) {
        return fail(where, field, fmt::format("must be an integer, got {}", kind(value)));
    }
    const auto range_error = [&] {
        return fail(where, field,
                    fmt::format("must be between {} and {}, got {}", lo, hi, value.dump()));
    };
    // Non-negative integers are stored unsigned and may exceed int64_t.
    if (value.is_number_unsigned()) {
        const auto u = value.get<uint64_t>();
        if (hi < 0 || u > static_cast<uint64_t>(hi)) {
            return range_error();
        }
        const auto i = static_cast<int64_t>(u);
        if (i < lo) {
            return range_error();
        }
        return i;
    }
    const auto i = value.get<int64_t>();
    if (i < lo || i > hi) {
        return range_error();
    }
    return i;
}

// ---- Value checks --------------------------------------------------------------------------

bool is_valid_id(std::string_view id) {
    const auto ok = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    };
    return !id.empty() && id.size() <= k_max_id && std::all_of(id.begin(), id.end(), ok) &&
           id.front() != '_' && id.front() != '-';
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
               return lower(x) == lower(y);
           });
}

// Headers the proxy owns (framing, routing, hop-by-hop): injecting a credential into one of
// them would break or smuggle the forwarded request.
bool is_reserved_header(std::string_view name) {
    constexpr std::string_view k_reserved[] = {
        "Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
        "TE",   "Trailer",        "Upgrade",           "Expect",
    };
    if (name.size() >= 6 && iequals(name.substr(0, 6), "Proxy-")) {
        return true;
    }
    return std::any_of(std::begin(k_reserved), std::end(k_reserved),
                       [&](std::string_view r) { return iequals(r, name); });
}

// A query parameter name that the proxy can append without encoding surprises.
bool is_query_name(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u < 0x7f && std::string_view("&=#%+?").find(c) == std::string::npos;
    });
}

// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
bool is_scope_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u >= 0x21 && u <= 0x7e && c != '"' && c != '\\';
    });
}

// An uppercase method token ("GET", "M-SEARCH") or "*".
bool is_method(std::string_view s) {
    if (s == "*") {
        return true;
    }
    return http::is_token(s) &&
           std::none_of(s.begin(), s.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

// ---- URLs ----------------------------------------------------------------------------------

struct CurlUrlDeleter {
    void operator()(CURLU* url) const noexcept { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
    void operator()(char* s) const noexcept { curl_free(s); }
};
using CurlUrlPtr = std::unique_ptr<CURLU, CurlUrlDeleter>;
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

struct ParsedUrl {
    std::string scheme;
    std::string host;
    uint16_t port = 0;
    std::string path;        // without trailing '/'
    std::string normalized;  // libcurl's form, without a default port or a trailing '/'
};

// One part of a parsed URL: the code, and the text when the part is present.
CURLUcode get_part(CURLU* url, CURLUPart part, std::string& out, unsigned flags = 0) {
    char* raw = nullptr;
    const CURLUcode rc = curl_url_get(url, part, &raw, flags);
    const CurlString owned(raw);
    out = (rc == CURLUE_OK && raw != nullptr) ? std::string(raw) : std::string();
    return rc;
}

// An absolute http(s) URL with a host and no user info, query or fragment. The error is the
// reason only; the caller names the field.
Result<ParsedUrl> parse_http_url(const std::string& text) {
    const auto reason = [](std::string what) { return make_error(Code::invalid_argument, what); };
    CurlUrlPtr url(curl_url());
    if (!url) {
        return make_error(Code::internal, "out of memory");
    }
    // Default flags: no scheme guessing, no spaces, no empty authority.
    if (const CURLUcode rc = curl_url_set(url.get(), CURLUPART_URL, text.c_str(), 0);
        rc != CURLUE_OK) {
        // The text is not echoed here or below: it may hold user info, that is, a credential.
        return reason(fmt::format("invalid URL: {}", curl_url_strerror(rc)));
    }
    ParsedUrl out;
    std::string part;
    get_part(url.get(), CURLUPART_SCHEME, out.scheme);
    if (out.scheme != "http" && out.scheme != "https") {
        return reason(fmt::format("scheme must be http or https, got {}", quote(out.scheme)));
    }
    if (get_part(url.get(), CURLUPART_USER, part) != CURLUE_NO_USER ||
        get_part(url.get(), CURLUPART_PASSWORD, part) != CURLUE_NO_PASSWORD) {
        return reason("must not contain a user name or password");
    }
    if (get_part(url.get(), CURLUPART_HOST, out.host) != CURLUE_OK || out.host.empty()) {
        return reason("URL has no host");
    }
    if (get_part(url.get(), CURLUPART_QUERY, part) != CURLUE_NO_QUERY) {
        return reason("must not contain a query string");
    }
    if (get_part(url.get(), CURLUPART_FRAGMENT, part) != CURLUE_NO_FRAGMENT) {
        return reason("must not contain a fragment");
    }
    if (get_part(url.get(), CURLUPART_PORT, part, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        return reason("URL has no port");
    }
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), out.port);
    if (ec != std::errc() || end != part.data() + part.size() || out.port == 0) {
        return reason(fmt::format("bad port {}", quote(part)));
    }
    get_part(url.get(), CURLUPART_PATH, out.path);
    while (!out.path.empty() && out.path.back() == '/') {
        out.path.pop_back();
    }
    // libcurl accepts an empty fragment ("https://a/#") and reports no fragment; drop it from
    // the normalized form too.
    curl_url_set(url.get(), CURLUPART_FRAGMENT, nullptr, 0);
    if (get_part(url.get(), CURLUPART_URL, out.normalized, CURLU_NO_DEFAULT_PORT) != CURLUE_OK) {
        return reason("URL cannot be normalized");
    }
    while (!out.normalized.empty() && out.normalized.back() == '/') {
        out.normalized.pop_back();
    }
    return out;
}

Result<std::string> read_url(const Where& where, const json& value, std::string_view field,
                             ParsedUrl* parsed = nullptr) {
    TRY_ASSIGN(std::string text, read_string(where, value, field, k_max_url));
    auto url = parse_http_url(text);
    if (!url) {
        return fail(where, field, url.error().message);
    }
    if (parsed != nullptr) {
        *parsed = std::move(url).value();
    }
    return text;
}

// ---- Files ---------------------------------------------------------------------------------

// The whole of a regular file of at most `max_bytes`.
Result<std::string> read_whole_file(const fs::path& file, std::size_t max_bytes) {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        const int err = errno;
        if (err == ENOENT) {
            return make_error(Code::not_found,
                              fmt::format("services file {} does not exist", file.string()));
        }
        return errno_error(Code::io_error, fmt::format("cannot open {}", file.string()), err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return errno_error(Code::io_error, fmt::format("cannot inspect {}", file.string()), errno);
    }
    if (!S_ISREG(st.st_mode)) {
        return make_error(Code::io_error, fmt::format("{} is not a regular file", file.string()));
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
        return make_error(Code::invalid_argument,
                          fmt::format("{} is larger than {} bytes", file.string(), max_bytes));
    }
    std::string text;
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno_error(Code::io_error, fmt::format("cannot read {}", file.string()), errno);
        }
        if (n == 0) {
            break;
        }
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > max_bytes) {  // it grew since fstat
            return make_error(Code::invalid_argument,
                              fmt::format("{} is larger than {} bytes", file.string(), max_bytes));
        }
    }
    return text;
}

// Empty when `file` is a readable regular file, else why not.
std::string unreadable_reason(const fs::path& file) {
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        return std::strerror(errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return std::strerror(errno);
    }
    return S_ISREG(st.st_mode) ? std::string() : std::string("not a regular file");
}

// ---- Sections ------------------------------------------------------------------------------

Result<AuthSpec> read_auth(const Where& where, const json& value) {
    TRY(expect_object(where, value, "auth"));
    TRY_ASSIGN(const json* type_value, require(where, value, "type", "auth.type"));
    TRY_ASSIGN(const std::string type, read_string(where, *type_value, "auth.type", k_max_short));

    AuthSpec auth;
    std::vector<std::string_view> known;  // the fields of this type
    if (type == "bearer") {
        auth.type = AuthSpec::Type::bearer;
        known = {"type"};
    } else if (type == "header") {
        auth.type = AuthSpec::Type::header;
        known = {"type", "name", "prefix"};
    } else if (type == "query") {
        auth.type = AuthSpec::Type::query;
        known = {"type", "name"};
    } else if (type == "basic") {
        auth.type = AuthSpec::Type::basic;
        known = {"type"};
    } else if (type == "oauth2") {
        auth.type = AuthSpec::Type::oauth2;
        known = {"type",
                 "grant",
                 "token_url",
                 "client_id",
                 "device_authorization_url",
                 "scopes",
                 "refresh_before_secs"};
    } else {
        return fail(where, "auth.type",
                    fmt::format("unknown type {} (expected bearer, header, query, basic or oauth2)",
                                quote(type)));
    }
    for (const auto& [key, member_value] : value.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            return fail(where, "auth." + key,
                        fmt::format("unknown field for auth type \"{}\"", type));
        }
    }

    switch (auth.type) {
        case AuthSpec::Type::bearer:
        case AuthSpec::Type::basic:
            break;
        case AuthSpec::Type::header: {
            TRY_ASSIGN(const json* name, require(where, value, "name", "auth.name"));
            TRY_ASSIGN(auth.name, read_string(where, *name, "auth.name", k_max_short));
            if (!http::is_token(auth.name)) {
                return fail(where, "auth.name",
                            fmt::format("{} is not a valid header name", quote(auth.name)));
            }
            if (is_reserved_header(auth.name)) {
                return fail(where, "auth.name",
                            fmt::format("header {} is managed by the proxy", quote(auth.name)));
            }
            if (const json* prefix = member(value, "prefix")) {
                TRY_ASSIGN(auth.prefix,
                           read_string(where, *prefix, "auth.prefix", k_max_short, true));
            }
            break;
        }
        case AuthSpec::Type::query: {
            TRY_ASSIGN(const json* name, require(where, value, "name", "auth.name"));
            TRY_ASSIGN(auth.name, read_string(where, *name, "auth.name", k_max_short));
            if (!is_query_name(auth.name)) {
                return fail(where, "auth.name",
                            fmt::format("{} is not a valid query parameter name (no spaces or "
                                        "any of &=#%+?)",
                                        quote(auth.name)));
            }
            break;
        }
        case AuthSpec::Type::oauth2: {
            TRY_ASSIGN(const json* grant_value, require(where, value, "grant", "auth.grant"));
            TRY_ASSIGN(const std::string grant,
                       read_string(where, *grant_value, "auth.grant", k_max_short));
            if (grant == "refresh_token") {
                auth.grant = AuthSpec::Grant::refresh_token;
            } else if (grant == "client_credentials") {
                auth.grant = AuthSpec::Grant::client_credentials;
            } else {
                return fail(where, "auth.grant",
                            fmt::format("unknown grant {} (expected refresh_token or "
                                        "client_credentials)",
                                        quote(grant)));
            }
            TRY_ASSIGN(const json* token_url, require(where, value, "token_url", "auth.token_url"));
            TRY_ASSIGN(auth.token_url, read_url(where, *token_url, "auth.token_url"));
            TRY_ASSIGN(const json* client_id, require(where, value, "client_id", "auth.client_id"));
            TRY_ASSIGN(auth.client_id,
                       read_string(where, *client_id, "auth.client_id", k_max_short));
            if (const json* device = member(value, "device_authorization_url")) {
                if (auth.grant != AuthSpec::Grant::refresh_token) {
                    return fail(where, "auth.device_authorization_url",
                                "only meaningful with grant \"refresh_token\"");
                }
                TRY_ASSIGN(auth.device_authorization_url,
                           read_url(where, *device, "auth.device_authorization_url"));
            }
            if (const json* scopes = member(value, "scopes")) {
                TRY(expect_array(where, *scopes, "auth.scopes"));
                for (std::size_t i = 0; i < scopes->size(); ++i) {
                    const std::string field = index_field("auth.scopes", i);
                    TRY_ASSIGN(std::string scope,
                               read_string(where, (*scopes)[i], field, k_max_short));
                    if (!is_scope_token(scope)) {
                        return fail(where, field,
                                    fmt::format("{} is not a valid OAuth2 scope", quote(scope)));
                    }
                    auth.scopes.push_back(std::move(scope));
                }
            }
            if (const json* before = member(value, "refresh_before_secs")) {
                TRY_ASSIGN(auth.refresh_before_secs,
                           read_int(where, *before, "auth.refresh_before_secs", 0,
                                    k_max_refresh_before_secs));
            }
            break;
        }
    }
    return auth;
}

Result<RateLimitSpec> read_rate_limit(const Where& where, const json& value) {
    TRY(expect_object(where, value, "rate_limit"));
    TRY(check_known(where, value, "rate_limit.", {"requests", "window_secs"}));
    RateLimitSpec out;
    TRY_ASSIGN(const json* requests, require(where, value, "requests", "rate_limit.requests"));
    TRY_ASSIGN(out.requests, read_int(where, *requests, "rate_limit.requests", 1, k_max_requests));
    TRY_ASSIGN(const json* window, require(where, value, "window_secs", "rate_limit.window_secs"));
    TRY_ASSIGN(out.window_secs,
               read_int(where, *window, "rate_limit.window_secs", 1, k_max_window_secs));
    return out;
}

Result<std::vector<AllowRule>> read_allow(const Where& where, const json& value) {
    TRY(expect_array(where, value, "allow"));
    if (value.empty()) {
        return fail(where, "allow", "must not be empty (omit it to allow every request)");
    }
    std::vector<AllowRule> rules;
    for (std::size_t i = 0; i < value.size(); ++i) {
        const std::string field = index_field("allow", i);
        const json& rule_value = value[i];
        TRY(expect_object(where, rule_value, field));
        TRY(check_known(where, rule_value, field + ".", {"methods", "paths"}));
        AllowRule rule;

        const std::string methods_field = field + ".methods";
        TRY_ASSIGN(const json* methods, require(where, rule_value, "methods", methods_field));
        TRY(expect_array(where, *methods, methods_field));
        if (methods->empty()) {
            return fail(where, methods_field, "must not be empty");
        }
        for (std::size_t m = 0; m < methods->size(); ++m) {
            const std::string method_field = index_field(methods_field, m);
            TRY_ASSIGN(std::string method,
                       read_string(where, (*methods)[m], method_field, k_max_short));
            if (!is_method(method)) {
                return fail(where, method_field,
                            fmt::format("must be an uppercase HTTP method or \"*\", got {}",
                                        quote(method)));
            }
            rule.methods.push_back(std::move(method));
        }

        const std::string paths_field = field + ".paths";
        TRY_ASSIGN(const json* paths, require(where, rule_value, "paths", paths_field));
        TRY(expect_array(where, *paths, paths_field));
        if (paths->empty()) {
            return fail(where, paths_field, "must not be empty");
        }
        for (std::size_t p = 0; p < paths->size(); ++p) {
            const std::string path_field = index_field(paths_field, p);
            TRY_ASSIGN(std::string path,
                       read_string(where, (*paths)[p], path_field, k_max_path_glob));
            if (path.front() != '/') {
                return fail(where, path_field,
                            fmt::format("must start with '/', got {}", quote(path)));
            }
            rule.paths.push_back(std::move(path));
        }
        rules.push_back(std::move(rule));
    }
    return rules;
}

// Reads one service; `where.subject` starts as "services[i]" and becomes the id once that is
// known to be valid. With `ca_base_dir`, ca_file is resolved against it and must be readable.
Result<Service> read_service(Where& where, const json& value, const fs::path* ca_base_dir) {
    if (!value.is_object()) {
        return fail(where, fmt::format("must be an object, got {}", kind(value)));
    }
    Service s;
    TRY_ASSIGN(const json* id, require(where, value, "id", "id"));
    TRY_ASSIGN(s.id, read_string(where, *id, "id", k_max_short));
    if (!is_valid_id(s.id)) {
        return fail(where, "id",
                    fmt::format("{} must be 1 to {} characters of a-z, 0-9, '_' and '-', "
                                "starting with a letter or digit",
                                quote(s.id), k_max_id));
    }
    where.subject = fmt::format("service \"{}\"", s.id);

    TRY(check_known(where, value, "",
                    {"id", "name", "description", "base_url", "auth", "rate_limit", "allow",
                     "timeout_secs", "connect_timeout_secs", "ca_file", "max_body"}));

    TRY_ASSIGN(const json* name, require(where, value, "name", "name"));
    TRY_ASSIGN(s.name, read_string(where, *name, "name", k_max_name));
    if (const json* description = member(value, "description")) {
        TRY_ASSIGN(s.description,
                   read_string(where, *description, "description", k_max_description, true));
    }

    TRY_ASSIGN(const json* base_url, require(where, value, "base_url", "base_url"));
    ParsedUrl url;
    TRY(read_url(where, *base_url, "base_url", &url));
    s.base_url = std::move(url.normalized);
    s.scheme = std::move(url.scheme);
    s.host = std::move(url.host);
    s.port = url.port;
    s.base_path = std::move(url.path);

    TRY_ASSIGN(const json* auth, require(where, value, "auth", "auth"));
    TRY_ASSIGN(s.auth, read_auth(where, *auth));

    if (const json* rate_limit = member(value, "rate_limit")) {
        TRY_ASSIGN(s.rate_limit, read_rate_limit(where, *rate_limit));
    }
    if (const json* allow = member(value, "allow")) {
        TRY_ASSIGN(s.allow, read_allow(where, *allow));
    }
    if (const json* timeout = member(value, "timeout_secs")) {
        TRY_ASSIGN(s.timeout_secs,
                   read_int(where, *timeout, "timeout_secs", 1, k_max_timeout_secs));
    }
    if (const json* connect = member(value, "connect_timeout_secs")) {
        TRY_ASSIGN(s.connect_timeout_secs, read_int(where, *connect, "connect_timeout_secs", 1,
                                                    k_max_connect_timeout_secs));
    }
    if (const json* ca_file = member(value, "ca_file")) {
        TRY_ASSIGN(s.ca_file, read_string(where, *ca_file, "ca_file", k_max_file_path));
        if (ca_base_dir != nullptr) {
            fs::path path(s.ca_file);
            if (path.is_relative()) {
                path = *ca_base_dir / path;
            }
            path = path.lexically_normal();
            if (const std::string why = unreadable_reason(path); !why.empty()) {
                return fail(where, "ca_file",
                            fmt::format("cannot read {}: {}", quote(path.string()), why));
            }
            s.ca_file = path.string();
        }
    }
    if (const json* max_body = member(value, "max_body")) {
        TRY_ASSIGN(const int64_t bytes, read_int(where, *max_body, "max_body", 1, k_max_body));
        s.max_body = static_cast<uint64_t>(bytes);
    }
    return s;
}

}  // namespace

std::string_view auth_type_name(AuthSpec::Type type) noexcept {
    switch (type) {
        case AuthSpec::Type::bearer:
            return "bearer";
        case AuthSpec::Type::header:
            return "header";
        case AuthSpec::Type::query:
            return "query";
        case AuthSpec::Type::basic:
            return "basic";
        case AuthSpec::Type::oauth2:
            return "oauth2";
    }
    return "unknown";
}

std::string_view grant_name(AuthSpec::Grant grant) noexcept {
    switch (grant) {
        case AuthSpec::Grant::refresh_token:
            return "refresh_token";
        case AuthSpec::Grant::client_credentials:
            return "client_credentials";
    }
    return "unknown";
}

bool glob_match(std::string_view pattern, std::string_view path) {
    // Greedy matching with one backtrack point: on a mismatch, the last '*' absorbs one more
    // character. Quadratic at worst, never exponential.
    std::size_t p = 0;
    std::size_t s = 0;
    std::size_t star = std::string_view::npos;
    std::size_t star_s = 0;
    while (s < path.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_s = s;
        } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == path[s])) {
            ++p;
            ++s;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            s = ++star_s;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') {
        ++p;
    }
    return p == pattern.size();
}

bool AllowRule::allows(std::string_view method, std::string_view path) const {
    const bool method_ok = std::any_of(methods.begin(), methods.end(), [&](const std::string& m) {
        return m == "*" || m == method;
    });
    return method_ok && std::any_of(paths.begin(), paths.end(), [&](const std::string& glob) {
               return glob_match(glob, path);
           });
}

bool Service::allows(std::string_view method, std::string_view path) const {
    return allow.empty() || std::any_of(allow.begin(), allow.end(), [&](const AllowRule& rule) {
               return rule.allows(method, path);
           });
}

json to_json(const Service& service) {
    json auth = json::object();
    auth["type"] = auth_type_name(service.auth.type);
    switch (service.auth.type) {
        case AuthSpec::Type::bearer:
        case AuthSpec::Type::basic:
            break;
        case AuthSpec::Type::header:
            auth["name"] = service.auth.name;
            auth["prefix"] = service.auth.prefix;
            break;
        case AuthSpec::Type::query:
            auth["name"] = service.auth.name;
            break;
        case AuthSpec::Type::oauth2:
            auth["grant"] = grant_name(service.auth.grant);
            auth["token_url"] = service.auth.token_url;
            auth["client_id"] = service.auth.client_id;
            auth["device_authorization_url"] = service.auth.device_authorization_url.empty()
                                                   ? json(nullptr)
                                                   : json(service.auth.device_authorization_url);
            auth["scopes"] = service.auth.scopes;
            auth["refresh_before_secs"] = service.auth.refresh_before_secs;
            break;
    }

    json out = json::object();
    out["id"] = service.id;
    out["name"] = service.name;
    out["description"] = service.description;
    out["base_url"] = service.base_url;
    out["auth"] = std::move(auth);
    if (service.rate_limit) {
        out["rate_limit"] = {{"requests", service.rate_limit->requests},
                             {"window_secs", service.rate_limit->window_secs}};
    } else {
        out["rate_limit"] = nullptr;
    }
    if (service.allow.empty()) {
        out["allow"] = nullptr;
    } else {
        json rules = json::array();
        for (const AllowRule& rule : service.allow) {
            json entry = json::object();
            entry["methods"] = rule.methods;
            entry["paths"] = rule.paths;
            rules.push_back(std::move(entry));
        }
        out["allow"] = std::move(rules);
    }
    out["timeout_secs"] = service.timeout_secs;
    out["connect_timeout_secs"] = service.connect_timeout_secs;
    out["ca_file"] = service.ca_file.empty() ? json(nullptr) : json(service.ca_file);
    out["max_body"] = service.max_body;
    return out;
}

Result<ServiceCatalog> ServiceCatalog::load(const fs::path& file) {
    TRY_ASSIGN(const std::string text, read_whole_file(file, k_max_file_bytes));
    Options options;
    options.check_files = true;
    options.base_dir = file.parent_path();
    return parse_impl(text, file.string(), options);
}

Result<ServiceCatalog> ServiceCatalog::parse(std::string_view json_text, std::string_view origin) {
    return parse_impl(json_text, origin, Options{});
}

Result<ServiceCatalog> ServiceCatalog::parse_impl(std::string_view text, std::string_view origin,
                                                  const Options& options) {
    Where where{origin, ""};
    StrictJsonChecker checker;
    if (!json::sax_parse(text, &checker)) {
        return fail(where, fmt::format("invalid JSON: {}", checker.error()));
    }
    const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {  // the checker accepted it, so this is not expected
        return fail(where, "invalid JSON");
    }
    if (!root.is_object()) {
        return fail(where, fmt::format("the top level must be an object, got {}", kind(root)));
    }
    TRY(check_known(where, root, "", {"services"}));
    TRY_ASSIGN(const json* list, require(where, root, "services", "services"));
    TRY(expect_array(where, *list, "services"));

    const fs::path base_dir = options.base_dir.empty() ? fs::path(".") : options.base_dir;
    ServiceCatalog catalog;
    catalog.services_.reserve(list->size());
    for (std::size_t i = 0; i < list->size(); ++i) {
        Where service_where{origin, index_field("services", i)};
        TRY_ASSIGN(Service service, read_service(service_where, (*list)[i],
                                                 options.check_files ? &base_dir : nullptr));
        const auto [it, inserted] = catalog.index_.emplace(service.id, i);
        if (!inserted) {
            return fail(service_where, "id",
                        fmt::format("duplicate id (also used by services[{}])", it->second));
        }
        catalog.services_.push_back(std::move(service));
    }
    return catalog;
}

const Service* ServiceCatalog::find(std::string_view id) const {
    const auto it = index_.find(id);
    return it == index_.end() ? nullptr : &services_[it->second];
}

}  // namespace agentgw
