// The operators' console: every room live from the admin event stream, and the levers, each
// behind a confirmation. It keeps nothing: the token lives in this page's memory only, and
// a reload asks for it again. Same-origin requests only (the CSP allows nothing else).
"use strict";

const TEXT = {
  en: {
    title: "Operators' console", token: "Your admin token", signin: "Sign in", signedin: "Signed in as",
    signout: "Sign out", connecting: "Connecting…", live: "Live", reconnecting: "Connection lost, reconnecting…",
    changes: "Changes", waiting: "Waiting", active: "Inside", outflow: "Admitted per minute",
    eta: "Wait of the last in line", chart: "Waiting over the last hour", pause: "Pause", resume: "Resume",
    drain: "Drain all sessions", limits: "Limits", max_active: "Sessions at once",
    admit_per_minute: "Admitted per minute", apply: "Change limits", cancel: "Cancel", confirm: "Confirm",
    other: "Dansk", badToken: "That token was not accepted.", unreachable: "The admin API does not answer.",
    askPause: "Pause {room}? The line keeps its order; nobody is let in until you resume.",
    askResume: "Resume {room}? Admission starts again at the configured rate.",
    askDrain: "End every session in {room}? Everyone inside must queue again.",
    askLimits: "Change {room} to {max} sessions at once and {rate} admitted per minute?",
    paused: "{room} is paused.", resumed: "{room} admits again.", drained: "{n} sessions ended in {room}.",
    limited: "The limits of {room} are changed.", failed: "Not done: {why}",
    configured: "configured {n}", measured: "measured {n}", lessThanMinute: "under a minute",
    minutes: "{m} min", hours: "{h} h {m} min", outage: "The store of {room} does not answer.",
    recovered: "The store of {room} answers again.",
    modes: { auto: "auto", queue_all: "everyone queues", paused: "paused", closed: "closed", off: "off: everyone in" },
  },
  da: {
    title: "Operatørkonsol", token: "Dit admin-token", signin: "Log ind", signedin: "Logget ind som",
    signout: "Log ud", connecting: "Forbinder…", live: "Direkte", reconnecting: "Forbindelsen tabt, forbinder igen…",
    changes: "Ændringer", waiting: "Venter", active: "Inde", outflow: "Lukket ind pr. minut",
    eta: "Ventetid for den sidste i køen", chart: "Ventende den seneste time", pause: "Sæt på pause",
    resume: "Genoptag", drain: "Afslut alle sessioner", limits: "Grænser", max_active: "Sessioner ad gangen",
    admit_per_minute: "Lukket ind pr. minut", apply: "Skift grænser", cancel: "Annuller", confirm: "Bekræft",
    other: "English", badToken: "Tokenet blev ikke godkendt.", unreachable: "Admin-API'et svarer ikke.",
    askPause: "Sæt {room} på pause? Køen beholder sin rækkefølge; ingen lukkes ind, før du genoptager.",
    askResume: "Genoptag {room}? Der lukkes ind igen med den indstillede hastighed.",
    askDrain: "Afslut alle sessioner i {room}? Alle indenfor skal stille sig i kø igen.",
    askLimits: "Skift {room} til {max} sessioner ad gangen og {rate} lukket ind pr. minut?",
    paused: "{room} er sat på pause.", resumed: "{room} lukker ind igen.", drained: "{n} sessioner afsluttet i {room}.",
    limited: "Grænserne for {room} er ændret.", failed: "Ikke udført: {why}",
    configured: "indstillet {n}", measured: "målt {n}", lessThanMinute: "under et minut",
    minutes: "{m} min.", hours: "{h} t. {m} min.", outage: "Lageret for {room} svarer ikke.",
    recovered: "Lageret for {room} svarer igen.",
    modes: { auto: "automatisk", queue_all: "alle i kø", paused: "på pause", closed: "lukket", off: "slået fra: alle ind" },
  },
};

