// verify.js: the audit console's verifier, run in the auditor's browser so that nothing the server renders
// is taken on trust. Dependency-free ES module; WebCrypto only (SHA-256, Ed25519), so it runs unchanged in
// browsers and in Node >= 20 (globalThis.crypto.subtle).
//
// It mirrors the Python modules that write the ledger, rule for rule:
//
// * server/authz_ledger/tlog/note.py        C2SP signed-note (https://c2sp.org/signed-note), Ed25519 keys
// * server/authz_ledger/tlog/checkpoint.py  C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint)
// * server/authz_ledger/tlog/tree.py        RFC 9162 §2.1.1 leaf and node hashes
// * server/authz_ledger/tlog/proof.py       RFC 9162 §2.1.3.2 inclusion proof verification
// * server/authz_ledger/tlog/receipt.py     C2SP tlog-proof (https://c2sp.org/tlog-proof) receipts
// * proto/authzledger/v1/ledger.proto       the LedgerEntry wire format (protobuf encoding, as upb reads it)
//
// tests/console/test_verify_js.py runs every function here against the Python code and the published vectors
// in tests/vectors/. Every failure is a VerifyError whose message is a sentence saying what failed, and whose
// `step` names the part of the verification that failed.

const HASH_SIZE = 32; // SHA-256
const MAX_UINT64 = (1n << 64n) - 1n; // tree sizes and leaf indexes are uint64 in every tlog implementation

// --- Errors -------------------------------------------------------------------------------------------------

/** Every failure of this module. `step` is one of: "input", "base64", "key", "note", "checkpoint", "proof",
 *  "receipt", "leaf", "inclusion", "entry". */
export class VerifyError extends Error {
  constructor(message, step = "input") {
    super(message);
    this.name = "VerifyError";
    this.step = step;
  }
}

function fail(step, message) {
  throw new VerifyError(message, step);
}

function requireBytes(value, what, step = "input") {
  if (!(value instanceof Uint8Array)) fail(step, `${what} must be a Uint8Array, got ${describe(value)}`);
  return value;
}

function describe(value) {
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor?.name ?? "an object";
  return typeof value;
}

// --- Bytes, text, base64 ------------------------------------------------------------------------------------

// ignoreBOM: a leading U+FEFF is text like any other (Python's bytes.decode("utf-8") keeps it); fatal: invalid
// UTF-8 (surrogates, overlong forms included) is an error, never replaced.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

