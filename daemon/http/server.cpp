#include "daemon/http/server.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/fs.hpp"

namespace agentgw::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using local = asio::local::stream_protocol;

namespace {

constexpr auto k_tuple = asio::as_tuple(asio::use_awaitable);

// SO_PEERCRED as an Asio socket option, so a local socket's peer can be asked directly.
class PeerCredentials {
  public:
    template <typename Protocol>
    int level(const Protocol&) const {
        return SOL_SOCKET;
    }
    template <typename Protocol>
    int name(const Protocol&) const {
        return SO_PEERCRED;
    }
    template <typename Protocol>
    ucred* data(const Protocol&) {
        return &cred_;
    }
    template <typename Protocol>
    const ucred* data(const Protocol&) const {
        return &cred_;
    }
    template <typename Protocol>
    size_t size(const Protocol&) const {
        return sizeof cred_;
    }
    template <typename Protocol>
    void resize(const Protocol&, size_t) {}
    const ucred& get() const { return cred_; }

  private:
    ucred cred_{};
};

// A protocol-level failure answered in the SPEC's error shape before closing.
Response protocol_error(const beast::error_code& ec) {
    if (ec == beast_http::error::body_limit) {
        return error_response(HttpStatus::payload_too_large, "payload_too_large",
                              "request body is too large");
    }
    if (ec == beast_http::error::header_limit) {
        return error_response(HttpStatus::request_header_fields_too_large, "bad_request",
                              "request headers are too large");
    }
    return error_response(HttpStatus::bad_request, "bad_request",
                          fmt::format("malformed HTTP request: {}", ec.message()));
}

// Completion of a detached coroutine: an exception escaping a session is a bug, so it is
// logged instead of vanishing (the connection is closed as the coroutine unwinds).
void log_failure(const std::exception_ptr& e) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        spdlog::error("connection handler failed: {}", ex.what());
    }
}

// What a client may send beyond one request's header while that request is served.
constexpr size_t k_pipeline_slack = 64 * 1024;

// The read buffer's room from the start. Beast reads as much as the buffer has room for (512
// bytes at least), and a buffer grown only as needed stays small: a 4 KiB body came in eight
// reads of 512 bytes. With this much room a header and a small body take one.
constexpr size_t k_read_room = 16 * 1024;

// Lingering close, as nginx's lingering_close: once the last answer is sent and our side shut,
// what the client still sends (the rest of a refused upload) is read and dropped until it
// closes, for at most this long and this much. Closing with unread data makes the kernel reset
// the connection, and the reset can destroy the end of the answer before the client has read
// it: a 413 or a 401 refusing a large upload would never be seen.
constexpr std::chrono::seconds k_linger_time{5};
constexpr size_t k_linger_bytes = 64 * 1024 * 1024;

// Refusals that need only the header: RFC 9112 §6.3 (a Transfer-Encoding Beast does not
// decode would be read as an empty body, letting the rest pass as a second request) and
// header values carrying CR, LF or NUL.
std::optional<Response> check_header(const Request::header_type& h) {
    if (h.count(beast_http::field::transfer_encoding) != 0) {
        const auto te = h[beast_http::field::transfer_encoding];
        if (!beast::iequals(te, "chunked")) {
            return error_response(HttpStatus::bad_request, "bad_request",
                                  "unsupported Transfer-Encoding");
        }
    }
    for (const auto& field : h) {
        if (holds_line_break(field.value())) {
            return error_response(HttpStatus::bad_request, "bad_request",
                                  "a header value holds CR, LF or NUL");
        }
    }
    return std::nullopt;
}

// How long the listener waits before accepting again after running out of descriptors.
constexpr std::chrono::milliseconds k_accept_pause{100};

// accept() failures that say the process or system is out of something, not that one
// connection went wrong: they repeat until something is released.
bool out_of_resources(const beast::error_code& ec) {
    using boost::system::errc::errc_t;
    return ec == errc_t::too_many_files_open || ec == errc_t::too_many_files_open_in_system ||
           ec == errc_t::no_buffer_space || ec == errc_t::not_enough_memory;
}

