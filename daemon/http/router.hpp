// Router: maps (method, path pattern) to a coroutine handler. Patterns are literal segments
// and `{name}` captures ("/v1/agents/{id}/rotate"). The target is parsed with Boost.URL, so
// captures and query parameters arrive percent-decoded. Unknown paths answer 404, a known path
// with another method 405 with an Allow header. Build it at start-up, then only read it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "daemon/http/message.hpp"

namespace agentgw::http {

// Who is on the other end of a connection.
struct Peer {
    bool local = false;        // true on the Unix socket
    std::string address;       // "127.0.0.1:51234" or the socket path
    long uid = -1;             // SO_PEERCRED uid on the Unix socket, else -1
    long gid = -1;             // SO_PEERCRED primary gid, else -1
    std::vector<long> groups;  // SO_PEERGROUPS: the peer process's supplementary groups
    long pid = -1;
    bool authorized = true;  // false: each request is answered 403 and the connection closed
};

// One request as a handler sees it.
struct RequestContext {
    const Request& req;
    const Peer& peer;
    std::map<std::string, std::string> params;  // from `{name}` segments
    std::multimap<std::string, std::string> query;

    const std::string& param(const std::string& name) const { return params.at(name); }
    // The last value of query parameter `name`, if given.
    std::optional<std::string> query_value(const std::string& name) const;
};

using Handler = std::function<boost::asio::awaitable<Response>(RequestContext&)>;

// What a route lets in before the request's body is read, so that nobody can make the server
// read and hold a body it would refuse anyway.
struct Admission {
    std::optional<size_t> body_limit;  // in place of the listener's
    // Answers a request that its header alone refuses (no valid credentials, a body announced
    // over body_limit): the body is never read, and the connection closes after the answer.
    // `content_length` is the length the header announces, as the parser read it (none for a
    // chunked body).
    std::function<std::optional<Response>(const Request::header_type&,
                                          std::optional<std::uint64_t> content_length)>
        check;
    // Answers a request that `check` let in and whose body, of no announced length (chunked),
    // turned out longer than body_limit as it was read; without it the server answers 413 of
    // its own. The connection closes after the answer.
    std::function<Response(const Request::header_type&)> oversized;
};

class Router {
  public:
    void add(beast_http::verb method, std::string pattern, Handler handler,
             Admission admission = {});
    boost::asio::awaitable<Response> dispatch(const Request& req, const Peer& peer) const;
    // The admission of the route that `header` goes to; none when no route takes it (dispatch
    // then answers 400, 404 or 405).
    const Admission* admission(const Request::header_type& header) const;

  private:
    struct Endpoint {
        Handler handler;
        Admission admission;
    };
    struct Route {
        std::vector<std::string> segments;  // "{name}" marks a capture
        std::map<beast_http::verb, Endpoint> handlers;
    };
    struct Match {
        const Route* route;
        size_t captures;
        std::map<std::string, std::string> params;
    };
    // The routes whose pattern matches `segments`, literal segments before captures.
    std::vector<Match> match(const std::vector<std::string>& segments) const;
    std::vector<Route> routes_;
};

}  // namespace agentgw::http