function utf8Decode(bytes) {
  try {
    return UTF8.decode(bytes);
  } catch {
    return null;
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function indexOfPair(bytes, byte, from = 0) {
  for (let i = from; i + 1 < bytes.length; i++) if (bytes[i] === byte && bytes[i + 1] === byte) return i;
  return -1;
}

function lastIndexOfPair(bytes, byte) {
  for (let i = bytes.length - 2; i >= 0; i--) if (bytes[i] === byte && bytes[i + 1] === byte) return i;
  return -1;
}

const NEWLINE = 0x0a;

/** Lower-case hexadecimal of `bytes`. */
export function hex(bytes) {
  requireBytes(bytes, "hex input");
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_VALUE = new Map(Array.from(B64_ALPHABET, (c, i) => [c, i]));

/** Standard base64 with padding (RFC 4648 §4). */
export function b64encode(bytes) {
  requireBytes(bytes, "base64 input");
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = [18, 12, 6, 0].map((shift) => B64_ALPHABET[(n >> shift) & 63]);
    const missing = i + 3 - Math.min(i + 3, bytes.length);
    out += chars.slice(0, 4 - missing).join("") + "=".repeat(missing);
  }
  return out;
}

/** Strict standard base64 (RFC 4648 §4): padded, no whitespace, canonical (the unused bits of the last
 *  character are zero, RFC 4648 §3.5), so that one byte string has exactly one text. This is the rule of
 *  checkpoint roots, receipt lines and anything else the project compares as text. */
export function b64decode(text) {
  return decodeBase64(text, "base64 text", { canonical: true, step: "base64" });
}

// Signed notes decode as golang.org/x/mod/sumdb/note does (base64.StdEncoding): padding and the alphabet are
// strict, but non-zero unused bits in the last character are accepted, as note.py accepts them.
function decodeBase64(text, what, { canonical, step }) {
  if (typeof text !== "string") fail(step, `${what} must be a string, got ${describe(text)}`);
  if (text.length % 4 !== 0) fail(step, `${what} is not padded standard base64 (its length is not a multiple of 4)`);
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const values = [];
  for (const c of text.slice(0, text.length - pad)) {
    const v = B64_VALUE.get(c);
    if (v === undefined) fail(step, `${what} is not standard base64 (character ${JSON.stringify(c)})`);
    values.push(v);
  }
  const out = new Uint8Array((values.length * 3) >> 2);
  let bits = 0;
  let acc = 0;
  let pos = 0;
  for (const v of values) {
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[pos++] = (acc >> bits) & 0xff;
    }
  }
  if (canonical && (acc & ((1 << bits) - 1)) !== 0) fail(step, `${what} is not canonical base64`);
  return out;
}

// --- Hashes (RFC 9162 §2.1.1) ------------------------------------------------------------------------------

// Browsers offer WebCrypto only to secure contexts (HTTPS, or localhost): elsewhere crypto.subtle is undefined.
function subtle() {
  const api = globalThis.crypto?.subtle;
  if (!api) {
    fail("input", "WebCrypto is not available: this page must be served over HTTPS (or from localhost) to verify");
  }
  return api;
}

async function sha256(...parts) {
  return new Uint8Array(await subtle().digest("SHA-256", concat(...parts)));
}

const LEAF_PREFIX = Uint8Array.of(0x00); // RFC 9162 §2.1.1 domain separation: a leaf never hashes like a node
const NODE_PREFIX = Uint8Array.of(0x01);

/** MTH({d}) = SHA-256(0x00 || d): the hash of one log entry, exactly the bytes stored and served. */
export async function leafHash(entryBytes) {
  return sha256(LEAF_PREFIX, requireBytes(entryBytes, "entry bytes"));
}

/** SHA-256(0x01 || left || right) (RFC 9162 §2.1.1). Any lengths, like tree.py's node_hash. */
export async function nodeHash(left, right) {
  return sha256(NODE_PREFIX, requireBytes(left, "left hash"), requireBytes(right, "right hash"));
}

// --- C2SP signed-note keys -----------------------------------------------------------------------------------

const ALG_ED25519 = 0x01; // signed-note "Signature types": plain Ed25519
const ED25519_KEY_SIZE = 32;
const ED25519_SIG_SIZE = 64;
const MAX_SIGNATURES = 100; // sumdb/note Open refuses notes with more signature lines
const SIG_PREFIX = "\u2014 "; // EM DASH, SPACE

// Python's str.isspace, which note.py's is_valid_key_name uses: the Unicode White_Space characters plus the
// information separators U+001C..U+001F (which, being control characters, never survive the other checks).
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
// Python's str.isprintable is false for categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs, except U+0020.
const NON_PRINTABLE = /(?! )[\p{C}\p{Z}]/u;

/** sumdb/note isValidName: non-empty, no space of any kind, no '+' (signed-note "Format"). */
function isValidKeyName(name) {
  return name.length > 0 && !name.includes("+") && !PY_SPACE.test(name);
}

/** Key ID = SHA-256(name || 0x0A || type byte || public key)[:4], big-endian (signed-note "Ed25519
 *  signatures"). */
async function computeKeyId(name, key) {
  const digest = await sha256(ENCODER.encode(name), Uint8Array.of(NEWLINE), key);
  return new DataView(digest.buffer).getUint32(0);
}

function keyIdHex(keyId) {
  return keyId.toString(16).padStart(8, "0");
}

/** Parse a verifier key `<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>` (sumdb/note
 *  NewVerifier), checking the key ID against the key. Returns {name, keyId, publicKey, text}. */
export async function parseVerifierKey(text) {
  if (typeof text !== "string") fail("key", `a verifier key must be a string, got ${describe(text)}`);
  const [name, hexId, key64] = splitVerifierKey(text);
  if (!isValidKeyName(name) || NON_PRINTABLE.test(name)) {
    fail("key", `invalid key name ${JSON.stringify(name)}: must be non-empty, printable, without spaces or '+'`);
  }
  // sumdb/note: exactly 8 hex digits (strconv.ParseUint base 16, which accepts either case).
  if (!/^[0-9a-fA-F]{8}$/.test(hexId)) fail("key", `malformed key ID ${JSON.stringify(hexId)}: want 8 hex digits`);
  const keyId = Number.parseInt(hexId, 16);
  const key = decodeBase64(key64, "verifier key", { canonical: false, step: "key" });
  if (key.length === 0) fail("key", "malformed verifier key: empty key");
  if ((await computeKeyId(name, key)) !== keyId) {
    fail("key", `verifier key ${name}+${hexId}: key ID does not match the key`);
  }
  if (key[0] !== ALG_ED25519) {
    fail("key", `verifier key ${name}+${hexId}: unknown algorithm 0x${key[0].toString(16).padStart(2, "0")}`);
  }
  if (key.length !== 1 + ED25519_KEY_SIZE) {
    fail("key", `verifier key ${name}+${hexId}: Ed25519 key is ${key.length - 1} bytes, want 32`);
  }
  return { name, keyId, publicKey: key.slice(1), text };
}

function splitVerifierKey(text) {
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (second < 0) fail("key", "malformed verifier key: want <name>+<hex id>+<base64 key>");
  return [text.slice(0, first), text.slice(first + 1, second), text.slice(second + 1)];
}

function identity(name, keyId) {
  return `${name}+${keyIdHex(keyId)}`; // names never contain '+', so this is unambiguous
}

// The trusted keys by (name, key ID). Two different keys with the same name and ID mean the trust
// configuration is wrong (sumdb/note "ambiguous key"): refuse rather than pick one.
function keyMap(keys) {
  if (!Array.isArray(keys)) fail("input", `the trusted keys must be an array, got ${describe(keys)}`);
  const known = new Map();
  for (const key of keys) {
    const valid =
      key &&
      typeof key.name === "string" &&
      Number.isInteger(key.keyId) &&
      key.publicKey instanceof Uint8Array &&
      key.publicKey.length === ED25519_KEY_SIZE;
    if (!valid) fail("input", "a trusted key is not a parsed verifier key (use parseVerifierKey)");
    const id = identity(key.name, key.keyId);
    const other = known.get(id);
    if (other && !bytesEqual(other.publicKey, key.publicKey)) fail("key", `ambiguous verifier keys for ${id}`);
    known.set(id, other ?? key);
  }
  return known;
}

async function ed25519Verify(publicKey, signature, message) {
  if (signature.length !== ED25519_SIG_SIZE) return false;
  const api = subtle();
  let key;
  try {
    key = await api.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    // Not "the signature is bad": the browser cannot tell (WebCrypto Ed25519 is Chrome 137+, Firefox 129+,
    // Safari 17+).
    if (e?.name === "NotSupportedError") fail("input", "this browser's WebCrypto cannot verify Ed25519 signatures");
    return false; // a public key that is not a curve point verifies nothing
  }
  try {
    return await api.verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false;
  }
}

// --- C2SP signed notes ---------------------------------------------------------------------------------------

/** signed-note "Format": valid UTF-8 without ASCII control characters other than newline. UTF-8 never
 *  encodes anything but U+0000..U+001F with bytes below 0x20, so the check can run on the bytes. */
function checkNoteChars(bytes, what, step) {
  const text = utf8Decode(bytes);
  if (text === null) fail(step, `malformed ${what}: not valid UTF-8`);
  if (bytes.some((b) => b < 0x20 && b !== NEWLINE)) {
    fail(step, `malformed ${what}: contains an ASCII control character`);
  }
  return text;
}

function parseSignatureLine(line, step) {
  if (!line.startsWith(SIG_PREFIX)) {
    fail(step, "malformed note: signature line does not start with an em dash and a space");
  }
  const rest = line.slice(SIG_PREFIX.length);
  const space = rest.indexOf(" ");
  const name = space < 0 ? rest : rest.slice(0, space);
  const b64 = space < 0 ? "" : rest.slice(space + 1);
  if (!isValidKeyName(name) || !b64) {
    fail(step, "malformed note: bad key name or missing signature in a signature line");
  }
  const raw = decodeBase64(b64, "signature line", { canonical: false, step });
  if (raw.length < 5) fail(step, "malformed note: signature shorter than a key ID plus one byte");
  return { name, keyId: new DataView(raw.buffer).getUint32(0), sig: raw.slice(4) };
}

/** Split a signed note into text and distinct signature lines, as sumdb/note Open does before verifying. */
function parseNote(msg, step) {
  checkNoteChars(msg, "note", step);
  // The text is separated from the signatures by the *last* blank line (signed-note "Format"), so text lines
  // that look like signatures, and blank lines inside the text, are unambiguous.
  const split = lastIndexOfPair(msg, NEWLINE);
  if (split < 0) fail(step, "malformed note: no blank line before the signatures");
  const textBytes = msg.slice(0, split + 1);
  const block = msg.subarray(split + 2);
  if (block.length === 0 || block[block.length - 1] !== NEWLINE) {
    fail(step, "malformed note: missing signature lines or final newline");
  }
  const lines = UTF8.decode(block).split("\n").slice(0, -1);
  if (lines.length > MAX_SIGNATURES) fail(step, `malformed note: more than ${MAX_SIGNATURES} signatures`);
  const signatures = [];
  const kept = new Set();
  for (const line of lines) {
    const sig = parseSignatureLine(line, step);
    if (kept.has(line)) continue; // sumdb/note drops repeated identical lines
    kept.add(line);
    signatures.push(sig);
  }
  return { textBytes, signatures };
}

// open_note with the subject ("note" or "checkpoint") in the messages and `step`.
async function openNoteAs(noteBytes, keys, what) {
  const known = keyMap(keys);
  const { textBytes, signatures } = parseNote(requireBytes(noteBytes, `the ${what}`, what), what);
  const out = [];
  const seen = new Set();
  for (const sig of signatures) {
    const id = identity(sig.name, sig.keyId);
    const key = known.get(id);
    if (key) {
      if (seen.has(id)) continue; // a known key counts once; sumdb/note drops its later lines unverified
      seen.add(id);
      // signed-note "Signatures": a note with an invalid signature by a known key SHOULD be rejected.
      if (!(await ed25519Verify(key.publicKey, sig.sig, textBytes))) {
        fail(
          what,
          `${what} signature does not verify with key ${sig.name} (key ID ${keyIdHex(sig.keyId)}): ` +
            "the signed text was altered or the signature is not that key's",
        );
      }
    }
    out.push({ name: sig.name, keyId: sig.keyId, verified: Boolean(key) });
  }
  const verifiedBy = out.filter((s) => s.verified).map((s) => s.name);
  // signed-note "Signatures": a note without a verified signature by a known key MUST be rejected.
  if (verifiedBy.length === 0) {
    fail(what, `no ${what} signature by a trusted key: it is signed only by keys you have not configured`);
  }
  return { text: UTF8.decode(textBytes), textBytes, verifiedBy, signatures: out };
}

/** Parse a C2SP signed note and verify it against the trusted keys, with sumdb/note Open's rules (as
 *  note.py's open_note): signatures by unknown keys are ignored, an invalid signature by a trusted key fails
 *  the whole note, and a note with no verified signature fails. Returns {text, textBytes, verifiedBy,
 *  signatures}; `signatures` lists every distinct signature line as {name, keyId, verified}. */
export async function openNote(noteBytes, keys) {
  return openNoteAs(noteBytes, keys, "note");
}

// --- C2SP tlog-checkpoint ----------------------------------------------------------------------------------

const DECIMAL = /^(?:0|[1-9][0-9]*)$/; // ASCII digits, no leading zeros, no sign

function checkCheckpointLine(what, line) {
  if (!line) fail("checkpoint", `malformed checkpoint: empty ${what}`);
  if (/[\x00-\x1f]/.test(line)) {
    fail("checkpoint", `malformed checkpoint: ${what} contains a control character or newline`);
  }
}

/** Parse a checkpoint note text (string or UTF-8 bytes) strictly, as checkpoint.py's Checkpoint.parse:
 *  origin, size in decimal without leading zeros (uint64), canonical base64 of a 32-byte root, then
 *  non-empty extension lines, each line ending in a newline. Returns {origin, size, root, extensions}. */
export function parseCheckpoint(text) {
  if (text instanceof Uint8Array) {
    const decoded = utf8Decode(text);
    if (decoded === null) fail("checkpoint", "malformed checkpoint: not valid UTF-8");
    text = decoded;
  }
  if (typeof text !== "string") fail("input", `a checkpoint must be a string or bytes, got ${describe(text)}`);
  if (!text.isWellFormed()) fail("checkpoint", "malformed checkpoint: not valid Unicode text (lone surrogate)");
  if (!text.endsWith("\n")) fail("checkpoint", "malformed checkpoint: text must end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) fail("checkpoint", "malformed checkpoint: want origin, size and root lines");
  const [origin, sizeLine, rootLine, ...extensions] = lines;
  // tlog-checkpoint "Note text": the origin MUST be non-empty; spaces and '+' are only discouraged.
  checkCheckpointLine("origin", origin);
  if (!DECIMAL.test(sizeLine) || BigInt(sizeLine) > MAX_UINT64) {
    const size = JSON.stringify(sizeLine);
    fail("checkpoint", `malformed checkpoint: tree size ${size} is not a uint64 in decimal without leading zeros`);
  }
  // Only the canonical encoding, so one tree head has exactly one text.
  const root = decodeBase64(rootLine, "checkpoint root hash", { canonical: true, step: "checkpoint" });
  if (root.length !== HASH_SIZE) fail("checkpoint", `malformed checkpoint: root hash is ${root.length} bytes, want 32`);
  for (const ext of extensions) checkCheckpointLine("extension line", ext);
  return { origin, size: BigInt(sizeLine), root, extensions };
}

/** Verify a signed checkpoint, as checkpoint.py's open_checkpoint: the note must verify with the trusted
 *  keys, and a signature by a trusted key *named like the checkpoint's origin* must be among those that
 *  verified (so a key trusted for one log cannot vouch for another's checkpoints). When `origin` is given the
 *  checkpoint must be for that origin. Returns {checkpoint, note}. */
export async function openCheckpoint(noteBytes, keys, origin = undefined) {
  const note = await openNoteAs(noteBytes, keys, "checkpoint");
  const checkpoint = parseCheckpoint(note.textBytes);
  if (origin !== undefined && origin !== null && checkpoint.origin !== origin) {
    fail("checkpoint", `checkpoint is for origin ${JSON.stringify(checkpoint.origin)}, want ${JSON.stringify(origin)}`);
  }
  if (!note.verifiedBy.includes(checkpoint.origin)) {
    fail("checkpoint", `no signature by a trusted key named like the origin ${JSON.stringify(checkpoint.origin)}`);
  }
  return { checkpoint, note };
}

// --- Inclusion proofs (RFC 9162 §2.1.3.2) -----------------------------------------------------------------

/** A non-negative integer as BigInt, from a BigInt, a safe integer Number or a decimal string (protobuf JSON
 *  writes uint64 as a string). Not capped at 2**64 - 1: proof.py takes any int, and so does this. */
function toCount(value, what, step = "input") {
  let n;
  if (typeof value === "bigint") n = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) n = BigInt(value);
  else if (typeof value === "string" && DECIMAL.test(value)) n = BigInt(value);
  else {
    const got = `${describe(value)} ${String(value)}`;
    fail(step, `${what} must be a non-negative integer (BigInt, safe Number or decimal string), got ${got}`);
  }
  if (n < 0n) fail(step, `${what} must be non-negative, got ${n}`);
  return n;
}

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

/** The largest power of two strictly less than n (n >= 2): RFC 9162 §2.1.1's k. */
function splitPoint(n) {
  return 1n << BigInt(bitLength(n - 1n) - 1);
}

/** The number of hashes in PATH(index, D[size]) (RFC 9162 §2.1.3.1), as proof.py's inclusion_ranges. */
function inclusionPathLength(index, size) {
  let lo = 0n;
  let hi = size;
  let count = 0;
  while (hi - lo > 1n) {
    const mid = lo + splitPoint(hi - lo);
    if (index < mid) hi = mid;
    else lo = mid;
    count++;
  }
  return count;
}

function checkHash(what, h) {
  requireBytes(h, what, "inclusion");
  if (h.length !== HASH_SIZE) fail("inclusion", `${what} must be ${HASH_SIZE} bytes, got ${h.length}`);
}

/** Check that `leafHash` is leaf `index` of the tree of `size` leaves whose root hash is `root`, with the
 *  inclusion proof `proof` (an array of 32-byte hashes, the leaf's sibling first). RFC 9162 §2.1.3.2, with
 *  proof.py's (transparency-dev/merkle's) edge cases: index >= size fails (so does every size-0 request);
 *  every hash must be 32 bytes; the proof must have exactly PATH's length. Throws VerifyError. */
export async function verifyInclusion(index, size, leafHash, proof, root) {
  const computed = await rootFromInclusionProof(index, size, leafHash, proof, root);
  if (!bytesEqual(computed, root)) {
    fail("inclusion", `inclusion proof for leaf ${index} of ${size} does not lead to the given root`);
  }
}

// Every check of verifyInclusion but the last: the root the proof leads to (RFC 9162 §2.1.3.2 steps 1-5).
async function rootFromInclusionProof(index, size, leafHash, proof, root) {
  const i = toCount(index, "leaf index", "inclusion");
  const n = toCount(size, "tree size", "inclusion");
  if (i >= n) fail("inclusion", `leaf index ${i} is not in a tree of ${n} leaves`);
  checkHash("leaf hash", leafHash);
  checkHash("root", root);
  if (!Array.isArray(proof)) fail("inclusion", `the inclusion proof must be an array, got ${describe(proof)}`);
  proof.forEach((h, k) => checkHash(`proof hash ${k}`, h));
  const want = inclusionPathLength(i, n);
  if (proof.length !== want) {
    fail("inclusion", `inclusion proof for leaf ${i} of ${n} has ${proof.length} hashes, want ${want}`);
  }
  // RFC 9162 §2.1.3.2 steps 2-5.
  let fn = i;
  let sn = n - 1n;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0n) fail("inclusion", "inclusion proof is longer than the path to the root");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      // On the right edge of the tree: levels where this node has no right sibling add no proof hash.
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail("inclusion", "inclusion proof is shorter than the path to the root");
  return r;
}

