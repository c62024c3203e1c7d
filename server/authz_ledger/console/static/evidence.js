// The audit console's check of a dropped evidence pack (docs/evidence-pack.md), in the browser, with the verifier
// key the auditor pinned: nothing is uploaded. It makes the checks of evidence/check.py (`verify-evidence`):
//
//   * every member's CRC-32 and size (zip.js: the archive's own integrity), no member missing, extra or twice;
//   * checkpoint.txt and latest-checkpoint.txt signed by the log's key for the manifest's origin, and the
//     consistency proof from one to the other (RFC 9162 §2.1.4.2);
//   * every line of entries.jsonl rebuilt byte for byte from the entry bytes it carries (entry_line in
//     evidence/pack.py), and those bytes the leaf at its index in the signed tree (RFC 9162 §2.1.3.2, the
//     proof hashes from proof-nodes.txt, shared by the entries); indexes rising, no gap in a complete pack;
//   * each key of vkeys.txt verifying a signature line of the checkpoints: the log's, and each witness's
//     cosignature (C2SP tlog-cosignature), here with the pack's own copy of the witness's key;
//   * the manifest's counts, indexes and sizes those of the verified pack, and its SHA-256 of every member.
//
// Left to `authz-ledger verify-evidence`, as the page says: README.txt and report.html are checked against the
// manifest's digests here, not rebuilt byte for byte (that needs the Python code that made them); a filtered
// pack's entries are not matched against its filter (the query language is not here); and a witness's key is
// not pinned here (`--witness-vkey`), so a cosignature shows only that the pack is consistent with itself.
//
// tests/console/test_evidence_js.py runs checkEvidencePack on packs the Python code made, changed as
// tests/evidence/test_evidence.py changes them, and expects the same members named.

import { sha256 } from "./vendor/noble-hashes/sha2.js";
import {
  b64encode, decodeLedgerEntry, openCheckpoint, openNote, parseVerifierKey, verifyConsistency,
} from "./verify.js";
import { readArchive } from "./zip.js";

export const MEMBERS = [
  "README.txt", "checkpoint.txt", "latest-checkpoint.txt", "consistency-proof.txt", "proof-nodes.txt",
  "entries.jsonl", "vkeys.txt", "report.html", "manifest.json",
];
const FORMAT = "authz-ledger-evidence/1";
const MAX_FINDINGS = 100; // as check.py: an auditor needs the first ones, not a hundred thousand
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LENIENT = new TextDecoder("utf-8", { ignoreBOM: true }); // invalid bytes become U+FFFD, as Python's "replace"
const ENC = new TextEncoder();

// --- Small helpers --------------------------------------------------------------------------------------------

async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

