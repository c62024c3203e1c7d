// The console's browser side: the verifier key the auditor trusts, verification of an entry against a signed
// checkpoint (verify.js, WebCrypto), a dropped receipt checked offline, and the live tail. No framework: the
// pages are rendered by the server; this only adds what must happen in the browser.
import {
  VerifyError, b64decode, b64encode, decodeLedgerEntry, hex, leafHash, parseVerifierKey, verifyEntry, verifyReceipt,
} from "./verify.js";
import { checkEvidencePack } from "./evidence.js";

const PINNED = "authz-ledger-console-vkeys";

function serverKeys() {
  try { return JSON.parse(document.body.dataset.vkeys || "[]"); } catch { return []; }
}

// The keys verdicts use: the ones the auditor pinned in this browser, else the console's own (--vkey).
function trustedKeyTexts() {
  const pinned = localStorage.getItem(PINNED);
  return pinned ? { texts: pinned.split("\n").filter((l) => l.trim()), source: "pinned in this browser" }
    : { texts: serverKeys(), source: "given by this console (--vkey): pin your own to trust the key, not the server" };
}

async function trustedKeys() {
  const { texts } = trustedKeyTexts();
  if (!texts.length) throw new VerifyError("no verifier key: paste one under 'Verifier key'");
  return Promise.all(texts.map((t) => parseVerifierKey(t.trim())));
}

function setupKeyBox() {
  const box = document.getElementById("vkey");
  if (!box) return;
  const { texts, source } = trustedKeyTexts();
  box.value = texts.join("\n");
  document.getElementById("vkey-source").textContent = `In use: ${source}.`;
  document.getElementById("vkey-save").addEventListener("click", async () => {
    try {
      for (const line of box.value.split("\n").filter((l) => l.trim())) await parseVerifierKey(line.trim());
      localStorage.setItem(PINNED, box.value.trim());
      location.reload();
    } catch (e) { document.getElementById("vkey-source").textContent = `Not a verifier key: ${e.message}`; }
  });
  document.getElementById("vkey-reset").addEventListener("click", () => { localStorage.removeItem(PINNED); location.reload(); });
}

function verdict(ok, text) {
  const el = document.getElementById("verdict");
  el.className = `verdict ${ok === null ? "pending" : ok ? "ok" : "failed"}`;
  el.textContent = text;
}

function step(text, ok = true, testid = "") {
  const li = document.createElement("li");
  li.className = ok === null ? "note" : ok ? "ok" : "failed";
  li.textContent = text;
  if (testid) li.dataset.testid = testid;
  document.getElementById("steps").append(li);
}

async function fetchJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body.error || `${url}: HTTP ${r.status}`), { status: r.status });
  return body;
}

// What the page shows must be what the verified bytes say: a server could serve good bytes beside a false page.
function comparePage(section, decoded) {
  const shown = { decision_id: section.dataset.decisionId, path: section.dataset.path };
  for (const [k, v] of Object.entries(shown)) {
    if ((decoded[k] ?? "") !== v) throw new VerifyError(`the page shows ${k} "${v}" but the verified bytes say "${decoded[k]}"`);
  }
}

async function verifyEntryPage() {
  const section = document.getElementById("entry");
  const index = Number(section.dataset.index);
  // A console over several shards: this entry is in the log of `shard` (its origin); only the key named like
  // that origin may vouch for it, and the checkpoint must be that shard's.
  const shard = section.dataset.shard || undefined;
  const sq = shard ? `?shard=${encodeURIComponent(shard)}` : "";
  try {
    let keys = await trustedKeys();
    if (shard) {
      keys = keys.filter((k) => k.name === shard);
      if (!keys.length) throw new VerifyError(`no verifier key named like this shard, ${shard}: pin its key under 'Verifier key'`);
    }
    const [entry, inclusion] = await Promise.all([fetchJSON(`/api/entry/${index}${sq}`), fetchJSON(`/api/proof/${index}${sq}`)]);
    const entryBytes = b64decode(entry.entry_b64);
    step(`entry bytes: ${entryBytes.length} B, leaf hash ${b64encode(await leafHash(entryBytes))} (RFC 9162 §2.1.1)`);
    const { checkpoint } = await verifyEntry({
      entryBytes, index, proof: inclusion.proof, checkpointNote: new TextEncoder().encode(inclusion.checkpoint), keys,
      leafHash: inclusion.leaf_hash, origin: shard,
    });
    step(`checkpoint: ${checkpoint.origin}, tree size ${checkpoint.size}, root ${b64encode(checkpoint.root)}, signature checked with ${keys.map((k) => k.name).join(", ")}`);
    step(`inclusion proof: ${inclusion.proof.length} hashes lead from the leaf to that root (RFC 9162 §2.1.3.2)`);
    const decoded = decodeLedgerEntry(entryBytes);
    comparePage(section, decoded);
    step("the fields on this page are the ones the verified bytes hold");
    verdict(true, `verified: entry ${index} is in the signed log of ${checkpoint.size} entries, unaltered`);
  } catch (e) {
    if (e.status === 409) {
      verdict(null, `not covered by a signed checkpoint yet: ${e.message} (checking again shortly)`);
      setTimeout(() => { document.getElementById("steps").replaceChildren(); verifyEntryPage(); }, 2000);
      return;
    }
    step(e.message, false);
    verdict(false, `FAILED: ${e.message}`);
  }
}

async function readFile(file) { return new Uint8Array(await file.arrayBuffer()); }

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04]; // "PK\x03\x04": an evidence pack (a ZIP archive)