// --- Consistency proofs (RFC 9162 §2.1.4.2) ----------------------------------------------------------------

/** The number of hashes in PROOF(size1, D[size2]) for 0 < size1 < size2 (RFC 9162 §2.1.4.1), as proof.py's
 *  _consistency_ranges: walk down from the root towards the old tree's right edge. */
function consistencyPathLength(size1, size2) {
  let lo = 0n;
  let hi = size2;
  let count = 0;
  let oldIsLeftSubtree = true;
  while (hi !== size1) {
    const mid = lo + splitPoint(hi - lo);
    if (size1 <= mid) hi = mid;
    else {
      lo = mid;
      oldIsLeftSubtree = false;
    }
    count++;
  }
  return oldIsLeftSubtree ? count : count + 1;
}

/** Check that the tree (size2, root2) extends the tree (size1, root1) with the consistency proof `proof` (an
 *  array of 32-byte hashes). RFC 9162 §2.1.4.2, with proof.py's (transparency-dev/merkle's) edge cases:
 *  size1 > size2 fails; size1 == 0 always fails (a proof from the empty tree proves nothing); equal sizes
 *  pass iff the proof is empty and the roots are the same bytes; otherwise every hash must be 32 bytes and
 *  the proof exactly as long as PROOF(size1, D[size2]). Throws VerifyError (step "consistency"). */
