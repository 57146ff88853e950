#include <functional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "daemon/services/service_catalog.hpp"
#include "tests/support/temp_dir.hpp"

using namespace agentgw;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The example of SPEC §8, verbatim.
constexpr const char* k_spec_example = R"({"services": [
  {"id": "openai", "name": "OpenAI", "description": "LLM API",
   "base_url": "https://api.openai.com",
   "auth": {"type": "bearer"},
   "rate_limit": {"requests": 600, "window_secs": 60},
   "allow": [{"methods": ["GET", "POST"], "paths": ["/v1/*"]}],
   "timeout_secs": 120},
  {"id": "github", "name": "GitHub", "base_url": "https://api.github.com",
   "auth": {"type": "oauth2", "grant": "refresh_token",
            "token_url": "https://github.com/login/oauth/access_token",
            "device_authorization_url": "https://github.com/login/device/code",
            "client_id": "...", "scopes": ["repo"], "refresh_before_secs": 300}}
]})";

// A minimal valid service; tests change one thing in it.
json minimal_service() {
    return {{"id", "svc"},
            {"name", "Service"},
            {"base_url", "https://api.example.com"},
            {"auth", {{"type", "bearer"}}}};
}

Result<ServiceCatalog> parse_services(const json& services) {
    return ServiceCatalog::parse(json{{"services", services}}.dump(), "services.json");
}

Result<ServiceCatalog> parse_one(const json& service) {
    return parse_services(json::array({service}));
}

// The message of the error that parsing `service` must fail with.
std::string rejection(const json& service) {
    auto result = parse_one(service);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Code::invalid_argument);
    return result.error().message;
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

struct BadCase {
    std::string field;                 // the field the message must name
    std::function<void(json&)> spoil;  // makes minimal_service() invalid
};

// Runs each case: the message names the file, the service and the field.
void check_rejections(const std::vector<BadCase>& cases, const std::string& subject) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
        json service = minimal_service();
        cases[i].spoil(service);
        INFO("case " << i << ": " << service.dump());
        const std::string message = rejection(service);
        INFO(message);
        CHECK(message.rfind("services.json: " + subject + ": ", 0) == 0);
        CHECK(contains(message, "field \"" + cases[i].field + "\""));
    }
}

}  // namespace

TEST_CASE("the SPEC example parses with every field as given", "[services]") {
    auto catalog = ServiceCatalog::parse(k_spec_example, "services.json");
    REQUIRE(catalog.ok());
    REQUIRE(catalog->services().size() == 2);
    CHECK(catalog->find("nope") == nullptr);

    const Service* openai = catalog->find("openai");
    REQUIRE(openai != nullptr);
    CHECK(openai == &catalog->services()[0]);
    CHECK(openai->name == "OpenAI");
    CHECK(openai->description == "LLM API");
    CHECK(openai->base_url == "https://api.openai.com");
    CHECK(openai->scheme == "https");
    CHECK(openai->host == "api.openai.com");
    CHECK(openai->port == 443);
    CHECK(openai->base_path.empty());
    CHECK(openai->auth.type == AuthSpec::Type::bearer);
    REQUIRE(openai->rate_limit.has_value());
    CHECK(openai->rate_limit->requests == 600);
    CHECK(openai->rate_limit->window_secs == 60);
    REQUIRE(openai->allow.size() == 1);
    CHECK(openai->allow[0].methods == std::vector<std::string>{"GET", "POST"});
    CHECK(openai->allow[0].paths == std::vector<std::string>{"/v1/*"});
    CHECK(openai->timeout_secs == 120);
    CHECK(openai->connect_timeout_secs == 10);  // defaults
    CHECK(openai->max_body == 10 * 1024 * 1024);
    CHECK(openai->ca_file.empty());

    const Service* github = catalog->find("github");
    REQUIRE(github != nullptr);
    CHECK(github->name == "GitHub");
    CHECK(github->description.empty());
    CHECK(github->host == "api.github.com");
    CHECK_FALSE(github->rate_limit.has_value());
    CHECK(github->allow.empty());
    CHECK(github->timeout_secs == 60);
    const AuthSpec& auth = github->auth;
    CHECK(auth.type == AuthSpec::Type::oauth2);
    CHECK(auth.grant == AuthSpec::Grant::refresh_token);
    CHECK(auth.token_url == "https://github.com/login/oauth/access_token");
    CHECK(auth.device_authorization_url == "https://github.com/login/device/code");
    CHECK(auth.client_id == "...");
    CHECK(auth.scopes == std::vector<std::string>{"repo"});
    CHECK(auth.refresh_before_secs == 300);
}

