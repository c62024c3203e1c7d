// Open-loop gRPC load with Poisson arrivals, for bench_check.py's fixed-rate runs.
//
// Usage: node bench/poisson_load.js PORT RATE SECONDS BODY_FILE LOG_FILE [CONNECTIONS]
//
// h2load's --rps fires every client's request on the same timer tick, so 10 clients x 100 req/s arrive as a
// burst of 10 every 10 ms and the last of each burst waits for the nine before it: that measures the burst,
// not a server at 1000 req/s. Envoy's ext_authz Checks come from many independent downstream requests, which
// is what exponential inter-arrival times model. Arrivals are open-loop (a slow answer does not delay the
// next request) and spread over CONNECTIONS HTTP/2 connections (default 4), like Envoy's connection pool.
//
// Each request POSTs BODY_FILE (a length-prefixed gRPC message) to /envoy.service.auth.v3.Authorization/Check.
// LOG_FILE gets one line per answered request: "<latency µs>\t<grpc-status>". Stdout gets one JSON summary.
// Node's timers have 1 ms resolution: arrivals due within the same millisecond leave together.

"use strict";
const http2 = require("http2");
const fs = require("fs");

const [port, rate, seconds, bodyFile, logFile, conns = "4"] = process.argv.slice(2);
if (!logFile) {
  console.error("usage: node poisson_load.js PORT RATE SECONDS BODY_FILE LOG_FILE [CONNECTIONS]");
  process.exit(2);
}
const body = fs.readFileSync(bodyFile);
const total = Math.round(Number(rate) * Number(seconds));
const sessions = [];
for (let i = 0; i < Number(conns); i++) {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on("error", (e) => { console.error(`connection ${i}: ${e.message}`); process.exit(1); });
  sessions.push(s);
}

const lines = [];
let sent = 0, answered = 0, failed = 0, next = 0;
const started = process.hrtime.bigint();

function send() {
  const t0 = process.hrtime.bigint();
  const req = sessions[sent % sessions.length].request({
    ":method": "POST",
    ":path": "/envoy.service.auth.v3.Authorization/Check",
    "content-type": "application/grpc",
    te: "trailers",
  });
  sent++;
  let status = "";
  req.on("response", (headers) => { if (headers["grpc-status"] !== undefined) status = headers["grpc-status"]; });
  req.on("trailers", (trailers) => { status = trailers["grpc-status"]; });
  req.on("data", () => {});
  req.on("error", () => { failed++; finish(); });
  req.on("end", () => {
    const us = Number((process.hrtime.bigint() - t0) / 1000n);
    lines.push(`${us}\t${status}`);
    if (status === "0") answered++; else failed++;
    finish();
  });
  req.end(body);
}

function finish() {
  if (answered + failed < total) return;
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  fs.writeFileSync(logFile, lines.join("\n") + "\n");
  console.log(JSON.stringify({ sent, answered, failed, seconds: elapsed, rate: answered / elapsed }));
  for (const s of sessions) s.close();
}

// Exponential inter-arrival times with mean 1/rate, scheduled against the start time so timer lateness does
// not lower the rate.
function tick() {
  const now = Number(process.hrtime.bigint() - started) / 1e6;
  while (sent < total && next <= now) {
    send();
    next += (-Math.log(1 - Math.random()) * 1000) / Number(rate);
  }
  if (sent < total) setTimeout(tick, Math.max(0, next - now));
}

let ready = 0;
for (const s of sessions) {
  s.on("connect", () => { if (++ready === sessions.length) tick(); });
}