export async function verifyConsistency(size1, size2, root1, root2, proof) {
  const m = toCount(size1, "old tree size", "consistency");
  const n = toCount(size2, "new tree size", "consistency");
  requireBytes(root1, "old root", "consistency");
  requireBytes(root2, "new root", "consistency");
  if (!Array.isArray(proof)) fail("consistency", `the consistency proof must be an array, got ${describe(proof)}`);
  const bad = (what, h) => fail("consistency", `${what} must be ${HASH_SIZE} bytes, got ${h.length}`);
  if (m > n) fail("consistency", `old size ${m} is larger than new size ${n}`);
  if (m === 0n) fail("consistency", "consistency with the empty tree is trivial and not proved (old size is 0)");
  if (m === n) {
    if (proof.length) fail("consistency", `sizes are equal (${m}) but the consistency proof is not empty`);
    if (!bytesEqual(root1, root2)) fail("consistency", `trees of equal size ${m} have different roots`);
    return;
  }
  if (root1.length !== HASH_SIZE) bad("old root", root1);
  if (root2.length !== HASH_SIZE) bad("new root", root2);
  proof.forEach((h, k) => {
    requireBytes(h, `proof hash ${k}`, "consistency");
    if (h.length !== HASH_SIZE) bad(`proof hash ${k}`, h);
  });
  const want = consistencyPathLength(m, n);
  if (proof.length !== want) fail("consistency", `consistency proof ${m} -> ${n} has ${proof.length} hashes, want ${want}`);
  // Step 2: when the old tree is a perfect subtree, the verifier already holds its hash.
  const path = (m & (m - 1n)) === 0n ? [root1, ...proof] : [...proof];
  // Steps 3-4.
  let fn = m - 1n;
  let sn = n - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  // Steps 5-6.
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) fail("consistency", "consistency proof is longer than the path to the root");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  // Step 7.
  if (sn !== 0n) fail("consistency", "consistency proof is shorter than the path to the root");
  if (!bytesEqual(fr, root1)) fail("consistency", `consistency proof ${m} -> ${n} does not lead to the old root`);
  if (!bytesEqual(sr, root2)) fail("consistency", `consistency proof ${m} -> ${n} does not lead to the new root`);
}