TEST_CASE("every optional field and auth form is read", "[services]") {
    json services = json::array();
    json header = minimal_service();
    header["id"] = "hdr";
    header["base_url"] = "http://127.0.0.1:8080/v1/";
    header["auth"] = {{"type", "header"}, {"name", "X-API-Key"}, {"prefix", "Token "}};
    header["connect_timeout_secs"] = 3;
    header["max_body"] = 1024;
    header["ca_file"] = "/etc/ssl/does-not-need-to-exist.pem";
    services.push_back(header);
    json query = minimal_service();
    query["id"] = "0q";
    query["base_url"] = "http://[::1]:9000/a/b";
    query["auth"] = {{"type", "query"}, {"name", "api_key"}};
    services.push_back(query);
    json basic = minimal_service();
    basic["id"] = "basic_1";
    basic["auth"] = {{"type", "basic"}};
    services.push_back(basic);
    json cc = minimal_service();
    cc["id"] = "cc";
    cc["auth"] = {{"type", "oauth2"},
                  {"grant", "client_credentials"},
                  {"token_url", "https://auth.example.com/token"},
                  {"client_id", "abc"}};
    services.push_back(cc);

    auto catalog = parse_services(services);
    REQUIRE(catalog.ok());

    const Service& h = *catalog->find("hdr");
    CHECK(h.base_url == "http://127.0.0.1:8080/v1");
    CHECK(h.scheme == "http");
    CHECK(h.host == "127.0.0.1");
    CHECK(h.port == 8080);
    CHECK(h.base_path == "/v1");
    CHECK(h.auth.type == AuthSpec::Type::header);
    CHECK(h.auth.name == "X-API-Key");
    CHECK(h.auth.prefix == "Token ");
    CHECK(h.connect_timeout_secs == 3);
    CHECK(h.max_body == 1024);
    CHECK(h.ca_file == "/etc/ssl/does-not-need-to-exist.pem");  // parse() does not check files

    const Service& q = *catalog->find("0q");
    CHECK(q.host == "[::1]");
    CHECK(q.port == 9000);
    CHECK(q.base_path == "/a/b");
    CHECK(q.auth.type == AuthSpec::Type::query);
    CHECK(q.auth.name == "api_key");

    CHECK(catalog->find("basic_1")->auth.type == AuthSpec::Type::basic);
    const AuthSpec& c = catalog->find("cc")->auth;
    CHECK(c.grant == AuthSpec::Grant::client_credentials);
    CHECK(c.scopes.empty());
    CHECK(c.refresh_before_secs == 300);
    CHECK(c.device_authorization_url.empty());
}

TEST_CASE("base_url is normalized by libcurl and split into parts", "[services]") {
    struct Case {
        const char* written;
        const char* base_url;
        const char* host;
        uint16_t port;
        const char* base_path;
    };
    const Case cases[] = {
        {"https://api.example.com", "https://api.example.com", "api.example.com", 443, ""},
        {"https://api.example.com/", "https://api.example.com", "api.example.com", 443, ""},
        {"HTTPS://api.example.com:443/v1/", "https://api.example.com/v1", "api.example.com", 443,
         "/v1"},
        {"http://api.example.com", "http://api.example.com", "api.example.com", 80, ""},
        {"https://api.example.com:8443/a/b//", "https://api.example.com:8443/a/b",
         "api.example.com", 8443, "/a/b"},
        {"https://api.example.com/v1/../v2/./x", "https://api.example.com/v2/x", "api.example.com",
         443, "/v2/x"},
        {"https://api.example.com/v1#", "https://api.example.com/v1", "api.example.com", 443,
         "/v1"},
    };
    for (const Case& c : cases) {
        INFO(c.written);
        json service = minimal_service();
        service["base_url"] = c.written;
        auto catalog = parse_one(service);
        REQUIRE(catalog.ok());
        const Service& s = catalog->services()[0];
        CHECK(s.base_url == c.base_url);
        CHECK(s.host == c.host);
        CHECK(s.port == c.port);
        CHECK(s.base_path == c.base_path);
    }
}

TEST_CASE("an empty services array is a valid, empty catalog", "[services]") {
    auto catalog = ServiceCatalog::parse(R"({"services": []})", "services.json");
    REQUIRE(catalog.ok());
    CHECK(catalog->services().empty());
    CHECK(catalog->find("openai") == nullptr);
}