function splitLines(bytes) {
  const out = [];
  let start = 0;
  for (let end = bytes.indexOf(0x0a); end >= 0; end = bytes.indexOf(0x0a, start)) {
    out.push(bytes.subarray(start, end));
    start = end + 1;
  }
  return { lines: out, rest: bytes.subarray(start) };
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Where `stored` first differs from `rebuilt`: as check.py's _first_difference. */
function firstDifference(stored, rebuilt) {
  let at = 0;
  const n = Math.min(stored.length, rebuilt.length);
  while (at < n && stored[at] === rebuilt[at]) at++;
  const shown = LENIENT.decode(stored.subarray(Math.max(0, at - 40), Math.min(stored.length, at + 40)));
  return `byte ${at}: ${JSON.stringify(shown)}`;
}

// Hashing and base64 of a whole pack (hundreds of thousands of calls): synchronous SHA-256 (vendor/noble-hashes,
// SOURCE.md says why) and the browser's native base64, where verify.js's are made for one entry at a time.
const LEAF_PREFIX = Uint8Array.of(0x00); // RFC 9162 §2.1.1: leaf and node hashes never collide
const NODE_PREFIX = Uint8Array.of(0x01);

function leafHashSync(entry) {
  return sha256.create().update(LEAF_PREFIX).update(entry).digest();
}

function nodeHashSync(left, right) {
  return sha256.create().update(NODE_PREFIX).update(left).update(right).digest();
}

/** Canonical base64 only (padded, unused bits zero): one text per byte string, as pack.py writes it. atob is
 *  lenient (white space, missing padding, unused bits), btoa is canonical: a text is canonical iff it is what
 *  btoa gives for the bytes atob read. */
function fromBase64(text, what) {
  let binary;
  try {
    binary = atob(text);
  } catch {
    throw new Error(`${what} is not base64`);
  }
  if (btoa(binary) !== text) throw new Error(`${what} is not canonical base64`);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function canonicalHash(text, what) {
  const h = fromBase64(text, what);
  if (h.length !== 32) throw new Error(`${what}: not the base64 of a 32-byte hash`);
  return h;
}

// --- entries.jsonl's line, rebuilt from the entry bytes (pack.py entry_line; Python's json with ensure_ascii off) --

const OUTCOMES = { 1: "allow", 2: "deny", 3: "error" };
const J = (v) => (typeof v === "bigint" ? v.toString() : JSON.stringify(v));
const NO_ADDRESS = { address: "", port: 0, principal: "" };

function address(a) {
  const { address: host, port, principal } = a ?? NO_ADDRESS;
  return `{"address": ${J(host)}, "port": ${J(port)}, "principal": ${J(principal)}}`;
}

// JSON as Python's orjson reads it, which decides whether the recorded text goes into the line as it is: strict
// UTF-8, no byte order mark, at most 1,024 nested containers, no number beyond a double, no unpaired surrogate.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function orjsonAccepts(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return false;
  }
  const ok = (v, depth) => {
    if (typeof v === "number") return Number.isFinite(v);
    if (typeof v === "string") return !LONE_SURROGATE.test(v);
    if (v === null || typeof v !== "object") return true;
    if (depth >= 1024) return false;
    return Object.entries(v).every(([k, x]) => !LONE_SURROGATE.test(k) && ok(x, depth + 1));
  };
  return ok(value, 0);
}

function documentBytes(bytes) {
  if (!bytes.length) return ENC.encode("null");
  const text = (() => {
    try {
      return UTF8.decode(bytes);
    } catch {
      return null;
    }
  })();
  if (text !== null && orjsonAccepts(text) && !bytes.includes(0x0a) && !bytes.includes(0x0d)) return bytes;
  return ENC.encode(`{"undecodable": ${JSON.stringify(LENIENT.decode(bytes))}}`);
}