// --- C2SP tlog-proof receipts ------------------------------------------------------------------------------

const RECEIPT_VERSION = "c2sp.org/tlog-proof@v1";
const MAX_PROOF_HASHES = 64; // an inclusion proof in a tree of at most 2**64 leaves has at most 64 hashes

function receiptBase64(text, what) {
  return decodeBase64(text, `receipt ${what}`, { canonical: true, step: "receipt" });
}

/** Parse a C2SP tlog-proof strictly, as receipt.py's parse_receipt: only bytes build_receipt would produce are
 *  accepted. Returns {index, proof, checkpoint, extra} (extra: Uint8Array or null; it is NOT authenticated). */
export function parseReceipt(bytes) {
  requireBytes(bytes, "the receipt", "receipt");
  // The header holds no empty line, so the *first* one ends it; the checkpoint note has its own blank line
  // before its signatures.
  const split = indexOfPair(bytes, NEWLINE);
  if (split < 0) fail("receipt", "malformed receipt: no empty line before the checkpoint");
  const headerBytes = bytes.subarray(0, split);
  if (headerBytes.some((b) => b >= 0x80)) {
    fail("receipt", "malformed receipt: the lines before the checkpoint are not ASCII");
  }
  const checkpoint = bytes.slice(split + 2);
  if (checkpoint.length === 0) fail("receipt", "malformed receipt: the checkpoint is missing");
  const lines = UTF8.decode(headerBytes).split("\n");
  if (lines[0] !== RECEIPT_VERSION) fail("receipt", `not a tlog-proof receipt: first line must be ${RECEIPT_VERSION}`);
  let pos = 1;
  let extra = null;
  if (pos < lines.length && lines[pos].startsWith("extra ")) {
    extra = receiptBase64(lines[pos].slice("extra ".length), "extra data");
    pos++;
  }
  if (pos >= lines.length || !lines[pos].startsWith("index ")) {
    fail("receipt", "malformed receipt: want an 'index <N>' line after the version (and extra) line");
  }
  const digits = lines[pos].slice("index ".length);
  if (!DECIMAL.test(digits) || BigInt(digits) > MAX_UINT64) {
    const index = JSON.stringify(digits);
    fail("receipt", `malformed receipt: index ${index} is not a uint64 in decimal without leading zeros`);
  }
  const hashLines = lines.slice(pos + 1);
  if (hashLines.length > MAX_PROOF_HASHES) {
    fail("receipt", `malformed receipt: more than ${MAX_PROOF_HASHES} inclusion proof hashes`);
  }
  const proof = hashLines.map((line, k) => {
    const h = receiptBase64(line, `proof hash ${k}`);
    if (h.length !== HASH_SIZE) {
      fail("receipt", `malformed receipt: proof hash ${k} is ${h.length} bytes, want ${HASH_SIZE}`);
    }
    return h;
  });
  return { index: BigInt(digits), proof, checkpoint, extra };
}

