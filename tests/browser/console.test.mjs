// The operators' console in a real browser, run by tests/browser.rs: `node console.test.mjs
// console`. Environment: USHER_URL, ADMIN_URL, OPERATOR_TOKEN, VIEWER_TOKEN, ROOM, CHROMIUM,
// SCREENSHOTS. The operator signs in, sees the room's figures move as people join, pauses and
// resumes it through the confirmations (a cancel changes nothing), and the page passes axe in
// both languages. Visitors are plain HTTP clients.
import path from "node:path";
import { audit, check, launch, main, until } from "./lib.mjs";

const { USHER_URL, ADMIN_URL, OPERATOR_TOKEN, VIEWER_TOKEN, ROOM, CHROMIUM, SCREENSHOTS } = process.env;
const browser = await launch(CHROMIUM);

async function mode() {
  const r = await fetch(ADMIN_URL + "/admin/rooms/" + ROOM);
  return (await r.json()).mode;
}

/** A visitor joining the room (each from the loopback address the test gives it). */
async function join() {
  const r = await fetch(USHER_URL + "/inbox", { headers: { accept: "application/json" } });
  return r.status;
}

async function signIn(page, token) {
  await page.goto(ADMIN_URL + "/admin/");
  await page.getByLabel(/admin token|admin-token/i).fill(token);
  await page.getByRole("button", { name: /sign in|log ind/i }).click();
}

const scenarios = {
  async console() {
    const context = await browser.newContext({ locale: "en-GB", viewport: { width: 1280, height: 900 } });
    const problems = [];
    const requests = [];
    context.on("request", (r) => requests.push(r.url()));
    // Script errors and CSP violations; failed loads (the refused token's 401, the favicon)
    // are expected.
    context.on("console", (m) => {
      if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) problems.push(m.text());
    });
    context.on("weberror", (e) => problems.push(String(e.error())));
    const page = await context.newPage();

    // A wrong token is refused, and said so.
    await signIn(page, "not-a-token-of-anyone-0123456789abcdef");
    await until("a wrong token is refused", async () => (await page.locator("#login-error").textContent()).includes("not accepted"));
    await audit(page, "sign-in");

    await signIn(page, OPERATOR_TOKEN);
    await until("signed in, with the operator's name", async () => (await page.locator("#who").textContent()).includes("otto (operator)"));
    await until("the stream is live", async () => (await page.locator("#link").textContent()) === "Live");
    const waiting = () => page.locator(".room .waiting").first().textContent();

    // The room fills (max_active 1) and people queue: the figures follow within a tick or two.
    for (let i = 0; i < 4; i++) await join();
    await until("the waiting figure moves to 3", async () => (await waiting()) === "3");

    // Pause, but cancel at the confirmation: nothing changes.
    await page.getByRole("button", { name: "Pause" }).click();
    const dialog = page.getByRole("dialog");
    await until("the pause asks first", async () => (await dialog.textContent()).includes("Pause " + ROOM + "?"));
    await audit(page, "confirmation");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    check((await mode()) === "auto", "cancelled: the room still admits");

    // Pause for real.
    await page.getByRole("button", { name: "Pause" }).click();
    await dialog.getByRole("button", { name: "Confirm" }).click();
    await until("the room is paused", async () => (await mode()) === "paused");
    await until("the console says so", async () => (await page.locator("#status").textContent()) === ROOM + " is paused.");
    await until("the room's badge shows it", async () => (await page.locator(".room .mode").textContent()) === "paused");
    await until("the change is listed with who did it", async () =>
      (await page.locator("#changes").textContent()).includes("otto: room:" + ROOM + " mode auto → paused"));
    await page.screenshot({ path: path.join(SCREENSHOTS, "console-1280.png"), fullPage: true });
    await audit(page, "paused");

    // Resume, confirmed; the figures move on.
    await page.getByRole("button", { name: "Resume" }).click();
    await dialog.getByRole("button", { name: "Confirm" }).click();
    await until("the room admits again", async () => (await mode()) === "auto");
    await join();
    await until("a newcomer shows in the figures", async () => (await waiting()) === "4");

    // Danish, the whole console.
    await page.getByRole("button", { name: "Dansk" }).click();
    await until("the console speaks Danish", async () => (await page.locator("h1").textContent()) === "Operatørkonsol");
    check((await page.locator("html").getAttribute("lang")) === "da", "lang=da");
    await audit(page, "Danish");

    check(problems.length === 0, "no script error and no CSP violation: " + problems.join(" | "));
    const origin = new URL(ADMIN_URL).origin;
    check(requests.every((u) => u.startsWith(origin)), "nothing fetched from anywhere else");
    await context.close();

    // A viewer sees everything and can change nothing.
    const viewer = await browser.newContext({ locale: "da-DK" });
    const view = await viewer.newPage();
    await signIn(view, VIEWER_TOKEN);
    await until("the viewer is signed in (in Danish, from the browser)", async () =>
      (await view.locator("#who").textContent()).includes("vera (viewer)"));
    check(await view.getByRole("button", { name: "Sæt på pause" }).isDisabled(), "the viewer's levers are disabled");
    await viewer.close();
  },
};

await main(scenarios, browser);