// An evidence pack, checked here with the pinned key as verify-evidence checks it (evidence.js says what it
// leaves to verify-evidence, and the page lists that too).
async function verifyPack(bytes, name) {
  const keys = await trustedKeys();
  verdict(null, `checking ${name}…`);
  const onProgress = (done, total) => {
    verdict(null, `checking ${name}: ${done} of ${total} entries`);
    return new Promise((resolve) => setTimeout(resolve)); // let the page repaint
  };
  const v = await checkEvidencePack(bytes, keys, { onProgress });
  if (!v.ok) {
    for (const f of v.findings) step(`${f.member}${f.where ? ` ${f.where}` : ""}: ${f.message}`, false, "finding");
    if (v.truncated) step("… and more: only the first 100 findings are listed", false);
    const first = v.findings[0];
    verdict(false, `FAILED: ${v.findings.length}${v.truncated ? "+" : ""} finding(s) in ${name}, first in ${first.member}`);
    return;
  }
  const m = v.manifest;
  const cp = v.checkpoint;
  step(`checkpoint.txt: ${cp.origin}, tree size ${cp.size}, root ${b64encode(cp.root)}, signature checked with ${keys.map((k) => k.name).join(", ")}`);
  step(v.latest.size === cp.size ? "latest-checkpoint.txt: the same tree (the log has not grown since)"
    : `latest-checkpoint.txt: tree size ${v.latest.size}; consistency-proof.txt proves it extends the first (RFC 9162 §2.1.4)`);
  step(`entries.jsonl: ${v.entries} decisions, indexes ${m.first_index} to ${m.end_index - 1}, each line rebuilt from its entry bytes and proved in the signed tree (RFC 9162 §2.1.3)`);
  step(m.complete ? "complete: every entry of that run of the log is here (no filter was applied)"
    : `filtered (${m.selection.filter}): only matching entries are here`);
  step(`manifest.json: the SHA-256 of every member matches; made ${new Date(m.created_unix_nano / 1e6).toISOString()}`);
  for (const c of v.cosignedBy) {
    step(`checkpoint.txt cosigned by the witness ${c.witness} at ${new Date(Number(c.timestamp) * 1000).toISOString()} (C2SP tlog-cosignature, with the pack's copy of its key)`);
  }
  for (const n of v.notChecked) step(`not checked in this browser: ${n}; authz-ledger verify-evidence checks it`, null, "not-checked");
  verdict(true, `verified: ${v.entries} decisions of ${cp.origin} in ${name}, recorded unaltered, and the log only grew since`);
}

async function verifyDropped(files) {
  document.getElementById("steps").replaceChildren();
  try {
    let receipt = null, entryBytes = null;
    for (const f of files) {
      const bytes = await readFile(f);
      if (ZIP_MAGIC.every((b, i) => bytes[i] === b)) {
        await verifyPack(bytes, f.name);
        return;
      }
      const head = new TextDecoder().decode(bytes.slice(0, 23));
      if (head === "c2sp.org/tlog-proof@v1\n".slice(0, 23)) receipt = bytes; else entryBytes = bytes;
    }
    if (!receipt) throw new VerifyError("no receipt among the files (its first line is c2sp.org/tlog-proof@v1)");
    if (!entryBytes) throw new VerifyError("no entry bytes among the files: add the entry the receipt is for");
    const keys = await trustedKeys();
    const cp = await verifyReceipt(receipt, entryBytes, keys);
    step(`checkpoint: ${cp.origin}, tree size ${cp.size}, signature checked with ${keys.map((k) => k.name).join(", ")}`);
    const decoded = decodeLedgerEntry(entryBytes);
    step(`entry: decision ${decoded.decision_id}, ${decoded.method} ${decoded.path}, ${decoded.outcome_name}`);
    verdict(true, `verified: the entry is in the signed log of ${cp.size} entries (leaf hash ${hex(await leafHash(entryBytes)).slice(0, 16)}…)`);
  } catch (e) {
    step(e.message, false);
    verdict(false, `FAILED: ${e.message}`);
  }
}

function setupDrop() {
  const drop = document.getElementById("drop");
  document.getElementById("files").addEventListener("change", (ev) => verifyDropped([...ev.target.files]));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); verifyDropped([...ev.dataTransfer.files]); });
}

function setupLive() {
  const box = document.getElementById("live");
  if (!box) return;
  let source = null;
  box.addEventListener("change", () => {
    if (source) { source.close(); source = null; }
    if (!box.checked) return;
    const params = new URLSearchParams(location.search);
    params.delete("before");
    // Follow on from the ledger's size when this page was rendered: nothing recorded in between is missed.
    params.set("after", document.getElementById("rows").dataset.after);
    source = new EventSource(`/api/tail?${params}`);
    source.addEventListener("row", (ev) => {
      const body = document.getElementById("rows");
      body.insertAdjacentHTML("afterbegin", ev.data);
      body.firstElementChild.classList.add("new");
    });
  });
}

// The replay page while a replay runs: its progress, asked for every second; the report when it is there. (Without
// scripts a meta refresh reloads the page instead.)
function followReplay() {
  const el = document.querySelector('[data-testid="replay-progress"]');
  if (!el) return;
  const tick = async () => {
    const r = await fetch(el.dataset.json, { credentials: "same-origin" }).catch(() => null);
    if (!r || r.status !== 202) { location.replace(el.dataset.url); return; } // the report, or what went wrong
    const p = await r.json();
    el.querySelector(".progress").textContent = (p.state === "starting" ? "starting the engine (loading and compiling the policy)"
      : `${p.evaluated} decisions evaluated, at entry ${p.position} of ${p.size}`) + ` (${p.seconds.toFixed(1)} s)`;
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

setupKeyBox();
const page = document.body.dataset.page;
if (page === "entry") verifyEntryPage();
if (page === "verify") setupDrop();
if (page === "search") setupLive();
if (page === "replay") followReplay();
