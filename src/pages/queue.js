// Polls /.usher/status at the interval the server suggests, with jitter so that many
// browsers do not poll in lockstep, and backs off on errors. Reloads the page (the URL the
// visitor first asked for) when the turn comes or the place was lost.
(function () {
  "use strict";
  var root = document.getElementById("usher");
  if (!root) return;
  var base = Number(root.getAttribute("data-poll")) || 5;
  var failures = 0;

  function later(seconds) {
    var jittered = seconds * (0.8 + Math.random() * 0.4);
    setTimeout(poll, jittered * 1000);
  }

  function eta(seconds) {
    if (seconds == null) return "not known yet";
    if (seconds < 60) return "less than a minute";
    if (seconds < 5400) {
      var m = Math.ceil(seconds / 60);
      return m === 1 ? "about a minute" : "about " + m + " minutes";
    }
    return "about " + Math.round(seconds / 3600) + " hours";
  }

  function show(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== String(text)) el.textContent = text;
  }

  function poll() {
    fetch("/.usher/status", { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        failures = 0;
        if (s.status === "admitted" || s.status === "expired") { location.reload(); return; }
        if (s.status !== root.getAttribute("data-status")) { location.reload(); return; }
        if (s.ahead != null) show("ahead", s.ahead);
        show("eta", eta(s.eta_seconds));
        later(s.poll_after_seconds || base);
      })
      .catch(function () {
        failures += 1;
        later(Math.min(60, base * Math.pow(2, failures)));
      });
  }

  later(base);
})();
