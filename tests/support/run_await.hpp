// Runs a coroutine to completion on a private io_context, for unit tests of async code.
#pragma once

#include <exception>
#include <optional>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

namespace agentgw::test {

template <typename T>
T run_await(boost::asio::awaitable<T> task) {
    boost::asio::io_context ioc;
    std::optional<T> out;
    // The result is stored from inside a void coroutine, so T needs no default constructor.
    boost::asio::co_spawn(
        ioc, [&]() -> boost::asio::awaitable<void> { out.emplace(co_await std::move(task)); },
        [](const std::exception_ptr& e) {
            if (e) {
                std::rethrow_exception(e);
            }
        });
    ioc.run();
    return std::move(*out);
}

}  // namespace agentgw::test
