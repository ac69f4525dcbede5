// OTA pages: rollouts follow the "ota" live channel. The server renders every part
// (GET /ota/rollouts/{id}?part=head|progress|row); a device's state cell is set here.
// No build step; plain ES2020. Without it the pages work, only not live.
(function () {
  "use strict";
  const FC = window.FC;
  if (!FC || !FC.live || !document.querySelector("[data-ota-live]")) return;

  // One request per part at a time; news arriving meanwhile asks once more after it.
  const loading = new Map(); // url -> true while busy, "again" if news came meanwhile

  function reload(url, selector) {
    if (!window.htmx || !document.querySelector(selector)) return;
    if (loading.has(url)) { loading.set(url, "again"); return; }
    loading.set(url, true);
    window.htmx.ajax("GET", url, { target: selector, swap: "outerHTML" }).finally(() => {
      const again = loading.get(url) === "again";
      loading.delete(url);
      if (again) reload(url, selector);
    });
  }

  function rolloutChanged(id) {
    const base = "/ota/rollouts/" + id + "?part=";
    reload(base + "head", '[data-rollout-head="' + id + '"]');
    reload(base + "progress", '[data-rollout-progress="' + id + '"]');
    reload(base + "row", '[data-rollout-row="' + id + '"]');
  }

  FC.live.on("rollout", (msg) => { if (msg.id) rolloutChanged(msg.id); });

  FC.live.on("device", (msg) => {
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

  FC.live.subscribe("ota");
})();
