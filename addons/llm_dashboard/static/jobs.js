// The job list, live: when jobs change, the rows are fetched again (?fragment=rows, the same
// filters and page) and swapped in, keeping the ticked boxes; a box in the header ticks all.
(function () {
  "use strict";
  const rows = document.getElementById("job-rows");
  if (!rows) return;
  const all = document.getElementById("select-all");

  function ticked() {
    return new Set(
      Array.from(rows.querySelectorAll("input[name=ids]:checked"), function (box) {
        return box.value;
      })
    );
  }

  let keep = new Set();
  rows.addEventListener("live:refreshed", function () {
    rows.querySelectorAll("input[name=ids]").forEach(function (box) {
      box.checked = keep.has(box.value);
    });
  });

  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      rows.querySelectorAll("input[name=ids]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  if (!window.live || !window.EventSource) return;
  live("/web/events/jobs", function (type, data) {
    if (!data.jobs) return;
    keep = ticked();
    live.refresh(rows, rows.dataset.fragment);
  }, ["changed"]);
})();
