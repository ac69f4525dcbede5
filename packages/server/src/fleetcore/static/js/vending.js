// Vending pages: a machine's sales chart (uPlot, data from the page), and the pick list's
// +/- steppers. No build step; plain ES2020. Everything works without it but the chart.
(function () {
  "use strict";

  // -- sales per day ----------------------------------------------------------------------
  function drawSales(root) {
    if (!window.uPlot) return;
    const data = JSON.parse(root.dataset.chart || "{}");
    const xs = (data.days || []).map((d) => Date.parse(d + "T00:00:00Z") / 1000);
    const css = getComputedStyle(document.body);
    const line = css.getPropertyValue("--accent").trim() || "#0b5cad";
    const second = css.getPropertyValue("--ok").trim() || "#116329";
    const fg = css.getPropertyValue("--fg").trim() || "#16181d";
    const grid = css.getPropertyValue("--border").trim() || "#d9dde3";
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    const width = () => Math.max(root.clientWidth - 4, 240);
    const plot = new uPlot({
      width: width(),
      height: 220,
      scales: { x: { time: true }, units: { auto: true }, money: { auto: true } },
      series: [
        {},
        { label: "units", scale: "units", stroke: line, width: 2, points: { show: true, size: 5, fill: line } },
        { label: "revenue", scale: "money", stroke: second, width: 1.5, dash: [6, 4], value: (u, v) => (v == null ? "" : v.toFixed(2)) },
      ],
      axes: [axis, Object.assign({ scale: "units" }, axis), Object.assign({ scale: "money", side: 1, grid: { show: false } }, axis)],
      legend: { live: true },
    }, [xs, data.units || [], data.revenue || []], root);
    let last = root.clientWidth;
    window.addEventListener("resize", () => {
      if (root.clientWidth === last) return;
      last = root.clientWidth;
      plot.setSize({ width: width(), height: 220 });
    });
    requestAnimationFrame(() => { root.dataset.rendered = String(xs.length); });
  }

  const chart = document.getElementById("sales-chart");
  if (chart) drawSales(chart);

  // -- pick list: +/- change the quantity within 0..capacity (delegated: htmx swaps lines) --
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("button.step");
    if (!button) return;
    const input = button.parentElement.querySelector("input[type=number]");
    if (!input) return;
    const max = input.max === "" ? Infinity : Number(input.max);
    const next = (Number(input.value) || 0) + Number(button.dataset.step);
    input.value = String(Math.min(Math.max(next, 0), max));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
})();