/** Check offline that `entryBytes` is the leaf the receipt names, in the tree its checkpoint signs (as
 *  receipt.py's verify_receipt): the checkpoint must open with the trusted keys (a key named like the origin
 *  required), and the inclusion proof must lead from leafHash(entryBytes) to the signed root. The extra data
 *  plays no part. Returns the checkpoint. */
export async function verifyReceipt(receiptBytes, entryBytes, keys, origin = undefined) {
  const receipt = parseReceipt(receiptBytes);
  const { checkpoint } = await openCheckpoint(receipt.checkpoint, keys, origin);
  const leaf = await leafHash(requireBytes(entryBytes, "entry bytes", "entry"));
  await verifyInclusionOfEntry(receipt.index, checkpoint, leaf, receipt.proof);
  return checkpoint;
}

// Inclusion in a signed tree; a root mismatch says what it means for the entry.
async function verifyInclusionOfEntry(index, checkpoint, leaf, proof) {
  const computed = await rootFromInclusionProof(index, checkpoint.size, leaf, proof, checkpoint.root);
  if (!bytesEqual(computed, checkpoint.root)) {
    fail(
      "inclusion",
      `inclusion proof does not lead to the signed root of the checkpoint (size ${checkpoint.size}): ` +
        `the entry bytes are not what was recorded at index ${index}, or the proof is not the log's`,
    );
  }
}