TEST_CASE("the top level must be an object holding exactly a services array", "[services]") {
    struct Case {
        const char* text;
        const char* expect;
    };
    const Case cases[] = {
        {R"([])", "top level must be an object"},
        {R"("services")", "top level must be an object"},
        {R"({})", "field \"services\": required"},
        {R"({"services": {}})", "field \"services\": must be an array, got an object"},
        {R"({"services": null})", "field \"services\": must be an array, got null"},
        {R"({"services": [], "version": 1})", "field \"version\": unknown field"},
        {R"({"services": [5]})", "services[0]: must be an object"},
    };
    for (const Case& c : cases) {
        INFO(c.text);
        auto result = ServiceCatalog::parse(c.text, "services.json");
        REQUIRE_FALSE(result.ok());
        CHECK(result.error().code == Code::invalid_argument);
        CHECK(result.error().message.rfind("services.json: ", 0) == 0);
        CHECK(contains(result.error().message, c.expect));
    }
}

TEST_CASE("bad JSON is refused with its position", "[services]") {
    auto result = ServiceCatalog::parse("{\"services\": [\n  {\"id\": \"a\",}\n]}", "svc.json");
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == Code::invalid_argument);
    INFO(result.error().message);
    CHECK(result.error().message.rfind("svc.json: invalid JSON: ", 0) == 0);
    CHECK(contains(result.error().message, "line 2, column"));

    auto empty = ServiceCatalog::parse("", "svc.json");
    REQUIRE_FALSE(empty.ok());
    CHECK(contains(empty.error().message, "line 1, column"));

    auto trailing = ServiceCatalog::parse(R"({"services": []} x)", "svc.json");
    REQUIRE_FALSE(trailing.ok());
    CHECK(contains(trailing.error().message, "invalid JSON"));
}

TEST_CASE("duplicate JSON keys are refused with their path", "[services]") {
    auto top = ServiceCatalog::parse(R"({"services": [], "services": []})", "s.json");
    REQUIRE_FALSE(top.ok());
    CHECK(contains(top.error().message, "duplicate key \"services\""));

    auto nested = ServiceCatalog::parse(
        R"({"services": [{"id": "a", "name": "A", "base_url": "https://a", "auth": {"type": "bearer"}},
            {"id": "b", "auth": {"type": "bearer", "type": "basic"}}]})",
        "s.json");
    REQUIRE_FALSE(nested.ok());
    INFO(nested.error().message);
    CHECK(contains(nested.error().message, "duplicate key \"services[1].auth.type\""));
}

TEST_CASE("duplicate service ids are refused", "[services]") {
    json a = minimal_service();
    json b = minimal_service();
    a["id"] = "dup";
    b["id"] = "dup";
    json other = minimal_service();
    auto result = parse_services(json::array({a, other, b}));
    REQUIRE_FALSE(result.ok());
    INFO(result.error().message);
    CHECK(result.error().message.rfind("services.json: service \"dup\": field \"id\": ", 0) == 0);
    CHECK(contains(result.error().message, "duplicate"));
    CHECK(contains(result.error().message, "services[0]"));
}

TEST_CASE("a bad id is reported by the service's index", "[services]") {
    check_rejections(
        {
            {"id", [](json& s) { s.erase("id"); }},
            {"id", [](json& s) { s["id"] = ""; }},
            {"id", [](json& s) { s["id"] = "OpenAI"; }},
            {"id", [](json& s) { s["id"] = "-lead"; }},
            {"id", [](json& s) { s["id"] = "_lead"; }},
            {"id", [](json& s) { s["id"] = "a b"; }},
            {"id", [](json& s) { s["id"] = "a.b"; }},
            {"id", [](json& s) { s["id"] = std::string(65, 'a'); }},
            {"id", [](json& s) { s["id"] = 42; }},
        },
        "services[0]");
    // 64 characters is the limit, not past it.
    json ok = minimal_service();
    ok["id"] = std::string(64, 'a');
    CHECK(parse_one(ok).ok());
}