function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The line of entries.jsonl for the entry `bytes` at `index`. Throws VerifyError when they are not a LedgerEntry.
 *  `base64`, when given, is the canonical base64 of `bytes` (the line's own, already checked). */
export function entryLine(index, bytes, base64 = undefined) {
  const m = decodeLedgerEntry(bytes);
  let fields =
    `"sequence": ${J(m.sequence)}, "time_unix_nano": ${J(m.time_unix_nano)}, ` +
    `"request_id": ${J(m.request_id)}, "source": ${address(m.source)}, "destination": ${address(m.destination)}, ` +
    `"method": ${J(m.method)}, "host": ${J(m.host)}, "path": ${J(m.path)}, "engine": ${J(m.engine)}, ` +
    `"decision_path": ${J(m.decision_path)}, "policy_version": ${J(m.policy_version)}, ` +
    `"outcome": ${J(OUTCOMES[m.outcome] ?? "unspecified")}, "allowed": ${J(m.allowed)}, ` +
    `"http_status": ${J(m.http_status)}, "dry_run": ${J(m.dry_run)}, "grpc_code": ${J(m.grpc_code)}, ` +
    `"error": ${J(m.error)}, "eval_ns": ${J(m.eval_ns)}`;
  for (const name of ["traceparent", "tracestate", "b3"]) if (m[name]) fields += `, "${name}": ${J(m[name])}`;
  const head = `{"index": ${index}, "decision_id": ${J(m.decision_id)}, "entry_b64": "${base64 ?? b64encode(bytes)}", ${fields}, "input": `;
  return {
    line: concatBytes([ENC.encode(head), documentBytes(m.input_json), ENC.encode(', "result": '), documentBytes(m.result_json), ENC.encode("}")]),
    decoded: m,
  };
}

// --- Shared inclusion proofs (tlog/shared_proofs.py) ----------------------------------------------------------

/** The leaf ranges of PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf level first, as shared_proofs.siblings. */
function* siblings(index, size) {
  let lo = index;
  let hi = index + 1;
  let width = 1;
  while (hi - lo < size) {
    let sib;
    if (Math.floor(lo / width) % 2) sib = [lo - width, lo];
    else if (lo + width < size) sib = [lo + width, Math.min(lo + 2 * width, size)];
    else {
      width *= 2;
      continue;
    }
    yield sib;
    lo = Math.min(lo, sib[0]);
    hi = Math.max(hi, sib[1]);
    width *= 2;
  }
}

function sameHash(a, b) {
  return a !== undefined && b !== undefined && equalBytes(a, b);
}

class SharedProofs {
  // Every (range, hash) a walk that reached the signed root computed is remembered: a later walk meeting it is
  // proved there, so a run of entries costs about two hashes each instead of log n.
  constructor(size, root, nodes) {
    this.size = size;
    this.nodes = nodes;
    this.verified = new Map([[`0 ${size}`, root]]);
    this.used = new Set();
  }

  reachesRoot(index, leaf) {
    if (!(index >= 0 && index < this.size)) throw new Error(`leaf index ${index} is not in a tree of ${this.size} leaves`);
    let node = [index, index + 1];
    let h = leaf;
    const walked = [];
    const lookedUp = [];
    for (const sib of siblings(index, this.size)) {
      if (sameHash(this.verified.get(`${node[0]} ${node[1]}`), h)) break;
      const key = `${sib[0]} ${sib[1]}`;
      const sibling = this.nodes.get(key);
      if (sibling === undefined) throw new Error(`no hash for the subtree of leaves [${sib[0]}, ${sib[1]}) on its inclusion path`);
      lookedUp.push(key);
      // RFC 9162 §2.1.3.2: the sibling is on the right when it starts where the current subtree ends.
      if (sib[0] === node[1]) [node, h] = [[node[0], sib[1]], nodeHashSync(h, sibling)];
      else [node, h] = [[sib[0], node[1]], nodeHashSync(sibling, h)];
      walked.push([`${node[0]} ${node[1]}`, h]);
    }
    if (!sameHash(this.verified.get(`${node[0]} ${node[1]}`), h)) return false;
    for (const [k, v] of walked) this.verified.set(k, v);
    for (const k of lookedUp) this.used.add(k);
    return true;
  }

  pathRanges(index) {
    return [...siblings(index, this.size)].map(([lo, hi]) => `${lo} ${hi}`);
  }

  contradicted(index) {
    return this.pathRanges(index).filter((r) => this.verified.has(r) && !sameHash(this.nodes.get(r), this.verified.get(r)));
  }
}

// --- Witness cosignatures (C2SP tlog-cosignature, checked with the pack's own copy of the witness's key) ------

const COSIGNATURE_V1 = 0x04; // signed-note signature type: timestamped Ed25519 witness cosignature

/** A witness vkey `<name>+<hex key ID>+<base64(0x04 || public key)>`, or null when the text is not one. */
function parseWitnessKey(text) {
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (first <= 0 || second < 0 || !/^[0-9a-f]{8}$/i.test(text.slice(first + 1, second))) return null;
  let key;
  try {
    key = fromBase64(text.slice(second + 1), "key");
  } catch {
    return null;
  }
  if (key[0] !== COSIGNATURE_V1) return null;
  const name = text.slice(0, first);
  // tlog-cosignature "Format": the key ID commits to the name, the type and the key.
  const id = sha256(concatBytes([ENC.encode(`${name}\n`), key])).subarray(0, 4);
  const wantId = Number.parseInt(text.slice(first + 1, second), 16);
  if (new DataView(id.buffer, id.byteOffset, 4).getUint32(0) !== wantId || key.length !== 33) return { name, bad: true };
  return { name, keyId: id, publicKey: key.subarray(1) };
}

/** The cosignature time when `witness` cosigned the signed note `noteBytes`, else null: the signed message is
 *  "cosignature/v1\ntime <T>\n" and the checkpoint text; the signature line holds key ID, T (big-endian
 *  uint64) and the Ed25519 signature. */
async function cosignedAt(noteBytes, witness) {
  if (!noteBytes || witness.bad) return null;
  const text = LENIENT.decode(noteBytes);
  const split = text.lastIndexOf("\n\n");
  if (split < 0) return null;
  const body = ENC.encode(text.slice(0, split + 1));
  for (const line of text.slice(split + 2).split("\n")) {
    if (!line.startsWith(`\u2014 ${witness.name} `)) continue;
    let sig;
    try {
      sig = fromBase64(line.slice(witness.name.length + 3), "signature");
    } catch {
      continue;
    }
    if (sig.length !== 4 + 8 + 64 || !equalBytes(sig.subarray(0, 4), witness.keyId)) continue;
    const time = new DataView(sig.buffer, sig.byteOffset + 4, 8).getBigUint64(0);
    const message = concatBytes([ENC.encode(`cosignature/v1\ntime ${time}\n`), body]);
    try {
      const key = await crypto.subtle.importKey("raw", witness.publicKey, { name: "Ed25519" }, false, ["verify"]);
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, sig.subarray(12), message)) return time;
    } catch {
      return null;
    }
  }
  return null;
}

