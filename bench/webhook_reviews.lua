-- wrk: POST AdmissionReviews round robin over the files named in $BENCH_BODIES (":"-separated)
-- to the URL's path. $BENCH_CLOSE=1 sends "Connection: close": every request on a fresh TLS
-- connection (what a certificate rotation has to survive). One summary line at the end, for
-- bench/harness.py.
local bodies = {}
for path in string.gmatch(os.getenv("BENCH_BODIES") or "", "[^:]+") do
   local file = assert(io.open(path, "rb"), "cannot read " .. path)
   bodies[#bodies + 1] = file:read("*a")
   file:close()
end
assert(#bodies > 0, "BENCH_BODIES must name at least one file")

local headers = { ["Content-Type"] = "application/json" }
if os.getenv("BENCH_CLOSE") == "1" then
   headers["Connection"] = "close"
end

if #bodies == 1 then
   -- One review: wrk's static request, formatted once, and no Lua call per request.
   wrk.method = "POST"
   wrk.body = bodies[1]
   for name, value in pairs(headers) do
      wrk.headers[name] = value
   end
else
   local requests = {}
   local next_request = 0

   function init(args)
      for i, body in ipairs(bodies) do
         requests[i] = wrk.format("POST", nil, headers, body)
      end
   end

   function request()
      next_request = next_request % #requests + 1
      return requests[next_request]
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d "
         .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
