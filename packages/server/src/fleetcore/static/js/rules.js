// The rule form: show the fields of the chosen condition type, and chart a dry run
// (the condition's keys over the range, fired episodes shaded, clearings marked).
(function () {
  "use strict";

  function showFields(select) {
    const box = select.closest("[data-condition]");
    if (!box) return;
    box.querySelectorAll("[data-for]").forEach((el) => {
      el.hidden = !el.dataset.for.split(" ").includes(select.value);
    });
  }

  function colors() {
    const css = getComputedStyle(document.body);
    const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return { line: get("--accent", "#0b5cad"), fg: get("--fg", "#16181d"), grid: get("--border", "#d9dde3"), err: get("--err", "#a4161a") };
  }

  // Shades each episode from its firing to its clearing (or the end of the range).
  function episodesPlugin(episodes, end, c) {
    return {
      hooks: {
        drawClear: [(u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.fillStyle = c.err;
          ctx.globalAlpha = 0.15;
          for (const e of episodes) {
            const x0 = u.valToPos(e.opened, "x", true);
            const x1 = u.valToPos(e.cleared === null ? end : e.cleared, "x", true);
            ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
          }
          ctx.globalAlpha = 1;
          ctx.strokeStyle = c.err;
          ctx.lineWidth = 2;
          for (const e of episodes) {
            for (const t of [e.opened, e.cleared]) {
              if (t === null) continue;
              const x = u.valToPos(t, "x", true);
              ctx.beginPath();
              ctx.setLineDash(t === e.opened ? [] : [4, 4]);
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
          }
          ctx.restore();
        }],
      },
    };
  }

  function draw(root) {
    const box = root.querySelector ? root.querySelector("[data-dryrun]") : null;
    if (!box || !window.uPlot || box.dataset.rendered) return;
    const chart = JSON.parse(box.dataset.dryrun);
    const c = colors();
    let points = 0;
    Object.entries(chart.series).forEach(([key, data]) => {
      const figure = document.createElement("figure");
      figure.className = "chart";
      const caption = document.createElement("figcaption");
      caption.textContent = key;
      figure.append(caption);
      box.append(figure);
      const width = Math.max(260, box.clientWidth || 600);
      const axis = { stroke: c.fg, grid: { stroke: c.grid }, ticks: { stroke: c.grid } };
      new window.uPlot({
        width: width,
        height: 220,
        scales: { x: { time: true, min: chart.start, max: chart.end } },
        series: [{}, { label: key, stroke: c.line, width: 1.5, points: { show: data[0].length < 60 } }],
        axes: [axis, axis],
        plugins: [episodesPlugin(chart.episodes, chart.end, c)],
        cursor: { drag: { x: false, y: false } },
      }, data, figure);
      points += data[0].length;
    });
    box.dataset.rendered = String(points);
  }

  function start() {
    document.querySelectorAll("[data-condition-type]").forEach((select) => {
      showFields(select);
      select.addEventListener("change", () => showFields(select));
    });
    draw(document);
  }

  document.body.addEventListener("htmx:afterSwap", (e) => draw(e.detail.target));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
