// What every browser scenario needs: checks that print what they proved, waits for events
// (never fixed sleeps a result depends on), headless Chromium, and the axe-core audit.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import fs from "node:fs";

const require = createRequire(import.meta.url);
export const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
export const WAIT = 30000;

export function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
  console.log("ok  " + what);
}

export async function until(what, fn, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last === true || (last && typeof last !== "string")) { console.log("ok  " + what); return last; } } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("timed out waiting for: " + what + " (last: " + last + ")");
}

/** Debian's Chromium, headless, with nothing of its own calling home. */
export function launch(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** axe-core in the page (or the part `include` selects): no serious or critical violation
 *  (WCAG 2.1 A/AA rules). */
export async function audit(page, state, include) {
  await page.evaluate(AXE);
  const result = await page.evaluate((sel) =>
    window.axe.run(sel ? { include: [sel] } : document,
      { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }), include);
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) console.log("axe " + state + ": " + v.id + " " + v.impact + " " + v.nodes.map((n) => n.target).join(" "));
  check(bad.length === 0, "axe: no serious or critical violation in the " + state + " state (" + result.passes.length + " rules pass)");
}

/** Runs `scenarios[argv[2]]`, closes the browser, and exits 0 only if it passed. */
export async function main(scenarios, browser) {
  const name = process.argv[2];
  let failed = false;
  try {
    if (!scenarios[name]) throw new Error("unknown scenario " + name);
    await scenarios[name]();
    console.log("scenario " + name + ": passed");
  } catch (e) {
    failed = true;
    console.error("scenario " + name + ": " + (e.stack || e));
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}
