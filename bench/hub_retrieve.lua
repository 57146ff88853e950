-- wrk script for bench/hub_bench.sh: every request retrieves a blob by a data token picked at
-- random from a file of tokens (one per line).
--   wrk ... -s hub_retrieve.lua http://HOST:PORT/ -- TOKENS_FILE
-- The x-api-key and Authorization: Bearer headers come with -H. The requests are formatted
-- once at start, so picking one costs wrk a table lookup, not a string build.
local requests = {}

function init(args)
    local path = args[1] or error("hub_retrieve.lua: give the tokens file after --")
    local file = io.open(path, "r") or error("hub_retrieve.lua: cannot open " .. path)
    for token in file:lines() do
        if #token > 0 then
            requests[#requests + 1] = wrk.format("GET", "/secure/retrieve/" .. token)
        end
    end
    file:close()
    if #requests == 0 then
        error("hub_retrieve.lua: no tokens in " .. path)
    end
    math.randomseed(os.time())
end

function request()
    return requests[math.random(#requests)]
end
