// The console's size budget, checked after every build: the first page (index.html, its entry
// script and CSS) and everything together, gzipped as flowd serves them.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

export const budget = { firstPageKiB: 120, totalKiB: 450 };

const dist = new URL("../dist/", import.meta.url).pathname;
const gz = (p) => gzipSync(readFileSync(p), { level: 6 }).length;

const html = readFileSync(join(dist, "index.html"), "utf8");
const first = [join(dist, "index.html"), ...[...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => join(dist, m[1]))];
// Chunks the entry imports statically load with it (modulepreload links are listed in index.html).
const firstBytes = first.reduce((n, p) => n + gz(p), 0);
let totalBytes = 0;
const walk = (d) => {
  for (const f of readdirSync(d)) {
    const p = join(d, f);
    if (statSync(p).isDirectory()) walk(p);
    else if (/\.(js|css|html|svg)$/.test(f)) totalBytes += gz(p);
  }
};
walk(dist);
const kib = (n) => (n / 1024).toFixed(1);
console.log(`console bundle: first page ${kib(firstBytes)} KiB gzipped (budget ${budget.firstPageKiB}), all ${kib(totalBytes)} KiB (budget ${budget.totalKiB})`);
if (firstBytes > budget.firstPageKiB * 1024 || totalBytes > budget.totalKiB * 1024) {
  console.error("console bundle: over budget (scripts/budget.mjs); split the code or drop a dependency");
  process.exit(1);
}
