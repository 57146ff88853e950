-- wrk script for bench/hub_bench.sh: every request publishes a reusable hub blob.
--   wrk ... -s hub_publish.lua http://HOST:PORT/secure/agent/publish -- BYTES TTL
-- The x-api-key and Authorization: Bearer headers come with -H; this only adds to them.
-- The body is the same for every request (each publish still gets its own token).
function init(args)
    local bytes = tonumber(args[1]) or 256
    local ttl = tonumber(args[2]) or 3600
    -- Printable data, as an agent's own ciphertext (base64) would be: no JSON escaping.
    local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    local data = string.rep(alphabet, math.ceil(bytes / #alphabet)):sub(1, bytes)
    wrk.method = "POST"
    wrk.body = '{"name":"bench-publish","data":"' .. data .. '","ttl":' .. ttl .. '}'
    wrk.headers["Content-Type"] = "application/json"
end
