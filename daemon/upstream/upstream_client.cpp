#include "daemon/upstream/upstream_client.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/string.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/http/message.hpp"

namespace agentgw::upstream {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// Unread response body above which curl is paused. Bounds the memory of every transfer (plus
// the piece its owner is writing out) however slowly the client reads.
constexpr size_t k_high_water = 64 * 1024;

// curl's receive buffer: the largest piece one on_write hands over. Larger than curl's 16 KiB
// default, so a big body costs a quarter of the wake-ups and client writes.
constexpr long k_receive_buffer = 64 * 1024;

// Easy handles kept for reuse: a new one costs an allocation of curl's state and buffers and
// setting every option again.
constexpr size_t k_spare_handles = 64;

// Upstream connections curl keeps open when a transfer ends, over all services, counting the
// ones still busy: with more requests in flight than this, each that ends closes a connection
// and the next opens one (at 256 connections a bound of 128 made two requests in three
// connect). curl's default bound is four per easy handle in the multi handle at that moment,
// which a dip in the requests in flight shrinks, closing connections the next burst needs.
constexpr long k_idle_connections = 512;

// The largest response head taken from an upstream (all its lines, interim responses
// included); a larger one is refused, as nginx refuses a head larger than its buffer. It also
// keeps every field well within what Beast's fields can hold (a name or value under 64 KiB:
// a larger one throws).
constexpr size_t k_max_head = 48 * 1024;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() &&
           (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

}  // namespace

UpstreamRequest::~UpstreamRequest() {
    wipe(url);
    for (auto& h : headers) {
        wipe(h);
    }
}

// One file descriptor curl asked us to watch. Sockets curl opened through on_open_socket are
// `owned`: we close them when curl says so. Others (the threaded resolver's socketpair) belong
// to curl and are only released. A closed watch ignores its pending completions.
struct UpstreamClient::Watch {
    Watch(asio::io_context& ioc, curl_socket_t fd, bool owned, uint64_t generation)
        : desc(ioc), fd(fd), owned(owned), generation(generation) {}
    ~Watch() { detach(); }
    void detach() {
        closed = true;
        if (desc.is_open()) {
            boost::system::error_code ignored;
            desc.cancel(ignored);
            desc.release();  // never close here: the descriptor is curl's or on_close_socket's
        }
    }