bool is_disconnect(const beast::error_code& ec) {
    return ec == beast_http::error::end_of_stream || ec == beast::error::timeout ||
           ec == asio::error::operation_aborted || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

}  // namespace

bool expects_continue(const Request::header_type& h) {
    // The expectation of an HTTP/1.0 request is ignored (RFC 9110 §10.1.1): such a client
    // knows no 1xx answer and could take one for the final answer.
    return h.version() >= 11 && beast::iequals(h[beast_http::field::expect], "100-continue");
}

Server::~Server() {
    if (!socket_path_.empty()) {
        ::unlink(socket_path_.c_str());
    }
}

template <typename Stream>
asio::awaitable<void> Server::session(Stream stream, Peer peer, const Router& router, Limits limits,
                                      const Takeover* takeover) {
    Connection self;
    self.close = [&stream] {
        beast::error_code ignored;
        stream.socket().shutdown(asio::socket_base::shutdown_both, ignored);
        stream.cancel();
    };
    connections_.insert(&self);
    struct Forget {
        Server* server;
        Connection* c;
        ~Forget() { server->forget(c); }
    } forget_on_exit{this, &self};

    // Bounded pipelining: requests are served one at a time, and what a client sends ahead
    // waits in this buffer, which cannot grow past the limit (the read fails instead).
    beast::flat_buffer buffer(limits.header_limit + k_pipeline_slack);
    buffer.reserve(std::min(k_read_room, buffer.max_size()));
    // Set when the loop ends because we close after an answer, while the client may still
    // be sending; not when it closed, went quiet or broke the connection itself.
    bool linger = false;
    while (!stopping_) {
        beast_http::request_parser<beast_http::empty_body> head;
        head.header_limit(static_cast<std::uint32_t>(limits.header_limit));
        head.body_limit(boost::none);  // the right limit is known once the route is
        stream.expires_after(limits.read_timeout);

        self.idle = true;
        auto [ec, _] = co_await beast_http::async_read_header(stream, buffer, head, k_tuple);
        self.idle = false;
        if (ec && (is_disconnect(ec) || ec == beast::error::timeout) && !head.got_some()) {
            break;
        }
        if (ec && (ec == beast::error::timeout || ec == asio::error::operation_aborted)) {
            break;
        }
        std::optional<Response> early;
        if (ec) {
            early = protocol_error(ec);
        } else if (auto refusal = check_header(head.get())) {
            early = std::move(refusal);
        } else if (!peer.authorized) {
            early = error_response(HttpStatus::forbidden, "forbidden",
                                   fmt::format("uid {} may not use this socket", peer.uid));
        }

        if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
            if (!early && takeover != nullptr &&
                head.get().target().starts_with(takeover->prefix)) {
                Exchange exchange{stream, buffer, head, peer, limits};
                const bool again = co_await takeover->handler(exchange);
                if (!again || stopping_) {
                    linger = !again;
                    break;
                }
                continue;
            }
        }

        // Known even when the request could not be read whole (its head parsed).
        const bool head_request = head.get().method() == beast_http::verb::head;
        std::optional<beast_http::request_parser<beast_http::string_body>> full;
        bool route_refused = false;  // by its admission check: an answer of the route's own
        const Admission* admission = nullptr;
        if (!early) {
            full.emplace(std::move(head));
            size_t body_limit = limits.body_limit;
            const auto length = full->content_length();
            admission = router.admission(full->get());
            if (admission != nullptr) {
                body_limit = admission->body_limit.value_or(body_limit);
                if (admission->check) {
                    early = admission->check(full->get(),
                                             length ? std::optional(*length) : std::nullopt);
                    route_refused = early.has_value();
                }
            }
            full->body_limit(body_limit);
            if (!early && length && *length > body_limit) {
                early = protocol_error(beast_http::error::body_limit);
            }
        }
        if (!early && !full->is_done()) {
            // The body gets a read timeout of its own: the one running covered the wait for
            // the header, which on a kept-alive connection may have used most of it.
            stream.expires_after(limits.read_timeout);
            if (expects_continue(full->get())) {
                beast_http::response<beast_http::empty_body> go_on{HttpStatus::continue_, 11};
                std::tie(ec, std::ignore) =
                    co_await beast_http::async_write(stream, go_on, k_tuple);
            }
            if (!ec) {
                std::tie(ec, std::ignore) =
                    co_await beast_http::async_read(stream, buffer, *full, k_tuple);
            }
            if (ec && (ec == beast::error::timeout || ec == asio::error::operation_aborted ||
                       is_disconnect(ec))) {
                break;
            }
            if (ec == beast_http::error::body_limit && admission != nullptr &&
                admission->oversized) {
                early = admission->oversized(full->get());
                route_refused = true;
            } else if (ec) {
                early = protocol_error(ec);
            }
        }
        // (Not a conditional expression: GCC 12 miscompiles co_await inside ?:.)
        Response res;
        if (early) {
            res = std::move(*early);
        } else {
            res = co_await router.dispatch(full->get(), peer);
        }
        if (observer_ && !peer.local && (!early || route_refused)) {
            observer_(full->get(), res.result_int());
        }
        // A route's refusal at the header keeps the connection when no body is left unread.
        const bool keep_alive = (!early || (route_refused && full->is_done())) &&
                                full->keep_alive() && !stopping_;  // all Connection lines
        res.version(11);
        res.keep_alive(keep_alive);
        res.set(beast_http::field::server, "agentgwd");
        res.prepare_payload();
        if (head_request) {
            res.body().clear();  // the headers say what a GET would get, but no content follows
        }
        stream.expires_after(limits.read_timeout);
        auto [wec, written] = co_await beast_http::async_write(stream, res, k_tuple);
        if (wec || !keep_alive) {
            linger = !wec;
            break;
        }
    }
    beast::error_code ignored;
    stream.socket().shutdown(asio::socket_base::shutdown_send, ignored);
    if (linger && !stopping_) {
        self.idle = true;  // nothing left to answer: stop() closes it at once
        stream.expires_after(k_linger_time);
        for (size_t dropped = 0; dropped < k_linger_bytes;) {
            buffer.clear();
            auto [ec, n] = co_await stream.async_read_some(buffer.prepare(k_read_room), k_tuple);
            if (ec) {
                break;  // the client closed (or reset), or the time is up
            }
            dropped += n;
        }
    }
}

