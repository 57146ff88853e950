// Redactor: the secrets it is given are replaced wherever they appear, as they are or
// URL-encoded, and nothing else is.
#include <catch2/catch.hpp>

#include "daemon/util/redactor.hpp"

using agentgw::Redactor;

TEST_CASE("a secret is replaced as it is and URL-encoded in either hex case", "[redactor]") {
    Redactor r;
    CHECK(r.empty());
    r.add("");  // nothing to look for
    CHECK(r.empty());
    r.add("k/y+1");
    CHECK_FALSE(r.empty());
    CHECK(r.apply("a k/y+1 b") == "a [redacted] b");
    CHECK(r.apply("?q=1&key=k%2Fy%2B1#f") == "?q=1&key=[redacted]#f");
    CHECK(r.apply("?key=k%2fy%2b1") == "?key=[redacted]");
    CHECK(r.found_in("<https://x/?key=k%2fy%2b1>"));
    CHECK_FALSE(r.found_in("k/y 1 k%2Fy"));
    CHECK(r.apply("k/y 1 k%2Fy") == "k/y 1 k%2Fy");
    r.clear();
    CHECK(r.empty());
    CHECK(r.apply("k/y+1") == "k/y+1");
}

TEST_CASE("the longest secret wins and a replacement is never searched again", "[redactor]") {
    Redactor r;
    r.add("ab");
    r.add("abcd");
    r.add("red");  // found in the mark "[redacted]", which must stay as written
    CHECK(r.apply("xabcdx abx") == "x[redacted]x [redacted]x");
    CHECK(r.apply("abcdab") == "[redacted][redacted]");
    CHECK(r.apply("a red") == "a [redacted]");
    r.add("ab");  // already held
    CHECK(r.apply("ab") == "[redacted]");
}
