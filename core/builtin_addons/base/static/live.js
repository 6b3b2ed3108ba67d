/* Live pages: follow a Server-Sent Events stream while the page is visible.
 *
 *   const stream = live("/web/events/jobs", (type, data, event) => { ... }, ["changed"]);
 *   stream.close();   // for good (e.g. when the job it follows has ended)
 *
 * The stream is closed while the page is hidden (another tab, a minimised window) and opened
 * again when it is visible, resuming after the last event id it saw (``?after=<id>``); a
 * dropped connection is reopened the same way a moment later. ``types`` are the event names
 * to listen to (default: unnamed events). An ``error`` event that carries data is the
 * server's; one without is the connection's and only reopens the stream.
 *
 *   live.refresh(element, url)   replaces element's content with the HTML at url (the page's
 *                                own fragment, rendered by the server); calls that come while
 *                                one is in flight are folded into one more.
 */
(function () {
  "use strict";

  const REOPEN_DELAY_MS = 2000;

  function live(url, onEvent, types) {
    types = types || ["message"];
    let source = null;
    let lastId = null;
    let closed = false;
    let reopenTimer = null;

    function address() {
      const target = new URL(url, window.location.href);
      if (lastId !== null) target.searchParams.set("after", lastId);
      return target.toString();
    }

    function stop() {
      if (reopenTimer !== null) {
        clearTimeout(reopenTimer);
        reopenTimer = null;
      }
      if (source !== null) {
        source.close();
        source = null;
      }
    }

    function open() {
      if (closed || source !== null || document.hidden) return;
      source = new EventSource(address(), { withCredentials: true });
      types.forEach(function (type) {
        source.addEventListener(type, function (event) {
          if (event.data === undefined) return; // the connection's error: see below
          if (event.lastEventId) lastId = event.lastEventId;
          let data = event.data;
          try {
            data = JSON.parse(event.data);
          } catch (ignored) {
            /* plain text */
          }
          onEvent(type, data, event);
        });
      });
      source.addEventListener("error", function (event) {
        if (event.data !== undefined) return; // the server's error event, handled above
        // Reopen ourselves (EventSource would resend the first address's ?after=).
        stop();
        if (!closed) reopenTimer = setTimeout(open, REOPEN_DELAY_MS);
      });
    }

    function onVisibility() {
      if (document.hidden) stop();
      else open();
    }

    document.addEventListener("visibilitychange", onVisibility);
    open();
    return {
      close: function () {
        closed = true;
        stop();
        document.removeEventListener("visibilitychange", onVisibility);
      },
      get open() {
        return source !== null;
      },
    };
  }

  const refreshing = new WeakMap();

  live.refresh = function (element, url) {
    const state = refreshing.get(element);
    if (state) {
      state.again = true;
      return state.done;
    }
    const current = { again: false };
    refreshing.set(element, current);
    current.done = fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("refresh: " + response.status);
        return response.text();
      })
      .then(function (html) {
        element.innerHTML = html;
        element.dispatchEvent(new CustomEvent("live:refreshed", { bubbles: true }));
      })
      .catch(function (error) {
        console.warn(error);
      })
      .finally(function () {
        refreshing.delete(element);
        if (current.again) live.refresh(element, url);
      });
    return current.done;
  };

  window.live = live;
})();
