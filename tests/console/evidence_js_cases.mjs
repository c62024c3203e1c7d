// Runs the console's evidence-pack check (server/authz_ledger/console/static/evidence.js) for
// tests/console/test_evidence_js.py, in one process for the whole batch.
//
// stdin:  a JSON array of cases, each {"pack": <path of a pack>, "vkeys": [<verifier key text>, ...]}.
// stdout: a JSON array with one verdict per case, in order: {"ok", "findings": [{member, where, message}],
//         "entries", "notChecked", "cosignedBy"}, or {"error": <message>} when the check itself threw.

import { readFileSync } from "node:fs";
import { checkEvidencePack } from "../../server/authz_ledger/console/static/evidence.js";
import { parseVerifierKey } from "../../server/authz_ledger/console/static/verify.js";

const cases = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const c of cases) {
  try {
    const keys = await Promise.all(c.vkeys.map((k) => parseVerifierKey(k)));
    const v = await checkEvidencePack(new Uint8Array(readFileSync(c.pack)), keys);
    out.push({ ok: v.ok, findings: v.findings, entries: v.entries, notChecked: v.notChecked, cosignedBy: v.cosignedBy.map((c) => ({ witness: c.witness, timestamp: Number(c.timestamp) })) });
  } catch (e) {
    out.push({ error: `${e.name}: ${e.message}\n${e.stack}` });
  }
}
process.stdout.write(JSON.stringify(out));
