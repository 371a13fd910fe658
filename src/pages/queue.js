// The queue page's script. Without it the page still works (meta refresh); with it the page
// polls /.usher/status at the server's suggested interval with jitter (so that many browsers
// do not poll in lockstep), backs off on errors, updates in place, and goes to the URL the
// visitor first asked for (this page's own URL) when the turn comes. All words come from the
// page (data-* attributes), so every string lives server-side, per language.
//
// Loaded as a Worker, the same file is only a timer: browsers throttle timers of background
// tabs (to once a minute in Chrome), which would let a waiter's place expire; a dedicated
// worker's timers keep their pace.
(function () {
  "use strict";
  if (typeof document === "undefined") {
    self.onmessage = function (e) { setTimeout(function () { self.postMessage(e.data[0]); }, e.data[1]); };
    return;
  }
  var root = document.getElementById("usher");
  if (!root) return;
  var d = root.dataset;
  var status = d.status;
  // The server's suggested interval: it grows with the wait (a minute when an hour away).
  var base = Number(d.poll) || 5, pace = base;
  var failures = 0, busy = false, gone = false, lastPoll = Date.now(), best = 0, seq = 0;
  var generation = 0, inflight = null, frozen = false, fewest = null;
  // The states whose changes the script follows by polling; any other is a page to reload.
  var follows = status === "waiting" || status === "paused" || status === "prequeue" ||
    status === "unavailable" || status === "closed";
  var worker = null;
  try {
    worker = new Worker("/.usher/queue.js");
    worker.onmessage = function (e) { due(e.data); };
    // A worker that cannot run (blocked by a proxy's policy): plain timers instead.
    worker.onerror = function () { worker = null; later(base); };
  } catch (e) { worker = null; }

  function $(id) { return document.getElementById(id); }
  if ($("progress")) best = Number($("progress").value) || 0;
  function show(id, text) { var el = $(id); if (el && el.textContent !== String(text)) el.textContent = text; }

  // One poll chain only: a timer that is no longer the latest one (an early poll on return
  // to the tab or to the network made a newer one) does nothing.
  function later(seconds) {
    var id = ++seq;
    var ms = Math.round(seconds * (0.8 + Math.random() * 0.4) * 1000);
    if (worker) worker.postMessage([id, ms]); else setTimeout(function () { due(id); }, ms);
  }

  function due(id) { if (id === seq && !frozen) poll(); }

  // To the page's own URL, as a GET (a queued POST must not be re-sent), without its hash.
  // On admission the page first says so (announced by the status region), then goes on.
  function go(turn) {
    gone = true;
    var to = location.href.split("#")[0];
    if (!turn) return location.replace(to);
    root.className += " turn";
    show("title", d.turnTitle);
    show("lead", d.turnLead);
    document.title = d.turnTitle;
    setTimeout(function () { location.replace(to); }, 800);
  }

  function offline(on) { var el = $("offline"); if (el) el.hidden = !on; }

  function update(s) {
    failures = 0;
    offline(false);
    if (s.status === "admitted") return go(true);
    // Any other change of state (paused, opened, place lost, room closed) is a new page.
    if (s.status !== status) return go(false);
    // Never a larger number than one already shown: behind several nodes each answers from
    // its own last look at the line, and one may not yet have counted out someone who gave up.
    if (s.ahead != null) {
      fewest = fewest == null ? s.ahead : Math.min(fewest, s.ahead);
      show("ahead", fewest);
    }
    if (s.eta_text) show("eta", s.eta_text);
    var bar = $("progress");
    if (bar && s.progress_percent != null && s.progress_percent > best) {
      best = s.progress_percent;
      bar.value = best;
      bar.textContent = best + " %";
    }
    pace = s.poll_after_seconds || base;
    later(pace);
  }

  function fail() {
    failures += 1;
    if (failures > 1) offline(true);
    // Back off, but stay well inside the time a place is kept without polls (three of the
    // server's intervals): from a few seconds, doubling, up to the interval itself.
    later(Math.min(Math.min(pace, 5) * Math.pow(2, failures - 1), Math.max(pace, 6)));
  }

  function poll() {
    if (busy || gone) return;
    busy = true;
    lastPoll = Date.now();
    // Only the latest poll's answer counts: one abandoned on return (below) stays silent.
    var mine = ++generation;
    var ctl = window.AbortController ? new AbortController() : null;
    inflight = ctl;
    var timeout = setTimeout(function () { if (ctl) ctl.abort(); }, 15000);
    // The room names which of the visitor's tickets this page shows (rooms keep their own).
    fetch("/.usher/status" + (d.room ? "?room=" + encodeURIComponent(d.room) : ""), {
      credentials: "same-origin", cache: "no-store",
      headers: { Accept: "application/json" }, signal: ctl ? ctl.signal : undefined
    })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (s) { if (mine !== generation) return; busy = false; clearTimeout(timeout); update(s); },
        function () { if (mine !== generation) return; busy = false; clearTimeout(timeout); fail(); });
  }

  // Coming back: the screen unlocked, the app or tab in front again, the page restored from
  // the back/forward cache or unfrozen, the network back. While away the page's timers did
  // not run (phones suspend background pages, workers included), so the server may take the
  // visitor for away: ask at once, which keeps the place and claims a turn that came. A poll
  // left hanging by the freeze is dropped and a fresh one sent.
  function back() {
    if (gone || !follows) return;
    if (busy) {
      if (Date.now() - lastPoll < 3000) return;
      generation++;
      busy = false;
      if (inflight) inflight.abort();
    }
    poll();
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) back(); });
  // A frozen page (Page Lifecycle API) must not act; its worker's timer may still tick, so
  // the page itself stands still until it resumes, as it does on a phone.
  document.addEventListener("freeze", function () { frozen = true; });
  document.addEventListener("resume", function () { frozen = false; back(); });
  window.addEventListener("pageshow", function (e) { if (e.persisted) back(); });
  window.addEventListener("online", back);

  // The switch returns to this very URL.
  var sw = $("switch");
  if (sw) sw.href += "&back=" + encodeURIComponent(location.pathname + location.search);

  // The join time in the visitor's own time zone.
  var joined = $("joined");
  if (joined && joined.dataset.at) {
    try {
      var t = new Date(joined.getAttribute("datetime"))
        .toLocaleTimeString(d.lang, { hour: "2-digit", minute: "2-digit" });
      joined.textContent = joined.dataset.at.replace("{t}", t);
    } catch (e) { /* keep the server's text */ }
  }

  // Countdown to the opening, from the server's clock (not the visitor's).
  var cd = $("countdown");
  if (cd) {
    var end = Date.now() + Number(cd.dataset.in) * 1000;
    var tick = function () {
      var left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
      var h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
      var c = cd.dataset;
      cd.textContent = left === 0 ? c.now
        : (h ? h + " " + c.h + " " : "") + (h || m ? m + " " + c.m + " " : "") + s + " " + c.s;
      if (left === 0) { setTimeout(poll, 500 + Math.random() * 1500); return; }
      setTimeout(tick, 1000);
    };
    tick();
  }

  // A newcomer's proof of work ([room.challenge]): solved in a worker (challenge.js) while
  // the page stays calm, answered, then this page again, which now shows the place in line.
  // Should the worker fail, the page takes the path of a browser without JavaScript.
  function challenge() {
    var box = $("challenge"), c = box.dataset, bar = $("work");
    function retry() {
      show("work-status", c.retry);
      setTimeout(function () { go(false); }, 3000);
    }
    var solver;
    try { solver = new Worker("/.usher/challenge.js"); } catch (e) { return location.replace(c.noscript); }
    solver.onerror = function () { setTimeout(function () { location.replace(c.noscript); }, Number(c.wait) * 1000); };
    solver.onmessage = function (e) {
      if (e.data.done) { bar.value = e.data.done; bar.textContent = e.data.done + " / " + c.puzzles; return; }
      show("work-status", c.done);
      fetch(c.answer, {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ token: c.token, nonces: e.data.nonces })
      }).then(function (r) { if (!r.ok) throw new Error(r.status); go(false); }, retry)
        .catch(retry);
    };
    solver.postMessage({ token: c.token, bits: Number(c.bits), puzzles: Number(c.puzzles) });
  }

  if (status === "challenge" && $("challenge")) {
    challenge();
  } else if (follows) {
    later(base);
  } else {
    // Over a rate limit (data-poll = Retry-After), or a state the script does not follow:
    // ask for the page again, as the meta refresh would.
    setTimeout(function () { go(false); }, base * 1000);
  }
})();
