// Device charts: one uPlot per numeric key; range presets (raw for 1 h, roll-ups beyond),
// drag to zoom (re-read at a finer resolution), live points appended from the WebSocket,
// and on devices with analytics a dashed line at each finding of the key (live ones too).
(function () {
  "use strict";
  const root = document.getElementById("charts");
  if (!root || !window.uPlot) return;
  const deviceId = root.dataset.deviceId;
  const api = "/api/v1/devices/" + deviceId + "/telemetry";
  const HOUR = 3600e3, DAY = 24 * HOUR;
  const PRESETS = { "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY };
  const RAW_PAGE = 10000, RAW_CAP = 200000;
  const charts = new Map(); // key -> {plot, data: [xs, ys], box}
  const stats = (window.fcChart = { renderedMs: null, fetchMs: null, lastSetDataMs: null, lastDrawMs: null, lastFrameMs: null, points: 0 });
  let keys = JSON.parse(root.dataset.keys || "[]");
  let view = { preset: "1h", start: 0, end: 0, live: true };
  let loading = 0;
  const withMarks = root.dataset.analytics === "1";
  let marks = new Map(); // key -> [{t: seconds, severity}] of the findings in view
  const MARKS_CAP = 2000;

  // The finest source that keeps a range to a few thousand points.
  function resolution(span) {
    if (span <= 2 * HOUR) return null; // raw readings
    if (span <= 2 * DAY) return "1m";
    if (span <= 10 * DAY) return "15m";
    if (span <= 400 * DAY) return "1h";
    return "1d";
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let message = "Reading telemetry failed (" + response.status + ").";
      try { message = (await response.json()).error.message || message; } catch (_) { /* keep */ }
      throw new Error(message);
    }
    return response.json();
  }

  async function readRaw(start, end) {
    const out = new Map(keys.map((k) => [k, [[], []]]));
    let cursor = null, total = 0;
    do {
      const q = new URLSearchParams({ keys: keys.join(","), start: String(start), end: String(end), limit: String(RAW_PAGE) });
      if (cursor) q.set("cursor", cursor);
      const page = await getJSON(api + "?" + q);
      for (const r of page.items) {
        const series = out.get(r.key);
        if (series && typeof r.value === "number") { series[0].push(r.ts / 1000); series[1].push(r.value); }
      }
      total += page.items.length;
      cursor = page.next_cursor;
    } while (cursor && total < RAW_CAP);
    return out;
  }

  async function readAggregates(start, end, interval) {
    const q = new URLSearchParams({ keys: keys.join(","), start: String(start), end: String(end), interval: interval, agg: "avg" });
    const body = await getJSON(api + "?" + q);
    const out = new Map(keys.map((k) => [k, [[], []]]));
    for (const b of body.buckets) {
      for (const k of keys) {
        const series = out.get(k);
        series[0].push(b.ts / 1000);
        series[1].push(b.values[k] === undefined ? null : b.values[k]);
      }
    }
    return out;
  }

  // Findings of the range, by key (newest first from the API; order does not matter here).
  async function readMarks(start, end) {
    const out = new Map();
    if (!withMarks) return out;
    let cursor = null, total = 0;
    do {
      const q = new URLSearchParams({ device_id: deviceId, from: String(start), to: String(end + 1), limit: "500" });
      if (cursor) q.set("cursor", cursor);
      const page = await getJSON("/api/v1/analytics/findings?" + q);
      for (const f of page.items) addMark(out, f);
      total += page.items.length;
      cursor = page.next_cursor;
    } while (cursor && total < MARKS_CAP);
    return out;
  }

  function addMark(into, f) {
    if (!f || typeof f.ts !== "number" || typeof f.key !== "string") return;
    if (!into.has(f.key)) into.set(f.key, []);
    into.get(f.key).push({ t: f.ts / 1000, severity: f.severity });
  }

  // A uPlot draw hook: a dashed vertical line and a small triangle at each finding in view.
  function drawMarks(u) {
    const figure = u.root.parentNode;
    const list = marks.get(u.series[1].label) || [];
    const css = getComputedStyle(document.body);
    const err = css.getPropertyValue("--err").trim() || "#a4161a";
    const warn = css.getPropertyValue("--off").trim() || "#7a4d00";
    const ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
    let shown = 0;
    ctx.save();
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const m of list) {
      if (m.t < u.scales.x.min || m.t > u.scales.x.max) continue;
      const x = Math.round(u.valToPos(m.t, "x", true));
      const color = m.severity === "critical" ? err : warn;
      ctx.strokeStyle = color;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke();
      ctx.fillStyle = color;
      const s = 5 * devicePixelRatio;
      ctx.beginPath(); ctx.moveTo(x - s, top); ctx.lineTo(x + s, top); ctx.lineTo(x, top + s * 1.5); ctx.fill();
      shown++;
    }
    ctx.restore();
    if (figure && figure.dataset) {
      figure.dataset.marks = String(shown);
      const note = figure.querySelector("[data-marks-note]");
      if (note) note.textContent = shown ? " · " + shown + (shown === 1 ? " finding" : " findings") : "";
    }
  }

  function colors() {
    const css = getComputedStyle(document.body);
    return {
      line: css.getPropertyValue("--accent").trim() || "#0b5cad",
      fg: css.getPropertyValue("--fg").trim() || "#16181d",
      grid: css.getPropertyValue("--border").trim() || "#d9dde3",
    };
  }

  function makePlot(key, data) {
    let box = charts.get(key) && charts.get(key).box;
    if (!box) {
      box = document.createElement("figure");
      box.className = "chart";
      const caption = document.createElement("figcaption");
      caption.textContent = key;
      if (withMarks) {
        const note = document.createElement("span");
        note.className = "muted small";
        note.dataset.marksNote = "";
        caption.append(note);
      }
      box.append(caption);
      root.append(box);
    } else {
      charts.get(key).plot.destroy();
    }
    const c = colors();
    const axis = { stroke: c.fg, grid: { stroke: c.grid, width: 1 }, ticks: { stroke: c.grid } };
    const plot = new uPlot({
      width: Math.max(root.clientWidth - 4, 240),
      height: 220,
      scales: { x: { time: true } },
      // Sparse series (most buckets empty) show their points: a lone value draws no line.
      series: [{}, { label: key, stroke: c.line, width: 1.5, spanGaps: false, points: { show: sparse(data), size: 4, fill: c.line } }],
      axes: [axis, axis],
      legend: { live: true },
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: { setSelect: [zoomTo], draw: withMarks ? [drawMarks, drawn] : [drawn] },
    }, data, box);
    plot.over.addEventListener("dblclick", () => show(view.preset === "zoom" ? lastPreset : view.preset));
    charts.set(key, { plot: plot, data: data, box: box });
  }

  let lastPreset = "1h";

  function sparse(data) {
    let filled = 0;
    for (const v of data[1]) if (v !== null) filled++;
    return filled * 4 < data[1].length;
  }

  // A live update's cost: from setData to uPlot having drawn the canvas again.
  let liveStart = 0;
  function drawn() {
    if (!liveStart) return;
    stats.lastDrawMs = performance.now() - liveStart;
    liveStart = 0;
  }

  function zoomTo(u) {
    if (u.select.width < 5) return;
    const start = Math.floor(u.posToVal(u.select.left, "x") * 1000);
    const end = Math.ceil(u.posToVal(u.select.left + u.select.width, "x") * 1000);
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    if (end - start < 1000) return;
    press(null);
    load({ preset: "zoom", start: start, end: end, live: false });
  }

  async function load(next) {
    view = next;
    const ticket = ++loading;
    root.setAttribute("aria-busy", "true");
    delete root.dataset.rendered;
    const t0 = performance.now();
    try {
      const interval = resolution(view.end - view.start);
      const [series, found] = await Promise.all([
        keys.length
          ? interval ? readAggregates(view.start, view.end, interval) : readRaw(view.start, view.end)
          : new Map(),
        // A failed read of the findings leaves the charts without marks, not without data.
        readMarks(view.start, view.end).catch(() => new Map()),
      ]);
      if (ticket !== loading) return; // a newer range was asked for meanwhile
      marks = found;
      stats.fetchMs = performance.now() - t0;
      let points = 0;
      series.forEach((data, key) => { makePlot(key, data); points += data[0].length; });
      stats.points = points;
      requestAnimationFrame(() => {
        stats.renderedMs = performance.now() - t0;
        root.dataset.rendered = String(points);
        root.removeAttribute("aria-busy");
        performance.mark("fc-chart-drawn");
      });
    } catch (err) {
      root.removeAttribute("aria-busy");
      if (window.FC && FC.flash) FC.flash(err.message);
    }
  }

  function show(range) {
    const end = Date.now();
    if (range === "custom") {
      const s = document.getElementById("range-start").value;
      const e = document.getElementById("range-end").value;
      const start = Date.parse(s), stop = e ? Date.parse(e) : end;
      if (!s || isNaN(start) || isNaN(stop) || start >= stop) {
        if (window.FC && FC.flash) FC.flash("Choose a start before the end.");
        return;
      }
      press(null);
      return load({ preset: "custom", start: start, end: stop, live: stop >= end - 60e3 });
    }
    lastPreset = range;
    press(range);
    return load({ preset: range, start: end - PRESETS[range], end: end, live: true });
  }

  function press(range) {
    document.querySelectorAll(".preset").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === range)));
  }

  document.querySelectorAll("[data-range]").forEach((b) => {
    if (b.tagName === "BUTTON") b.addEventListener("click", () => show(b.dataset.range));
  });

  // -- live: latest values always; chart points while the view reaches now --------------
  const dirty = new Set();
  let frame = 0;

  function flush() {
    frame = 0;
    const t0 = (liveStart = performance.now());
    dirty.forEach((key) => { const c = charts.get(key); if (c) c.plot.setData(c.data); });
    dirty.clear();
    stats.lastSetDataMs = performance.now() - t0;
    requestAnimationFrame(() => { stats.lastFrameMs = performance.now() - t0; root.dataset.liveFrames = String((Number(root.dataset.liveFrames) || 0) + 1); });
  }

  function latestRow(key) {
    let cell = document.querySelector('[data-latest="' + CSS.escape(key) + '"]');
    if (cell) return cell;
    const table = document.querySelector("table.latest");
    if (!table) return null;
    table.hidden = false;
    const empty = document.querySelector("[data-latest-empty]");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = key;
    cell = document.createElement("td");
    cell.dataset.latest = key;
    const ts = document.createElement("td");
    ts.dataset.latestTs = key;
    tr.append(th, cell, ts);
    table.tBodies[0].append(tr);
    return cell;
  }

  function onTelemetry(msg) {
    for (const [key, value] of Object.entries(msg.values)) {
      const cell = latestRow(key);
      if (cell) {
        cell.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
        const ts = document.querySelector('[data-latest-ts="' + CSS.escape(key) + '"]');
        if (ts) { ts.dataset.ms = String(msg.ts); ts.textContent = new Date(msg.ts).toLocaleString(); }
      }
      if (typeof value !== "number" || !view.live) continue;
      if (!charts.has(key)) {
        if (!keys.includes(key)) keys.push(key);
        const hint = root.querySelector("[data-no-charts]");
        if (hint) hint.remove();
        makePlot(key, [[msg.ts / 1000], [value]]);
        continue;
      }
      const data = charts.get(key).data;
      const x = msg.ts / 1000;
      if (data[0].length && x < data[0][data[0].length - 1]) continue; // late: the next load has it
      data[0].push(x);
      data[1].push(value);
      dirty.add(key);
    }
    if (dirty.size && !frame) frame = requestAnimationFrame(flush);
  }

  let width = root.clientWidth;
  window.addEventListener("resize", () => {
    if (root.clientWidth === width) return;
    width = root.clientWidth;
    charts.forEach((c) => c.plot.setSize({ width: Math.max(width - 4, 240), height: 220 }));
  });
  if (window.FC && FC.live) {
    FC.live.on("telemetry", (msg) => { if (msg.device_id === deviceId) onTelemetry(msg); });
    FC.live.subscribe("telemetry", deviceId);
    if (withMarks) {
      // {"type": "finding", "device_id", "finding": {...}}: mark it while the view reaches now.
      FC.live.on("finding", (msg) => {
        if (msg.device_id !== deviceId || !view.live || !msg.finding) return;
        addMark(marks, msg.finding);
        const c = charts.get(msg.finding.key);
        if (c) c.plot.redraw(false, false);
      });
      FC.live.subscribe("analytics", deviceId);
    }
  }
  show(root.dataset.range || "1h");
})();
