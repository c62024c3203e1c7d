// Runs test cases through the console's browser verifier (server/authz_ledger/console/static/verify.js) for
// tests/console/test_verify_js.py, in one process for the whole batch.
//
// stdin:  a JSON array of cases, each {"op": <export name>, "args": [...], "fault": <optional, see FAULTS>}; the
//         op "$exports" describes the module's exports instead of calling one.
// stdout: a JSON array with one outcome per case, in order: {"ok": true, "value": ...} or
//         {"ok": false, "error": {"name", "message", "step", "isVerifyError"}}.
//
// JSON carries neither bytes nor BigInts, so both directions tag them: {"$bytes": "<hex>"}, {"$bigint": "<decimal>"}.
// In arguments, {"$key": "<verifier key text>"} stands for that key parsed by parseVerifierKey.

import * as verify from "../../server/authz_ledger/console/static/verify.js";

function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

async function decodeArg(value) {
  if (Array.isArray(value)) return Promise.all(value.map(decodeArg));
  if (value === null || typeof value !== "object") return value;
  if ("$bytes" in value) return fromHex(value.$bytes);
  if ("$bigint" in value) return BigInt(value.$bigint);
  if ("$key" in value) return verify.parseVerifierKey(value.$key);
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k] = await decodeArg(v);
  return out;
}

function encodeValue(value) {
  if (value instanceof Uint8Array) return { $bytes: verify.hex(value) };
  if (typeof value === "bigint") return { $bigint: value.toString() };
  if (value === undefined) return null;
  if (Array.isArray(value)) return value.map(encodeValue);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encodeValue(v)]));
  }
  return value;
}

// "class", "Function" or "AsyncFunction" (the console awaits the async ones), or the typeof of anything else.
function kindOf(value) {
  if (typeof value !== "function") return typeof value;
  return /^class\b/.test(String(value)) ? "class" : value.constructor.name;
}

function describeExports() {
  return Object.entries(verify)
    .map(([name, value]) => ({
      name,
      kind: kindOf(value),
      isErrorClass: typeof value === "function" && value.prototype instanceof Error,
    }))
    .sort((a, b) => (a.name < b.name ? -1 : 1));
}

// Faults of the browser a case may run under ("fault"), to test what verify.js says about them. Each one
// installs itself and returns its undo.
const FAULTS = {
  // An insecure context (a page over plain HTTP): no crypto.subtle at all.
  "no-webcrypto": () => {
    const saved = Object.getOwnPropertyDescriptor(globalThis, "crypto");
    Object.defineProperty(globalThis, "crypto", { value: {}, configurable: true });
    return () => Object.defineProperty(globalThis, "crypto", saved);
  },
  // A browser whose WebCrypto predates Ed25519.
  "no-ed25519": () => {
    crypto.subtle.importKey = async () => {
      throw new DOMException("Unrecognized name.", "NotSupportedError");
    };
    return () => delete crypto.subtle.importKey;
  },
};

async function call(op, args, fault) {
  if (op === "$exports") return describeExports();
  const fn = verify[op];
  if (typeof fn !== "function") throw new Error(`verify.js exports no function ${op}`);
  const decoded = await decodeArg(args); // before the fault: parsing a $key needs WebCrypto too
  const undo = fault ? FAULTS[fault]() : () => {};
  try {
    return encodeValue(await fn(...decoded));
  } finally {
    undo();
  }
}

async function run({ op, args, fault }) {
  try {
    return { ok: true, value: await call(op, args, fault) };
  } catch (e) {
    const error = {
      name: e?.name ?? typeof e,
      message: String(e?.message ?? e),
      step: e?.step ?? null,
      isVerifyError: e instanceof verify.VerifyError,
    };
    if (!error.isVerifyError) error.stack = String(e?.stack ?? "");
    return { ok: false, error };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const outcomes = [];
for (const c of JSON.parse(input)) outcomes.push(await run(c));
process.stdout.write(JSON.stringify(outcomes));
