// Router: maps (method, path) to a handler. Unknown paths answer 404, a known path with
// another method 405 with an Allow header. Build it at start-up, then only read it (reads
// are thread-safe).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/http/message.hpp"

namespace agentgw::http {

// Who is on the other end of a connection.
struct Peer {
    bool local = false;   // true on the Unix socket
    std::string address;  // "127.0.0.1:51234" or the socket path
    long uid = -1;        // SO_PEERCRED uid on the Unix socket, else -1
    long pid = -1;
    bool authorized = true;  // false: each request is answered 403 and the connection closed
};

using Handler = std::function<Response(const Request&, const Peer&)>;

class Router {
  public:
    void add(beast_http::verb method, std::string path, Handler handler);
    Response dispatch(const Request& req, const Peer& peer) const;

  private:
    // path -> method -> handler
    std::map<std::string, std::map<beast_http::verb, Handler>, std::less<>> routes_;
};

}  // namespace agentgw::http
