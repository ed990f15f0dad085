// The dashboard's audit activity chart, drawn with the locally served plotly.js.
(function () {
  "use strict";

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // Plotly date axes take wall-clock strings; these are in the viewer's own time zone.
  function localTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function draw() {
    var el = document.getElementById("audit-activity");
    if (!el || !window.Plotly) {
      return;
    }
    var series = JSON.parse(el.getAttribute("data-series"));
    var label = el.getAttribute("data-label") || "";
    var font = window.getComputedStyle(document.body).fontFamily;
    var most = Math.max.apply(null, series.counts.concat([1]));
    // Whole numbers only: about five gridlines, never a fractional step.
    var step = Math.max(1, Math.ceil(most / 5));
    window.Plotly.newPlot(
      el,
      [{
        type: "bar",
        x: series.hours.map(localTime),
        y: series.counts,
        marker: { color: "#2563eb" },
        hovertemplate: "%{x|%H:%M}  %{y} " + label + "<extra></extra>"
      }],
      {
        height: 260,
        margin: { l: 40, r: 12, t: 8, b: 36 },
        bargap: 0.3,
        paper_bgcolor: "rgba(0,0,0,0)",
        plot_bgcolor: "rgba(0,0,0,0)",
        font: { family: font, size: 12, color: "#475569" },
        xaxis: { type: "date", tickformat: "%H:%M", showgrid: false, linecolor: "#e2e8f0", fixedrange: true },
        yaxis: {
          range: [0, Math.ceil((most * 1.1) / step) * step], tick0: 0, dtick: step,
          gridcolor: "#eef2f7", zeroline: false, fixedrange: true
        }
      },
      { displayModeBar: false, responsive: true }
    );
    el.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", draw);
})();