// --- The check ---------------------------------------------------------------------------------------------------

class Verdict {
  constructor() {
    this.findings = [];
    this.truncated = false;
    this.entries = 0;
    this.manifest = null;
    this.checkpoint = null;
    this.latest = null;
    this.cosignedBy = [];
  }

  add(member, where, message) {
    if (this.findings.length < MAX_FINDINGS) this.findings.push({ member, where, message });
    else this.truncated = true;
  }
}

function parseManifest(v, data) {
  let doc;
  try {
    doc = JSON.parse(UTF8.decode(data)); // created_unix_nano loses its last digits as a Number: it is only shown
  } catch (e) {
    v.add("manifest.json", "", `not JSON: ${e.message}`);
    return null;
  }
  if (doc?.format !== FORMAT) {
    v.add("manifest.json", "", `format is ${JSON.stringify(doc?.format)}, this version reads "${FORMAT}"`);
    return null;
  }
  return doc;
}

async function checkpoints(v, m, keys) {
  const origin = v.manifest?.origin;
  for (const [member, slot] of [["checkpoint.txt", "checkpoint"], ["latest-checkpoint.txt", "latest"]]) {
    if (!m.has(member)) continue;
    try {
      const opened = await openCheckpoint(m.get(member), keys, typeof origin === "string" ? origin : undefined);
      v[slot] = { ...opened.checkpoint, signers: opened.note.verifiedBy };
    } catch (e) {
      v.add(member, "", `does not verify with the log's key: ${e.message}`);
    }
  }
  // vkeys.txt: each log key must verify a signature line of the pack's checkpoints; witness keys are listed.
  const { lines, rest } = splitLines(m.get("vkeys.txt") ?? new Uint8Array());
  if (rest.length) v.add("vkeys.txt", "", "the last line has no newline");
  for (const [k, line] of lines.entries()) {
    const text = LENIENT.decode(line);
    const witness = parseWitnessKey(text);
    let verifies = false;
    if (witness) {
      const at = await cosignedAt(m.get("checkpoint.txt"), witness);
      const later = at === null ? await cosignedAt(m.get("latest-checkpoint.txt"), witness) : null;
      if (at !== null) v.cosignedBy.push({ witness: witness.name, timestamp: at });
      verifies = at !== null || later !== null;
    }
    for (const member of witness ? [] : ["checkpoint.txt", "latest-checkpoint.txt"]) {
      try {
        await openNote(m.get(member), [await parseVerifierKey(text)]);
        verifies = true;
        break;
      } catch {}
    }
    if (!verifies && v.checkpoint && v.latest) {
      v.add("vkeys.txt", `line ${k + 1}`, "this key verifies no signature line of the pack's checkpoints");
    }
  }
  if (v.checkpoint && v.latest && m.has("consistency-proof.txt")) {
    try {
      const { lines: proofLines, rest: tail } = splitLines(m.get("consistency-proof.txt"));
      if (tail.length) throw new Error("the last line has no newline");
      const hashes = proofLines.map((l, k) => canonicalHash(LENIENT.decode(l), `line ${k + 1}`));
      await verifyConsistency(v.checkpoint.size, v.latest.size, v.checkpoint.root, v.latest.root, hashes);
    } catch (e) {
      v.add("consistency-proof.txt", "", `does not prove the latest tree extends the pack's: ${e.message}`);
    }
  }
}

