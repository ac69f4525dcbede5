// Device charts: one uPlot per numeric key; range presets, every range read downsampled by
// the server to the chart's width (GET .../telemetry/chart: at most one bucket per pixel
// column, each with min, max and mean, so a one-reading spike in 30 days still shows as the
// band's peak), drag to zoom (re-read at a finer step), live points appended from the
// WebSocket, and on devices with analytics a dashed line at each finding of the key.
(function () {
  "use strict";
  const root = document.getElementById("charts");
  if (!root || !window.uPlot) return;
  const deviceId = root.dataset.deviceId;
  const api = "/api/v1/devices/" + deviceId + "/telemetry";
  const HOUR = 3600e3, DAY = 24 * HOUR;
  const PRESETS = { "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY };
  const charts = new Map(); // key -> {plot, data: [xs, mean, min, max], box}
  const stats = (window.fcChart = { renderedMs: null, fetchMs: null, lastSetDataMs: null, lastDrawMs: null, lastFrameMs: null, points: 0, bytes: 0, step: null, plots: {} });
  let keys = JSON.parse(root.dataset.keys || "[]");
  let view = { preset: "1h", start: 0, end: 0, live: true };
  let loading = 0;
  const withMarks = root.dataset.analytics === "1";
  let marks = new Map(); // key -> [{t: seconds, severity}] of the findings in view
  const MARKS_CAP = 2000;

  function plotWidth() { return Math.max(root.clientWidth - 4, 240); }

  async function getText(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let message = "Reading telemetry failed (" + response.status + ").";
      try { message = (await response.json()).error.message || message; } catch (_) { /* keep */ }
      throw new Error(message);
    }
    return response.text();
  }

  async function getJSON(url) { return JSON.parse(await getText(url)); }

  // The range at one bucket per pixel column at most; the server picks the step.
  async function readChart(start, end) {
    const q = new URLSearchParams({ keys: keys.join(","), start: String(start), end: String(end), width: String(plotWidth()) });
    const text = await getText(api + "/chart?" + q);
    const body = JSON.parse(text);
    const out = new Map();
    let fetched = 0;
    for (const k of keys) {
      const s = body.series[k] || { ts: [], min: [], max: [], avg: [] };
      fetched += s.ts.length;
      out.set(k, columns(s, body.step_ms));
    }
    return { series: out, bytes: text.length, points: fetched, step: body.step_ms };
  }

  // uPlot's columns [x (s), mean, min, max]; a gap in the data (more than three times the
  // usual spacing of buckets, and more than one step) becomes a null, so the line breaks
  // where the device was silent instead of joining across the silence.
  function columns(s, step) {
    const gaps = [];
    for (let i = 1; i < s.ts.length; i++) gaps.push(s.ts[i] - s.ts[i - 1]);
    gaps.sort((a, b) => a - b);
    const usual = gaps.length ? gaps[gaps.length >> 1] : step;
    const limit = Math.max(step, 3 * usual);
    const xs = [], mean = [], lo = [], hi = [];
    for (let i = 0; i < s.ts.length; i++) {
      if (i && s.ts[i] - s.ts[i - 1] > limit) {
        xs.push((s.ts[i - 1] + step) / 1000); mean.push(null); lo.push(null); hi.push(null);
      }
      xs.push(s.ts[i] / 1000); mean.push(s.avg[i]); lo.push(s.min[i]); hi.push(s.max[i]);
    }
    return [xs, mean, lo, hi];
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
    const line = css.getPropertyValue("--accent").trim() || "#0b5cad";
    return {
      line: line,
      edge: alpha(line, 0.55),
      band: alpha(line, 0.18),
      fg: css.getPropertyValue("--fg").trim() || "#16181d",
      grid: css.getPropertyValue("--border").trim() || "#d9dde3",
    };
  }

  // "#rrggbb" (or "#rgb") at an opacity; any other colour as it is.
  function alpha(color, a) {
    let hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(color);
    if (!hex) return color;
    hex = hex[1].length === 3 ? hex[1].replace(/./g, "$&$&") : hex[1];
    const n = parseInt(hex, 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
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
      width: plotWidth(),
      height: 220,
      // The axis spans the whole range asked for, not just where data is: a sparse day still
      // reads as a day, and findings in its empty stretches stay in view. Live points past
      // the range's end widen it.
      scales: { x: { time: true, range: (u, min, max) => xRange(min, max) } },
      // Sparse series (most buckets empty) show their points: a lone value draws no line.
      // The min and max of each bucket bound a shaded band around the mean.
      series: [
        {},
        { label: key, stroke: c.line, width: 1.5, spanGaps: false, points: { show: sparse(data), size: 4, fill: c.line } },
        { label: "min", stroke: c.edge, width: 1, spanGaps: false, points: { show: false } },
        { label: "max", stroke: c.edge, width: 1, spanGaps: false, points: { show: false } },
      ],
      bands: [{ series: [3, 2], fill: c.band }],
      axes: [axis, axis],
      legend: { live: true },
      cursor: { drag: { x: true, y: false, setScale: false } },
      hooks: { setSelect: [zoomTo], draw: withMarks ? [drawMarks, drawn] : [drawn] },
    }, data, box);
    plot.over.addEventListener("dblclick", () => show(view.preset === "zoom" ? lastPreset : view.preset));
    charts.set(key, { plot: plot, data: data, box: box });
    stats.plots[key] = plot;
  }

  function xRange(min, max) {
    const lo = view.start / 1000, hi = view.end / 1000;
    return [min == null ? lo : Math.min(min, lo), max == null ? hi : Math.max(max, hi)];
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
      const [read, found] = await Promise.all([
        keys.length ? readChart(view.start, view.end) : { series: new Map(), bytes: 0, points: 0, step: null },
        // A failed read of the findings leaves the charts without marks, not without data.
        readMarks(view.start, view.end).catch(() => new Map()),
      ]);
      if (ticket !== loading) return; // a newer range was asked for meanwhile
      marks = found;
      stats.fetchMs = performance.now() - t0;
      read.series.forEach((data, key) => makePlot(key, data));
      const points = read.points;
      stats.points = points;
      stats.bytes = read.bytes;
      stats.step = read.step;
      requestAnimationFrame(() => {
        stats.renderedMs = performance.now() - t0;
        root.dataset.rendered = String(points);
        root.dataset.step = String(read.step || "");
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
        makePlot(key, [[msg.ts / 1000], [value], [value], [value]]);
        continue;
      }
      const data = charts.get(key).data;
      const x = msg.ts / 1000;
      if (data[0].length && x < data[0][data[0].length - 1]) continue; // late: the next load has it
      data[0].push(x);
      data[1].push(value); // a single reading: its own mean, min and max
      data[2].push(value);
      data[3].push(value);
      dirty.add(key);
    }
    if (dirty.size && !frame) frame = requestAnimationFrame(flush);
  }

  let width = root.clientWidth;
  window.addEventListener("resize", () => {
    if (root.clientWidth === width) return;
    width = root.clientWidth;
    charts.forEach((c) => c.plot.setSize({ width: plotWidth(), height: 220 }));
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