    asio::posix::stream_descriptor desc;
    curl_socket_t fd;
    bool owned;
    uint64_t generation;
    int what = 0;  // CURL_POLL_IN / OUT / INOUT, or 0 while curl does not need the socket
    bool reading = false;
    bool writing = false;
    bool closed = false;
};

// ---------------------------------------------------------------------------------------------
// Transfer

Transfer::Transfer(UpstreamClient& client, asio::any_io_executor executor)
    : client_(client),
      signal_(executor),
      deadline_(executor),
      started_(Clock::now()),
      last_activity_(started_) {}

Transfer::~Transfer() {
    deadline_.cancel();
    if (in_multi_) {
        client_.remove(*this);
    }
    release_handle();
}

void Transfer::release_handle() {
    if (easy_ != nullptr) {
        client_.recycle(easy_, own_ca_);  // first: the handle points at the header list
        easy_ = nullptr;
    }
    // The header list may hold the credential.
    for (curl_slist* node = headers_; node != nullptr; node = node->next) {
        sodium_memzero(node->data, std::strlen(node->data));
    }
    curl_slist_free_all(headers_);
    headers_ = nullptr;
    wipe(whole_body_);  // like every piece send() hands over, it may hold a secret
}

asio::awaitable<void> Transfer::wait() {
    signal_.expires_at(Clock::time_point::max());
    co_await signal_.async_wait(asio::as_tuple(asio::use_awaitable));
}

void Transfer::wake() {
    signal_.cancel();
}

asio::awaitable<bool> Transfer::send(std::string_view data) {
    if (done_ || data.empty()) {
        co_return !done_;
    }
    outgoing_ = std::string(data);
    outgoing_pos_ = 0;
    if (send_paused_) {
        send_paused_ = false;
        update_pause();
    }
    // An upstream may answer before it has read the body (refusing it), and answer more than
    // the high-water mark: curl then waits for the owner to read the answer while the owner
    // waits here. Once the answer waits paused, the owner is told to stop sending and read it.
    while (!done_ && outgoing_pos_ < outgoing_.size() && !recv_paused_) {
        co_await wait();
    }
    const bool taken = outgoing_pos_ >= outgoing_.size();
    wipe(outgoing_);  // it may hold a secret: a token request's form, an agent's body
    outgoing_.clear();
    outgoing_pos_ = 0;
    co_return taken;
}

void Transfer::finish_body() {
    body_finished_ = true;
    if (send_paused_ && !done_) {
        send_paused_ = false;
        update_pause();
    }
}

asio::awaitable<std::optional<Failure>> Transfer::wait_head() {
    while (!head_done_ && !done_) {
        co_await wait();
    }
    if (head_done_) {
        co_return std::nullopt;
    }
    if (failure_) {
        co_return failure_;
    }
    co_return Failure{Failure::Kind::broken,
                      "the upstream closed the connection without answering"};
}

asio::awaitable<std::optional<Failure>> Transfer::read(std::string& out) {
    while (pending_.empty() && !done_) {
        co_await wait();
    }
    out.clear();
    if (!pending_.empty()) {
        std::swap(out, pending_);  // the two buffers trade places; neither reallocates
        last_activity_ = Clock::now();
        if (recv_paused_ && !done_) {
            recv_paused_ = false;
            update_pause();
        }
        co_return std::nullopt;
    }
    co_return failure_;
}

void Transfer::note_pause() {
    if (!recv_paused_ && !send_paused_) {
        paused_since_ = Clock::now();
    }
}

void Transfer::update_pause() {
    if (!recv_paused_ && !send_paused_ && paused_since_ != Clock::time_point{}) {
        const auto now = Clock::now();
        waited_ += now - paused_since_;
        paused_since_ = {};
        last_activity_ = now;
        if (deadline_parked_ && !done_) {
            deadline_parked_ = false;
            arm_deadline();
        }
    }
    if (!in_multi_) {
        return;
    }
    // curl_easy_pause sets both directions at once; it may call on_write/on_read right here.
    const int mask = (recv_paused_ ? CURLPAUSE_RECV : 0) | (send_paused_ ? CURLPAUSE_SEND : 0);
    curl_easy_pause(easy_, mask);
}

Clock::time_point Transfer::deadline() const {
    return idle_timeout_ ? last_activity_ + timeout_ : started_ + waited_ + timeout_;
}

void Transfer::arm_deadline() {
    deadline_.expires_at(deadline());
    // A handler that already fired cannot be cancelled, so it checks that the transfer lives.
    deadline_.async_wait(
        [this, life = std::weak_ptr<int>(life_)](const boost::system::error_code& ec) {
            if (ec || life.expired() || done_) {
                return;
            }
            // A paused transfer waits on the agent (to read the response, or to send more of the
            // request body), not on the upstream; the agent's own timeouts bound that wait, and
            // the deadline is armed again, later by as long, when it ends (update_pause). Body
            // bytes before the head would be the upstream's doing: those never park it.
            if (send_paused_ || (recv_paused_ && head_done_)) {
                deadline_parked_ = true;
                return;
            }
            if (Clock::now() < deadline()) {
                arm_deadline();
                return;
            }
            const auto secs = std::chrono::duration_cast<std::chrono::seconds>(timeout_).count();
            std::string why = fmt::format("the upstream did not answer within {} s", secs);
            if (head_done_) {
                why = idle_timeout_
                          ? fmt::format("the upstream sent nothing for {} s", secs)
                          : fmt::format("the upstream did not finish its answer within {} s", secs);
            }
            fail(Failure{Failure::Kind::timeout, std::move(why)});
        });
}

bool Transfer::abandon(std::string why) {
    if (done_) {
        return false;
    }
    fail(Failure{Failure::Kind::broken, std::move(why)});
    return true;
}

void Transfer::fail(Failure failure) {
    if (done_) {
        return;
    }
    failure_ = std::move(failure);
    done_ = true;
    deadline_.cancel();
    if (in_multi_) {
        client_.remove(*this);
    }
    wake();
}

void Transfer::finish(CURLcode result) {
    done_ = true;
    deadline_.cancel();
    if (bad_head_) {
        failure_ = std::move(bad_head_);  // on_header stopped it (curl says write error)
    } else if (result != CURLE_OK) {
        const char* detail = curl_easy_strerror(result);
        Failure::Kind kind = Failure::Kind::broken;
        switch (result) {
            case CURLE_OPERATION_TIMEDOUT:
                kind = Failure::Kind::timeout;
                break;
            case CURLE_COULDNT_RESOLVE_HOST:
            case CURLE_COULDNT_CONNECT:
            case CURLE_SSL_CONNECT_ERROR:
            case CURLE_PEER_FAILED_VERIFICATION:
            case CURLE_SSL_CACERT_BADFILE:
            case CURLE_SSL_CERTPROBLEM:
            case CURLE_UNSUPPORTED_PROTOCOL:
                kind = head_done_ ? Failure::Kind::broken : Failure::Kind::connect;
                break;
            default:
                break;
        }
        failure_ = Failure{kind, detail};
    } else if (!head_done_) {
        failure_ = Failure{Failure::Kind::broken, "the upstream sent no response"};
    }
    wake();
}

size_t Transfer::on_header(char* data, size_t size, size_t count, void* self) {
    auto& t = *static_cast<Transfer*>(self);
    const size_t len = size * count;
    if (t.head_done_) {
        return len;  // trailers of a chunked body: not forwarded
    }
    t.head_bytes_ += len;
    if (t.head_bytes_ > k_max_head) {
        return t.refuse_head(
            fmt::format("the upstream's response head is larger than {} KiB", k_max_head / 1024));
    }
    const std::string_view line(data, len);
    if (line.starts_with("HTTP/")) {
        t.head_.headers.clear();  // a new status line: an interim response came before
        return len;
    }
    if (line == "\r\n" || line == "\n") {
        long code = 0;
        curl_easy_getinfo(t.easy_, CURLINFO_RESPONSE_CODE, &code);
        if (code == 101) {
            // The proxy never asks for an upgrade (Upgrade is hop-by-hop, never forwarded),
            // and curl takes whatever follows a 101 for a body with no head before it.
            return t.refuse_head("the upstream switched protocols (101) unasked");
        }
        if (code >= 100 && code < 200) {
            // 100 Continue and friends: the real answer follows, within the same deadline
            // (an upstream sending 102 Processing forever does not hold the request open).
            t.head_.headers.clear();
            return len;
        }
        t.last_activity_ = Clock::now();
        t.head_.status = static_cast<unsigned>(code);
        // A stream (an event stream, or any body of unknown length: chunked or ended by the
        // close) may go on for as long as it keeps sending: from here on, the timeout is the
        // longest silence between its pieces. An answer of known length stays bound to end
        // within the timeout.
        using boost::beast::http::field;
        const auto& h = t.head_.headers;
        t.idle_timeout_ =
            boost::beast::iequals(h[field::content_type].substr(0, 17), "text/event-stream") ||
            h.find(field::content_length) == h.end() || h.find(field::transfer_encoding) != h.end();
        t.head_done_ = true;
        t.wake();
        return len;
    }
    auto& headers = t.head_.headers;
    if ((line.front() == ' ' || line.front() == '\t') && headers.begin() != headers.end()) {
        // Obsolete line folding: the line continues the last field's value.
        const auto last = std::prev(headers.end());
        const std::string name(last->name_string());
        std::string value(last->value());
        value.push_back(' ');
        value.append(trim(line));
        if (http::holds_line_break(value)) {
            return t.refuse_head("the upstream sent a header value holding CR, LF or NUL");
        }
        headers.erase(last);
        headers.insert(name, value);
        return len;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
        return len;  // not a header line; curl has already judged the response
    }
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim(line.substr(colon + 1));
    if (!http::is_token(name)) {
        return t.refuse_head("the upstream sent a malformed header name");
    }
    if (http::holds_line_break(value)) {
        return t.refuse_head("the upstream sent a header value holding CR, LF or NUL");
    }
    headers.insert(name, value);
    return len;
}

size_t Transfer::refuse_head(std::string why) {
    bad_head_ = Failure{Failure::Kind::broken, std::move(why)};
    return 0;  // not taken: curl ends the exchange, and finish() reports bad_head_
}

size_t Transfer::on_write(char* data, size_t size, size_t count, void* self) {
    auto& t = *static_cast<Transfer*>(self);
    const size_t len = size * count;
    if (t.pending_.size() >= k_high_water) {
        // Not taken: curl keeps these bytes and offers them again once unpaused. A send()
        // waiting for the upstream to take the body learns that it has answered instead.
        t.note_pause();
        t.recv_paused_ = true;
        t.wake();
        return CURL_WRITEFUNC_PAUSE;
    }
    if (t.bytes_received_ > 0 && t.pending_.size() + len > t.pending_.capacity()) {
        // A body of more than one piece: room at once for the most this buffer holds, rather
        // than growth by doubling, each step of which copies what it holds. A body that comes
        // whole in one piece stays in a buffer of its own size.
        t.pending_.reserve(k_high_water + k_receive_buffer);
    }
    t.pending_.append(data, len);
    t.bytes_received_ += len;
    t.last_activity_ = Clock::now();
    t.wake();
    return len;
}

size_t Transfer::on_read(char* data, size_t size, size_t count, void* self) {
    auto& t = *static_cast<Transfer*>(self);
    const size_t room = size * count;
    if (t.outgoing_pos_ < t.outgoing_.size()) {
        const size_t n = std::min(room, t.outgoing_.size() - t.outgoing_pos_);
        std::memcpy(data, t.outgoing_.data() + t.outgoing_pos_, n);
        t.outgoing_pos_ += n;
        t.last_activity_ = Clock::now();
        if (t.outgoing_pos_ == t.outgoing_.size()) {
            t.wake();
        }
        return n;
    }
    if (t.body_finished_) {
        return 0;
    }
    t.note_pause();
    t.send_paused_ = true;
    return CURL_READFUNC_PAUSE;
}

// ---------------------------------------------------------------------------------------------
// UpstreamClient

UpstreamClient::UpstreamClient(asio::io_context& ioc) : ioc_(ioc), timer_(ioc) {
    multi_ = curl_multi_init();
    if (multi_ == nullptr) {
        throw std::runtime_error("curl_multi_init failed");
    }
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &UpstreamClient::on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &UpstreamClient::on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, k_idle_connections);
}

