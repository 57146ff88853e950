// on_worker: runs a long blocking call (a scan of the whole audit log) on another executor,
// a thread pool of the daemon's, and resumes the awaiting coroutine on its own executor with
// the result. The event loop serves every other request meanwhile.
#pragma once

#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace agentgw {

// `work` runs on `worker`; anything it touches must be safe to use from that thread. An
// exception it throws is rethrown in the awaiting coroutine.
// Both are taken by reference, as coroutine arguments are in this code (see ARCHITECTURE.md
// on GCC 12); pass a named callable.
template <typename F>
boost::asio::awaitable<std::invoke_result_t<F&>> on_worker(
    const boost::asio::any_io_executor& worker, F&& work) {
    std::optional<std::invoke_result_t<F&>> out;
    // Both references stay valid: this frame is suspended until the call has returned.
    auto call = [&out, &work]() -> boost::asio::awaitable<void> {
        out.emplace(work());
        co_return;
    };
    co_await boost::asio::co_spawn(worker, call, boost::asio::use_awaitable);
    co_return std::move(*out);
}

}  // namespace agentgw