template <typename Acceptor, typename Accepted>
asio::awaitable<void> Server::accept_loop(Acceptor& acceptor, const Router& router, Limits limits,
                                          Accepted on_accept) {
    uint64_t refused = 0;  // accepts failed for want of descriptors or memory, in a row
    while (!stopping_) {
        auto [ec, socket] = co_await acceptor.async_accept(k_tuple);
        if (ec == asio::error::operation_aborted || stopping_) {
            break;
        }
        if (ec && out_of_resources(ec)) {
            // The connection stays in the listen queue and the socket stays readable: trying
            // again at once would spin and flood the log. Wait for descriptors to free up.
            if (refused++ == 0) {
                spdlog::warn("accept failed: {}; retrying every {} ms until it succeeds",
                             ec.message(), k_accept_pause.count());
            }
            asio::steady_timer pause(ioc_, k_accept_pause);
            accept_pauses_.insert(&pause);
            co_await pause.async_wait(k_tuple);
            accept_pauses_.erase(&pause);
            continue;
        }
        if (refused != 0) {
            spdlog::info("accepting connections again after {} failed attempt(s)", refused);
            refused = 0;
        }
        if (ec) {
            spdlog::warn("accept failed: {}", ec.message());  // this connection only
            continue;
        }
        on_accept(std::move(socket), router, limits);
    }
}

void Server::forget(Connection* c) {
    connections_.erase(c);
    if (stopping_ && connections_.empty()) {
        drain_timer_.cancel();
        if (auto drained = std::exchange(drained_, {})) {
            drained();
        }
    }
}

