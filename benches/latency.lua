-- wrk script: prints throughput and latency percentiles (µs) as one line.
-- With WRK_DELAY_MS set, each connection waits that long between requests
-- (a paced load instead of a closed loop at full speed).
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "0")

function delay()
  return pace
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.0f p50_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
    summary.requests / seconds,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