TEST_CASE("unknown fields are refused in a service, in auth and below", "[services]") {
    check_rejections(
        {
            {"extra", [](json& s) { s["extra"] = 1; }},
            {"baseUrl", [](json& s) { s["baseUrl"] = "https://x"; }},
            {"auth.extra", [](json& s) { s["auth"]["extra"] = true; }},
            {"auth.name", [](json& s) { s["auth"]["name"] = "X-Key"; }},  // not for bearer
            {"auth.prefix",
             [](json& s) {
                 s["auth"] = {{"type", "query"}, {"name", "k"}, {"prefix", "x"}};
             }},
            {"auth.grant",
             [](json& s) {
                 s["auth"] = {{"type", "basic"}, {"grant", "x"}};
             }},
            {"rate_limit.burst",
             [](json& s) {
                 s["rate_limit"] = {{"requests", 1}, {"window_secs", 1}, {"burst", 2}};
             }},
            {"allow[0].hosts",
             [](json& s) {
                 s["allow"] =
                     json::array({{{"methods", {"GET"}}, {"paths", {"/"}}, {"hosts", {"x"}}}});
             }},
        },
        "service \"svc\"");
}

TEST_CASE("name and description are checked", "[services]") {
    check_rejections(
        {
            {"name", [](json& s) { s.erase("name"); }},
            {"name", [](json& s) { s["name"] = ""; }},
            {"name", [](json& s) { s["name"] = std::string(129, 'n'); }},
            {"name", [](json& s) { s["name"] = "line\nbreak"; }},
            {"name", [](json& s) { s["name"] = "esc\x1b[31m"; }},
            {"name", [](json& s) { s["name"] = 5; }},
            {"name", [](json& s) { s["name"] = nullptr; }},
            {"description", [](json& s) { s["description"] = std::string(1025, 'd'); }},
            {"description", [](json& s) { s["description"] = true; }},
        },
        "service \"svc\"");
    json ok = minimal_service();
    ok["name"] = std::string(128, 'n');
    ok["description"] = std::string(1024, 'd');
    CHECK(parse_one(ok).ok());
    ok["description"] = "";
    CHECK(parse_one(ok).ok());
}

TEST_CASE("base_url must be an absolute http(s) URL without user info, query or fragment",
          "[services]") {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"ftp://files.example.com", "http or https"},
        {"file:///etc/passwd", ""},
        {"gopher://example.com", ""},
        {"https://", ""},
        {"http://", ""},
        {"api.example.com", ""},
        {"/v1/chat", ""},
        {"https://user:pass@api.example.com", "user name or password"},
        {"https://user@api.example.com", "user name or password"},
        {"https://user:pass@api example.com", ""},  // invalid otherwise too: still not echoed
        {"https://user:pass@api.example.com/\n", "control character"},
        {"https://api.example.com/v1?key=1", "query"},
        {"https://api.example.com/#top", "fragment"},
        {"https://api.example.com:99999", ""},
        {"https://api example.com", ""},
        {"", "must not be empty"},
    };
    for (const auto& [url, reason] : bad) {
        json service = minimal_service();
        service["base_url"] = url;
        INFO(url);
        const std::string message = rejection(service);
        INFO(message);
        CHECK(message.rfind("services.json: service \"svc\": field \"base_url\": ", 0) == 0);
        CHECK(contains(message, reason));
        CHECK_FALSE(contains(message, "pass@"));  // user info is never echoed
    }
    check_rejections({{"base_url", [](json& s) { s.erase("base_url"); }},
                      {"base_url", [](json& s) { s["base_url"] = 7; }}},
                     "service \"svc\"");
}

TEST_CASE("auth must be one of the forms of SPEC 8", "[services]") {
    check_rejections(
        {
            {"auth", [](json& s) { s.erase("auth"); }},
            {"auth", [](json& s) { s["auth"] = "bearer"; }},
            {"auth.type", [](json& s) { s["auth"] = json::object(); }},
            {"auth.type", [](json& s) { s["auth"]["type"] = 1; }},
            {"auth.type", [](json& s) { s["auth"]["type"] = "Bearer"; }},
            // header
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", ""}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "X Key"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "X:Key"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "host"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "Transfer-Encoding"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "Proxy-Authorization"}};
             }},
            {"auth.prefix",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "X"}, {"prefix", 5}};
             }},
            {"auth.prefix",
             [](json& s) {
                 s["auth"] = {{"type", "header"}, {"name", "X"}, {"prefix", "a\r\nInjected: 1"}};
             }},
            // query
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "query"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "query"}, {"name", ""}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "query"}, {"name", "a&b"}};
             }},
            {"auth.name",
             [](json& s) {
                 s["auth"] = {{"type", "query"}, {"name", "a b"}};
             }},
        },
        "service \"svc\"");

    json bad_type = minimal_service();
    bad_type["auth"]["type"] = "token";
    CHECK(rejection(bad_type) ==
          "services.json: service \"svc\": field \"auth.type\": unknown type \"token\" "
          "(expected bearer, header, query, basic or oauth2)");
}

