// ServiceCatalog: the upstream services of the services file (SPEC §8), loaded and fully
// validated in one go. A catalog is an immutable value: const members are safe to call from any
// number of threads; a reload builds a new catalog and swaps it in.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace agentgw {

// How the proxy injects the credential into a forwarded request (SPEC §3.2).
struct AuthSpec {
    enum class Type { bearer, header, query, basic, oauth2 };
    enum class Grant { refresh_token, client_credentials };

    Type type = Type::bearer;
    std::string name;    // header: the header name; query: the parameter name
    std::string prefix;  // header: prepended to the secret (may be empty)

    // oauth2 only.
    Grant grant = Grant::refresh_token;
    std::string token_url;
    std::string client_id;
    std::string device_authorization_url;  // empty: no device flow (refresh_token grant only)
    std::vector<std::string> scopes;
    int64_t refresh_before_secs = 300;
};

// "bearer", "header", ... and "refresh_token", "client_credentials": the file's spellings.
std::string_view auth_type_name(AuthSpec::Type type) noexcept;
std::string_view grant_name(AuthSpec::Grant grant) noexcept;

struct RateLimitSpec {
    int64_t requests = 0;
    int64_t window_secs = 0;
};

// One entry of a service's `allow` list: a request is allowed when its method is one of
// `methods` (or `methods` holds "*") and its path matches one of the `paths` globs.
struct AllowRule {
    std::vector<std::string> methods;  // uppercase method tokens or "*"; never empty
    std::vector<std::string> paths;    // globs (see glob_match), each starting with '/'

    // `method` is compared case-sensitively; `path` is the path below the base URL, without
    // the query string (for /api/openai/v1/models?x=1 it is "/v1/models").
    bool allows(std::string_view method, std::string_view path) const;
};

struct Service {
    std::string id;
    std::string name;
    std::string description;  // empty when the file gives none
    // The file's base_url as libcurl normalizes it (scheme lowercased, dot-segments and a
    // default port removed) without a trailing '/', so base_url + "/v1/x" is a target URL.
    std::string base_url;

    // base_url's parts. `host` is as libcurl returns it (an IPv6 address keeps its brackets);
    // `port` is explicit or the scheme's default; `base_path` never ends in '/' and is empty
    // for a base URL without a path.
    std::string scheme;  // "http" or "https"
    std::string host;
    uint16_t port = 0;
    std::string base_path;

    AuthSpec auth;
    std::optional<RateLimitSpec> rate_limit;
    std::vector<AllowRule> allow;  // empty: `allow` was absent, everything is allowed
    int64_t timeout_secs = 60;
    int64_t connect_timeout_secs = 10;
    std::string ca_file;  // empty: the system trust store
    uint64_t max_body = 10 * 1024 * 1024;

    // True when `allow` is absent or one of its rules allows the request (see AllowRule).
    bool allows(std::string_view method, std::string_view path) const;
};

// The service as the control API shows it. Every key is always present: absent optional
// values are null (rate_limit, allow, ca_file) and description is "" when not given; `auth`
// carries only the keys of its type. Services hold no secrets (client secrets and tokens live
// in the vault, and URLs with user info are refused at load).
nlohmann::json to_json(const Service& service);

// Whether `path` matches `pattern` as a whole. `*` matches any run of characters, '/'
// included (so "/v1/*" matches "/v1/a/b" but not "/v1"); `?` matches exactly one character;
// every other character matches itself. There is no escaping and no character class.
// Runs in O(pattern × path) time at worst.
bool glob_match(std::string_view pattern, std::string_view path);

class ServiceCatalog {
  public:
    ServiceCatalog() = default;  // no services

    // Reads and validates `file`. A missing file is Code::not_found, an unreadable one
    // Code::io_error; bad JSON or a bad value is Code::invalid_argument with a message naming
    // the file, the service and the field. A relative `ca_file` is resolved against the
    // file's directory and must name a readable regular file.
    static Result<ServiceCatalog> load(const std::filesystem::path& file);

    // Validates the text of a services file; `origin` starts every error message. `ca_file`
    // is taken as written and not checked on disk.
    static Result<ServiceCatalog> parse(std::string_view json, std::string_view origin);

    // The service with this id, or nullptr. The pointer lives as long as the catalog.
    const Service* find(std::string_view id) const;

    // In file order.
    const std::vector<Service>& services() const { return services_; }

  private:
    struct Options;
    static Result<ServiceCatalog> parse_impl(std::string_view json, std::string_view origin,
                                             const Options& options);

    std::vector<Service> services_;
    std::map<std::string, std::size_t, std::less<>> index_;  // id → position in services_
};

}  // namespace agentgw
