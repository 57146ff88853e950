#include "tests/support/raw_connection.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/url/parse.hpp>
#include <catch2/catch.hpp>

namespace agentgw::test {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

template <class Fields>
std::map<std::string, std::string> header_map(const Fields& fields) {
    std::map<std::string, std::string> out;
    for (const auto& f : fields) {
        out[lower(f.name_string())] = std::string(f.value());
    }
    return out;
}

std::string field_of(const std::map<std::string, std::string>& headers, const std::string& name) {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
}

milliseconds left_until(Clock::time_point deadline) {
    return std::max(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()),
                    milliseconds(1));
}

}  // namespace

std::string RawReply::field(const std::string& name) const {
    return field_of(headers, name);
}

std::string RawResponse::field(const std::string& name) const {
    return field_of(headers, name);
}

uint16_t port_of(const std::string& base_url) {
    const auto url = boost::urls::parse_uri(base_url);
    REQUIRE(url.has_value());
    REQUIRE(url->has_port());
    return url->port_number();
}

RawConnection::RawConnection(uint16_t port, int receive_buffer)
    : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_.valid());
    if (receive_buffer > 0) {
        ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
}

void RawConnection::send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
        const ssize_t n = ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            break;
        }
        off += static_cast<size_t>(n);
    }
}

void RawConnection::finish_sending() {
    ::shutdown(fd_.get(), SHUT_WR);
}

bool RawConnection::fill(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
        return false;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return false;
    }
    char buf[65536];
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n > 0) {
        buffer_.append(buf, static_cast<size_t>(n));
    } else {
        eof_ = true;  // orderly close, or a reset
    }
    return true;
}

std::string RawConnection::read_some(size_t max, milliseconds timeout) {
    if (buffer_.empty() && !eof_) {
        fill(Clock::now() + timeout);
    }
    const size_t n = std::min(max, buffer_.size());
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
}

std::string RawConnection::read_exactly(size_t n, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string out;
    while (out.size() < n && (!eof_ || !buffer_.empty()) && Clock::now() < deadline) {
        out += read_some(n - out.size(), left_until(deadline));
    }
    return out;
}

RawReply RawConnection::read_until_close(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!eof_ && fill(deadline)) {
    }
    RawReply r;
    r.raw = std::exchange(buffer_, {});
    r.closed = eof_;
    // The head as Beast reads it; the body as it came.
    http::response_parser<http::empty_body> head;
    head.header_limit(1024 * 1024);
    head.body_limit(boost::none);  // the body is not parsed, and may be of any length
    boost::system::error_code ec;
    const size_t used = head.put(boost::asio::buffer(r.raw), ec);
    if (!ec && head.is_header_done() && head.get().version() == 11) {
        r.status = static_cast<int>(head.get().result_int());
        r.headers = header_map(head.get());
        r.body = r.raw.substr(used);
    }
    return r;
}

std::optional<RawResponse> RawConnection::next(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        // Parsed afresh from the start of what is buffered each time more arrives.
        http::response_parser<http::string_body> p;
        p.eager(true);
        p.header_limit(1024 * 1024);
        p.body_limit(boost::none);
        boost::system::error_code ec;
        size_t used = 0;
        while (!p.is_done() && used < buffer_.size()) {
            const size_t n =
                p.put(boost::asio::buffer(buffer_.data() + used, buffer_.size() - used), ec);
            used += n;
            if (ec == http::error::need_more || (!ec && n == 0)) {
                ec = {};
                break;
            }
            REQUIRE_FALSE(ec);
        }
        if (p.is_header_done()) {
            // Every answer here must say where it ends: one whose body ran to the close could
            // swallow whatever followed it.
            const auto& m = p.get();
            const unsigned status = m.result_int();
            INFO("response head: " << buffer_.substr(0, buffer_.find("\r\n\r\n")));
            REQUIRE(m.version() == 11);
            REQUIRE((status / 100 == 1 || status == 204 || status == 304 ||
                     m.has_content_length() || m.chunked()));
        }
        if (p.is_done()) {
            RawResponse r;
            r.status = static_cast<int>(p.get().result_int());
            r.headers = header_map(p.get());
            r.body = std::move(p.get().body());
            buffer_.erase(0, used);
            return r;
        }
        if (eof_ || !fill(deadline)) {
            return std::nullopt;
        }
    }
}

bool RawConnection::closed(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!eof_) {
        if (!fill(deadline)) {
            return false;
        }
    }
    return buffer_.empty();
}

RawReply raw_exchange(uint16_t port, const std::string& request, milliseconds timeout) {
    RawConnection c(port);
    c.send(request);
    return c.read_until_close(timeout);
}

}  // namespace agentgw::test