TEST_CASE("oauth2 auth is checked field by field", "[services]") {
    const auto oauth = [](json& s) {
        s["auth"] = {{"type", "oauth2"},
                     {"grant", "refresh_token"},
                     {"token_url", "https://auth.example.com/token"},
                     {"client_id", "abc"}};
    };
    json ok = minimal_service();
    oauth(ok);
    REQUIRE(parse_one(ok).ok());

    const auto with = [oauth](std::function<void(json&)> change) {
        return [oauth, change](json& s) {
            oauth(s);
            change(s["auth"]);
        };
    };
    check_rejections(
        {
            {"auth.grant", with([](json& a) { a.erase("grant"); })},
            {"auth.grant", with([](json& a) { a["grant"] = "password"; })},
            {"auth.grant", with([](json& a) { a["grant"] = 1; })},
            {"auth.token_url", with([](json& a) { a.erase("token_url"); })},
            {"auth.token_url", with([](json& a) { a["token_url"] = "ftp://auth.example.com"; })},
            {"auth.token_url", with([](json& a) { a["token_url"] = "https://"; })},
            {"auth.token_url",
             with([](json& a) { a["token_url"] = "https://id:secret@auth.example.com/token"; })},
            {"auth.client_id", with([](json& a) { a.erase("client_id"); })},
            {"auth.client_id", with([](json& a) { a["client_id"] = ""; })},
            {"auth.client_id", with([](json& a) { a["client_id"] = 12; })},
            {"auth.device_authorization_url",
             with([](json& a) { a["device_authorization_url"] = "not a url"; })},
            {"auth.device_authorization_url", with([](json& a) {
                 a["grant"] = "client_credentials";
                 a["device_authorization_url"] = "https://auth.example.com/device";
             })},
            {"auth.scopes", with([](json& a) { a["scopes"] = "repo"; })},
            {"auth.scopes[1]", with([](json& a) {
                 a["scopes"] = {"repo", 1};
             })},
            {"auth.scopes[0]", with([](json& a) { a["scopes"] = {"read write"}; })},
            {"auth.scopes[0]", with([](json& a) { a["scopes"] = {""}; })},
            {"auth.refresh_before_secs", with([](json& a) { a["refresh_before_secs"] = -1; })},
            {"auth.refresh_before_secs", with([](json& a) { a["refresh_before_secs"] = 86401; })},
            {"auth.refresh_before_secs", with([](json& a) { a["refresh_before_secs"] = "300"; })},
            {"auth.refresh_before_secs", with([](json& a) { a["refresh_before_secs"] = 1.5; })},
        },
        "service \"svc\"");

    json edge = minimal_service();
    oauth(edge);
    edge["auth"]["refresh_before_secs"] = 0;
    edge["auth"]["scopes"] = json::array();
    CHECK(parse_one(edge).ok());
    edge["auth"]["refresh_before_secs"] = 86400;
    CHECK(parse_one(edge).ok());
}

TEST_CASE("rate_limit is checked", "[services]") {
    const auto limit = [](json requests, json window) {
        return [requests, window](json& s) {
            s["rate_limit"] = {{"requests", requests}, {"window_secs", window}};
        };
    };
    check_rejections(
        {
            {"rate_limit", [](json& s) { s["rate_limit"] = 600; }},
            {"rate_limit.requests", [](json& s) { s["rate_limit"] = json::object(); }},
            {"rate_limit.window_secs",
             [](json& s) {
                 s["rate_limit"] = {{"requests", 1}};
             }},
            {"rate_limit.requests", limit(0, 60)},
            {"rate_limit.requests", limit(1000001, 60)},
            {"rate_limit.requests", limit(-1, 60)},
            {"rate_limit.requests", limit("600", 60)},
            {"rate_limit.requests", limit(600.0, 60)},
            {"rate_limit.requests", limit(json(18446744073709551615ull), 60)},
            {"rate_limit.window_secs", limit(1, 0)},
            {"rate_limit.window_secs", limit(1, 86401)},
            {"rate_limit.window_secs", limit(1, nullptr)},
        },
        "service \"svc\"");
    json edge = minimal_service();
    limit(1000000, 86400)(edge);
    CHECK(parse_one(edge).ok());
    limit(1, 1)(edge);
    CHECK(parse_one(edge).ok());
}