UpstreamClient::~UpstreamClient() {
    timer_.cancel();
    // curl_multi_cleanup closes the pooled connections through on_close_socket, which needs
    // the watches, so they are detached only afterwards.
    for (CURL* easy : spare_handles_) {
        curl_easy_cleanup(easy);
    }
    curl_multi_cleanup(multi_);
    for (auto& [fd, w] : watches_) {
        w->detach();
    }
    watches_.clear();
}

std::unique_ptr<Transfer> UpstreamClient::start(const UpstreamRequest& r,
                                                std::optional<std::string> body) {
    std::unique_ptr<Transfer> t(new Transfer(*this, ioc_.get_executor()));
    t->easy_ = take_handle();
    if (t->easy_ == nullptr) {
        t->done_ = true;
        t->failure_ = Failure{Failure::Kind::connect, "curl_easy_init failed"};
        return t;
    }
    CURL* e = t->easy_;
    t->timeout_ = r.timeout;

    bool has_accept = false;
    bool has_content_type = false;
    for (const auto& h : r.headers) {
        const std::string_view line(h);
        has_accept = has_accept || boost::beast::iequals(line.substr(0, 7), "accept:");
        has_content_type =
            has_content_type || boost::beast::iequals(line.substr(0, 13), "content-type:");
        t->headers_ = curl_slist_append(t->headers_, h.c_str());
    }
    // curl would add "Accept: */*", for large or chunked uploads "Expect: 100-continue", and
    // for a body given whole a form Content-Type; the upstream should see the agent's
    // request, not curl's habits.
    if (!has_accept) {
        t->headers_ = curl_slist_append(t->headers_, "Accept:");
    }
    if (body && !has_content_type) {
        t->headers_ = curl_slist_append(t->headers_, "Content-Type:");
    }
    t->headers_ = curl_slist_append(t->headers_, "Expect:");

    // The handle has the options every transfer shares (configure_handle); these are the
    // ones that differ, each set every time so that nothing of an earlier transfer is left.
    curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers_);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, r.allow_http ? "http,https" : "https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout.count()));
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    if (!r.ca_file.empty()) {
        curl_easy_setopt(e, CURLOPT_CAINFO, r.ca_file.c_str());
        t->own_ca_ = true;
    }
    // Back to a plain GET (no upload, no HEAD, no method name), whatever an earlier transfer
    // on this handle set; this one's method follows.
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, nullptr);
    // A HEAD's answer ends with its head, so a body an upstream sends anyway (one that
    // honoured a method override, or a faulty one) would stay on the connection and be read as
    // the answer to the next request sent on it, another agent's maybe: the connection is
    // closed after a HEAD instead of going back to the pool.
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, r.method == "HEAD" ? 1L : 0L);
    if (r.method == "HEAD") {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (r.method != "GET" || r.has_body) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    if (body) {
        // The whole body is here: curl sends it right behind the head (in the same write when
        // it is small), with no pause to wait for it. It makes a POST unless CUSTOMREQUEST
        // names the method, as it does above for every request with a body.
        t->whole_body_ = std::move(*body);
        t->body_finished_ = true;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->whole_body_.data());
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(t->whole_body_.size()));
    } else if (r.has_body) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READDATA, t.get());
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                         r.body_size ? static_cast<curl_off_t>(*r.body_size) : curl_off_t{-1});
    } else {
        t->body_finished_ = true;
    }

    if (closed_) {
        t->done_ = true;
        t->failure_ = Failure{Failure::Kind::connect, "the daemon is stopping"};
        return t;
    }
    const CURLMcode rc = curl_multi_add_handle(multi_, e);
    if (rc != CURLM_OK) {
        t->done_ = true;
        t->failure_ = Failure{Failure::Kind::connect, curl_multi_strerror(rc)};
        return t;
    }
    t->in_multi_ = true;
    running_.insert(t.get());
    t->arm_deadline();
    return t;
}

