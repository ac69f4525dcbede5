// Advisory pages: recommendation decisions sent to the recommendations API (cookie session
// plus the page's X-CSRF-Token, as every page write), refusals shown in words on the card,
// and findings arriving live on /analytics. No build step; plain ES2020.
(function () {
  "use strict";
  const body = document.body;
  const FC = window.FC || {};
  const VERBS = { approve: "approval", reject: "rejection", done: "completion" };

  // -- recommendations ---------------------------------------------------------------------
  function say(card, text, reasons) {
    const box = card.querySelector("[data-rec-message]");
    if (!box) { if (FC.flash) FC.flash(text); return; }
    const p = document.createElement("p");
    p.textContent = text;
    box.replaceChildren(p);
    if (reasons && reasons.length) {
      const ul = document.createElement("ul");
      for (const reason of reasons) {
        const li = document.createElement("li");
        li.textContent = reason.message || reason.code || "refused";
        if (reason.code) li.dataset.code = reason.code;
        ul.append(li);
      }
      box.append(ul);
    }
    box.hidden = false;
  }

  async function refreshCard(card, id) {
    const response = await fetch("/recommendations/" + id + "?part=card", {
      credentials: "same-origin", headers: { Accept: "text/html" },
    });
    if (!response.ok) return location.reload();
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const fresh = template.content.querySelector("[data-recommendation-id]");
    if (!fresh) return location.reload();
    const history = document.getElementById("history-list");
    if (fresh.dataset.status !== "proposed" && history && card.closest("#proposed-list")) {
      card.remove();
      history.prepend(fresh);
      document.querySelectorAll('[data-empty-for="history-list"]').forEach((el) => el.remove());
    } else {
      card.replaceWith(fresh);
    }
    return fresh;
  }

  async function decide(form) {
    const card = form.closest("[data-recommendation-id]");
    if (!card) return;
    const id = card.dataset.recommendationId;
    const action = form.dataset.recAction;
    const payload = {};
    if (action === "approve" && form.elements.note && form.elements.note.value.trim()) {
      payload.note = form.elements.note.value.trim();
    }
    if (action === "reject") {
      const reason = form.elements.reason.value.trim();
      if (!reason) {
        say(card, "Say why: rejecting needs a reason.");
        form.elements.reason.focus();
        return;
      }
      payload.reason = reason;
    }
    const buttons = card.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    card.setAttribute("aria-busy", "true");
    try {
      let response;
      try {
        response = await fetch("/api/v1/recommendations/" + id + "/" + action, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRF-Token": body.dataset.csrf || "",
          },
          body: JSON.stringify(payload),
        });
      } catch (_) {
        say(card, "The server cannot be reached; nothing was decided.");
        return;
      }
      if (response.ok) {
        const fresh = await refreshCard(card, id);
        if (fresh) fresh.dataset.decided = action;
        return;
      }
      let error = {};
      try { error = (await response.json()).error || {}; } catch (_) { /* not JSON */ }
      if (error.code === "SAFETY_REFUSED") {
        const reasons = (error.details && error.details.reasons) || [];
        say(card, "The safety validator refused this " + (VERBS[action] || action) +
          ": nothing was sent and the recommendation is unchanged. Its reasons:", reasons);
      } else {
        say(card, error.message || "The request failed (" + response.status + ").");
      }
    } finally {
      card.removeAttribute("aria-busy");
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest ? event.target.closest("form[data-rec-action]") : null;
    if (!form) return;
    event.preventDefault();
    decide(form);
  });

  // -- /analytics: new findings on top, the ranking refreshed ------------------------------
  // Messages: {"type": "finding", "device_id", "finding": {"id", ...}}; rows are rendered by
  // the server (GET /analytics/findings/{id}?part=row), as alert rows are.
  const rows = document.getElementById("finding-rows");
  if (!rows || !FC.live || !window.htmx) return;
  const seen = new Set();
  let rankingTimer = 0;

  function refreshRanking() {
    rankingTimer = 0;
    const target = document.getElementById("ranking");
    if (target) FC.load("/analytics?part=ranking", target, "innerHTML");
  }

  function refreshFindings() {
    const q = new URLSearchParams({ part: "findings" });
    if (rows.dataset.device) q.set("device", rows.dataset.device);
    FC.load("/analytics?" + q, "#findings", "innerHTML");
  }

  FC.live.on("finding", (msg) => {
    if (rows.dataset.device && msg.device_id !== rows.dataset.device) return;
    const id = msg.finding && msg.finding.id;
    if (id === undefined || id === null) {
      refreshFindings();
      return scheduleRanking();
    }
    const current = document.getElementById("finding-rows");
    if (current && !seen.has(String(id)) && !current.querySelector('[data-finding-id="' + CSS.escape(String(id)) + '"]')) {
      seen.add(String(id));
      FC.load("/analytics/findings/" + encodeURIComponent(id) + "?part=row", current, "afterbegin");
    }
    scheduleRanking();
  });

  function scheduleRanking() {
    if (!rankingTimer) rankingTimer = setTimeout(refreshRanking, 1000);
  }
  FC.live.subscribe("analytics", rows.dataset.device || null);
})();
