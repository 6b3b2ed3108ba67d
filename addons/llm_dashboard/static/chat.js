// The chat page, live: the composer posts to the generation API and the reply streams into
// the page as its events arrive (Server-Sent Events read from the POST's own response).
// Without this script the form posts to the page itself and the reply shows on reload.
(function () {
  "use strict";
  const form = document.getElementById("composer");
  if (!form || !window.fetch || !window.TextDecoderStream) return;
  const messages = document.getElementById("messages");
  const status = document.getElementById("status");
  const stop = document.getElementById("stop");
  const send = form.querySelector("button[type=submit]");
  const csrf = form.querySelector("input[name=csrf_token]").value;
  let controller = null;
  let jobId = null;

  function bubble(message) {
    let node = document.getElementById("message-" + message.id);
    if (!node) {
      node = document.createElement("div");
      node.id = "message-" + message.id;
      node.className = "message " + message.llm_role;
      const role = document.createElement("div");
      role.className = "role";
      role.textContent = message.llm_role;
      const body = document.createElement("div");
      body.className = "body";
      node.append(role, body);
      messages.append(node);
    }
    return node;
  }

  function show(message, text) {
    const node = bubble(message);
    node.querySelector(".body").textContent = text === undefined ? message.body : text;
    node.dataset.state = message.state;
    node.scrollIntoView({block: "end"});
  }

  function setStatus(text, kind) {
    status.textContent = text || "";
    status.className = "status " + (kind || "");
  }

  function handle(update) {
    const message = update.message;
    switch (update.type) {
      case "job_status":
        jobId = update.job_id;
        setStatus(update.message, update.state);
        break;
      case "message_create":
      case "message_update": {
        const empty = document.getElementById("no-messages");
        if (empty) empty.remove();
        show(message);
        break;
      }
      case "restart":
        if (message) show(message, "");
        setStatus("A new attempt starts the reply over.", "retrying");
        break;
      case "message_chunk": {
        const body = bubble(message).querySelector(".body");
        body.textContent += update.content;
        break;
      }
      case "done":
        if (message) show(message);
        setStatus("");
        break;
      case "cancelled":
        setStatus("Stopped.", "cancelled");
        break;
      case "error":
        setStatus(update.error, "failed");
        break;
    }
  }

  async function readEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: "));
        if (data.length) handle(JSON.parse(data.map((l) => l.slice(6)).join("\n")));
      }
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const content = form.elements.content.value.trim();
    if (!content || controller) return;
    const queued = form.elements.mode.value === "queue";
    controller = new AbortController();
    jobId = null;
    send.disabled = true;
    stop.hidden = false;
    setStatus(queued ? "Queuing..." : "Generating...", "running");
    try {
      const response = await fetch(form.dataset.generate, {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify({content: content, use_queue: queued}),
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
        setStatus(detail, "failed");
        return;
      }
      form.elements.content.value = "";
      await readEvents(response);
    } catch (error) {
      if (error.name !== "AbortError") setStatus("The stream was interrupted: " + error, "failed");
    } finally {
      if (queued) {
        const jobs = document.getElementById("thread-jobs-card");
        live.refresh(jobs, jobs.dataset.fragment);
      }
      controller = null;
      send.disabled = false;
      stop.hidden = true;
    }
  });

  // A reply already being generated when the page opened: follow its job.
  const EVENTS = ["job_status", "message_create", "message_chunk", "restart", "message_update",
    "done", "error", "cancelled"];
  function follow(job) {
    jobId = job;
    stop.hidden = false;
    send.disabled = true;
    const stream = live("/api/jobs/" + job + "/events", function (type, data) {
      if (typeof data !== "object") return;
      handle(data);
      if (type === "done" || type === "error" || type === "cancelled") {
        stream.close();
        stop.hidden = true;
        send.disabled = false;
        const jobs = document.getElementById("thread-jobs-card");
        live.refresh(jobs, jobs.dataset.fragment);
      }
    }, EVENTS);
  }
  document.querySelectorAll(".no-js-stop").forEach(function (node) { node.hidden = true; });
  if (form.dataset.job) follow(Number(form.dataset.job));

  stop.addEventListener("click", async function () {
    if (jobId === null) {  // direct: leaving the stream cancels the reply
      if (controller) controller.abort();
      setStatus("Stopped.", "cancelled");
      return;
    }
    await fetch(form.dataset.stop, {
      method: "POST",
      headers: {"X-CSRF-Token": csrf},
      credentials: "same-origin",
    });
  });
})();
