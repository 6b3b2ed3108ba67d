// The overview, live: at each "changed" event the page fetches its own body again
// (?fragment=1, rendered by the server) and swaps it in.
(function () {
  "use strict";
  const body = document.getElementById("overview");
  if (!body || !window.live || !window.EventSource) return;
  const badge = document.getElementById("live-state");
  const stream = live("/web/events/jobs", function () {
    live.refresh(body, body.dataset.fragment);
  }, ["changed"]);
  if (badge) {
    badge.hidden = false;
    setInterval(function () {
      badge.classList.toggle("off", !stream.open);
      badge.textContent = stream.open ? "● live" : "○ paused";
    }, 1000);
  }
})();
