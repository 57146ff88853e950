-- wrk script for bench/proxy_bench.sh: every request is a POST with a 4 KiB JSON body.
-- Headers given with -H (the session header) are kept; this only adds to them.
local filler = string.rep("a", 4096 - #'{"input":""}')
wrk.method = "POST"
wrk.body = '{"input":"' .. filler .. '"}'
wrk.headers["Content-Type"] = "application/json"
