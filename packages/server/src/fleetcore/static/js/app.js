// Fleetcore pages: CSRF for htmx writes, error messages, and the live WebSocket
// (status badges, command states, alerts). No build step; plain ES2020.
(function () {
  "use strict";
  const body = document.body;
  const FC = (window.FC = window.FC || {});

  // -- htmx: every write carries the session's CSRF token; errors are shown, not lost ----
  body.addEventListener("htmx:configRequest", (e) => {
    if (body.dataset.csrf) e.detail.headers["X-CSRF-Token"] = body.dataset.csrf;
  });
  body.addEventListener("htmx:responseError", (e) => {
    let message = "The request failed (" + e.detail.xhr.status + ").";
    try {
      const envelope = JSON.parse(e.detail.xhr.responseText);
      if (envelope && envelope.error && envelope.error.message) message = envelope.error.message;
    } catch (_) { /* not JSON: keep the generic message */ }
    FC.flash(message);
  });
  body.addEventListener("htmx:sendError", () => FC.flash("The server cannot be reached."));
  body.addEventListener("htmx:afterRequest", (e) => {
    const form = e.detail.elt;
    if (e.detail.successful && form.matches && form.matches("form[data-reset-on-success]")) {
      form.reset();
      FC.flash(null);
    }
  });
  body.addEventListener("htmx:load", (e) => {
    formatTimes(e.detail.elt);
    applyCommandStates(e.detail.elt);
  });

  // -- server-rendered parts fetched into the page, every one of them ------------------
  // htmx.ajax without a source element syncs on <body>: a call made while another is in
  // flight is queued, and a third replaces the queued second (htmx's default "queue last"),
  // so of three live updates in a burst one was dropped without a word (a rollout's
  // progress, a plate read's row). Here the calls run one at a time, in order, none lost.
  // A part asked for again while its request waits is fetched once (it reads the newest);
  // asked for while its request runs, it is fetched once more after.
  // `target` is an element or a selector (looked up when its turn comes: a swap may have
  // replaced it).
  const parts = new Map(); // key -> "waiting" | "running" | "again"
  let chain = Promise.resolve();
  FC.load = function (url, target, swap) {
    const key = swap + " " + url + (typeof target === "string" ? " " + target : "");
    const state = parts.get(key);
    if (state === "waiting") return chain;
    if (state) { parts.set(key, "again"); return chain; }
    parts.set(key, "waiting");
    chain = chain.then(async () => {
      parts.set(key, "running");
      const el = typeof target === "string" ? document.querySelector(target) : target;
      try {
        if (window.htmx && el && el.isConnected) {
          await window.htmx.ajax("GET", url, { target: el, swap: swap });
        }
      } catch (_) { /* the part stays as it was; the next news asks again */ }
      const again = parts.get(key) === "again";
      parts.delete(key);
      if (again) FC.load(url, target, swap);
    });
    return chain;
  };

  FC.flash = function (message) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
  };

  function formatTimes(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("[data-ms]").forEach((el) => {
      el.textContent = new Date(Number(el.dataset.ms)).toLocaleString();
    });
  }

  // -- the live socket: one per page, resubscribed after a reconnect -------------------
  const handlers = {};
  const wanted = new Map(); // "channel|device" -> subscribe message
  let socket = null;
  let retryMs = 500;

  FC.live = {
    on(type, fn) { (handlers[type] = handlers[type] || []).push(fn); },
    subscribe(channel, deviceId, keys) {
      const msg = { type: "subscribe", channel: channel };
      if (deviceId) msg.device_id = deviceId;
      if (keys) msg.keys = keys;
      wanted.set(channel + "|" + (deviceId || ""), msg);
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
      else connect();
    },
  };

  function setState(text) {
    document.querySelectorAll("[data-live-state]").forEach((el) => { el.textContent = text; });
  }

  function connect() {
    if (socket || !body.dataset.csrf) return; // signed-in pages only
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/api/v1/ws");
    socket.addEventListener("open", () => {
      retryMs = 500;
      setState("· live");
      wanted.forEach((msg) => socket.send(JSON.stringify(msg)));
    });
    socket.addEventListener("message", (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      (handlers[msg.type] || []).forEach((fn) => fn(msg));
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      delete body.dataset.subscribed;
      if (event.code === 4401) return setState("· signed out"); // do not knock again
      setState("· reconnecting");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 15000);
    });
  }

  // Which channels the server confirmed, e.g. data-subscribed="status commands".
  FC.live.on("subscribed", (msg) => {
    const now = new Set((body.dataset.subscribed || "").split(" ").filter(Boolean));
    now.add(msg.channel);
    body.dataset.subscribed = [...now].sort().join(" ");
  });

  // -- presence badges ---------------------------------------------------------------------
  FC.live.on("status", (msg) => {
    if (!msg.status) return; // "config" messages share the channel
    document.querySelectorAll('[data-status-of="' + msg.device_id + '"]').forEach((el) => {
      el.textContent = msg.status;
      el.className = "badge badge-" + msg.status;
    });
    const feed = document.querySelector('[data-history-of="' + msg.device_id + '"]');
    if (feed) {
      const li = document.createElement("li");
      const badge = document.createElement("span");
      badge.className = "badge badge-" + msg.status;
      badge.textContent = msg.status;
      li.append(badge, " " + msg.reason + " · " + new Date(msg.at).toLocaleString());
      feed.prepend(li);
      const empty = document.querySelector("[data-history-empty]");
      if (empty) empty.remove();
    }
  });

  // -- command states only move forward; a row may arrive after its first update ----------
  const RANK = { queued: 0, sent: 1, delivered: 2, succeeded: 3, failed: 3, expired: 3, cancelled: 3 };
  const commandStates = new Map();

  function showCommand(row, msg) {
    const status = row.querySelector("[data-command-status]");
    if (!status || RANK[msg.status] < RANK[status.textContent.trim()]) return;
    status.textContent = msg.status;
    status.className = "state state-" + msg.status;
    const result = row.querySelector("[data-command-result]");
    if (result && (msg.error || (msg.result !== null && msg.result !== undefined))) {
      const el = document.createElement(msg.error ? "span" : "code");
      if (msg.error) el.className = "error";
      el.textContent = msg.error || JSON.stringify(msg.result);
      result.replaceChildren(el);
    }
  }

  function applyCommandStates(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("[data-command-id]").forEach((row) => {
      const msg = commandStates.get(row.dataset.commandId);
      if (msg) showCommand(row, msg);
    });
    if (root.matches && root.matches("[data-command-id]")) {
      const msg = commandStates.get(root.dataset.commandId);
      if (msg) showCommand(root, msg);
    }
  }

  FC.live.on("command", (msg) => {
    const known = commandStates.get(msg.id);
    if (!known || RANK[msg.status] >= RANK[known.status]) commandStates.set(msg.id, msg);
    const row = document.querySelector('[data-command-id="' + msg.id + '"]');
    if (row) showCommand(row, msg);
  });

  // -- alerts: new ones and status changes appear without a reload -----------------------
  // Messages: {"type": "alert", "event": "alert.opened" | ..., "alert": {...}}. Rows and
  // heads are rendered by the server (GET /alerts/{id}?part=row|head), feeds here.
  function swapFromServer(url, target, swap) {
    FC.load(url, target, swap);
  }

  function dropEmpty(id) {
    document.querySelectorAll('[data-empty-for="' + id + '"]').forEach((el) => el.remove());
  }

  function feedItem(alert) {
    const li = document.createElement("li");
    li.dataset.alertId = alert.id;
    const sev = document.createElement("span");
    sev.className = "sev sev-" + alert.severity;
    sev.textContent = alert.severity;
    const link = document.createElement("a");
    link.href = "/alerts/" + alert.id;
    link.textContent = alert.name;
    const status = document.createElement("span");
    status.dataset.alertStatus = "";
    li.append(sev, " ", link, " · ", status);
    return li;
  }

  function updateFeed(list, alert, event) {
    if (list.dataset.alertsOf && alert.device_id !== list.dataset.alertsOf) return;
    let li = list.querySelector('[data-alert-id="' + alert.id + '"]');
    if (!li) {
      if (event !== "opened" && event !== "repeated") return;
      if (alert.status === "cleared") return;
      li = feedItem(alert);
      list.prepend(li);
      if (list.id) dropEmpty(list.id);
    }
    if (alert.status === "cleared" && list.hasAttribute("data-open-only")) return li.remove();
    const status = li.querySelector("[data-alert-status]");
    if (status) {
      status.textContent = alert.status;
      status.className = "state state-" + alert.status;
    }
  }

  function updateRows(rows, alert, event) {
    const row = rows.querySelector('[data-alert-id="' + alert.id + '"]');
    const url = "/alerts/" + alert.id + "?part=row";
    if (row) return swapFromServer(url, row, "outerHTML");
    if (event !== "opened") return;
    const f = rows.dataset;
    if ((f.status && f.status !== alert.status) || (f.severity && f.severity !== alert.severity) ||
        (f.device && f.device !== alert.device_id)) return;
    dropEmpty(rows.id);
    swapFromServer(url, rows, "afterbegin");
  }

  FC.live.on("alert", (msg) => {
    const alert = msg.alert;
    if (!alert || !alert.id) return;
    const event = String(msg.event || "").replace(/^alert\./, "");
    document.querySelectorAll("ul[data-live-alerts]").forEach((list) => updateFeed(list, alert, event));
    const rows = document.getElementById("alert-rows");
    if (rows) updateRows(rows, alert, event);
    const head = document.querySelector('[data-alert-head="' + alert.id + '"]');
    if (head && event !== "commented") swapFromServer("/alerts/" + alert.id + "?part=head", head, "outerHTML");
    body.dispatchEvent(new CustomEvent("fc-alert", { detail: msg })); // e.g. the dashboard's counts
  });

  // An htmx swap into a list removes its "nothing yet" note.
  body.addEventListener("htmx:afterSwap", (e) => {
    const target = e.detail.target;
    if (target && target.id) dropEmpty(target.id);
  });

  // Targets marked data-swap-errors show the server's 4xx answer (a form's messages) in place.
  body.addEventListener("htmx:beforeSwap", (e) => {
    const status = e.detail.xhr.status;
    const target = e.detail.target;
    if (status >= 400 && status < 500 && target && target.closest("[data-swap-errors]")) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  // -- what this page listens to -------------------------------------------------------
  function start() {
    formatTimes(document);
    const badges = new Set();
    document.querySelectorAll("[data-status-of]").forEach((el) => badges.add(el.dataset.statusOf));
    if (badges.size === 1) FC.live.subscribe("status", [...badges][0]);
    else if (badges.size > 1 || document.querySelector("#device-rows")) FC.live.subscribe("status");
    document.querySelectorAll("[data-commands-of]").forEach((el) => {
      FC.live.subscribe("commands", el.dataset.commandsOf);
    });
    const alerts = document.querySelector("[data-live-alerts]");
    if (alerts) FC.live.subscribe("alerts", alerts.dataset.alertsOf);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
