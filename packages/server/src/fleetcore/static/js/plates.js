// Plate pages: watchlist forms and buttons sent as JSON to the watchlists API (cookie session
// plus the page's X-CSRF-Token, as every page write), the changed part of the page read
// again from the server, refusals shown in words; and new reads arriving live on /plates.
// No build step; plain ES2020.
(function () {
  "use strict";
  const body = document.body;
  const FC = window.FC || {};

  // -- API forms: <form data-api-url data-api-method data-refresh data-refresh-target> ------
  function payloadOf(form) {
    const payload = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.type === "checkbox") { payload[el.name] = el.checked; continue; }
      const value = el.value.trim();
      if (value === "" && el.hasAttribute("data-optional")) continue;
      payload[el.name] = el.hasAttribute("data-number") && value !== "" ? Number(value) : value;
    }
    return payload;
  }

  function say(el, text) {
    const box = el.closest("form, [data-api-scope]")?.querySelector("[data-form-message]");
    if (box) box.textContent = text || "";
    else if (FC.flash) FC.flash(text);
  }

  async function send(el, payload) {
    const method = el.dataset.apiMethod || "POST";
    const headers = { Accept: "application/json", "X-CSRF-Token": body.dataset.csrf || "" };
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(el.dataset.apiUrl, {
        method: method,
        credentials: "same-origin",
        headers: headers,
        body: payload === undefined ? undefined : JSON.stringify(payload),
      });
    } catch (_) {
      say(el, "The server cannot be reached; nothing was changed.");
      return null;
    }
    if (!response.ok) {
      let error = {};
      try { error = (await response.json()).error || {}; } catch (_) { /* not JSON */ }
      say(el, error.message || "The request failed (" + response.status + ").");
      return null;
    }
    let answer = {};
    try { answer = (await response.json()) || {}; } catch (_) { /* 204: no body */ }
    const skipped = answer.duplicates || [];
    say(el, skipped.length ? "Already on the list: " + skipped.join(", ") : "");
    return answer;
  }

  async function refresh(el) {
    const url = el.dataset.refresh;
    const target = document.querySelector(el.dataset.refreshTarget || "");
    if (!url || !target || !window.htmx) return location.reload();
    await FC.load(url, target, "innerHTML");
  }

  async function run(el, payload) {
    const controls = el.matches("form") ? el.querySelectorAll("button") : [el];
    controls.forEach((b) => { b.disabled = true; });
    el.setAttribute("aria-busy", "true");
    try {
      if ((await send(el, payload)) === null) return;
      if (el.hasAttribute("data-reset-after")) el.reset();
      await refresh(el);
      body.dataset.apiDone = String(Number(body.dataset.apiDone || 0) + 1); // for tests
    } finally {
      el.removeAttribute("aria-busy");
      controls.forEach((b) => { b.disabled = false; });
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest ? event.target.closest("form[data-api-url]") : null;
    if (!form) return;
    event.preventDefault();
    run(form, payloadOf(form));
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest ? event.target.closest("button[data-api-url]") : null;
    if (!button) return;
    event.preventDefault();
    run(button, undefined);
  });

  // -- a thumbnail that cannot load (its image expired under media retention): the placeholder
  document.addEventListener("error", (event) => {
    const img = event.target;
    if (!(img instanceof HTMLImageElement) || !img.matches("img[data-thumb]")) return;
    const note = document.createElement("span");
    note.className = "plate-thumb no-image";
    note.dataset.noImage = "";
    note.textContent = "image gone";
    img.replaceWith(note);
  }, true); // error events do not bubble

  // -- /plates: a read stored while the newest page is open joins the top ------------------
  // Messages: {"type": "plate_read", "read": {"id", ...}} on the "plates" channel; rows are
  // rendered by the server (GET /plates/reads/{id}?part=row), as alert rows are.
  const seen = new Set();
  if (!FC.live || !window.htmx) return;
  FC.live.on("plate_read", (msg) => {
    const rows = document.querySelector("#plate-rows[data-newest]");
    const id = msg.read && msg.read.id;
    if (!rows || id === undefined || id === null || seen.has(String(id))) return;
    seen.add(String(id));
    if (rows.querySelector('[data-read-id="' + CSS.escape(String(id)) + '"]')) return;
    FC.load("/plates/reads/" + encodeURIComponent(id) + "?part=row", rows, "afterbegin");
  });
  if (document.querySelector("#plate-rows[data-newest]")) FC.live.subscribe("plates");
})();
