// OTA pages and the device page's firmware card follow the "ota" live channel. The server
// renders every part (GET /ota/rollouts/{id}?part=head|progress|row, GET
// /ota/devices/{id}/updates); a device's state cell on a rollout page is set here.
// No build step; plain ES2020. Without it the pages work, only not live.
(function () {
  "use strict";
  const FC = window.FC;
  if (!FC || !FC.live || !document.querySelector("[data-ota-live]")) return;

  function rolloutChanged(id) {
    const base = "/ota/rollouts/" + id + "?part=";
    const parts = { head: "data-rollout-head", progress: "data-rollout-progress", row: "data-rollout-row" };
    for (const [part, attr] of Object.entries(parts)) {
      const selector = "[" + attr + '="' + id + '"]';
      if (document.querySelector(selector)) FC.load(base + part, selector, "outerHTML");
    }
  }

  FC.live.on("rollout", (msg) => { if (msg.id) rolloutChanged(msg.id); });

  // The device page's firmware and software card (ota/_device_updates.html).
  const card = document.querySelector("[data-device-updates]");
  const cardDevice = card && card.dataset.deviceUpdates;
  function cardChanged() {
    FC.load("/ota/devices/" + cardDevice + "/updates", '[data-device-updates="' + cardDevice + '"]', "outerHTML");
  }

  FC.live.on("device", (msg) => {
    if (cardDevice && msg.device_id === cardDevice) cardChanged();
    if (!msg.rollout_id || !document.querySelector('[data-rollout-head="' + msg.rollout_id + '"]')) return;
    const state = document.querySelector('[data-device-state="' + msg.device_id + '"]');
    if (state) {
      state.textContent = String(msg.state).replace(/_/g, " ");
      state.className = "state state-" + msg.state;
    }
    const error = document.querySelector('[data-device-error="' + msg.device_id + '"]');
    if (error) {
      error.replaceChildren();
      if (msg.error) {
        const span = document.createElement("span");
        span.className = "error";
        span.textContent = msg.error;
        error.append(span);
      }
    }
    rolloutChanged(msg.rollout_id);
  });

  // Changes between the page's rendering and the subscription (or during a reconnect)
  // came with no message: once subscribed, the page's rollouts are fetched again.
  FC.live.on("subscribed", (msg) => {
    if (msg.channel !== "ota") return;
    if (cardDevice) cardChanged();
    const ids = new Set();
    document.querySelectorAll("[data-rollout-head], [data-rollout-row]").forEach((el) => {
      ids.add(el.dataset.rolloutHead || el.dataset.rolloutRow);
    });
    ids.forEach(rolloutChanged);
  });

  FC.live.subscribe("ota", cardDevice);  // a device page: that device's messages only
})();
