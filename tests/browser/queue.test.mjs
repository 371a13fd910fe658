// Browser scenarios for usher's queue page, run by tests/browser.rs against a real usher and
// a real upstream: `node queue.test.mjs SCENARIO`. Environment: USHER_URL, ADMIN_URL,
// ADMIN_TOKEN, ROOM, CHROMIUM (the Debian binary), SCREENSHOTS (a directory).
//
// The other visitors are plain HTTP clients with their own cookie jars; the operator is the
// admin API. Waits are for events (a text, a URL), with generous limits, never fixed sleeps
// that a result depends on. Exit code 0 = every check passed.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { spawn } from "node:child_process";
import { AXE, WAIT, audit, check, launch, main, until } from "./lib.mjs";

const require = createRequire(import.meta.url);
const { USHER_URL, ADMIN_URL, ADMIN_TOKEN, ROOM, CHROMIUM, SCREENSHOTS } = process.env;
const ORIGIN = new URL(USHER_URL).origin;

// ---- the operator and the other visitors --------------------------------------------------

async function admin(method, route, body) {
  const r = await fetch(ADMIN_URL + "/admin/rooms/" + ROOM + route, {
    method, headers: { authorization: "Bearer " + ADMIN_TOKEN, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(method + " " + route + " -> " + r.status + " " + (await r.text()));
  return r.json();
}

/** A visitor without a browser: one cookie jar, polls to keep its place. */
class Other {
  constructor() { this.jar = new Map(); this.timer = null; }
  /** Whether it holds a pass (named usher_pass_<room>). */
  hasPass() { return [...this.jar.keys()].some((n) => n.startsWith("usher_pass_")); }
  async get(p, accept = "text/html") {
    const cookie = [...this.jar].map(([k, v]) => k + "=" + v).join("; ");
    const r = await fetch(USHER_URL + p, { headers: { accept, cookie }, redirect: "manual" });
    for (const c of r.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      const [k, v] = [pair.slice(0, i), pair.slice(i + 1)];
      if (/Max-Age=0/i.test(c)) this.jar.delete(k); else this.jar.set(k, v);
    }
    return { status: r.status, text: await r.text() };
  }
  keepPolling() { this.timer = setInterval(() => this.get("/.usher/status", "application/json").catch(() => {}), 2000); }
  stop() { clearInterval(this.timer); }
}

/** Fills the room's places and puts `waiters` people in line ahead of whoever comes next. */
async function crowd(places, waiters) {
  const people = [];
  for (let i = 0; i < places; i++) {
    const o = new Other();
    const r = await o.get("/inbox");
    check(r.status === 200 && o.hasPass(), "visitor " + (i + 1) + " takes a place directly");
    people.push(o);
  }
  for (let i = 0; i < waiters; i++) {
    const o = new Other();
    const r = await o.get("/inbox", "application/json");
    const body = JSON.parse(r.text);
    check(r.status === 503 && body.status === "waiting" && body.ahead === i, "waiter " + (i + 1) + " joins the line");
    o.keepPolling();
    people.push(o);
  }
  return people;
}

// ---- the browser ---------------------------------------------------------------------------

const browser = await launch(CHROMIUM);

/** A browser context that records every request, CSP violation and page error. */
async function visitor({ locale = "en-GB", javaScriptEnabled = true, width = 1280 } = {}) {
  const context = await browser.newContext({ locale, javaScriptEnabled, viewport: { width, height: 900 } });
  const log = { requests: [], problems: [], bytes: new Map() };
  context.on("request", (r) => log.requests.push(r.url()));
  context.on("response", async (r) => {
    // The first answer for a URL: the queue page, not the mailbox page it later becomes.
    try { const n = (await r.body()).length; if (!log.bytes.has(r.url())) log.bytes.set(r.url(), n); } catch { /* gone */ }
  });
  // CSP violations and script errors; failed loads (the blip, a queued favicon) are expected.
  context.on("console", (m) => {
    if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) log.problems.push(m.text());
  });
  context.on("weberror", (e) => log.problems.push(String(e.error())));
  return { context, log };
}

async function ticketOf(context) {
  return (await context.cookies()).find((c) => c.name.startsWith("usher_ticket_"))?.value;
}

/** Screenshots at phone and desktop widths, and the page reflows at 320 px (WCAG 1.4.10). */
async function shoot(page, state) {
  const size = page.viewportSize();
  for (const width of [375, 1280]) {
    await page.setViewportSize({ width, height: width === 375 ? 812 : 900 });
    await page.screenshot({ path: path.join(SCREENSHOTS, state + "-" + width + ".png"), fullPage: true });
  }
  await page.setViewportSize({ width: 320, height: 640 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 0, state + ": no horizontal scrolling at 320 px");
  await page.setViewportSize(size);
}

/** Only usher's own origin was asked for anything; the page, its CSS and JS < 20 KB. */
function network(log, pageUrl) {
  const foreign = log.requests.filter((u) => !u.startsWith(ORIGIN + "/") && !u.startsWith("data:"));
  check(foreign.length === 0, "no third-party request (" + log.requests.length + " requests, all to usher)");
  const doc = log.bytes.get(pageUrl) ?? 0;
  const css = log.bytes.get(ORIGIN + "/.usher/queue.css") ?? 0;
  const js = log.bytes.get(ORIGIN + "/.usher/queue.js") ?? 0;
  check(doc > 0 && css > 0, "the page and its stylesheet were loaded");
  check(doc + css + js < 20 * 1024, "page weight " + (doc + css + js) + " bytes (html " + doc + ", css " + css + ", js " + js + ") < 20 KB");
  check(log.problems.length === 0, "no CSP violation or script error: " + JSON.stringify(log.problems));
}

/** One page in a Chromium of our own, driven over the DevTools protocol directly. Playwright
 *  keeps every page it drives "visible" (focus emulation), and Chromium freezes no visible
 *  page, so `Page.setWebLifecycleState` needs a page Playwright does not hold. */
async function rawPage() {
  const { ws: WebSocket } = require("playwright-core/lib/utilsBundle");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "usher-cdp-"));
  const proc = spawn(CHROMIUM, ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--user-data-dir=" + dir, "about:blank"], { stdio: ["ignore", "ignore", "pipe"] });
  const url = await within(30000, new Promise((ok) => {
    let buf = "";
    proc.stderr.on("data", (d) => { buf += d; const m = buf.match(/DevTools listening on (ws:\S+)/); if (m) ok(m[1]); });
  }));
  const sock = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((ok, no) => { sock.on("open", ok); sock.on("error", no); });
  let id = 0;
  const pending = new Map();
  const page = { polls: [], requests: [], problems: [], sessionId: undefined };
  sock.on("message", (data) => {
    const m = JSON.parse(data);
    if (m.id && pending.has(m.id)) {
      const [ok, no] = pending.get(m.id);
      pending.delete(m.id);
      return m.error ? no(new Error(m.error.message)) : ok(m.result);
    }
    if (m.method === "Network.requestWillBeSent") {
      page.requests.push(m.params.request.url);
      if (new URL(m.params.request.url).pathname === "/.usher/status") page.polls.push(Date.now());
    }
    if (m.method === "Runtime.exceptionThrown") page.problems.push(m.params.exceptionDetails.text);
    if (m.method === "Log.entryAdded" && m.params.entry.level === "error" && !/^Failed to load resource/.test(m.params.entry.text)) {
      page.problems.push(m.params.entry.text);
    }
  });
  const raw = (method, params = {}, sessionId) => new Promise((ok, no) => {
    const n = ++id;
    pending.set(n, [ok, no]);
    sock.send(JSON.stringify({ id: n, method, params, sessionId }));
  });
  const { browserContextId } = await raw("Target.createBrowserContext");
  const { targetId } = await raw("Target.createTarget", { url: "about:blank", browserContextId });
  page.sessionId = (await raw("Target.attachToTarget", { targetId, flatten: true })).sessionId;
  page.send = (method, params) => raw(method, params, page.sessionId);
  for (const domain of ["Page", "Runtime", "Network", "Log"]) await page.send(domain + ".enable");
  await page.send("Emulation.setLocaleOverride", { locale: "en-GB" });
  await page.send("Network.setExtraHTTPHeaders", { headers: { "accept-language": "en-GB" } });
  page.eval = async (expression) => {
    const r = await page.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.text);
    return r.result.value;
  };
  page.text = (sel) => page.eval("document.querySelector(" + JSON.stringify(sel) + ")?.textContent");
  page.goto = async (to) => {
    await page.send("Page.navigate", { url: to });
    await until("the page " + to + " has loaded", async () =>
      (await page.eval("location.href")) === to && (await page.eval("document.readyState")) === "complete");
  };
  page.axe = async (include) => {
    await page.eval(AXE);
    return page.eval("axe.run({ include: [" + JSON.stringify(include) + "] }, { runOnly: { type: 'tag', values: " +
      "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] } }).then((r) => ({ passes: r.passes.length, " +
      "bad: r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => v.id + ' ' + v.impact) }))");
  };
  // Chromium writes its profile until it has exited: wait for that before removing it.
  page.close = async () => {
    sock.close();
    const exited = proc.exitCode !== null ? Promise.resolve() : new Promise((ok) => proc.once("exit", ok));
    proc.kill();
    await within(10000, exited).catch(() => {});
    // Chromium's helper processes may still write for a moment: removing the profile is
    // tidying up, never a reason to fail the scenario.
    try { fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 }); } catch (e) { /* left in tmp */ }
  };
  return page;
}

