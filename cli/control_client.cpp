#include "cli/control_client.hpp"

#include <cerrno>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "cli/secret.hpp"

namespace agentgw::cli {

namespace {

size_t collect(char* data, size_t size, size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

// Request bodies may carry a secret (credential set): overwrite them once they are sent.
struct WipeOnExit {
    std::string& text;
    ~WipeOnExit() { wipe(text); }
};

struct HeaderList {
    curl_slist* list = nullptr;
    ~HeaderList() { curl_slist_free_all(list); }
    void add(const char* header) { list = curl_slist_append(list, header); }
};

}  // namespace

ControlClient::ControlClient(std::filesystem::path socket_path)
    : socket_path_(std::move(socket_path)), curl_(curl_easy_init()) {}

int ControlClient::on_progress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    const auto* flag = static_cast<ControlClient*>(self)->stop_flag_;
    return flag != nullptr && *flag != 0 ? 1 : 0;  // non-zero: curl abandons the transfer
}

Result<Reply> ControlClient::request(std::string_view method, std::string_view path,
                                     const std::optional<nlohmann::json>& body) {
    if (!curl_) {
        return make_error(Code::internal, "cannot initialise libcurl");
    }
    CURL* c = curl_.get();
    const std::string url = fmt::format("http://localhost{}", path);
    const std::string method_str(method);
    std::string payload = body ? body->dump() : std::string();
    const WipeOnExit wipe_payload{payload};
    std::string response;
    HeaderList headers;
    headers.add("Accept: application/json");
    if (body) {
        headers.add("Content-Type: application/json");
    }
    char error[CURL_ERROR_SIZE] = {};

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method_str.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.list);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, k_request_timeout_ms);
    // Called at least once a second while a transfer waits: the chance to honour stop_when().
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, this);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload.c_str());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(payload.size()));
    }
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        const bool unreachable = rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
                                 rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR ||
                                 rc == CURLE_SEND_ERROR || rc == CURLE_ABORTED_BY_CALLBACK;
        // A socket we may not open is "permission denied" (exit 4), not "no daemon" (exit 5).
        const bool denied = os_errno == EACCES || os_errno == EPERM;
        // For a failed connect the system's reason ("No such file or directory") says more than
        // curl's, which speaks of the URL's host and port, not of the socket.
        const std::string why = rc == CURLE_COULDNT_CONNECT && os_errno != 0
                                    ? std::strerror(static_cast<int>(os_errno))
                                    : (*error != '\0' ? error : curl_easy_strerror(rc));
        return make_error(
            denied ? Code::permission_denied : (unreachable ? Code::unavailable : Code::io_error),
            fmt::format("cannot reach agentgwd at {}: {}", socket_path_.string(), why));
    }
    Reply reply;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    if (!response.empty()) {
        reply.body = nlohmann::json::parse(response, nullptr, false);
        if (reply.body.is_discarded()) {
            return make_error(
                Code::internal,
                fmt::format("agentgwd sent a malformed answer (HTTP {})", reply.status));
        }
    }
    return reply;
}

Error ControlClient::error_of(const Reply& reply) {
    Code code = Code::internal;
    switch (reply.status) {
        case 400:
            code = Code::invalid_argument;
            break;
        case 401:
            code = Code::unauthenticated;
            break;
        case 403:
            code = Code::permission_denied;
            break;
        case 404:
            code = Code::not_found;
            break;
        case 409:
            code = Code::conflict;
            break;
        case 413:
        case 429:
            code = Code::exhausted;
            break;
        case 502:
            code = Code::upstream;
            break;
        case 503:
            code = Code::unavailable;
            break;
        default:
            break;
    }
    std::string message = fmt::format("agentgwd answered HTTP {}", reply.status);
    if (reply.body.is_object() && reply.body.contains("message") &&
        reply.body["message"].is_string()) {
        message = reply.body["message"].get<std::string>();
    }
    return make_error(code, std::move(message));
}

std::string ControlClient::path_segment(std::string_view text) {
    if (text.empty()) {
        return {};  // curl_easy_escape would take a length of 0 as "use strlen"
    }
    // libcurl accepts a null handle here since 7.82.
    std::unique_ptr<char, decltype(&curl_free)> escaped(
        curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size())), &curl_free);
    if (!escaped) {
        throw std::bad_alloc();
    }
    return std::string(escaped.get());
}

std::string ControlClient::query(std::initializer_list<QueryParam> params) {
    std::string out;
    for (const auto& [key, value] : params) {
        if (!value.empty()) {
            out += fmt::format("{}{}={}", out.empty() ? '?' : '&', key, path_segment(value));
        }
    }
    return out;
}

}  // namespace agentgw::cli
