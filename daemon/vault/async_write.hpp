// Awaiting a vault write from a coroutine without blocking the io_context thread: the write is
// queued to the vault's writer, and the coroutine resumes on its own executor once the batch
// holding it is durable.
#pragma once

#include <memory>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon/vault/vault.hpp"

namespace agentgw {

// `fn` is taken by reference (GCC 12 destroys temporaries bound to by-value coroutine
// parameters twice); callers co_await within the same full expression, so it outlives the call.
inline boost::asio::awaitable<Status> async_write(Vault& vault, const Vault::WriteFn& fn) {
    co_return co_await boost::asio::async_initiate<decltype(boost::asio::use_awaitable),
                                                   void(Status)>(
        [&vault, &fn](auto handler) {
            auto shared = std::make_shared<decltype(handler)>(std::move(handler));
            // Counted as outstanding work, so the io_context keeps running until the result is
            // back even when nothing else is left to do (a daemon shutting down).
            auto executor = boost::asio::prefer(boost::asio::get_associated_executor(*shared),
                                                boost::asio::execution::outstanding_work.tracked);
            vault.submit(fn, [shared, executor](Status status) {
                // Runs on the writer thread: hand the result back to the coroutine's executor.
                boost::asio::post(executor, [shared, status = std::move(status)]() mutable {
                    (*shared)(std::move(status));
                });
            });
        },
        boost::asio::use_awaitable);
}

}  // namespace agentgw
