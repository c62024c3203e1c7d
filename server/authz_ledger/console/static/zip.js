// ZIP archives as an evidence pack uses them (PKWARE APPNOTE.TXT §4.3), read in the browser: the central
// directory, each member's local header, deflate through the browser's own DecompressionStream, and every
// member's CRC-32 and size checked, so a byte damaged anywhere in a member's data is named by member.

const LENIENT = new TextDecoder("utf-8", { ignoreBOM: true });

const EOCD_SIG = 0x06054b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const STORED = 0;
const DEFLATED = 8;

const u16 = (b, o) => b[o] | (b[o + 1] << 8);
const u32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 0x1000000;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function endOfCentralDirectory(data) {
  // The record is 22 bytes plus a comment of up to 65,535: search backwards for its signature.
  for (let p = data.length - 22; p >= Math.max(0, data.length - 22 - 0xffff); p--) {
    if (u32(data, p) === EOCD_SIG && p + 22 + u16(data, p + 20) === data.length) return p;
  }
  return -1;
}

function centralDirectory(data) {
  const eocd = endOfCentralDirectory(data);
  if (eocd < 0) throw new Error("no end of central directory record");
  const count = u16(data, eocd + 10);
  const size = u32(data, eocd + 12);
  let p = u32(data, eocd + 16);
  if (p + size > eocd) throw new Error("the central directory runs past its end record");
  const out = [];
  for (let k = 0; k < count; k++) {
    if (p + 46 > eocd || u32(data, p) !== CENTRAL_SIG) throw new Error(`central directory entry ${k + 1} is damaged`);
    const nameLength = u16(data, p + 28);
    const nameBytes = data.subarray(p + 46, p + 46 + nameLength);
    out.push({
      name: LENIENT.decode(nameBytes), nameBytes, method: u16(data, p + 10), crc: u32(data, p + 16),
      compressed: u32(data, p + 20), size: u32(data, p + 24), local: u32(data, p + 42),
    });
    p += 46 + nameLength + u16(data, p + 30) + u16(data, p + 32);
  }
  return out;
}

async function readMember(data, e) {
  const p = e.local;
  if (p + 30 > data.length || u32(data, p) !== LOCAL_SIG) throw new Error("its local header is damaged");
  const nameLength = u16(data, p + 26);
  const local = data.subarray(p + 30, p + 30 + nameLength);
  if (local.length !== e.nameBytes.length || local.some((x, i) => x !== e.nameBytes[i])) {
    throw new Error("its local header names another file than the central directory");
  }
  const start = p + 30 + nameLength + u16(data, p + 28);
  if (start + e.compressed > data.length) throw new Error("it runs past the end of the archive");
  const raw = data.subarray(start, start + e.compressed);
  let out;
  if (e.method === STORED) out = raw.slice();
  else if (e.method === DEFLATED) {
    try {
      out = await inflateRaw(raw);
    } catch {
      throw new Error("its deflate data is damaged");
    }
  } else throw new Error(`compression method ${e.method} is not one a pack uses`);
  if (out.length !== e.size) throw new Error(`it inflates to ${out.length} bytes, the directory says ${e.size}`);
  if (crc32(out) !== e.crc) throw new Error("bad CRC-32: its bytes were changed or damaged");
  return out;
}

/** Every member of `expected` that can be read, and what stopped the others: as pack.py's read_zip. */
export async function readArchive(data, expected) {
  const members = new Map();
  const problems = [];
  let entries;
  try {
    entries = centralDirectory(data);
  } catch (e) {
    problems.push(["(archive)", `not a ZIP archive, or its directory is damaged: ${e.message}`]);
    return { members, problems };
  }
  const names = entries.map((e) => e.name);
  for (const name of new Set(names)) {
    if (!expected.includes(name)) problems.push([name, "is not part of an evidence pack (unexpected member)"]);
    else if (names.filter((n) => n === name).length > 1) problems.push([name, "appears more than once"]);
  }
  for (const name of expected) {
    const e = entries.find((x) => x.name === name);
    if (!e) {
      problems.push([name, "is missing"]);
      continue;
    }
    try {
      members.set(name, await readMember(data, e));
    } catch (err) {
      problems.push([name, `cannot be read: ${err.message}`]);
    }
  }
  return { members, problems };
}
