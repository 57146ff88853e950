// UpstreamClient: HTTP requests to upstream services through libcurl's multi-socket interface,
// driven by the daemon's Asio event loop: curl announces the sockets and the timeout it needs,
// Asio waits on them, and no call ever blocks the loop or needs a thread per request. One
// multi handle holds the connection pool, so upstream connections are reused across requests.
//
// A Transfer is one exchange. Its owner (the proxy coroutine) feeds it the request body,
// awaits the response head, then reads the body piece by piece; the transfer pauses curl when
// unread data reaches a high-water mark, so a slow client slows the upstream read instead of
// growing memory.
//
// Thread-safety: none. The client, its transfers and every call belong to the thread that runs
// the io_context (curl's rule: a multi handle and its easy handles stay on one thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/fields.hpp>
#include <curl/curl.h>

namespace agentgw::upstream {

// One request as it goes upstream. The URL and headers may hold the injected credential, so
// the destructor wipes them.
struct UpstreamRequest {
    std::string method;
    std::string url;
    std::vector<std::string> headers;  // "Name: value"
    bool has_body = false;
    std::optional<uint64_t> body_size;  // known length; absent with has_body: sent chunked
    std::chrono::milliseconds connect_timeout{10'000};
    // The whole exchange, not counting time paused waiting on the owner; for a streamed answer
    // (an event stream, or a body of unknown length), once its head is in, the longest pause
    // between body pieces instead.
    std::chrono::milliseconds timeout{60'000};
    std::string ca_file;      // empty: the system trust store
    bool allow_http = false;  // false: https only

    UpstreamRequest() = default;
    UpstreamRequest(const UpstreamRequest&) = delete;
    UpstreamRequest& operator=(const UpstreamRequest&) = delete;
    ~UpstreamRequest();
};

struct ResponseHead {
    unsigned status = 0;
    boost::beast::http::fields headers;  // as received, in order
};

// Why an exchange failed.
struct Failure {
    enum class Kind {
        connect,  // no connection (refused, unresolvable, TLS handshake or verification)
        timeout,  // connect timeout, no answer in time, or an event stream idle too long
        broken,   // the upstream broke the exchange (reset, truncated, protocol error)
    };
    Kind kind;
    std::string message;
};

class UpstreamClient;

class Transfer {
  public:
    Transfer(const Transfer&) = delete;
    Transfer& operator=(const Transfer&) = delete;
    // Stops the exchange if it is still running (the connection is then not reused).
    ~Transfer();

    // Hands `data` to curl as the next piece of the request body and resumes once curl has
    // taken all of it. False when it was not all taken: the exchange has ended, or the
    // upstream has answered (before reading the whole body) more than is held unread, which
    // must now be read.
    boost::asio::awaitable<bool> send(std::string_view data);
    // Marks the end of the request body.
    void finish_body();

    // Resumes when the response head is complete, or with the failure that ended the exchange.
    boost::asio::awaitable<std::optional<Failure>> wait_head();

    // Ends the exchange from the owner's side (the agent went away), with a failure of kind
    // `broken` saying `why`: the upstream connection is closed, and a waiting call resumes.
    // Returns false, changing nothing, when the exchange had ended already.
    bool abandon(std::string why);

    const ResponseHead& head() const { return head_; }
    ResponseHead& head() { return head_; }  // the owner may take the headers once it has it

    // The next piece of the response body into `out` (replacing its content). An empty `out`
    // with no failure means the body is complete.
    boost::asio::awaitable<std::optional<Failure>> read(std::string& out);

    // Whether read() would resume at once: body data is waiting or the exchange has ended.
    bool ready() const { return !pending_.empty() || done_; }
    // Whether the exchange ended well and everything it delivered has been read.
    bool complete() const { return done_ && !failure_ && pending_.empty(); }

    // Whether the response may go on for as long as it keeps sending (an event stream, or a
    // body of unknown length): its timeout bounds the silences, not the whole. Known once the
    // head is in.
    bool open_ended() const { return idle_timeout_; }

    // Bytes of response body delivered so far.
    uint64_t bytes_received() const { return bytes_received_; }

  private:
    friend class UpstreamClient;
    Transfer(UpstreamClient& client, boost::asio::any_io_executor executor);

    static size_t on_header(char* data, size_t size, size_t count, void* self);
    size_t refuse_head(std::string why);  // ends the exchange from on_header
    static size_t on_write(char* data, size_t size, size_t count, void* self);
    static size_t on_read(char* data, size_t size, size_t count, void* self);

    boost::asio::awaitable<void> wait();
    void wake();
    void finish(CURLcode result);
    void fail(Failure failure);  // ends the exchange from our side (timeout)
    void note_pause();           // before a direction pauses: the wait on the agent may begin
    void update_pause();         // after a direction resumed: curl is told, the wait may end
    void arm_deadline();
    std::chrono::steady_clock::time_point deadline() const;
    void release_handle();

    UpstreamClient& client_;
    CURL* easy_ = nullptr;
    bool own_ca_ = false;  // easy_ was given a CA file: reset it before another transfer
    curl_slist* headers_ = nullptr;
    bool in_multi_ = false;
    std::chrono::milliseconds timeout_{};

    boost::asio::steady_timer signal_;  // a waiting coroutine parks on it; wake() cancels it
    // The timeout: the whole exchange must end within timeout_ of its start, not counting the
    // time spent paused waiting on the agent; once the head of a stream is in (an event
    // stream, a body of unknown length), it becomes an idle timeout between pieces instead.
    boost::asio::steady_timer deadline_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::duration waited_{};          // paused, waiting on the agent
    std::chrono::steady_clock::time_point paused_since_{};  // when the current wait began
    std::chrono::steady_clock::time_point last_activity_;
    bool idle_timeout_ = false;
    bool deadline_parked_ = false;  // it came while paused: armed again once the wait ends

    bool head_done_ = false;
    bool done_ = false;
    std::optional<Failure> failure_;
    ResponseHead head_;
    size_t head_bytes_ = 0;            // of the response head so far, interim ones included
    std::optional<Failure> bad_head_;  // why on_header stopped the exchange

    std::string pending_;  // response body curl delivered that the owner has not read yet
    bool recv_paused_ = false;
    uint64_t bytes_received_ = 0;

    std::string whole_body_;  // the body given to start() whole, which curl sends from
    std::string outgoing_;    // request body handed over by send() that curl has not taken yet
    size_t outgoing_pos_ = 0;
    bool body_finished_ = false;
    bool send_paused_ = false;

    std::shared_ptr<int> life_ = std::make_shared<int>(0);  // expires with the transfer
};

class UpstreamClient {
  public:
    explicit UpstreamClient(boost::asio::io_context& ioc);
    UpstreamClient(const UpstreamClient&) = delete;
    UpstreamClient& operator=(const UpstreamClient&) = delete;
    // Every Transfer must be gone first.
    ~UpstreamClient();

    // Starts the exchange; its failures arrive through the Transfer. `body`, when given, is
    // the whole request body (request.has_body must be set): curl sends it with the request
    // head, and Transfer::send is not used. Without it, a body goes through Transfer::send.
    std::unique_ptr<Transfer> start(const UpstreamRequest& request,
                                    std::optional<std::string> body = std::nullopt);

    // Exchanges currently running.
    size_t active() const { return running_.size(); }

    // Refuses exchanges started from now on (they fail at once, as not connected); the
    // running ones go on. `idle` runs once none is left (at once when none runs).
    void close(std::function<void()> idle);
    // Ends every running exchange with a failure saying `why`, and closes the client: the
    // daemon is stopping and will not wait for upstreams.
    void abort_all(std::string_view why);

  private:
    friend class Transfer;
    struct Watch;

    static int on_socket(CURL* easy, curl_socket_t fd, int what, void* self, void* socketp);
    static int on_timer(CURLM* multi, long timeout_ms, void* self);
    static curl_socket_t on_open_socket(void* self, curlsocktype purpose, curl_sockaddr* address);
    static int on_close_socket(void* self, curl_socket_t fd);

    std::shared_ptr<Watch> watch(curl_socket_t fd, bool owned);
    void forget(curl_socket_t fd);
    void arm(const std::shared_ptr<Watch>& w);
    void act(curl_socket_t fd, int events);
    void collect_done();
    void remove(Transfer& t);
    CURL* take_handle();
    void configure_handle(CURL* easy);
    void recycle(CURL* easy, bool reset);

    boost::asio::io_context& ioc_;
    CURLM* multi_ = nullptr;
    boost::asio::steady_timer timer_;
    std::unordered_map<curl_socket_t, std::shared_ptr<Watch>> watches_;
    std::vector<CURL*> spare_handles_;  // easy handles with only the shared options set
    uint64_t next_generation_ = 1;
    std::unordered_set<Transfer*> running_;                 // in the multi handle
    bool closed_ = false;                                   // close() or abort_all() was called
    std::function<void()> idle_;                            // close()'s callback, until it has run
    std::shared_ptr<int> life_ = std::make_shared<int>(0);  // expires with the client
};

}  // namespace agentgw::upstream