let lang = (navigator.language || "en").toLowerCase().startsWith("da") ? "da" : "en";
let token = null;
let stream = null;
let lastId = null;
const rooms = new Map();
const $ = (id) => document.getElementById(id);
const t = (key, values = {}) => TEXT[lang][key].replace(/\{(\w+)\}/g, (_, k) => String(values[k]));
const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(lang === "da" ? "da-DK" : "en-GB"));

function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-text]")) el.textContent = t(el.dataset.text);
  const other = lang === "da" ? "en" : "da";
  $("language").textContent = t("other");
  $("language").lang = other;
  document.title = "usher – " + t("title");
  for (const room of rooms.values()) show(room);
}

async function call(method, path, body) {
  const headers = { authorization: "Bearer " + token };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const json = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, json };
}

function say(text) {
  $("status").textContent = text;
}

// ---- signing in and out ----------------------------------------------------------------

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  let me;
  try {
    me = await call("GET", "/admin/me");
  } catch {
    me = { ok: false, status: 0 };
  }
  if (!me.ok) {
    token = null;
    $("login-error").textContent = me.status === 0 ? t("unreachable") : t("badToken");
    $("login-error").hidden = false;
    $("token").focus();
    return;
  }
  $("login-error").hidden = true;
  $("who").textContent = me.json.name + " (" + me.json.role + ")";
  $("login").hidden = true;
  $("console").hidden = false;
  const list = await call("GET", "/admin/rooms");
  for (const r of list.json.rooms || []) room(r.name).data = r;
  for (const r of rooms.values()) show(r);
  for (const b of document.querySelectorAll(".room button, .room input")) b.disabled = me.json.role === "viewer";
  follow();
});

$("signout").addEventListener("click", () => {
  token = null;
  if (stream) stream.abort();
  location.reload();
});

$("language").addEventListener("click", () => {
  lang = lang === "da" ? "en" : "da";
  translate();
});

// ---- rooms -----------------------------------------------------------------------------

/** The room's panel, made from the template the first time. */
function room(name) {
  let r = rooms.get(name);
  if (r) return r;
  const el = $("room").content.firstElementChild.cloneNode(true);
  el.setAttribute("aria-label", name);
  $("rooms").append(el);
  r = { name, el, data: {}, points: [] };
  rooms.set(name, r);
  for (const item of el.querySelectorAll("[data-text]")) item.textContent = t(item.dataset.text);
  const path = "/admin/rooms/" + encodeURIComponent(name);
  el.querySelector(".pause").addEventListener("click", () =>
    act(t("askPause", { room: name }), "POST", path + "/pause", undefined, () => t("paused", { room: name })));
  el.querySelector(".resume").addEventListener("click", () =>
    act(t("askResume", { room: name }), "POST", path + "/resume", undefined, () => t("resumed", { room: name })));
  el.querySelector(".drain").addEventListener("click", () =>
    act(t("askDrain", { room: name }), "POST", path + "/drain", {}, (j) => t("drained", { room: name, n: j.drained })));
  el.querySelector(".limits").addEventListener("submit", (e) => {
    e.preventDefault();
    const max = Number(e.target.max_active.value), rate = Number(e.target.admit_per_minute.value);
    act(t("askLimits", { room: name, max: number(max), rate: number(rate) }), "PATCH", path,
      { max_active: max, admit_per_minute: rate }, () => t("limited", { room: name }));
  });
  return r;
}

