-- wrk: POST the AdmissionReview in the file named by $BENCH_BODY, over keep-alive connections.
local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path, "rb"), "BENCH_BODY must name a readable file")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
   -- One machine-readable line for bench/webhook_bench.py (wrk's own text is kept as well).
   io.write(string.format(
      "BENCH requests=%d duration_us=%d errors=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration,
      summary.errors.connect + summary.errors.read + summary.errors.write
         + summary.errors.status + summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
