"use strict";
// Call search: filters → GET /api/v1/recordings, keyset pages through next_cursor.
(function () {
  const ui = window.tallenne;
  const form = document.getElementById("search-form");
  if (!form) return;
  const body = document.querySelector("#results tbody");
  const status = document.getElementById("search-status");
  const next = document.getElementById("next-page");
  let filters = null;
  let cursor = null;
  let page = 0;

  function currentFilters() {
    const params = new URLSearchParams();
    for (const name of ["company", "agent", "queue", "direction", "tag", "external_id", "phone",
                        "min_duration_s", "max_duration_s", "min_silence_ratio",
                        "min_overtalk_s", "flag"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    for (const name of ["from", "to"]) {
      const value = ui.rfc3339(form.elements[name].value);
      if (value) params.set(name, value);
    }
    params.set("limit", "50");
    return params;
  }

  function row(recording) {
    const tr = document.createElement("tr");
    const link = ui.el("a", ui.when(recording.started_at), { href: "/recordings/" + recording.id });
    ui.cell(tr, link);
    ui.cell(tr, recording.company);
    ui.cell(tr, recording.agent);
    ui.cell(tr, recording.queue);
    ui.cell(tr, ui.t("direction." + recording.direction));
    ui.cell(tr, ui.clock(recording.duration_s));
    ui.cell(tr, recording.tags.join(", "));
    ui.cell(tr, recording.external_id).className = "mono";
    return tr;
  }

  async function load() {
    const params = new URLSearchParams(filters);
    if (cursor) params.set("cursor", cursor);
    status.textContent = ui.t("loading");
    next.disabled = true;
    try {
      const result = await ui.api("GET", "/api/v1/recordings?" + params.toString());
      body.replaceChildren(...result.items.map(row));
      page += 1;
      status.textContent = result.items.length ? "" : ui.t("search.none");
      cursor = result.next_cursor;
      next.hidden = !cursor;
    } catch (error) {
      status.textContent = ui.t("error") + ": " + error.message;
    } finally {
      next.disabled = false;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    filters = currentFilters();
    cursor = null;
    page = 0;
    load();
  });
  next.addEventListener("click", load);

  filters = currentFilters();
  load();
})();