Result<tcp::endpoint> Server::listen_tcp(const tcp::endpoint& at, const Router& router,
                                         Limits limits, std::optional<Takeover> takeover) {
    auto acceptor = std::make_unique<tcp::acceptor>(ioc_);
    beast::error_code ec;
    acceptor->open(at.protocol(), ec);
    if (!ec) {
        acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    }
    if (!ec) {
        acceptor->bind(at, ec);
    }
    if (!ec) {
        acceptor->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        return make_error(ec == asio::error::address_in_use ? Code::unavailable : Code::io_error,
                          fmt::format("cannot listen on {}:{}: {}", at.address().to_string(),
                                      at.port(), ec.message()));
    }
    return serve_tcp(std::move(acceptor), router, limits, std::move(takeover));
}

Result<tcp::endpoint> Server::adopt_tcp(int fd, const Router& router, Limits limits,
                                        std::optional<Takeover> takeover) {
    sockaddr_storage address{};
    socklen_t len = sizeof(address);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &len) != 0) {
        const int error = errno;
        ::close(fd);
        return make_error(Code::io_error,
                          fmt::format("passed agent API socket: {}", std::strerror(error)));
    }
    auto acceptor = std::make_unique<tcp::acceptor>(ioc_);
    beast::error_code ec;
    acceptor->assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
        ::close(fd);
        return make_error(Code::io_error, fmt::format("passed agent API socket: {}", ec.message()));
    }
    return serve_tcp(std::move(acceptor), router, limits, std::move(takeover));
}

Result<tcp::endpoint> Server::serve_tcp(std::unique_ptr<tcp::acceptor> acceptor,
                                        const Router& router, Limits limits,
                                        std::optional<Takeover> takeover) {
    beast::error_code ec;
    const tcp::endpoint bound = acceptor->local_endpoint(ec);
    if (ec) {
        return make_error(Code::io_error, fmt::format("agent API socket: {}", ec.message()));
    }
    tcp_acceptor_ = std::move(acceptor);
    takeover_ = std::move(takeover);
    auto on_accept = [this](tcp::socket socket, const Router& r, Limits l) {
        Peer peer;
        beast::error_code ignored;
        const auto remote = socket.remote_endpoint(ignored);
        peer.address = fmt::format("{}:{}", remote.address().to_string(), remote.port());
        socket.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(ioc_,
                       session(beast::tcp_stream(std::move(socket)), std::move(peer), r, l,
                               takeover_ ? &*takeover_ : nullptr),
                       log_failure);
    };
    asio::co_spawn(ioc_, accept_loop(*tcp_acceptor_, router, limits, on_accept), log_failure);
    return bound;
}

Status Server::listen_unix(const fs::path& path, const Router& router, Limits limits,
                           PeerCheck check) {
    if (path.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
        return make_error(Code::invalid_argument,
                          fmt::format("socket path {} is too long", path.string()));
    }
    TRY(ensure_private_dir(path.parent_path(), 0750));

    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return make_error(Code::conflict,
                              fmt::format("{} exists and is not a socket", path.string()));
        }
        // Only a refused connection proves nobody listens; a full backlog (EAGAIN on this
        // non-blocking connect) or any other error leaves the socket alone.
        local::socket probe(ioc_);
        beast::error_code ec;
        probe.open(local(), ec);
        if (!ec) {
            probe.non_blocking(true, ec);
        }
        if (!ec) {
            probe.connect(local::endpoint(path.string()), ec);
        }
        if (ec != asio::error::connection_refused) {
            return make_error(Code::unavailable,
                              ec ? fmt::format("cannot tell whether {} is in use: {}",
                                               path.string(), ec.message())
                                 : fmt::format("another daemon is listening on {}", path.string()));
        }
        spdlog::info("replacing stale control socket {}", path.string());
        ::unlink(path.c_str());
    }

    auto acceptor = std::make_unique<local::acceptor>(ioc_);
    beast::error_code ec;
    acceptor->open(local(), ec);
    if (!ec) {
        // The socket is created with the umask's mode; make it 0660 from the first moment
        // instead of chmod'ing a window open afterwards.
        const mode_t old = ::umask(0117);
        acceptor->bind(local::endpoint(path.string()), ec);
        ::umask(old);
    }
    if (!ec) {
        acceptor->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        return make_error(Code::io_error,
                          fmt::format("cannot listen on {}: {}", path.string(), ec.message()));
    }
    socket_path_ = path;  // ours: removed again on stop()
    return serve_unix(std::move(acceptor), path, router, limits, std::move(check));
}

