-- wrk: the bench's sequential POST (the same body as bench/load.ts), and its
-- latency percentiles in microseconds as one JSON line. Non-2xx/3xx answers
-- are wrk's status errors.
wrk.method = "POST"
wrk.body = '{"model":"gpt-5.5","input":"' .. string.rep("x", 1000) .. '"}'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer agent-key"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"p50us":%.0f,"p99us":%.0f,"p999us":%.0f,"requests":%d,"errors":%d}\n',
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout))
end
