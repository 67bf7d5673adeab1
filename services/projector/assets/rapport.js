// The dashboard's own script: sortable tables and the charts. Everything
// else is server-rendered HTML (and htmx for the timeline's pages).
"use strict";

// A click on a column heading sorts the table's rows by that column; a
// second click reverses. Cells sort by their data-value when they have one
// (numbers, dates), else by their text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("table.sortable th button");
  if (!button) return;
  const heading = button.closest("th");
  const table = heading.closest("table");
  const column = Array.from(heading.parentNode.children).indexOf(heading);
  const ascending = heading.getAttribute("aria-sort") !== "ascending";
  for (const other of heading.parentNode.children) other.removeAttribute("aria-sort");
  heading.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const key = (row) => {
    const cell = row.children[column];
    if (!cell) return "";
    const marked = cell.querySelector("[data-value]") || cell;
    const raw = marked.dataset.value ?? cell.textContent.trim();
    const number = Number(raw);
    return raw !== "" && !Number.isNaN(number) ? number : raw.toLowerCase();
  };
  const rows = Array.from(body.rows).filter((row) => !row.classList.contains("more"));
  const more = Array.from(body.rows).filter((row) => row.classList.contains("more"));
  rows.sort((left, right) => {
    const a = key(left);
    const b = key(right);
    const order = typeof a === typeof b ? (a < b ? -1 : a > b ? 1 : 0) : typeof a === "number" ? -1 : 1;
    return ascending ? order : -order;
  });
  body.append(...rows, ...more);
});

// Charts: a div[data-chart] names the JSON script holding
// {labels: [...], series: [{label, values, kind?}], y?: "axis label"}.
function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  for (const holder of root.querySelectorAll("div.chart[data-chart]")) {
    if (holder.dataset.drawn) continue;
    holder.dataset.drawn = "yes";
    const data = JSON.parse(document.getElementById(holder.dataset.chart).textContent);
    const xs = data.labels.map((_, index) => index);
    const colours = ["#2f6db5", "#d9822b", "#3a9a5b", "#9b59b6"];
    const bars = uPlot.paths.bars({ size: [0.6, 60] });
    const series = [{ label: data.x || "" }].concat(
      data.series.map((one, index) => ({
        label: one.label,
        stroke: colours[index % colours.length],
        fill: one.kind === "line" ? undefined : colours[index % colours.length] + "99",
        width: one.kind === "line" ? 2 : 1,
        paths: one.kind === "line" ? undefined : bars,
        points: { show: one.kind === "line" },
      })),
    );
    const width = Math.max(280, Math.min(holder.parentNode.clientWidth || 640, 900));
    new uPlot(
      {
        width,
        height: 280,
        series,
        scales: { x: { time: false, range: [-0.5, xs.length - 0.5] } },
        axes: [
          { values: (_, ticks) => ticks.map((tick) => data.labels[tick] ?? ""), splits: () => xs },
          { label: data.y || "" },
        ],
      },
      [xs].concat(data.series.map((one) => one.values)),
      holder,
    );
  }
}

document.addEventListener("DOMContentLoaded", () => drawCharts(document));
document.addEventListener("htmx:afterSettle", (event) => drawCharts(event.target));