/** Verify one entry as served by the audit API, in this order (the VerifyError's `step` names the one that
 *  failed):
 *
 *  1. "leaf": when `leafHash` (base64 or bytes, optional) is given, the leaf hash the server claims must be
 *     SHA-256(0x00 || entryBytes). Nothing is trusted from it; it tells a changed entry from a bad proof, as
 *     the read side's Python client does.
 *  2. "proof": `proof` is an array of canonical base64 hashes, the leaf's sibling first.
 *  3. "checkpoint": `checkpointNote` opens with the trusted `keys` (a key named like its origin; `origin`,
 *     optional, pins the log), as openCheckpoint.
 *  4. "inclusion": the proof leads from leafHash(entryBytes), leaf `index` (BigInt, safe Number or decimal
 *     string), to the checkpoint's signed root for its tree size (RFC 9162 §2.1.3.2).
 *
 *  Returns {checkpoint, leafHash}. */
export async function verifyEntry({ entryBytes, index, proof, checkpointNote, keys, origin, leafHash: claimed }) {
  requireBytes(entryBytes, "entry bytes", "entry");
  const leaf = await leafHash(entryBytes);
  if (claimed !== undefined && claimed !== null) {
    const want =
      claimed instanceof Uint8Array
        ? claimed
        : decodeBase64(claimed, "the leaf hash", { canonical: true, step: "leaf" });
    if (!bytesEqual(want, leaf)) {
      fail(
        "leaf",
        "leaf hash does not match: the entry bytes are not what was recorded " +
          `(SHA-256(0x00 || entry) is ${hex(leaf)}, the server says ${hex(want)})`,
      );
    }
  }
  if (!Array.isArray(proof)) {
    fail("proof", `the inclusion proof must be an array of base64 hashes, got ${describe(proof)}`);
  }
  const hashes = proof.map((h, k) => decodeBase64(h, `inclusion proof hash ${k}`, { canonical: true, step: "proof" }));
  const i = toCount(index, "leaf index", "inclusion");
  const { checkpoint } = await openCheckpoint(checkpointNote, keys, origin);
  await verifyInclusionOfEntry(i, checkpoint, leaf, hashes);
  return { checkpoint, leafHash: leaf };
}

// --- LedgerEntry (proto/authzledger/v1/ledger.proto), protobuf wire format -----------------------------------
//
// Decoded here from the verified bytes, so the page shows what was hashed, not the server's rendering. The
// rules are upb's (the Python protobuf runtime that reads the ledger), so the two agree on every input:
// a known field with an unexpected wire type is an unknown field; unknown fields are skipped by wire type
// (groups included, to a nesting depth of 100); tags and lengths are varints of at most 5 bytes; other
// varints at most 10 bytes, truncated to the field's width; proto3 strings must be valid UTF-8; the last
// value of a repeated scalar field wins and repeated message fields merge.

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;
const MAX_DEPTH = 100; // upb's default nesting limit for messages and groups

const OUTCOME_NAMES = ["OUTCOME_UNSPECIFIED", "OUTCOME_ALLOW", "OUTCOME_DENY", "OUTCOME_ERROR"];

// field number -> [name, type]; the type fixes the wire type and the decoded value.
const ADDRESS_FIELDS = new Map([
  [1, ["address", "string"]],
  [2, ["port", "uint32"]],
  [3, ["principal", "string"]],
]);

const LEDGER_ENTRY_FIELDS = new Map([
  [1, ["sequence", "uint64"]],
  [2, ["schema", "uint32"]],
  [3, ["time_unix_nano", "fixed64"]],
  [4, ["decision_id", "string"]],
  [5, ["request_id", "string"]],
  [6, ["source", ADDRESS_FIELDS]],
  [7, ["destination", ADDRESS_FIELDS]],
  [8, ["method", "string"]],
  [9, ["host", "string"]],
  [10, ["path", "string"]],
  [11, ["input_json", "bytes"]],
  [12, ["engine", "string"]],
  [13, ["decision_path", "string"]],
  [14, ["policy_version", "string"]],
  [15, ["result_json", "bytes"]],
  [16, ["outcome", "enum"]],
  [17, ["allowed", "bool"]],
  [18, ["http_status", "uint32"]],
  [19, ["dry_run", "bool"]],
  [20, ["grpc_code", "uint32"]],
  [21, ["error", "string"]],
  [22, ["eval_ns", "uint64"]],
  [23, ["traceparent", "string"]],
  [24, ["tracestate", "string"]],
  [25, ["b3", "string"]],
]);

const DEFAULTS = { uint64: 0n, fixed64: 0n, uint32: 0, enum: 0, bool: false, string: "" };

function wireTypeOf(type) {
  if (type instanceof Map || type === "string" || type === "bytes") return LEN;
  return type === "fixed64" ? I64 : VARINT;
}

function corrupt(why) {
  fail("entry", `the entry bytes are not a valid LedgerEntry: ${why}`);
}

class WireReader {
  constructor(bytes, pos, end) {
    this.bytes = bytes;
    this.pos = pos;
    this.end = end;
  }

  get done() {
    return this.pos >= this.end;
  }

  byte() {
    if (this.pos >= this.end) corrupt("it ends in the middle of a field");
    return this.bytes[this.pos++];
  }

  // A base-128 varint of at most maxBytes bytes, as a BigInt of up to 7 * maxBytes bits.
  varint(maxBytes) {
    let value = 0n;
    for (let k = 0; k < maxBytes; k++) {
      const b = this.byte();
      value |= BigInt(b & 0x7f) << BigInt(7 * k);
      if (b < 0x80) return value;
    }
    return corrupt(`a varint is longer than ${maxBytes} bytes`);
  }

