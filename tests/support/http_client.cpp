#include "tests/support/http_client.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
#include <tuple>
#include <unistd.h>
#include <utility>

#include <curl/curl.h>

namespace agentgw::test {

namespace {

size_t on_body(char* data, size_t size, size_t n, void* user) {
    static_cast<HttpReply*>(user)->body.append(data, size * n);
    return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
    std::string line(data, size * n);
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(), ::tolower);
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        value.erase(value.find_last_not_of("\r\n") + 1);
        static_cast<HttpReply*>(user)->headers[name] = value;
    }
    return size * n;
}

}  // namespace

namespace {

// A TCP socket bound to 127.0.0.1 on a port the kernel picks, and that port.
std::pair<UniqueFd, uint16_t> bind_loopback(const char* who) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        throw std::runtime_error(std::string(who) + ": socket failed");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        throw std::runtime_error(std::string(who) + ": cannot bind a port on 127.0.0.1");
    }
    return {std::move(fd), ntohs(addr.sin_port)};
}

}  // namespace

uint16_t closed_port() {
    return bind_loopback("closed_port").second;  // the socket closes here
}

RefusingPort::RefusingPort() {
    std::tie(fd_, port_) = bind_loopback("RefusingPort");
}

UnansweredPort::UnansweredPort() {
    std::tie(listener_, port_) = bind_loopback("UnansweredPort");
    // A backlog of 0 leaves room for one connection waiting to be accepted.
    if (::listen(listener_.get(), 0) != 0) {
        throw std::runtime_error("UnansweredPort: cannot listen");
    }
    queued_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!queued_.valid() ||
        ::connect(queued_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        throw std::runtime_error("UnansweredPort: cannot fill the backlog");
    }
}

HttpReply http_request(const std::string& method, const std::string& url, const std::string& body,
                       const std::vector<std::string>& headers, const std::string& unix_socket,
                       const std::string& source_address) {
    HttpReply reply;
    CURL* c = curl_easy_init();
    curl_slist* list = nullptr;
    for (const auto& h : headers) {
        list = curl_slist_append(list, h.c_str());
    }
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply);
    if (!unix_socket.empty()) {
        curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, unix_socket.c_str());
    }
    const std::string interface = "host!" + source_address;
    if (!source_address.empty()) {
        curl_easy_setopt(c, CURLOPT_INTERFACE, interface.c_str());
    }
    if (!body.empty()) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    const CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    } else {
        reply.error = curl_easy_strerror(rc);
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    return reply;
}

}  // namespace agentgw::test