CURL* UpstreamClient::take_handle() {
    if (!spare_handles_.empty()) {
        CURL* easy = spare_handles_.back();
        spare_handles_.pop_back();
        return easy;
    }
    CURL* easy = curl_easy_init();
    if (easy != nullptr) {
        configure_handle(easy);
    }
    return easy;
}

void UpstreamClient::configure_handle(CURL* e) {
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);  // the proxy has validated the path already
    curl_easy_setopt(e, CURLOPT_PROXY, "");       // ignore http_proxy and friends
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, k_receive_buffer);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &UpstreamClient::on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &UpstreamClient::on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::on_header);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::on_write);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, &Transfer::on_read);
}

void UpstreamClient::recycle(CURL* easy, bool reset) {
    if (spare_handles_.size() >= k_spare_handles) {
        curl_easy_cleanup(easy);
        return;
    }
    if (reset) {
        // A CA file cannot be unset back to the built-in trust store: start over.
        curl_easy_reset(easy);
        configure_handle(easy);
    } else {
        // Kept configured, which spares curl freeing and allocating its receive buffer and
        // option strings per transfer; nothing of the finished transfer stays reachable.
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, nullptr);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, nullptr);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, nullptr);
        curl_easy_setopt(easy, CURLOPT_READDATA, nullptr);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, nullptr);  // makes a POST; start() resets
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t{-1});
    }
    spare_handles_.push_back(easy);
}