  // Tags are uint32 in at most 5 bytes; field number 0 does not exist.
  tag() {
    const tag = this.varint(5);
    if (tag > 0xffffffffn) corrupt("a field tag is larger than 32 bits");
    const number = Number(tag >> 3n);
    if (number === 0) corrupt("field number 0");
    return [number, Number(tag & 7n)];
  }

  // Lengths are varints of at most 5 bytes and must fit in what is left.
  lengthDelimited() {
    const length = this.varint(5);
    if (length > BigInt(this.end - this.pos)) corrupt("a length runs past the end of its message");
    const start = this.pos;
    this.pos += Number(length);
    return [start, this.pos];
  }

  fixed(size) {
    if (this.end - this.pos < size) corrupt("it ends in the middle of a fixed-width field");
    let value = 0n;
    for (let k = size - 1; k >= 0; k--) value = (value << 8n) | BigInt(this.bytes[this.pos + k]);
    this.pos += size;
    return value;
  }

  // Skip a field's value by its wire type; groups are skipped to their matching end tag.
  skip(number, wireType, depth) {
    switch (wireType) {
      case VARINT:
        this.varint(10);
        return;
      case I64:
        this.fixed(8);
        return;
      case LEN:
        this.lengthDelimited();
        return;
      case I32:
        this.fixed(4);
        return;
      case SGROUP:
        this.skipGroup(number, depth);
        return;
      case EGROUP:
        corrupt(`an end-group tag for field ${number} without its start`);
        return;
      default:
        corrupt(`wire type ${wireType} does not exist`);
    }
  }

  skipGroup(number, depth) {
    if (depth === 0) corrupt(`nesting deeper than ${MAX_DEPTH} levels`);
    for (;;) {
      if (this.done) corrupt(`the group of field ${number} is not terminated`);
      const [inner, wireType] = this.tag();
      if (wireType === EGROUP) {
        if (inner !== number) corrupt(`the group of field ${number} ends with an end tag for field ${inner}`);
        return;
      }
      this.skip(inner, wireType, depth - 1);
    }
  }
}

function newMessage(fields) {
  const msg = {};
  for (const [, [name, type]] of fields) {
    if (type instanceof Map) msg[name] = null; // absent, as protobuf's HasField tells
    else msg[name] = type === "bytes" ? new Uint8Array(0) : DEFAULTS[type];
  }
  msg.unknown_fields = [];
  return msg;
}

function readScalar(reader, type, name) {
  switch (type) {
    case "uint64":
      return BigInt.asUintN(64, reader.varint(10));
    case "uint32":
      return Number(BigInt.asUintN(32, reader.varint(10)));
    case "enum": // open proto3 enum: any int32 value is kept
      return Number(BigInt.asIntN(32, reader.varint(10)));
    case "bool":
      return reader.varint(10) !== 0n;
    case "fixed64":
      return reader.fixed(8);
    case "bytes": {
      const [start, end] = reader.lengthDelimited();
      return reader.bytes.slice(start, end);
    }
    case "string": {
      const [start, end] = reader.lengthDelimited();
      const text = utf8Decode(reader.bytes.subarray(start, end));
      if (text === null) corrupt(`field ${name} is not valid UTF-8`);
      return text;
    }
    default:
      throw new Error(`unreachable: type ${type}`);
  }
}

function decodeInto(msg, reader, fields, depth) {
  while (!reader.done) {
    const [number, wireType] = reader.tag();
    const field = fields.get(number);
    if (!field || wireTypeOf(field[1]) !== wireType) {
      reader.skip(number, wireType, depth);
      msg.unknown_fields.push({ number, wire_type: wireType });
      continue;
    }
    const [name, type] = field;
    if (type instanceof Map) {
      if (depth === 0) corrupt(`nesting deeper than ${MAX_DEPTH} levels`);
      const [start, end] = reader.lengthDelimited();
      msg[name] ??= newMessage(type);
      decodeInto(msg[name], new WireReader(reader.bytes, start, end), type, depth - 1);
    } else {
      msg[name] = readScalar(reader, type, name);
    }
  }
  return msg;
}

/** Decode the protobuf encoding of an authzledger.v1.LedgerEntry. Field names are the .proto's; uint64 and
 *  fixed64 fields are BigInt; `source` / `destination` are null when absent; `input_json_text` and
 *  `result_json_text` are the JSON bytes as text (null if not UTF-8); `outcome_name` is the enum value's
 *  name (null for a number this version does not know); `unknown_fields` lists {number, wire_type} of fields
 *  it does not know (a newer writer's), in order. Throws VerifyError (step "entry") for malformed bytes. */
export function decodeLedgerEntry(bytes) {
  requireBytes(bytes, "entry bytes", "entry");
  const reader = new WireReader(bytes, 0, bytes.length);
  const msg = decodeInto(newMessage(LEDGER_ENTRY_FIELDS), reader, LEDGER_ENTRY_FIELDS, MAX_DEPTH);
  msg.input_json_text = utf8Decode(msg.input_json);
  msg.result_json_text = utf8Decode(msg.result_json);
  msg.outcome_name = OUTCOME_NAMES[msg.outcome] ?? null;
  return msg;
}