/** Shows a room's latest figures. */
function show(r) {
  const d = r.data, q = (sel) => r.el.querySelector(sel);
  q(".name").textContent = r.name;
  q(".mode").textContent = d.mode ? TEXT[lang].modes[d.mode] || d.mode : "";
  q(".waiting").textContent = number(d.waiting);
  q(".active").textContent = d.active === undefined ? "–" : number(d.active) + " / " + number(d.max_active);
  const effective = d.effective_per_minute ?? d.admit_per_minute;
  const measured = d.measured_per_minute === null || d.measured_per_minute === undefined ? "" :
    " (" + t("measured", { n: number(d.measured_per_minute) }) + ")";
  q(".outflow").textContent = number(effective) + measured;
  q(".eta").textContent = duration(d.eta_tail_seconds);
  const form = q(".limits");
  if (document.activeElement === null || !form.contains(document.activeElement)) {
    if (d.max_active !== undefined) form.max_active.value = d.max_active;
    if (effective !== undefined) form.admit_per_minute.value = effective;
  }
  chart(r);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return t("lessThanMinute");
  const m = Math.round(seconds / 60);
  return m < 60 ? t("minutes", { m }) : t("hours", { h: Math.floor(m / 60), m: m % 60 });
}

/** The line over the last hour: a point every 10 s at most, scaled to the largest. */
function chart(r) {
  const now = Date.now();
  const last = r.points[r.points.length - 1];
  if (r.data.waiting !== undefined && (!last || now - last.t >= 10000)) r.points.push({ t: now, v: r.data.waiting });
  while (r.points.length && now - r.points[0].t > 3600000) r.points.shift();
  // The stored points, and the figure of this moment at the right edge.
  const shown = r.data.waiting === undefined ? r.points : [...r.points, { t: now, v: r.data.waiting }];
  const top = Math.max(1, ...shown.map((p) => p.v));
  const points = shown.map((p) => ((p.t - (now - 3600000)) / 10000).toFixed(1) + "," + (78 - (p.v / top) * 76).toFixed(1));
  r.el.querySelector("polyline").setAttribute("points", points.join(" "));
}

// ---- the levers --------------------------------------------------------------------------

/** Asks first; on yes, calls the API and says what happened. */
async function act(question, method, path, body, done) {
  const dialog = $("confirm");
  $("confirm-text").textContent = question;
  const answer = await new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
  if (answer !== "ok") return;
  const r = await call(method, path, body).catch(() => ({ ok: false, json: { error: t("unreachable") } }));
  say(r.ok ? done(r.json) : t("failed", { why: r.json.error || r.status }));
  if (r.ok && r.json.name) Object.assign(room(r.json.name).data, r.json);
  for (const x of rooms.values()) show(x);
}

// ---- the event stream ----------------------------------------------------------------------

/** Follows /admin/events (fetch, not EventSource: it must send the token), resuming after
 *  the last event seen whenever the connection drops. */
async function follow() {
  while (token) {
    stream = new AbortController();
    $("link").textContent = t("connecting");
    try {
      const headers = { authorization: "Bearer " + token };
      if (lastId !== null) headers["last-event-id"] = String(lastId);
      const r = await fetch("/admin/events", { headers, signal: stream.signal, cache: "no-store" });
      if (!r.ok) throw new Error("status " + r.status);
      $("link").textContent = t("live");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += value;
        let end;
        while ((end = pending.indexOf("\n\n")) >= 0) {
          handle(pending.slice(0, end));
          pending = pending.slice(end + 2);
        }
      }
    } catch {
      // Dropped or refused: try again shortly.
    }
    if (!token) return;
    $("link").textContent = t("reconnecting");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function handle(block) {
  let id = null, kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = Number(line.slice(4));
    else if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (id !== null) lastId = id;
  if (!data) return;
  const e = JSON.parse(data);
  if (kind === "figures") {
    const r = room(e.room);
    Object.assign(r.data, e);
    show(r);
  } else if (kind === "change") {
    const li = document.createElement("li");
    const time = new Date().toLocaleTimeString(lang === "da" ? "da-DK" : "en-GB");
    li.textContent = time + "  " + e.who + ": " + e.target + " " + e.field + " " + e.old + " → " + e.new;
    $("changes").prepend(li);
    while ($("changes").children.length > 50) $("changes").lastElementChild.remove();
  } else if (kind === "store") {
    say(t(e.up ? "recovered" : "outage", { room: e.room }));
  }
}

translate();