void UpstreamClient::remove(Transfer& t) {
    curl_multi_remove_handle(multi_, t.easy_);
    t.in_multi_ = false;
    running_.erase(&t);
    if (running_.empty() && idle_) {
        std::exchange(idle_, {})();
    }
}

void UpstreamClient::close(std::function<void()> idle) {
    closed_ = true;
    if (running_.empty()) {
        if (idle) {
            idle();
        }
        return;
    }
    idle_ = std::move(idle);
}

void UpstreamClient::abort_all(std::string_view why) {
    closed_ = true;
    // fail() removes each from running_, so walk a copy.
    const std::vector<Transfer*> running(running_.begin(), running_.end());
    for (Transfer* t : running) {
        t->fail(Failure{Failure::Kind::broken, std::string(why)});
    }
}

std::shared_ptr<UpstreamClient::Watch> UpstreamClient::watch(curl_socket_t fd, bool owned) {
    auto w = std::make_shared<Watch>(ioc_, fd, owned, next_generation_++);
    boost::system::error_code ec;
    w->desc.assign(fd, ec);
    if (ec) {
        spdlog::error("cannot watch upstream socket {}: {}", fd, ec.message());
    }
    watches_[fd] = w;
    return w;
}

void UpstreamClient::forget(curl_socket_t fd) {
    const auto it = watches_.find(fd);
    if (it != watches_.end()) {
        it->second->detach();
        watches_.erase(it);
    }
}

