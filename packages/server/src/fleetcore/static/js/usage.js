// The usage page: one uPlot bar-like chart per kind, data from the page. Plain ES2020.
(function () {
  "use strict";

  function draw(root) {
    if (!window.uPlot) return;
    const data = JSON.parse(root.dataset.chart || "{}");
    const xs = (data.periods || []).map((d) => Date.parse(d + "T00:00:00Z") / 1000);
    const css = getComputedStyle(document.body);
    const line = css.getPropertyValue("--accent").trim() || "#0b5cad";
    const fg = css.getPropertyValue("--fg").trim() || "#16181d";
    const grid = css.getPropertyValue("--border").trim() || "#d9dde3";
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    const width = () => Math.max(root.clientWidth - 4, 240);
    const plot = new uPlot({
      width: width(),
      height: 160,
      // Counts: the y axis starts at 0, so a small day is not drawn as an empty one.
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        {},
        { label: data.kind, stroke: line, width: 2, points: { show: true, size: 5, fill: line } },
      ],
      axes: [axis, axis],
      legend: { live: true },
    }, [xs, data.values || []], root);
    let last = root.clientWidth;
    window.addEventListener("resize", () => {
      if (root.clientWidth === last) return;
      last = root.clientWidth;
      plot.setSize({ width: width(), height: 160 });
    });
    requestAnimationFrame(() => { root.dataset.rendered = String(xs.length); });
  }

  document.querySelectorAll(".usage-chart").forEach(draw);
})();