TEST_CASE("allow rules are checked", "[services]") {
    const auto rule = [](json methods, json paths) {
        return [methods, paths](json& s) {
            s["allow"] = json::array({{{"methods", methods}, {"paths", paths}}});
        };
    };
    check_rejections(
        {
            {"allow", [](json& s) { s["allow"] = json::object(); }},
            {"allow", [](json& s) { s["allow"] = json::array(); }},
            {"allow[0]", [](json& s) { s["allow"] = {1}; }},
            {"allow[0].methods",
             [](json& s) {
                 s["allow"] = json::array({{{"paths", {"/"}}}});
             }},
            {"allow[0].paths",
             [](json& s) {
                 s["allow"] = json::array({{{"methods", {"GET"}}}});
             }},
            {"allow[0].methods", rule(json::array(), {"/"})},
            {"allow[0].methods", rule("GET", {"/"})},
            {"allow[0].methods[1]", rule({"GET", "get"}, {"/"})},
            {"allow[0].methods[0]", rule({"GE T"}, {"/"})},
            {"allow[0].methods[0]", rule({""}, {"/"})},
            {"allow[0].methods[0]", rule({5}, {"/"})},
            {"allow[0].paths", rule({"GET"}, json::array())},
            {"allow[0].paths", rule({"GET"}, "/v1/*")},
            {"allow[0].paths[0]", rule({"GET"}, {"v1/*"})},
            {"allow[0].paths[0]", rule({"GET"}, {""})},
            {"allow[0].paths[1]", rule({"GET"}, {"/ok", false})},
            {"allow[1].paths[0]",
             [](json& s) {
                 s["allow"] = json::array({{{"methods", {"GET"}}, {"paths", {"/"}}},
                                           {{"methods", {"GET"}}, {"paths", {"x"}}}});
             }},
        },
        "service \"svc\"");
    json ok = minimal_service();
    rule({"*", "M-SEARCH", "GET"}, {"/", "/v1/*"})(ok);
    CHECK(parse_one(ok).ok());
}

TEST_CASE("timeouts, ca_file and max_body are checked", "[services]") {
    check_rejections(
        {
            {"timeout_secs", [](json& s) { s["timeout_secs"] = 0; }},
            {"timeout_secs", [](json& s) { s["timeout_secs"] = 3601; }},
            {"timeout_secs", [](json& s) { s["timeout_secs"] = "60"; }},
            {"timeout_secs", [](json& s) { s["timeout_secs"] = 60.0; }},
            {"timeout_secs", [](json& s) { s["timeout_secs"] = true; }},
            {"connect_timeout_secs", [](json& s) { s["connect_timeout_secs"] = 0; }},
            {"connect_timeout_secs", [](json& s) { s["connect_timeout_secs"] = 301; }},
            {"connect_timeout_secs", [](json& s) { s["connect_timeout_secs"] = "10"; }},
            {"ca_file", [](json& s) { s["ca_file"] = ""; }},
            {"ca_file", [](json& s) { s["ca_file"] = 5; }},
            {"max_body", [](json& s) { s["max_body"] = 0; }},
            {"max_body", [](json& s) { s["max_body"] = -5; }},
            {"max_body", [](json& s) { s["max_body"] = (int64_t{1} << 30) + 1; }},
            {"max_body", [](json& s) { s["max_body"] = "10MiB"; }},
        },
        "service \"svc\"");

    json type_error = minimal_service();
    type_error["timeout_secs"] = "60";
    CHECK(contains(rejection(type_error), "must be an integer, got a string"));
    json range_error = minimal_service();
    range_error["timeout_secs"] = 0;
    CHECK(contains(rejection(range_error), "between 1 and 3600, got 0"));

    json edge = minimal_service();
    edge["timeout_secs"] = 3600;
    edge["connect_timeout_secs"] = 300;
    edge["max_body"] = int64_t{1} << 30;
    auto catalog = parse_one(edge);
    REQUIRE(catalog.ok());
    CHECK(catalog->services()[0].max_body == uint64_t{1} << 30);
    edge["timeout_secs"] = 1;
    edge["connect_timeout_secs"] = 1;
    edge["max_body"] = 1;
    CHECK(parse_one(edge).ok());
}

TEST_CASE("a later bad service fails the whole file, named by its id", "[services]") {
    json good = minimal_service();
    json bad = minimal_service();
    bad["id"] = "second";
    bad["timeout_secs"] = 0;
    auto result = parse_services(json::array({good, bad}));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().message.rfind("services.json: service \"second\": field \"timeout_secs\"",
                                       0) == 0);
}

