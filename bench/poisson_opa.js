// OPA alone at a fixed rate with Poisson arrivals: the floor under authz-ledger's OPA round trip on this host.
//
// Usage: node bench/poisson_opa.js PORT RATE SECONDS INPUT_FILE DECISION_PATH [CONNECTIONS]
//
// POSTs {"input": <INPUT_FILE>} to OPA's Data API over CONNECTIONS keep-alive HTTP/1.1 connections (default 4),
// open loop like bench/poisson_load.js, with the query authz-ledger sends (provenance, strict builtin errors)
// plus metrics=true, so each answer carries OPA's own time in its HTTP handler (timer_server_handler_ns).
// Stdout: one JSON object with the round trip and OPA's handler time, p50/p90/p99 in µs, over the answers
// that were HTTP 200 with metrics; "failed" counts the others (errors, timeouts, broken answers).

"use strict";
const http = require("http");
const fs = require("fs");

const [port, rate, seconds, inputFile, path, conns = "4"] = process.argv.slice(2);
if (!path) {
  console.error("usage: node poisson_opa.js PORT RATE SECONDS INPUT_FILE DECISION_PATH [CONNECTIONS]");
  process.exit(2);
}
const body = Buffer.concat([Buffer.from('{"input":'), fs.readFileSync(inputFile), Buffer.from("}")]);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(conns) });
const url = `/v1/data/${path}?provenance=true&strict-builtin-errors=true&metrics=true`;
const total = Math.round(Number(rate) * Number(seconds));
const roundTrips = [], handler = [];
let sent = 0, done = 0, failed = 0, next = 0;
const started = process.hrtime.bigint();

function send() {
  const t0 = process.hrtime.bigint();
  sent++;
  let settled = false;
  // Exactly once per request: an answer (HTTP 200 with metrics) or a failure, whichever comes first.
  const settle = (answer) => {
    if (settled) return;
    settled = true;
    if (answer) {
      roundTrips.push(Number((process.hrtime.bigint() - t0) / 1000n));
      handler.push(answer.metrics.timer_server_handler_ns / 1000);
    } else {
      failed++;
    }
    finish();
  };
  const req = http.request(
    { agent, host: "127.0.0.1", port, method: "POST", path: url,
      headers: { "content-type": "application/json", "content-length": body.length } },
    (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("error", () => settle(null));
      res.on("close", () => settle(null)); // after "end" a no-op; before it, the answer broke off
      res.on("end", () => {
        let answer = null;
        try {
          const parsed = JSON.parse(Buffer.concat(chunks));
          if (res.statusCode === 200 && parsed.metrics) answer = parsed;
        } catch (e) {
          answer = null;
        }
        settle(answer);
      });
    });
  req.setTimeout(10000, () => req.destroy(new Error("no answer within 10 s")));
  req.on("error", () => settle(null));
  req.end(body);
}

function finish() {
  if (++done < total) return;
  const q = (xs, p) => Math.round(xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]);
  roundTrips.sort((a, b) => a - b);
  handler.sort((a, b) => a - b);
  const out = { answered: roundTrips.length, failed };
  for (const [name, xs] of [["round_trip", roundTrips], ["opa_handler", handler]]) {
    for (const p of [50, 90, 99]) out[`${name}_p${p}_us`] = q(xs, p / 100);
  }
  console.log(JSON.stringify(out));
  process.exit(0);
}

// Arrivals due within the same millisecond leave together (Node's timers have 1 ms resolution).
function tick() {
  const now = Number(process.hrtime.bigint() - started) / 1e9;
  while (sent < total && next <= now) {
    send();
    next += -Math.log(1 - Math.random()) / Number(rate);
  }
  if (sent < total) setTimeout(tick, Math.max(0, (next - now) * 1000 - 0.5));
}
tick();