const text = (page, sel) => page.locator(sel).first().textContent({ timeout: 2000 });
const bodyText = (page) => page.locator("body").textContent({ timeout: 2000 });
const within = (ms, promise) => Promise.race([promise, new Promise((_, no) => setTimeout(() => no(new Error("timeout")), ms))]);

// ---- scenarios -----------------------------------------------------------------------------

const scenarios = {
  // Full room: position shown, falls in place as others are admitted, survives a network
  // blip, a second tab shares the ticket, and both land where they first asked to go.
  async queue() {
    const others = await crowd(2, 2);
    const { context, log } = await visitor();
    // What each tab said as it left (recorded by the browser, outside the page's CSP).
    await context.addInitScript(() => addEventListener("pagehide", () => {
      const h = document.querySelector("h1");
      if (h) sessionStorage.setItem("usher-last-title", h.textContent);
    }));
    const page = await context.newPage();
    let navigations = 0;
    page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
    const workers = [];
    page.on("worker", (w) => workers.push(w.url()));
    const target = USHER_URL + "/letters/7?from=queue";
    const first = await page.goto(target);
    check(first.status() === 200, "the queue page answers 200");
    check((await text(page, "h1")) === "You are in the queue", "the waiting state is shown");
    check((await text(page, "#ahead")) === "2", "two people are ahead");
    check(/minute/.test(await text(page, "#eta")), "an estimate in words: " + (await text(page, "#eta")));
    check(await page.locator("progress#progress").count() === 1, "a progress bar");
    check(await page.locator("[aria-live=polite] #ahead").count() === 1, "the position is in a polite live region");
    check(/keep your place/.test(await text(page, "main")), "the page says the place is kept");
    await until("the join time is shown in local time", async () => /^at \d/.test(await text(page, "#joined")));
    const ticket = await ticketOf(context);
    check(Boolean(ticket), "a ticket cookie");
    await until("the poll timer runs in a worker (background tabs keep their pace)", () =>
      workers.some((u) => u === ORIGIN + "/.usher/queue.js"));
    const h = await first.allHeaders();
    check(/default-src 'none'/.test(h["content-security-policy"]) && h["x-frame-options"] === "DENY" &&
      h["x-content-type-options"] === "nosniff" && h["cache-control"] === "no-store", "strict CSP and security headers");
    await shoot(page, "waiting");
    await audit(page, "waiting");
    await page.emulateMedia({ colorScheme: "dark", reducedMotion: "reduce" });
    await shoot(page, "waiting-dark");
    await audit(page, "waiting (dark mode)");
    await page.emulateMedia({ colorScheme: "light", reducedMotion: "no-preference" });
    // The browser's own parse of the stylesheet: reduced motion switches transitions off.
    const still = await page.evaluate(() => [...document.styleSheets].flatMap((sheet) => [...sheet.cssRules])
      .some((r) => r instanceof CSSMediaRule && /prefers-reduced-motion: *reduce/.test(r.conditionText) &&
        /transition: *none/.test(r.cssText)));
    check(still, "prefers-reduced-motion switches transitions off");

    const tab = await context.newPage();
    await tab.goto(USHER_URL + "/inbox");
    check((await text(tab, "#ahead")) === "2" && (await ticketOf(context)) === ticket, "a second tab shares the one ticket");

    const before = navigations;
    await admin("PATCH", "", { max_active: 3 });
    await until("the position falls to 1 without a reload", async () => (await text(page, "#ahead")) === "1");
    check(navigations === before, "the page was updated in place");
    await shoot(page, "waiting-moved");

    await context.setOffline(true);
    await until("a network blip is noticed calmly", () => page.locator("#offline").isVisible(), 20000);
    await context.setOffline(false);
    await until("the page recovers after the blip", async () => !(await page.locator("#offline").isVisible()), 20000);
    check((await ticketOf(context)) === ticket, "the place survived the blip");

    await admin("PATCH", "", { max_active: 4 });
    await until("the position falls to 0", async () => (await text(page, "#ahead")) === "0");

    await admin("PATCH", "", { max_active: 10 });
    // The tab that claims the turn says so for a moment: photograph it if this one caught it.
    let photographed = false;
    await until("the browser lands on the page it first asked for", async () => {
      for (const p of photographed ? [] : [page, tab]) {
        if ((await within(300, p.title()).catch(() => "")) === "It is your turn") {
          photographed = true;
          await within(2000, p.screenshot({ path: path.join(SCREENSHOTS, "your-turn-1280.png") })).catch(() => {});
        }
      }
      return page.url() === target && (await bodyText(page)) === "/letters/7?from=queue";
    });
    await until("the second tab lands too", async () =>
      tab.url() === USHER_URL + "/inbox" && (await bodyText(tab)) === "/inbox");
    // The tab whose poll claimed the turn says so; the other simply follows the pass.
    const said = await Promise.all([page, tab].map((p) => p.evaluate(() => sessionStorage.getItem("usher-last-title"))));
    check(said.includes("It is your turn"), "the tab that claimed the turn said so as it left: " + JSON.stringify(said));
    network(log, target);
    others.forEach((o) => o.stop());
    await context.close();
  },

  // The same with JavaScript off: the meta refresh alone carries the visitor through.
  async nojs() {
    const others = await crowd(2, 2);
    const { context, log } = await visitor({ javaScriptEnabled: false });
    const page = await context.newPage();
    const target = USHER_URL + "/letters/8";
    await page.goto(target);
    check((await text(page, "#ahead")) === "2", "two people are ahead (no script)");
    check(await page.locator("noscript").count() >= 1, "a meta refresh for browsers without script");
    await shoot(page, "waiting-nojs");
    await admin("PATCH", "", { max_active: 3 });
    await until("the refreshed page shows 1 ahead", async () => (await text(page, "#ahead")) === "1");
    await admin("PATCH", "", { max_active: 10 });
    await until("the browser lands on the page it first asked for", async () =>
      page.url() === target && (await bodyText(page)) === "/letters/8");
    network(log, target);
    others.forEach((o) => o.stop());
    await context.close();
  },

  // Danish and English by Accept-Language; the switch (by keyboard, with and without
  // script) changes the language and keeps the URL and the ticket.
  async languages() {
    const others = await crowd(2, 1);
    const target = USHER_URL + "/inbox?folder=2";
    const en = await visitor({ locale: "en-US" });
    const enPage = await en.context.newPage();
    await enPage.goto(target);
    check((await enPage.getAttribute("html", "lang")) === "en" && (await text(enPage, "h1")) === "You are in the queue",
      "English for Accept-Language en-US");

    const da = await visitor({ locale: "da-DK" });
    const page = await da.context.newPage();
    await page.goto(target);
    check((await page.getAttribute("html", "lang")) === "da", "Danish for Accept-Language da-DK");
    check((await text(page, "h1")) === "Du er i kø", "the Danish title");
    check(/Du beholder din plads/.test(await text(page, "main")), "the Danish reassurance");
    await shoot(page, "waiting-da");
    await audit(page, "Danish waiting");
    const ticket = await ticketOf(da.context);
    await page.focus("#switch");
    await Promise.all([page.waitForURL(target), page.keyboard.press("Enter")]);
    await until("the switch turns the page English", async () => (await page.getAttribute("html", "lang")) === "en");
    check(page.url() === target && (await ticketOf(da.context)) === ticket, "same URL, same ticket after the switch");
    check((await text(page, "#switch")) === "Dansk", "the switch now offers Danish");

    const plain = await visitor({ locale: "da-DK", javaScriptEnabled: false });
    const p2 = await plain.context.newPage();
    await p2.goto(target);
    check((await text(p2, "h1")) === "Du er i kø", "Danish without script");
    await Promise.all([p2.waitForURL(target), p2.click("#switch")]);
    check((await p2.getAttribute("html", "lang")) === "en", "the switch works without script");
    network(da.log, target);
    others.forEach((o) => o.stop());
    await Promise.all([en.context.close(), da.context.close(), plain.context.close()]);
  },

  // The operator pauses with a message; after resuming the visitor moves on by itself.
  async paused() {
    const others = await crowd(2, 0);
    await admin("POST", "/pause", { message: "We are back at 10:30. / Vi er tilbage kl. 10.30." });
    const { context, log } = await visitor();
    const page = await context.newPage();
    const target = USHER_URL + "/letters/9";
    await page.goto(target);
    check((await text(page, "h1")) === "The queue is paused", "the paused state is shown");
    check((await text(page, "#message")) === "We are back at 10:30. / Vi er tilbage kl. 10.30.", "the operator's message");
    check((await text(page, "#eta")) === "paused", "no estimate while paused");
    await shoot(page, "paused");
    await audit(page, "paused");
    await admin("POST", "/resume");
    await admin("PATCH", "", { max_active: 10 });
    await until("after resume the browser lands on the page it first asked for", async () =>
      page.url() === target && (await bodyText(page)) === "/letters/9");
    network(log, target);
    others.forEach((o) => o.stop());
    await context.close();
  },

  // Before opens_at: a countdown, then the draw, then in without a click.
  async prequeue() {
    const { context, log } = await visitor();
    const page = await context.newPage();
    const target = USHER_URL + "/letters/10";
    await page.goto(target);
    check(await page.locator("#usher[data-status=prequeue]").count() === 1, "the pre-queue state is shown");
    check(/opens soon/.test(await text(page, "#lead")), "the pre-queue explanation");
    check(await page.locator("a#draw[href='/.usher/draw/" + ROOM + "']").count() === 1, "the page links to the room's draw");
    check(/^\d+$/.test(await text(page, "#ticket")), "the page shows the ticket number");
    const start = await text(page, "#countdown");
    await until("the countdown runs", async () => (await text(page, "#countdown")) !== start, 5000);
    await shoot(page, "prequeue");
    await audit(page, "pre-queue");
    await until("the browser lands on the page it first asked for after the opening", async () =>
      page.url() === target && (await bodyText(page)) === "/letters/10", 40000);
    network(log, target);
    await context.close();
  },

  // Bots pay, people don't notice ([room.challenge], the defaults: 8 puzzles of 13 bits). The
  // page's worker solves the challenge while the page stays calm, with no third-party call;
  // axe audits the state (its answer held back until then). How long the solving takes is
  // printed at 1× and at 4× CPU throttling (Lighthouse's mid-range phone), from the page's
  // load to its answer. Without JavaScript, the page waits and joins by itself.
  async challenge() {
    const target = USHER_URL + "/letters/14";
    {
      const { context, log } = await visitor();
      const page = await context.newPage();
      let release;
      const audited = new Promise((ok) => { release = ok; });
      await page.route((u) => u.pathname === "/.usher/challenge", async (route) => { await audited; await route.continue(); });
      await page.goto(target);
      check(await page.locator("#usher[data-status=challenge]").count() === 1, "a newcomer is given a challenge");
      check((await text(page, "h1")) === "One moment", "the heading is calm");
      check(/do not need to do anything/.test(await text(page, "#lead")), "the page says nothing is asked of the person");
      check(await page.locator("#work-status[role=status]").count() === 1, "progress is announced in a status region");
      check(!(await ticketOf(context)), "no ticket before the work is done");
      await shoot(page, "challenge");
      await audit(page, "challenge");
      await until("the worker reports its progress", async () => Number(await page.locator("#work").getAttribute("value")) > 0);
      await audit(page, "challenge (solved, answering)");
      release();
      await until("the browser solves it, joins, and lands on the page it asked for", async () =>
        page.url() === target && (await bodyText(page)) === "/letters/14", 60000);
      check(log.requests.some((u) => u === ORIGIN + "/.usher/challenge.js"), "the work ran in usher's own worker");
      network(log, target);
      await context.close();
    }
    for (const rate of [1, 4]) {
      const { context } = await visitor();
      const page = await context.newPage();
      const cdp = await context.newCDPSession(page);
      await cdp.send("Emulation.setCPUThrottlingRate", { rate });
      let loaded = 0, answered = 0;
      page.on("request", (r) => { if (r.method() === "POST" && r.url().includes("/.usher/challenge?")) answered = Date.now(); });
      page.on("load", () => { if (!loaded) loaded = Date.now(); });
      await page.goto(USHER_URL + "/letters/15");
      await until("solved at " + rate + "× CPU throttling", () => answered > 0, 120000);
      console.log("figure: the challenge (8 puzzles of 13 bits) solved " + (answered - loaded) + " ms after the page loaded, at " + rate + "× CPU throttling");
      await context.close();
    }
    {
      const { context } = await visitor({ javaScriptEnabled: false });
      const page = await context.newPage();
      await page.goto(USHER_URL + "/letters/16");
      check(/Without JavaScript this takes about 3 seconds/.test(await text(page, "main")), "the page without JavaScript says it waits instead");
      await until("without JavaScript the page joins after its wait and lands on the page it asked for", async () =>
        (await bodyText(page)) === "/letters/16", 60000);
      await context.close();
    }
  },

  // Stepping away keeps the place (DESIGN §3). The page is frozen through the DevTools
  // protocol, as a phone freezes a locked or background page, for longer than the room's
  // waiter_ttl (9 s): the server takes it for away, skips it (someone behind gets the turn
  // that came), and holds its place. Unfrozen, the page asks at once (not when a timer is
  // due), shows the same or a better place, never "expired", and is let in before anyone
  // who joined after it.
  async stepaway() {
    const others = await crowd(2, 1);
    const page = await rawPage();
    const target = USHER_URL + "/letters/11";
    await page.goto(target);
    check((await page.text("#ahead")) === "1", "one person is ahead");
    const hold = await page.text("#hold");
    check(/held for 1 minute after this page last checked in/.test(hold), "the page says how long the place is held: " + hold);
    const axe = await page.axe("#hold");
    for (const v of axe.bad) console.log("axe hold text: " + v);
    check(axe.bad.length === 0, "axe: no serious or critical violation in the hold text (" + axe.passes + " rules pass)");
    const later = [new Other(), new Other()];
    for (const o of later) {
      const r = await o.get("/inbox", "application/json");
      check(r.status === 503 && JSON.parse(r.text).status === "waiting", "someone joins after the browser");
      o.keepPolling();
    }
    await until("the page polls", () => page.polls.length > 0);

    const frozenAt = Date.now();
    await page.send("Page.setWebLifecycleState", { state: "frozen" });
    const quiet = page.polls.length;
    await until("the frozen page is taken for away and its place held", async () => {
      const room = await admin("GET", "");
      return room.held === 1 || "held " + room.held + ", polls since the freeze " + (page.polls.length - quiet);
    }, 20000);
    check(page.polls.length === quiet, "the frozen page sent no poll");
    // Two places free: the one ahead gets one; the browser's turn comes while it is away,
    // so the next turn goes to the first who joined after it.
    await admin("PATCH", "", { max_active: 4 });
    await until("the line moved on past the away page", () => later[0].hasPass(), 20000);
    check(!later[1].hasPass(), "only one turn was given past the away page");
    await new Promise((r) => setTimeout(r, Math.max(0, 12000 - (Date.now() - frozenAt))));
    const away = Date.now() - frozenAt;
    check(away > 9000, "frozen for " + away + " ms, longer than waiter_ttl (9 s)");

    const resumedAt = Date.now();
    await page.send("Page.setWebLifecycleState", { state: "active" });
    await until("the page polls at once on resume", () => page.polls.some((t) => t >= resumedAt), 1000);
    await until("the place is the same or better", async () => (await page.text("#ahead")) === "0", 5000);
    check((await page.text("h1")) === "You are in the queue", "never told the place expired");
    check((await admin("GET", "")).held === 0, "the place is no longer held: the visitor is back");
    const whole = await page.axe("main");
    for (const v of whole.bad) console.log("axe page after return: " + v);
    check(whole.bad.length === 0, "axe: no serious or critical violation on the page after return (" + whole.passes + " rules pass)");

    // A second, short freeze right after a poll: the resume alone makes it ask, long before
    // its timer (at least 1.6 s) is due.
    const seen = page.polls.length;
    await until("a poll", () => page.polls.length > seen, 5000);
    const last = page.polls[page.polls.length - 1];
    await page.send("Page.setWebLifecycleState", { state: "frozen" });
    await new Promise((r) => setTimeout(r, 200));
    const again = Date.now();
    await page.send("Page.setWebLifecycleState", { state: "active" });
    const next = await until("a poll right after the second resume", () => page.polls.find((t) => t >= again), 1000);
    check(next - last < 1500, "the resume made the poll (" + (next - last) + " ms after the last), not the timer");

    // A place frees: it is the browser's, not that of the one still waiting behind it.
    await admin("PATCH", "", { max_active: 5 });
    await until("the browser lands on the page it first asked for", async () =>
      (await page.eval("location.href")) === target && (await page.text("body")) === "/letters/11");
    const behind = JSON.parse((await later[1].get("/.usher/status", "application/json")).text);
    check(behind.status === "waiting", "the one who joined after it still waits: " + JSON.stringify(behind));
    const foreign = page.requests.filter((u) => !u.startsWith(ORIGIN + "/") && !u.startsWith("data:"));
    check(foreign.length === 0, "no third-party request (" + page.requests.length + " requests, all to usher)");
    check(page.problems.length === 0, "no CSP violation or script error: " + JSON.stringify(page.problems));
    [...others, ...later].forEach((o) => o.stop());
    await page.close();
  },

  // Maintenance, and a visitor over the join limit.
  async closed_and_limited() {
    const others = await crowd(1, 0);
    const first = await visitor({ locale: "da-DK" });
    const p1 = await first.context.newPage();
    await p1.goto(USHER_URL + "/inbox");
    check((await text(p1, "h1")) === "Du er i kø", "the first newcomer joins the line");
    const second = await visitor();
    const p2 = await second.context.newPage();
    const limited = await p2.goto(USHER_URL + "/inbox");
    check(limited.status() === 429, "a second newcomer from the same address is over the join limit");
    check((await text(p2, "h1")) === "Too many requests", "the rate-limited page");
    check(/<noscript><meta http-equiv="refresh" content="\d+">/.test(await p2.content()), "the rate-limited page retries by itself");
    await shoot(p2, "rate-limited");
    await audit(p2, "rate-limited");
    network(second.log, USHER_URL + "/inbox");

    await admin("PATCH", "", { mode: "closed", message: "Planned maintenance until 06:00." });
    const third = await visitor();
    const p3 = await third.context.newPage();
    const closed = await p3.goto(USHER_URL + "/inbox");
    check(closed.status() === 503 && (await text(p3, "h1")) === "Closed for maintenance", "the maintenance page");
    check(/Planned maintenance/.test(await text(p3, "main")), "the operator's message on the maintenance page");
    await shoot(p3, "closed");
    await audit(p3, "closed");
    await until("the waiting page follows the room into maintenance", async () =>
      (await text(p1, "h1").catch(() => "")) === "Lukket på grund af vedligeholdelse");
    others.forEach((o) => o.stop());
    await Promise.all([first.context.close(), second.context.close(), third.context.close()]);
  },
};

await main(scenarios, browser);
