// compare_v3.mjs MOUNT DIRECT
//
// Reads every zarr v3 array under DIRECT (every zarr.json whose node_type is "array") with
// zarrita.js and @zarrita/storage's FileSystemStore, once under MOUNT and once under DIRECT,
// and checks that both give the same dtype, shape and values. An array zarrita cannot read
// from DIRECT must fail the same way under MOUNT. The arrays found by walking MOUNT must be
// the same set as those found by walking DIRECT (walking exercises readdir of the mount).
//
// Prints one JSON summary line on stdout; exits 1 on any difference, 2 on bad usage.
import * as fs from "node:fs/promises";
import * as path from "node:path";
import { FileSystemStore } from "@zarrita/storage";
import * as zarr from "zarrita";

async function findArrays(root) {
  const found = [];
  async function walk(dir) {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        await walk(p);
      } else if (e.name === "zarr.json") {
        const meta = JSON.parse(await fs.readFile(p, "utf8"));
        if (meta.node_type === "array") {
          found.push(path.relative(root, dir).split(path.sep).join("/"));
        }
      }
    }
  }
  await walk(root);
  return found.sort();
}

// Turns whatever zarrita returns (typed arrays, BigInt arrays, string arrays, BoolArray,
// UnicodeStringArray, ...) into a JSON-able array of plain values so both sides compare equal
// exactly when their elements are equal.
function plainValues(data) {
  const out = [];
  if (data === null || data === undefined) return out;
  const n = data.length;
  const get = typeof data.get === "function" ? (i) => data.get(i) : (i) => data[i];
  for (let i = 0; i < n; i++) {
    let v = get(i);
    if (typeof v === "bigint") v = `${v}n`;
    else if (typeof v === "number" && Number.isNaN(v)) v = "NaN";
    else if (typeof v === "number" && !Number.isFinite(v)) v = v > 0 ? "+Inf" : "-Inf";
    else if (typeof v === "number" && Object.is(v, -0)) v = "-0";
    else if (v instanceof Uint8Array) v = Array.from(v);
    out.push(v);
  }
  return out;
}

async function readArray(root, rel) {
  const store = new FileSystemStore(root);
  const loc = rel === "" ? zarr.root(store) : zarr.root(store).resolve(rel);
  const arr = await zarr.open(loc, { kind: "array" });
  const chunk = await zarr.get(arr);
  return {
    dtype: String(arr.dtype),
    shape: Array.from(chunk.shape),
    values: JSON.stringify(plainValues(chunk.data)),
    kind: chunk.data?.constructor?.name ?? typeof chunk.data,
  };
}

async function attempt(root, rel) {
  try {
    return { ok: true, result: await readArray(root, rel) };
  } catch (err) {
    const msg = String(err?.message ?? err).split(root).join("<ROOT>");
    return { ok: false, error: `${err?.name ?? "Error"}: ${msg}` };
  }
}

async function main() {
  const [mount, direct] = process.argv.slice(2);
  if (!mount || !direct) {
    console.error("usage: node compare_v3.mjs MOUNT DIRECT");
    process.exit(2);
  }
  const problems = [];
  const directArrays = await findArrays(direct);
  const mountArrays = await findArrays(mount);
  if (JSON.stringify(directArrays) !== JSON.stringify(mountArrays)) {
    const onlyDirect = directArrays.filter((a) => !mountArrays.includes(a));
    const onlyMount = mountArrays.filter((a) => !directArrays.includes(a));
    problems.push(`array sets differ: only in direct ${JSON.stringify(onlyDirect)}, only in mount ${JSON.stringify(onlyMount)}`);
  }
  let compared = 0;
  let bothFailed = 0;
  for (const rel of directArrays) {
    const d = await attempt(direct, rel);
    const m = await attempt(mount, rel);
    if (d.ok !== m.ok) {
      problems.push(`${rel}: direct ${d.ok ? "ok" : d.error} but mount ${m.ok ? "ok" : m.error}`);
      continue;
    }
    if (!d.ok) {
      bothFailed++;
      if (d.error !== m.error) problems.push(`${rel}: different errors: direct ${d.error} / mount ${m.error}`);
      else console.error(`# ${rel}: unreadable both ways: ${d.error}`);
      continue;
    }
    for (const k of ["dtype", "shape", "kind", "values"]) {
      const a = JSON.stringify(d.result[k]);
      const b = JSON.stringify(m.result[k]);
      if (a !== b) problems.push(`${rel}: ${k} differs: direct ${a.slice(0, 200)} / mount ${b.slice(0, 200)}`);
    }
    compared++;
  }
  for (const p of problems) console.error(`DIFF ${p}`);
  console.log(JSON.stringify({ arrays: directArrays.length, compared, both_failed: bothFailed, problems: problems.length }));
  process.exit(problems.length === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(`compare_v3: ${err?.stack ?? err}`);
  process.exit(1);
});
