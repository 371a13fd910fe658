// The browser's side of the proof of work's cost (issue 18): usher's own solver
// (/.usher/challenge.js) solving 64 puzzles of 13 bits in headless Chromium. Twice: as the
// page runs it, in a Web Worker; and the same code on the page's main thread, at 1×, 4×
// (Lighthouse's mid-range phone) and 6× CPU throttling, because Chromium's throttling slows
// the main thread only (a worker measured under it keeps most of its speed). The solver tries
// nonces from 0, so the hashes computed are the sum of (nonce + 1): the rate is exact.
//
//   node loadtest/challenge.mjs http://127.0.0.1:PORT     (any usher: the worker is an asset)
import { launch } from "../tests/browser/lib.mjs";

const [url] = process.argv.slice(2);
const browser = await launch(process.env.CHROMIUM || "/usr/bin/chromium");
const rows = [];
const source = await (await fetch(url + "/.usher/challenge.js")).text();
for (const rate of [1, 4, 6]) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate });
  const run = await page.evaluate((source) => {
    const solver = new Function("self", source + "; return { sha256: sha256, solve: solve };")({});
    const started = performance.now();
    let hashes = 0;
    for (let i = 0; i < 64; i++) hashes += solver.solve(solver.sha256("main-" + i + ":" + i), 13) + 1;
    return { ms: performance.now() - started, hashes };
  }, source);
  console.log("main thread " + rate + "x: " + run.hashes + " hashes in " + Math.round(run.ms) + " ms: " +
    Math.round(run.hashes / run.ms * 1000) + " hashes/s");
  rows.push({ where: "main thread", rate, hashes: run.hashes, ms: run.ms, perSecond: Math.round(run.hashes / run.ms * 1000) });
  await context.close();
}
for (const rate of [1, 4, 6]) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url + "/.usher/challenge.js");
  const cdp = await context.newCDPSession(page);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate });
  const runs = [];
  for (let i = 0; i < 3; i++) {
    runs.push(await page.evaluate((token) => new Promise((done) => {
      const w = new Worker("/.usher/challenge.js");
      const started = performance.now();
      w.onmessage = (e) => {
        if (!e.data.nonces) return;
        const ms = performance.now() - started;
        done({ ms, hashes: e.data.nonces.reduce((a, n) => a + n + 1, 0) });
        w.terminate();
      };
      w.postMessage({ token, bits: 13, puzzles: 64 });
    }), "measure-" + rate + "-" + i));
  }
  const hashes = runs.reduce((a, r) => a + r.hashes, 0), ms = runs.reduce((a, r) => a + r.ms, 0);
  rows.push({ where: "worker", rate, hashes, ms, perSecond: Math.round(hashes / ms * 1000) });
  console.log("worker " + rate + "x: " + hashes + " hashes in " + Math.round(ms) + " ms: " +
    Math.round(hashes / ms * 1000) + " hashes/s");
  await context.close();
}
await browser.close();
console.log(JSON.stringify(rows));
