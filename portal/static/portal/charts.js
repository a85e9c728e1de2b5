// Draws the console's charts (portal/charts.py) with the vendored Chart.js. Each
// <canvas data-chart="ID"> reads its figures from the JSON element #ID (Django's
// json_script: data, not script, so the CSP lets it be). Every text on the chart (axis
// ticks, tooltips) comes formatted from the server in the tenant's locale and currency.
(() => {
  "use strict";

  function themeColour(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function draw(canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") {
      return;
    }
    const data = JSON.parse(source.textContent);
    const ink = themeColour("--body-quiet-color", "#666");
    const grid = themeColour("--hairline-color", "#e8e8e8");
    const line = data.kind === "line";
    const datasets = data.series.map((series) => {
      const colour = series.colours.length ? series.colours : series.colour;
      return {
        label: series.name,
        data: series.values,
        borderColor: colour,
        backgroundColor: colour,
        borderWidth: line ? 2 : 0,
        pointRadius: line ? 2 : 0,
        tension: 0,
        stepped: false,
      };
    });
    const ticks = data.ticks;
    const chart = new Chart(canvas, {
      type: data.kind,
      data: { labels: data.categories, datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: {
            stacked: data.stacked,
            grid: { display: false },
            // Months may skip labels rather than tilt them; buckets show every one.
            ticks: {
              color: ink,
              maxRotation: data.everyLabel ? 50 : 0,
              autoSkip: !data.everyLabel,
              autoSkipPadding: 12,
            },
          },
          y: {
            stacked: data.stacked,
            min: 0,
            max: ticks[ticks.length - 1].value,
            grid: { color: grid },
            border: { display: false },
            afterBuildTicks: (axis) => {
              axis.ticks = ticks.map((tick) => ({ value: tick.value }));
            },
            ticks: { color: ink, callback: (value, index) => (ticks[index] || {}).label },
          },
        },
        plugins: {
          legend: {
            display: data.series.length > 1,
            position: "bottom",
            labels: { color: ink, boxWidth: 12 },
          },
          tooltip: {
            callbacks: {
              label: (item) =>
                `${item.dataset.label}: ${data.series[item.datasetIndex].labels[item.dataIndex]}`,
            },
          },
        },
        onClick: (event, elements) => {
          const link = elements.length ? data.links[elements[0].index] : "";
          if (link) {
            window.location.assign(link);
          }
        },
        onHover: (event, elements) => {
          const linked = elements.length && data.links[elements[0].index];
          event.native.target.style.cursor = linked ? "pointer" : "";
        },
      },
    });
    canvas.portalChart = chart;
    canvas.closest(".portal-chart").dataset.drawn = "true";
  }

  function drawAll() {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
