#include "daemon/oauth/token_endpoint.hpp"

#include <algorithm>
#include <charconv>

#include <boost/beast/core/string.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <fmt/format.h>

#include "common/utf8.hpp"
#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/util/redactor.hpp"

namespace agentgw::oauth {

namespace {

// An authorization server's answer is a small JSON object; anything larger is refused.
constexpr size_t k_max_answer = 256 * 1024;

}  // namespace

Form::~Form() {
    for (auto& [name, value] : fields) {
        wipe(value);
    }
}

EndpointReply::~EndpointReply() {
    wipe_json(body);
}

boost::asio::awaitable<Result<EndpointReply>> post_form(upstream::UpstreamClient& client,
                                                        const Service& service,
                                                        const std::string& url, const Form& form,
                                                        bool* retryable) {
    *retryable = false;
    std::string body;
    for (const auto& [name, value] : form.fields) {
        if (!body.empty()) {
            body.push_back('&');
        }
        body.append(boost::urls::encode(name, boost::urls::unreserved_chars));
        body.push_back('=');
        std::string encoded = boost::urls::encode(value, boost::urls::unreserved_chars);
        body.append(encoded);
        wipe(encoded);
    }

    upstream::UpstreamRequest req;
    req.method = "POST";
    req.url = url;
    req.headers = {"Content-Type: application/x-www-form-urlencoded", "Accept: application/json"};
    req.has_body = true;
    req.body_size = body.size();
    req.connect_timeout = std::chrono::seconds(service.connect_timeout_secs);
    req.timeout = std::chrono::seconds(service.timeout_secs);
    req.ca_file = service.ca_file;
    // The scheme as written in the services file: "HTTP://" is http too.
    req.allow_http = boost::beast::iequals(std::string_view(url).substr(0, 7), "http://");

    auto transfer = client.start(req);
    const bool sent = co_await transfer->send(body);
    wipe(body);
    transfer->finish_body();
    auto failure = co_await transfer->wait_head();
    if (failure) {
        *retryable = failure->kind == upstream::Failure::Kind::connect;
        co_return make_error(Code::upstream, fmt::format("{}: {}", url, failure->message));
    }
    (void)sent;  // an answer before the whole form was read is judged by its status below
    const unsigned status = transfer->head().status;
    std::string text;
    std::string piece;
    for (;;) {
        if (auto broken = co_await transfer->read(piece)) {
            wipe(text);
            co_return make_error(Code::upstream, fmt::format("{}: {}", url, broken->message));
        }
        if (piece.empty()) {
            break;
        }
        text.append(piece);
        wipe(piece);
        if (text.size() > k_max_answer) {
            wipe(text);
            co_return make_error(
                Code::upstream,
                fmt::format("{}: the answer is larger than {} bytes", url, k_max_answer));
        }
    }
    EndpointReply reply;
    reply.status = status;
    reply.body = nlohmann::json::parse(text, nullptr, false);
    wipe(text);
    if (!reply.body.is_object()) {
        *retryable = status >= 500 || status == 429;
        reply.body = nlohmann::json::object();
        co_return make_error(Code::upstream,
                             fmt::format("{} answered HTTP {} without a JSON object", url, status));
    }
    if ((status >= 500 || status == 429) && error_code(reply).empty()) {
        *retryable = true;
        co_return make_error(Code::upstream, fmt::format("{} answered HTTP {}", url, status));
    }
    co_return std::move(reply);
}

int64_t seconds_of(const nlohmann::json& body, const char* name, int64_t fallback, int64_t max) {
    const auto it = body.find(name);
    if (it == body.end()) {
        return fallback;
    }
    uint64_t n = 0;                  // stays 0 for anything negative or not a number
    if (it->is_number_unsigned()) {  // how nlohmann holds every non-negative integer it parsed
        n = it->get<uint64_t>();
    } else if (it->is_number_integer()) {
        n = static_cast<uint64_t>(std::max<int64_t>(it->get<int64_t>(), 0));
    } else if (it->is_number_float()) {
        // 3600.0 is an hour too (a server serialising a double); a fraction is rounded down.
        const double d = it->get<double>();
        if (d >= static_cast<double>(max)) {
            return max;
        }
        n = d >= 1 ? static_cast<uint64_t>(d) : 0;
    } else if (it->is_string()) {
        const auto& text = it->get_ref<const std::string&>();
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        if (text.empty() || end != text.data() + text.size()) {
            return fallback;  // a sign, a fraction or trailing text: not a count of seconds
        }
        if (ec == std::errc::result_out_of_range) {
            return max;
        }
    }
    return n == 0 ? fallback : static_cast<int64_t>(std::min(n, static_cast<uint64_t>(max)));
}

namespace {

// `text` with every secret value of `sent`, as sent (form-encoded) or decoded, replaced by
// "[redacted]".
std::string redacted(std::string_view text, const Form& sent) {
    Redactor secrets;
    for (const auto& [name, value] : sent.fields) {
        if (name != "grant_type" && name != "client_id" && name != "scope") {
            secrets.add(value);
        }
    }
    return secrets.apply(text);
}

}  // namespace

std::string error_code(const EndpointReply& reply) {
    const auto it = reply.body.find("error");
    return it != reply.body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string error_text(const EndpointReply& reply, const Form& sent) {
    // An error code is a short token (RFC 6749 §5.2), but a server may send anything: cut at
    // 64 bytes, as the description is at 200, since the text goes into answers, audit entries
    // and flow records.
    const std::string code = redacted(error_code(reply), sent);
    std::string text(utf8_prefix(code, 64));
    const auto it = reply.body.find("error_description");
    if (it != reply.body.end() && it->is_string()) {
        // Redacted whole, then cut: a cut first could leave part of a secret that no longer
        // matches. Cut between characters: the text may be stored in a record that dump()
        // checks.
        std::string description = redacted(it->get_ref<const std::string&>(), sent);
        text.append(": ").append(utf8_prefix(description, 200));
        wipe(description);
    }
    return text;
}

}  // namespace agentgw::oauth
