// vaeserve's seed contract in plain JavaScript (no dependencies): a second, independent
// implementation, so the contract is shown to be an algorithm and not a NumPy call.
//
// Row i, column block j of a seed is Philox4x32-10 of counter (i lo, i hi, j, 0) under key
// (seed lo, seed hi); words x0..x3 give columns 4j..4j+3 by Box-Muller in float64 on
// u(x) = (x + 0.5) * 2**-32, rounded to float32. See docs/service.md ("Seeds").
//
//     node tests/node/philox.mjs protos/vaeserve/v1/seed_vectors.json
//
// checks the Random123 known answers exactly and the seed vectors within one float32 ulp
// (JavaScript's Math.log, Math.cos and Math.sin need not be correctly rounded), and exits 1 on
// any mismatch.

import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const M0 = 0xd2511f53n;
const M1 = 0xcd9e8d57n;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_PI = 6.283185307179586; // the float64 nearest 2*pi
const MASK32 = 0xffffffffn;

/** Philox4x32-10: four uint32 counter words and two key words (Numbers) to four uint32 words. */
export function philox4x32_10(counter, key) {
  let [c0, c1, c2, c3] = counter;
  let [k0, k1] = key;
  for (let round = 0; round < 10; round++) {
    const p0 = BigInt(c0) * M0;
    const p1 = BigInt(c2) * M1;
    const hi0 = Number(p0 >> 32n);
    const hi1 = Number(p1 >> 32n);
    [c0, c1, c2, c3] = [
      (hi1 ^ c1 ^ k0) >>> 0,
      Number(p1 & MASK32),
      (hi0 ^ c3 ^ k1) >>> 0,
      Number(p0 & MASK32),
    ];
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** (x + 0.5) / 2**32: exact in float64 and strictly inside (0, 1), so log never sees 0. */
function uniform(x) {
  return (x + 0.5) * 2 ** -32;
}

/** Rows offset..offset+n-1 of a seed (BigInts), each an array of dim float32 values. */
export function normalRows(seed, offset, n, dim) {
  const key = [Number(seed & MASK32), Number(seed >> 32n)];
  const rows = [];
  for (let k = 0n; k < BigInt(n); k++) {
    const i = offset + k;
    const row = [];
    for (let j = 0; row.length < dim; j++) {
      const x = philox4x32_10([Number(i & MASK32), Number(i >> 32n), j, 0], key);
      for (const [a, b] of [[x[0], x[1]], [x[2], x[3]]]) {
        const r = Math.sqrt(-2 * Math.log(uniform(a)));
        const t = TWO_PI * uniform(b);
        row.push(Math.fround(r * Math.cos(t)), Math.fround(r * Math.sin(t)));
      }
    }
    rows.push(row.slice(0, dim));
  }
  return rows;
}

const view = new DataView(new ArrayBuffer(4));

/** The float32's bits as 8 hex digits, the form the vectors file uses. */
export function float32Bits(value) {
  view.setFloat32(0, value);
  return view.getUint32(0).toString(16).padStart(8, "0");
}

/** Distance in float32 ulps between two bit patterns (ordered so that -0 and +0 are 0 apart). */
function ulps(aHex, bHex) {
  const order = (h) => {
    const u = parseInt(h, 16);
    return u >= 0x80000000 ? 0x80000000 - u : u;
  };
  return Math.abs(order(aHex) - order(bHex));
}

const hex = (w) => w.toString(16).padStart(8, "0");

/** Check a vectors file; returns the lines to print and whether everything matched. */
export function check(vectors) {
  const problems = [];
  for (const kat of vectors.philox4x32_10) {
    const got = philox4x32_10(kat.counter.map((h) => parseInt(h, 16)), kat.key.map((h) => parseInt(h, 16)));
    if (got.map(hex).join(" ") !== kat.output.join(" ")) {
      problems.push(`philox4x32_10 ${kat.counter} ${kat.key}: got ${got.map(hex)}, want ${kat.output}`);
    }
  }
  let values = 0;
  let exact = 0;
  for (const c of vectors.rows) {
    const rows = normalRows(BigInt(c.seed), BigInt(c.offset), c.n, c.dim);
    rows.forEach((row, r) =>
      row.forEach((value, col) => {
        const want = c.float32_bits[r][col];
        const got = float32Bits(value);
        const d = ulps(got, want);
        values++;
        if (d === 0) exact++;
        if (d > 1) problems.push(`seed ${c.seed} row ${BigInt(c.offset) + BigInt(r)} col ${col}: got ${got}, want ${want}`);
      }),
    );
  }
  const lines = [...problems, `${vectors.philox4x32_10.length} Philox known answers, ${values} values (${exact} bit-exact, the rest within 1 float32 ulp)`];
  return { ok: problems.length === 0 && values > 0, lines };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.length !== 3) {
    console.error("usage: node philox.mjs SEED_VECTORS.json");
    process.exit(2);
  }
  const { ok, lines } = check(JSON.parse(readFileSync(process.argv[2], "utf8")));
  for (const line of lines) console.log(line);
  process.exit(ok ? 0 : 1);
}