Result<fs::path> Server::adopt_unix(int fd, const Router& router, Limits limits, PeerCheck check) {
    auto acceptor = std::make_unique<local::acceptor>(ioc_);
    beast::error_code ec;
    acceptor->assign(local(), fd, ec);
    fs::path path;
    if (!ec) {
        path = acceptor->local_endpoint(ec).path();
    } else {
        ::close(fd);
    }
    if (ec) {
        return make_error(Code::io_error, fmt::format("passed control socket: {}", ec.message()));
    }
    // The socket file belongs to whoever made it (systemd), so it stays after stop().
    TRY(serve_unix(std::move(acceptor), path, router, limits, std::move(check)));
    return path;
}

Status Server::serve_unix(std::unique_ptr<local::acceptor> acceptor, const fs::path& path,
                          const Router& router, Limits limits, PeerCheck check) {
    unix_acceptor_ = std::move(acceptor);
    auto on_accept = [this, check = std::move(check), path](local::socket socket, const Router& r,
                                                            Limits l) {
        Peer peer;
        peer.local = true;
        peer.address = path.string();
        PeerCredentials cred;
        beast::error_code ec;
        socket.get_option(cred, ec);
        if (!ec) {
            peer.uid = static_cast<long>(cred.get().uid);
            peer.gid = static_cast<long>(cred.get().gid);
            // The groups the peer process holds right now (not what the group database
            // says its user could have).
            std::vector<gid_t> groups(64);
            socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
            int rc = ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERGROUPS, groups.data(),
                                  &len);
            if (rc != 0 && errno == ERANGE) {
                groups.resize(len / sizeof(gid_t));
                rc = ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERGROUPS, groups.data(),
                                  &len);
            }
            if (rc == 0) {
                groups.resize(len / sizeof(gid_t));
                peer.groups.assign(groups.begin(), groups.end());
            }
            peer.pid = static_cast<long>(cred.get().pid);
        }
        // A refused peer still gets an answer (403), so its client can tell "denied" from
        // "no daemon".
        peer.authorized = !ec && check(peer);
        if (!peer.authorized) {
            spdlog::warn("refusing control connection from uid {} pid {}", peer.uid, peer.pid);
        }
        asio::co_spawn(
            ioc_,
            session(beast::basic_stream<local>(std::move(socket)), std::move(peer), r, l, nullptr),
            log_failure);
    };
    asio::co_spawn(ioc_, accept_loop(*unix_acceptor_, router, limits, on_accept), log_failure);
    return {};
}

void Server::stop(std::chrono::milliseconds drain, std::function<void()> drained) {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    drained_ = std::move(drained);
    beast::error_code ignored;
    if (tcp_acceptor_) {
        tcp_acceptor_->close(ignored);
    }
    if (unix_acceptor_) {
        unix_acceptor_->close(ignored);
    }
    for (asio::steady_timer* pause : accept_pauses_) {
        pause->cancel();
    }
    if (!socket_path_.empty()) {
        ::unlink(socket_path_.c_str());
        socket_path_.clear();
    }
    for (Connection* c : connections_) {
        if (c->idle) {
            c->close();
        }
    }
    if (connections_.empty()) {
        if (auto done = std::exchange(drained_, {})) {
            done();
        }
        return;
    }
    drain_timer_.expires_after(drain);
    drain_timer_.async_wait([this](const beast::error_code& ec) {
        if (ec) {
            return;  // every connection finished in time
        }
        spdlog::warn("closing {} connection(s) still busy after the drain period",
                     connections_.size());
        for (Connection* c : connections_) {
            c->close();
        }
    });
}

}  // namespace agentgw::http