TEST_CASE("glob_match: '*' spans segments, '?' is one character", "[services]") {
    CHECK(glob_match("/v1/*", "/v1/models"));
    CHECK(glob_match("/v1/*", "/v1/chat/completions"));
    CHECK(glob_match("/v1/*", "/v1/"));
    CHECK_FALSE(glob_match("/v1/*", "/v1"));
    CHECK_FALSE(glob_match("/v1/*", "/v2/models"));
    CHECK_FALSE(glob_match("/v1/*", "/x/v1/models"));

    CHECK(glob_match("/exact", "/exact"));
    CHECK_FALSE(glob_match("/exact", "/exact/"));
    CHECK_FALSE(glob_match("/exact", "/exac"));
    CHECK_FALSE(glob_match("/exact", ""));

    CHECK(glob_match("/models/?", "/models/a"));
    CHECK_FALSE(glob_match("/models/?", "/models/ab"));
    CHECK_FALSE(glob_match("/models/?", "/models/"));

    CHECK(glob_match("*", ""));
    CHECK(glob_match("*", "/anything/at/all"));
    CHECK(glob_match("/repos/*/issues", "/repos/o/r/issues"));
    CHECK_FALSE(glob_match("/repos/*/issues", "/repos/o/r/issues/1"));
    CHECK(glob_match("/a*b*c", "/aXXbYYc"));
    CHECK(glob_match("/a*b*c", "/abc"));
    CHECK_FALSE(glob_match("/a*b*c", "/acb"));
    CHECK(glob_match("/**", "/x/y"));
    CHECK(glob_match("/[x]", "/[x]"));  // no character classes
    CHECK_FALSE(glob_match("/[x]", "/x"));

    // Backtracking stays polynomial: this would take ages with naive recursion.
    const std::string long_a(5000, 'a');
    CHECK_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*b", long_a));
    CHECK(glob_match("*a*a*a*a*a*a*a*a*a*a*", long_a));
}

TEST_CASE("allows: absent allow lets everything through, rules narrow it", "[services]") {
    auto catalog = ServiceCatalog::parse(k_spec_example, "services.json");
    REQUIRE(catalog.ok());
    const Service& github = *catalog->find("github");
    CHECK(github.allows("DELETE", "/repos/o/r"));
    CHECK(github.allows("GET", "/"));

    const Service& openai = *catalog->find("openai");
    CHECK(openai.allows("GET", "/v1/models"));
    CHECK(openai.allows("POST", "/v1/chat/completions"));
    CHECK_FALSE(openai.allows("DELETE", "/v1/models"));
    CHECK_FALSE(openai.allows("get", "/v1/models"));  // case-sensitive
    CHECK_FALSE(openai.allows("GET", "/v2/models"));

    json service = minimal_service();
    service["allow"] = json::array({{{"methods", {"GET"}}, {"paths", {"/v1/*"}}},
                                    {{"methods", {"*"}}, {"paths", {"/health", "/status/?"}}}});
    auto two = parse_one(service);
    REQUIRE(two.ok());
    const Service& s = two->services()[0];
    CHECK(s.allows("GET", "/v1/x"));
    CHECK_FALSE(s.allows("POST", "/v1/x"));
    CHECK(s.allows("POST", "/health"));
    CHECK(s.allows("PURGE", "/status/1"));
    CHECK_FALSE(s.allows("PURGE", "/status/12"));

    const AllowRule& rule = s.allow[0];
    CHECK(rule.allows("GET", "/v1/a"));
    CHECK_FALSE(rule.allows("HEAD", "/v1/a"));
}