function parseNodes(data) {
  const nodes = new Map();
  const order = [];
  const { lines, rest } = splitLines(data);
  if (rest.length) throw new Error("the last line has no newline");
  let last = [-1, -1];
  for (const [k, line] of lines.entries()) {
    const match = /^(0|[1-9][0-9]*) (0|[1-9][0-9]*) ([A-Za-z0-9+/]{43}=)$/.exec(LENIENT.decode(line));
    if (!match) throw new Error(`line ${k + 1}: want '<lo> <hi> <base64 hash>'`);
    const [lo, hi] = [Number(match[1]), Number(match[2])];
    if (lo < last[0] || (lo === last[0] && hi <= last[1]) || lo >= hi) {
      throw new Error(`line ${k + 1}: ranges must be non-empty and strictly sorted`);
    }
    nodes.set(`${lo} ${hi}`, canonicalHash(match[3], `line ${k + 1}`));
    order.push(`${lo} ${hi}`);
    last = [lo, hi];
  }
  return { nodes, order };
}

const LINE_HEAD = /^\{"index": (0|[1-9][0-9]*), "decision_id": "[^"\\]*", "entry_b64": "([A-Za-z0-9+/=]*)"/;

async function entries(v, m, digestDiffers, onProgress) {
  const data = m.get("entries.jsonl");
  if (!data || !v.checkpoint || !m.has("proof-nodes.txt")) return [];
  let table;
  try {
    table = parseNodes(m.get("proof-nodes.txt"));
  } catch (e) {
    v.add("proof-nodes.txt", "", e.message);
    return [];
  }
  const proofs = new SharedProofs(Number(v.checkpoint.size), v.checkpoint.root, table.nodes);
  const complete = v.manifest !== null && !v.manifest.selection?.filter;
  const proved = [];
  const failed = [];
  const { lines, rest } = splitLines(data);
  if (rest.length) v.add("entries.jsonl", "", "the last line has no newline");
  let last = -1;
  for (const [k, line] of lines.entries()) {
    const n = k + 1;
    if (onProgress && n % 2000 === 0) await onProgress(n, lines.length);
    const head = LINE_HEAD.exec(LENIENT.decode(line));
    if (!head) {
      v.add("entries.jsonl", `line ${n}`, "does not start like an entry of log --json (index, decision_id, entry_b64)");
      continue;
    }
    const index = Number(head[1]);
    const where = `line ${n} (index ${index})`;
    if (index <= last) v.add("entries.jsonl", where, `index ${index} does not follow index ${last}`);
    else if (complete && last >= 0 && index !== last + 1) {
      v.add("entries.jsonl", where, `entries ${last + 1} to ${index - 1} are missing from a complete pack`);
    }
    last = Math.max(last, index);
    let raw;
    let rebuilt;
    try {
      raw = fromBase64(head[2], "entry_b64");
      rebuilt = entryLine(index, raw, head[2]);
    } catch (e) {
      v.add("entries.jsonl", where, `entry_b64 is not the bytes of a ledger entry: ${e.message}`);
      continue;
    }
    if (!equalBytes(rebuilt.line, line)) {
      v.add("entries.jsonl", where, `does not match its own entry bytes at ${firstDifference(line, rebuilt.line)}`);
      continue;
    }
    let reached;
    try {
      reached = proofs.reachesRoot(index, leafHashSync(raw));
    } catch (e) {
      v.add("proof-nodes.txt", "", `entry ${index} (entries.jsonl line ${n}): ${e.message}`);
      continue;
    }
    if (reached) {
      v.entries++;
      proved.push({ index, decoded: rebuilt.decoded });
    } else failed.push({ n, index, decisionId: rebuilt.decoded.decision_id });
  }
  nameFailures(v, proofs, table.order, failed, digestDiffers);
  return proved;
}

