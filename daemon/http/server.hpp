// Server: the Boost.Beast HTTP/1.1 server behind both listeners, the agent API on TCP and the
// control API on the Unix socket. One session coroutine per connection, the same code for
// both transports: a fresh parser per request with header and body limits, a timeout on
// every read, keep-alive, and protocol errors answered as JSON before the connection closes.
//
// Thread-safety: all members must be called from the thread running the io_context.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "common/result.hpp"
#include "daemon/http/router.hpp"

namespace agentgw::http {

struct Limits {
    size_t header_limit = 16 * 1024;
    size_t body_limit = 1024 * 1024;
    std::chrono::seconds read_timeout{30};
};

// Decides whether a Unix-socket peer may talk to the control API at all.
using PeerCheck = std::function<bool(const Peer&)>;

// A request that takes over its connection once its header is read: the handler reads the body
// (if any) and writes the whole response itself, so both can stream (the proxy).
struct Exchange {
    boost::beast::tcp_stream& stream;
    boost::beast::flat_buffer& buffer;
    beast_http::request_parser<beast_http::empty_body>& parser;  // header read, body not yet
    const Peer& peer;
    const Limits& limits;
};
// Returns whether the connection may carry another request.
using ExchangeHandler = std::function<boost::asio::awaitable<bool>(Exchange&)>;

// Requests whose target starts with `prefix` go to `handler` instead of the router.
struct Takeover {
    std::string prefix;
    ExchangeHandler handler;
};

// Whether the request asks for "100 Continue" before it sends its body, and may get one (it
// is HTTP/1.1).
bool expects_continue(const Request::header_type& header);

// Told about every response the TCP listener's router produced (not those of a Takeover).
using ResponseObserver = std::function<void(const Request&, unsigned status)>;

class Server {
  public:
    explicit Server(boost::asio::io_context& ioc) : ioc_(ioc), drain_timer_(ioc) {}
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server();

    // Binds and starts accepting; returns the bound endpoint (port 0 picks a free port).
    // `router` must outlive the server.
    // With `takeover`, requests under its prefix are handed the connection (see Takeover).
    Result<boost::asio::ip::tcp::endpoint> listen_tcp(const boost::asio::ip::tcp::endpoint& at,
                                                      const Router& router, Limits limits,
                                                      std::optional<Takeover> takeover = {});

    // The same on a listening socket made by someone else (systemd socket activation). The
    // server owns `fd` from then on, closed or not.
    Result<boost::asio::ip::tcp::endpoint> adopt_tcp(int fd, const Router& router, Limits limits,
                                                     std::optional<Takeover> takeover = {});

    void set_observer(ResponseObserver observer) { observer_ = std::move(observer); }

    // Binds a Unix socket at `path` with mode 0660. Its directory is created 0750 when absent
    // and refused when looser. A leftover socket nobody answers on is replaced; a live one
    // means another daemon owns it, and binding fails with Code::unavailable.
    Status listen_unix(const std::filesystem::path& path, const Router& router, Limits limits,
                       PeerCheck check);

    // Serves a listening Unix socket made by someone else; returns its path. The socket file
    // is left in place on stop(), since its maker owns it.
    Result<std::filesystem::path> adopt_unix(int fd, const Router& router, Limits limits,
                                             PeerCheck check);

    // Stops accepting, closes idle connections, lets busy ones finish their current response
    // and closes whatever is left after `drain`. `drained` runs once the last connection is
    // gone (at once when there is none).
    void stop(std::chrono::milliseconds drain, std::function<void()> drained = {});

  private:
    struct Connection {
        bool idle = true;
        std::function<void()> close;
    };
    template <typename Stream>
    boost::asio::awaitable<void> session(Stream stream, Peer peer, const Router& router,
                                         Limits limits, const Takeover* takeover);
    template <typename Acceptor, typename Accepted>
    boost::asio::awaitable<void> accept_loop(Acceptor& acceptor, const Router& router,
                                             Limits limits, Accepted on_accept);
    Result<boost::asio::ip::tcp::endpoint> serve_tcp(
        std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor, const Router& router,
        Limits limits, std::optional<Takeover> takeover);
    Status serve_unix(std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor,
                      const std::filesystem::path& path, const Router& router, Limits limits,
                      PeerCheck check);
    void forget(Connection* c);

    boost::asio::io_context& ioc_;
    std::unique_ptr<boost::asio::ip::tcp::acceptor> tcp_acceptor_;
    std::unique_ptr<boost::asio::local::stream_protocol::acceptor> unix_acceptor_;
    std::filesystem::path socket_path_;
    std::optional<Takeover> takeover_;
    ResponseObserver observer_;
    std::set<Connection*> connections_;
    boost::asio::steady_timer drain_timer_;
    std::set<boost::asio::steady_timer*> accept_pauses_;  // accept loops waiting to retry
    std::function<void()> drained_;
    bool stopping_ = false;
};

}  // namespace agentgw::http