TEST_CASE("to_json shows every field and nothing else", "[services]") {
    auto catalog = ServiceCatalog::parse(k_spec_example, "services.json");
    REQUIRE(catalog.ok());

    const json openai = to_json(*catalog->find("openai"));
    CHECK(openai == json::parse(R"({
        "id": "openai", "name": "OpenAI", "description": "LLM API",
        "base_url": "https://api.openai.com", "auth": {"type": "bearer"},
        "rate_limit": {"requests": 600, "window_secs": 60},
        "allow": [{"methods": ["GET", "POST"], "paths": ["/v1/*"]}],
        "timeout_secs": 120, "connect_timeout_secs": 10, "ca_file": null,
        "max_body": 10485760})"));

    const json github = to_json(*catalog->find("github"));
    CHECK(github["description"] == "");
    CHECK(github["rate_limit"].is_null());
    CHECK(github["allow"].is_null());
    CHECK(github["auth"] == json::parse(R"({
        "type": "oauth2", "grant": "refresh_token",
        "token_url": "https://github.com/login/oauth/access_token",
        "device_authorization_url": "https://github.com/login/device/code",
        "client_id": "...", "scopes": ["repo"], "refresh_before_secs": 300})"));

    json header = minimal_service();
    header["auth"] = {{"type", "header"}, {"name", "X-API-Key"}, {"prefix", "Key "}};
    auto parsed = parse_one(header);
    REQUIRE(parsed.ok());
    CHECK(to_json(parsed->services()[0])["auth"] ==
          json{{"type", "header"}, {"name", "X-API-Key"}, {"prefix", "Key "}});

    // What to_json shows, minus the nulls, is a services file entry that reads back the same.
    for (const Service& service : catalog->services()) {
        json entry = to_json(service);
        for (auto it = entry.begin(); it != entry.end();) {
            it = it->is_null() ? entry.erase(it) : std::next(it);
        }
        auto again = parse_one(entry);
        REQUIRE(again.ok());
        CHECK(to_json(again->services()[0]) == to_json(service));
    }
}

TEST_CASE("load reads a file and resolves ca_file next to it", "[services]") {
    test::TempDir dir;
    test::write_file(dir / "ca.pem", "-----BEGIN CERTIFICATE-----\n");
    json service = minimal_service();
    service["ca_file"] = "ca.pem";
    test::write_file(dir / "services.json", json{{"services", json::array({service})}}.dump(2));

    auto catalog = ServiceCatalog::load(dir / "services.json");
    REQUIRE(catalog.ok());
    REQUIRE(catalog->services().size() == 1);
    CHECK(catalog->services()[0].ca_file == (dir / "ca.pem").string());

    // An absolute ca_file is kept; a missing one is refused with the field named.
    service["ca_file"] = (dir / "ca.pem").string();
    test::write_file(dir / "abs.json", json{{"services", json::array({service})}}.dump());
    auto absolute = ServiceCatalog::load(dir / "abs.json");
    REQUIRE(absolute.ok());
    CHECK(absolute->services()[0].ca_file == (dir / "ca.pem").string());

    service["ca_file"] = "missing.pem";
    test::write_file(dir / "bad.json", json{{"services", json::array({service})}}.dump());
    auto missing_ca = ServiceCatalog::load(dir / "bad.json");
    REQUIRE_FALSE(missing_ca.ok());
    CHECK(missing_ca.error().code == Code::invalid_argument);
    INFO(missing_ca.error().message);
    CHECK(missing_ca.error().message.rfind(
              (dir / "bad.json").string() + ": service \"svc\": field \"ca_file\": ", 0) == 0);
    CHECK(contains(missing_ca.error().message, "missing.pem"));

    service["ca_file"] = ".";  // a directory is not a CA file
    test::write_file(dir / "dir.json", json{{"services", json::array({service})}}.dump());
    auto dir_ca = ServiceCatalog::load(dir / "dir.json");
    REQUIRE_FALSE(dir_ca.ok());
    CHECK(contains(dir_ca.error().message, "field \"ca_file\""));
}

TEST_CASE("load reports missing, unreadable and malformed files", "[services]") {
    test::TempDir dir;
    auto missing = ServiceCatalog::load(dir / "nope.json");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Code::not_found);
    CHECK(contains(missing.error().message, (dir / "nope.json").string()));

    auto directory = ServiceCatalog::load(dir.path());
    REQUIRE_FALSE(directory.ok());
    CHECK(directory.error().code == Code::io_error);
    CHECK(contains(directory.error().message, dir.path().string()));

    if (::geteuid() != 0) {  // root reads a 0000 file anyway
        test::write_file(dir / "locked.json", R"({"services": []})", 0000);
        auto locked = ServiceCatalog::load(dir / "locked.json");
        REQUIRE_FALSE(locked.ok());
        CHECK(locked.error().code == Code::io_error);
        CHECK(contains(locked.error().message, (dir / "locked.json").string()));
    }

    test::write_file(dir / "broken.json", "{\"services\": [\n\n  }");
    auto broken = ServiceCatalog::load(dir / "broken.json");
    REQUIRE_FALSE(broken.ok());
    CHECK(broken.error().code == Code::invalid_argument);
    INFO(broken.error().message);
    CHECK(broken.error().message.rfind((dir / "broken.json").string() + ": invalid JSON: ", 0) ==
          0);
    CHECK(contains(broken.error().message, "line 3"));
}