// A path that missed the root holds a changed entry or a changed proof hash; name which, as check.py does.
function nameFailures(v, proofs, order, failed, digestDiffers) {
  if (!failed.length) return;
  const lineOf = new Map(order.map((r, k) => [r, k + 1]));
  let wrong = [...new Set(failed.flatMap((f) => proofs.contradicted(f.index)))].sort();
  const unproved = failed.map((f) => new Set(proofs.pathRanges(f.index).filter((r) => !proofs.used.has(r))));
  if (!wrong.length && failed.length > 1) wrong = [...unproved[0]].filter((r) => unproved.every((s) => s.has(r))).slice(0, 1);
  if (!wrong.length && digestDiffers("proof-nodes.txt") && !digestDiffers("entries.jsonl")) {
    const suspects = [...new Set(unproved.flatMap((s) => [...s]))].filter((r) => lineOf.has(r)).map((r) => `line ${lineOf.get(r)}`);
    v.add("proof-nodes.txt", suspects.join(", "), `changed: the inclusion path of entry ${failed[0].index} no longer leads to the root`);
    return;
  }
  for (const r of wrong) {
    const [lo, hi] = r.split(" ");
    const count = failed.length === 1 ? "entry" : "entries";
    v.add("proof-nodes.txt", `line ${lineOf.get(r)} (subtree [${lo}, ${hi}))`, `its hash is wrong: the ${failed.length} ${count} whose proofs use it do not verify`);
  }
  if (wrong.length) return;
  for (const f of failed) {
    v.add("entries.jsonl", `line ${f.n} (index ${f.index})`, `decision ${f.decisionId} was changed: its bytes do not lead to the signed root`);
  }
}

async function manifestHolds(v, proved) {
  const man = v.manifest;
  if (!man || !v.checkpoint || !v.latest || v.findings.length) return;
  const want = {
    origin: v.checkpoint.origin,
    complete: !man.selection?.filter,
    first_index: proved.length ? proved[0].index : 0,
    end_index: proved.length ? proved[proved.length - 1].index + 1 : 0,
    entries: proved.length,
    checkpoint_size: v.checkpoint.size,
    latest_size: v.latest.size,
  };
  for (const [field, value] of Object.entries(want)) {
    if (String(man[field]) !== String(value)) v.add("manifest.json", field, `says ${man[field]}, the verified pack has ${value}`);
  }
}

/** Check the evidence pack `data` (a Uint8Array) with the log's verifier `keys` (parsed by parseVerifierKey).
 *  Returns {ok, findings: [{member, where, message}], entries, manifest, checkpoint, latest, cosignedBy:
 *  [{witness, timestamp}], notChecked}: every finding, not only the first. `onProgress(done, total)` is awaited every 2,000 entries. */
export async function checkEvidencePack(data, keys, { onProgress } = {}) {
  const v = new Verdict();
  const { members: m, problems } = await readArchive(data, MEMBERS);
  for (const [member, reason] of problems) v.add(member, "", reason);
  if (m.has("manifest.json")) v.manifest = parseManifest(v, m.get("manifest.json"));
  const digests = v.manifest?.sha256 ?? {};
  const actual = new Map();
  for (const [name, bytes] of m) actual.set(name, await sha256Hex(bytes));
  const digestDiffers = (name) => v.manifest !== null && actual.has(name) && digests[name] !== actual.get(name);
  await checkpoints(v, m, keys);
  const proved = await entries(v, m, digestDiffers, onProgress);
  // What the checks above cannot see (README and report are not rebuilt here, witness cosignatures not verified)
  // the manifest's digests still catch: the member, or the manifest, was changed after the pack was made.
  const named = new Set(v.findings.map((f) => f.member));
  for (const name of MEMBERS.slice(0, -1)) {
    if (digestDiffers(name) && !named.has(name)) {
      v.add(name, "", "its SHA-256 is not the one manifest.json lists: it (or the manifest) was changed after the pack was made");
    }
  }
  await manifestHolds(v, proved);
  return {
    ok: v.findings.length === 0,
    findings: v.findings,
    truncated: v.truncated,
    entries: v.entries,
    manifest: v.manifest,
    checkpoint: v.checkpoint,
    latest: v.latest,
    cosignedBy: v.cosignedBy,
    notChecked: [
      "README.txt and report.html: checked against the manifest's SHA-256, not rebuilt byte for byte",
      ...(v.manifest?.selection?.filter ? [`the entries' match with the filter ${JSON.stringify(v.manifest.selection.filter)}`] : []),
      ...(v.cosignedBy.length ? ["the witnesses' own keys: their cosignatures are checked with the pack's copies of the keys (verify-evidence --witness-vkey pins them)"] : []),
    ],
  };
}
