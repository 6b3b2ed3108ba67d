// A job's page, live: while the job is queued, running or waiting for its retry, the page
// follows the job's events (GET /api/jobs/{id}/events, after the last piece of the reply the
// server rendered): pieces of the reply are appended as they come, a restart (a new attempt)
// clears it, and a change of state fetches the status panel again (?fragment=status).
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root || root.dataset.live !== "1" || !window.live || !window.EventSource) return;
  const reply = document.getElementById("reply");
  const note = document.getElementById("reply-note");
  const status = document.getElementById("job-status");
  const url = "/api/jobs/" + root.dataset.job + "/events?after=" + root.dataset.after;
  const types = [
    "job_status", "message_chunk", "restart", "message_update", "done", "error", "cancelled",
  ];

  function refreshStatus() {
    live.refresh(status, status.dataset.fragment);
  }

  const stream = live(url, function (type, data) {
    switch (type) {
      case "message_chunk":
        reply.textContent += data.content;
        note.textContent = "streaming";
        break;
      case "restart":
        reply.textContent = "";
        note.textContent = "a new attempt started over";
        refreshStatus();
        break;
      case "job_status":
        note.textContent = data.message || "";
        refreshStatus();
        break;
      case "message_update":
        if (data.message && data.message.body) reply.textContent = data.message.body;
        break;
      case "done":
      case "error":
      case "cancelled":
        stream.close();
        note.textContent = type === "done" ? "" : (data.error || data.message || "");
        refreshStatus();
        break;
    }
  }, types);
})();
