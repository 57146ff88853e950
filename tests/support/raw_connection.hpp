// One TCP connection to a server on 127.0.0.1, for requests that a well-behaved client library
// will not send (byte for byte, pipelined, cut short) and for answers seen as they were sent.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/unique_fd.hpp"

namespace agentgw::test {

// Everything a connection received until it closed, and the first response in it.
struct RawReply {
    int status = 0;                              // 0 when no HTTP/1.1 response head came
    std::map<std::string, std::string> headers;  // names lower-cased; the last of a name wins
    std::string body;                            // what followed the head (not de-chunked)
    std::string raw;                             // everything received
    bool closed = false;                         // the server closed the connection

    // The value of header `name` (lower case), or "" when absent.
    std::string field(const std::string& name) const;
};

// One complete response, framed by its Content-Length or chunked encoding.
struct RawResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // names lower-cased; the last of a name wins
    std::string body;                            // de-chunked

    std::string field(const std::string& name) const;
};

// The port of a base URL such as "http://127.0.0.1:PORT".
uint16_t port_of(const std::string& base_url);

class RawConnection {
  public:
    // `receive_buffer`, when positive, is the socket's SO_RCVBUF: a small one makes a slow
    // reader of this end.
    explicit RawConnection(uint16_t port, int receive_buffer = 0);
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;

    // Sends `bytes`, in one write unless the kernel takes less; stops early when the server
    // has closed (what it answered is still readable).
    void send(const std::string& bytes);
    // Tells the server no more bytes are coming (shuts down the sending side only).
    void finish_sending();

    // Up to `max` bytes, waiting at most `timeout` for the first; "" at the end or on timeout.
    std::string read_some(size_t max, std::chrono::milliseconds timeout);
    // Exactly `n` bytes, unless the end or `timeout` comes first.
    std::string read_exactly(size_t n, std::chrono::milliseconds timeout);
    // Everything until the server closes the connection or `timeout` passes.
    RawReply read_until_close(std::chrono::milliseconds timeout = std::chrono::seconds(5));

    // The next complete response, or nullopt when the connection ended or `timeout` passed
    // first. Responses are parsed by Beast's parser, as answers to requests other than HEAD;
    // one that is not HTTP/1.1, or does not say where its body ends, fails the test.
    std::optional<RawResponse> next(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // Whether the server closed the connection within `timeout` without sending anything more.
    bool closed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // What was received and not yet taken as a response.
    const std::string& unparsed() const { return buffer_; }

  private:
    // Reads what arrives before `deadline` into buffer_; false on timeout.
    bool fill(std::chrono::steady_clock::time_point deadline);

    UniqueFd fd_;
    std::string buffer_;  // received, not yet handed out
    bool eof_ = false;
};

// Sends `request` in one write on a new connection and reads until the server closes it.
RawReply raw_exchange(uint16_t port, const std::string& request,
                      std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace agentgw::test