void UpstreamClient::arm(const std::shared_ptr<Watch>& w) {
    if (w->closed || !w->desc.is_open()) {
        return;
    }
    if ((w->what & CURL_POLL_IN) && !w->reading) {
        w->reading = true;
        w->desc.async_wait(asio::posix::descriptor_base::wait_read,
                           [this, w](const boost::system::error_code& ec) {
                               w->reading = false;
                               if (w->closed) {
                                   return;
                               }
                               if (!ec) {
                                   act(w->fd, CURL_CSELECT_IN);
                               }
                               arm(w);
                           });
    }
    if ((w->what & CURL_POLL_OUT) && !w->writing) {
        w->writing = true;
        w->desc.async_wait(asio::posix::descriptor_base::wait_write,
                           [this, w](const boost::system::error_code& ec) {
                               w->writing = false;
                               if (w->closed) {
                                   return;
                               }
                               if (!ec) {
                                   act(w->fd, CURL_CSELECT_OUT);
                               }
                               arm(w);
                           });
    }
}

void UpstreamClient::act(curl_socket_t fd, int events) {
    int running = 0;
    curl_multi_socket_action(multi_, fd, events, &running);
    collect_done();
}

void UpstreamClient::collect_done() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }
        CURL* easy = m->easy_handle;
        const CURLcode result = m->data.result;
        Transfer* t = nullptr;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
        if (t != nullptr && t->in_multi_) {
            remove(*t);
            t->finish(result);
        }
    }
}

int UpstreamClient::on_socket(CURL*, curl_socket_t fd, int what, void* self, void* socketp) {
    auto& c = *static_cast<UpstreamClient*>(self);
    const auto generation = reinterpret_cast<uintptr_t>(socketp);
    auto it = c.watches_.find(fd);
    if (what == CURL_POLL_REMOVE) {
        // A REMOVE can come late, after the number was reused: only act on our own watch.
        if (it == c.watches_.end() || (generation != 0 && it->second->generation != generation)) {
            return 0;
        }
        if (it->second->owned) {
            it->second->what = 0;  // an idle pooled connection: stop waiting, keep it open
            boost::system::error_code ignored;
            it->second->desc.cancel(ignored);
        } else {
            c.forget(fd);
        }
        return 0;
    }
    // A watch on a descriptor curl does not own under this generation is a leftover of a
    // closed one whose number came back: replace it.
    if (it != c.watches_.end() && !it->second->owned &&
        (generation == 0 || it->second->generation != generation)) {
        c.forget(fd);
        it = c.watches_.end();
    }
    std::shared_ptr<Watch> w = it == c.watches_.end() ? c.watch(fd, false) : it->second;
    if (generation != w->generation) {
        curl_multi_assign(c.multi_, fd, reinterpret_cast<void*>(w->generation));
    }
    w->what = what;
    c.arm(w);
    return 0;
}

int UpstreamClient::on_timer(CURLM*, long timeout_ms, void* self) {
    auto& c = *static_cast<UpstreamClient*>(self);
    if (timeout_ms < 0) {
        c.timer_.cancel();
        return 0;
    }
    // Even a 0 ms timeout goes through the loop: curl may not be called from its callbacks.
    // It is posted rather than timed, which spares the kernel timer an update per request.
    if (timeout_ms == 0) {
        c.timer_.cancel();
        asio::post(c.ioc_, [&c, life = std::weak_ptr<int>(c.life_)] {
            if (!life.expired()) {
                c.act(CURL_SOCKET_TIMEOUT, 0);
            }
        });
        return 0;
    }
    c.timer_.expires_after(std::chrono::milliseconds(timeout_ms));
    c.timer_.async_wait(
        [&c, life = std::weak_ptr<int>(c.life_)](const boost::system::error_code& ec) {
            if (!ec && !life.expired()) {
                c.act(CURL_SOCKET_TIMEOUT, 0);
            }
        });
    return 0;
}

curl_socket_t UpstreamClient::on_open_socket(void* self, curlsocktype purpose,
                                             curl_sockaddr* address) {
    auto& c = *static_cast<UpstreamClient*>(self);
    if (purpose != CURLSOCKTYPE_IPCXN) {
        return CURL_SOCKET_BAD;
    }
    const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0) {
        return CURL_SOCKET_BAD;
    }
    c.forget(fd);  // a stale watch whose descriptor curl closed and the kernel handed out again
    c.watch(fd, true);
    return fd;
}

int UpstreamClient::on_close_socket(void* self, curl_socket_t fd) {
    auto& c = *static_cast<UpstreamClient*>(self);
    const auto it = c.watches_.find(fd);
    if (it != c.watches_.end() && it->second->owned) {
        c.forget(fd);
    }
    return ::close(fd);
}

}  // namespace agentgw::upstream
