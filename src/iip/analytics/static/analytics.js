// The analytics pages' charts, drawn with the plotly bundled in the installed package. The figures
// come from the page (data-chart attributes, since the CSP forbids inline scripts); every chart's
// numbers are in a table on the page as well. Times are UTC, as the forms and tables give them.
(function () {
  "use strict";

  var DANGER = "#dc2626";
  var PRIMARY = "#2563eb";
  var MUTED = "#64748b";
  var GRID = "#eef2f7";

  function data(el, name) {
    return JSON.parse(el.getAttribute(name) || "{}");
  }

  function pad(n, width) {
    var text = String(n);
    while (text.length < (width || 2)) {
      text = "0" + text;
    }
    return text;
  }

  // Plotly date axes take wall-clock strings: these are UTC, as the page's tables are.
  function utc(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "." +
      pad(d.getUTCMilliseconds(), 3);
  }

  function baseLayout(height) {
    return {
      height: height,
      margin: { l: 56, r: 16, t: 12, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: window.getComputedStyle(document.body).fontFamily, size: 12, color: "#475569" },
      showlegend: false,
      hovermode: "closest"
    };
  }

  function draw(el, traces, layout) {
    window.Plotly.newPlot(el, traces, layout, { displayModeBar: false, responsive: true }).then(function () {
      el.setAttribute("data-drawn", "true");
    });
  }

  // --- monitoring: one panel per statistic, its limit, the alarm markers; a click explains a sample

  function drawMonitor(el) {
    var chart = data(el, "data-chart");
    var panels = chart.panels || [];
    var times = (chart.times || []).map(utc);
    var traces = [];
    var layout = baseLayout(Math.max(240, 190 * panels.length));
    var gap = 0.08;
    var height = (1 - gap * (panels.length - 1)) / Math.max(panels.length, 1);
    panels.forEach(function (panel, n) {
      var axis = n === 0 ? "" : String(n + 1);
      var top = 1 - n * (height + gap);
      layout["yaxis" + axis] = {
        domain: [top - height, top], title: { text: panel.label }, gridcolor: GRID, zeroline: false, rangemode: "tozero"
      };
      layout["xaxis" + axis] = {
        type: "date", anchor: "y" + axis, matches: n === 0 ? undefined : "x", showgrid: false,
        linecolor: "#e2e8f0", showticklabels: n === panels.length - 1
      };
      traces.push({
        type: "scatter", mode: "lines", name: panel.label, x: times, y: panel.values, xaxis: "x" + axis,
        yaxis: "y" + axis, line: { color: PRIMARY, width: 1.2 }, connectgaps: false,
        hovertemplate: "%{x}<br>" + panel.label + " %{y:.4g}<extra></extra>"
      });
      if (panel.limit !== null && panel.limit !== undefined) {
        traces.push({
          type: "scatter", mode: "lines", name: el.getAttribute("data-limit-label"),
          x: [times[0], times[times.length - 1]], y: [panel.limit, panel.limit], xaxis: "x" + axis,
          yaxis: "y" + axis, line: { color: DANGER, width: 1, dash: "dash" }, hoverinfo: "skip"
        });
      }
      var over = panel.alarms || [];
      traces.push({
        type: "scatter", mode: "markers", name: el.getAttribute("data-alarm-label"),
        x: over.map(function (i) { return times[i]; }),
        y: over.map(function (i) { return panel.values[i]; }),
        customdata: over,
        xaxis: "x" + axis, yaxis: "y" + axis, marker: { color: DANGER, size: 6 },
        hovertemplate: "%{x}<br>" + el.getAttribute("data-alarm-label") + " %{y:.4g}<extra></extra>"
      });
    });
    if (!panels.length || !times.length) {
      layout.annotations = [{
        text: el.getAttribute("data-no-data") || "", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5
      }];
    }
    draw(el, traces, layout);
    var explain = el.getAttribute("data-explain");
    if (explain) {
      el.on("plotly_click", function (event) {
        var point = event && event.points && event.points[0];
        if (point && typeof point.pointIndex === "number") {
          // An alarm marker carries its sample's index; a line's points are the samples themselves.
          var index = typeof point.customdata === "number" ? point.customdata : point.pointIndex;
          if (chart.times[index] !== undefined) {
            var at = new Date(chart.times[index]).toISOString();
            window.location.href = explain + (explain.indexOf("?") >= 0 ? "&" : "?") + "at=" + encodeURIComponent(at);
          }
        }
      });
    }
  }

  // --- contributions: one horizontal bar chart per statistic, the largest on top

  function drawContributions(holder) {
    var chart = data(holder, "data-chart");
    (chart.panels || []).forEach(function (panel, n) {
      var el = document.querySelector("[data-panel='" + n + "']");
      if (!el) {
        return;
      }
      var layout = baseLayout(Math.max(160, 28 * panel.variables.length + 60));
      layout.margin.l = 120;
      layout.xaxis = { title: { text: chart.value_label }, gridcolor: GRID, zeroline: false, rangemode: "tozero" };
      layout.yaxis = { autorange: "reversed", automargin: true };
      draw(el, [{
        type: "bar", orientation: "h", x: panel.values, y: panel.variables,
        marker: { color: panel.values.map(function (_v, i) { return i === 0 ? DANGER : PRIMARY; }) },
        customdata: panel.shares.map(function (s) { return (s * 100).toFixed(1) + " %"; }),
        hovertemplate: "%{y}: %{x:.4g} (%{customdata})<extra></extra>"
      }], layout);
    });
  }

  // --- SPC: one panel per chart (location, spread), centre line, limits, and the signalling points

  function drawSpc(el) {
    var chart = data(el, "data-chart");
    var labels = data(el, "data-labels");
    var panels = chart.panels || [];
    var traces = [];
    var layout = baseLayout(Math.max(260, 230 * panels.length));
    var gap = 0.1;
    var height = (1 - gap * (panels.length - 1)) / Math.max(panels.length, 1);
    panels.forEach(function (panel, n) {
      var axis = n === 0 ? "" : String(n + 1);
      var top = 1 - n * (height + gap);
      var x = chart.timed ? panel.x.map(utc) : panel.x;
      layout["yaxis" + axis] = { domain: [top - height, top], title: { text: panel.title }, gridcolor: GRID, zeroline: false };
      layout["xaxis" + axis] = {
        type: chart.timed ? "date" : "linear", anchor: "y" + axis, showgrid: false, linecolor: "#e2e8f0",
        matches: n === 0 || panel.x.length !== panels[0].x.length ? undefined : "x"
      };
      var on = { xaxis: "x" + axis, yaxis: "y" + axis };
      traces.push(Object.assign({
        type: "scatter", mode: panel.x.length > 2000 ? "lines" : "lines+markers", name: panel.extra ? labels.upper_sum : panel.title,
        x: x, y: panel.values, line: { color: PRIMARY, width: 1.2 }, marker: { size: 4, color: PRIMARY },
        hovertemplate: "%{x}<br>%{y:.5g}<extra></extra>"
      }, on));
      if (panel.extra) {
        traces.push(Object.assign({
          type: "scatter", mode: "lines", name: labels.lower_sum, x: x, y: panel.extra,
          line: { color: "#7c3aed", width: 1.2 }, hovertemplate: "%{x}<br>C⁻ %{y:.5g}<extra></extra>"
        }, on));
      }
      if (panel.center !== null && panel.center !== undefined) {
        traces.push(Object.assign({
          type: "scatter", mode: "lines", name: labels.center, x: [x[0], x[x.length - 1]], y: [panel.center, panel.center],
          line: { color: MUTED, width: 1 }, hoverinfo: "skip"
        }, on));
      }
      [panel.upper, panel.lower].forEach(function (limit) {
        if (limit) {
          traces.push(Object.assign({
            type: "scatter", mode: "lines", name: labels.limit, x: x, y: limit, line: { color: DANGER, width: 1, dash: "dash", shape: "hv" },
            hovertemplate: labels.limit + " %{y:.5g}<extra></extra>"
          }, on));
        }
      });
      var markers = panel.markers || [];
      traces.push(Object.assign({
        type: "scatter", mode: "markers", name: labels.signal,
        x: markers.map(function (m) { return x[m.i]; }),
        y: markers.map(function (m) { return panel.values[m.i]; }),
        text: markers.map(function (m) { return m.text; }),
        marker: { color: DANGER, size: 9, symbol: "circle-open", line: { width: 2 } },
        hovertemplate: "%{x}<br>%{y:.5g}<br>%{text}<extra></extra>"
      }, on));
    });
    draw(el, traces, layout);
  }

  // --- remaining useful life: the estimate over the cycles inside its interval band

  function drawRul(el) {
    var chart = data(el, "data-chart");
    var labels = data(el, "data-labels");
    var layout = baseLayout(320);
    layout.showlegend = true;
    layout.legend = { orientation: "h", y: -0.2 };
    layout.xaxis = { title: { text: labels.cycle }, showgrid: false, linecolor: "#e2e8f0" };
    layout.yaxis = { title: { text: labels.rul }, gridcolor: GRID, zeroline: false, rangemode: "tozero" };
    layout.shapes = [{
      type: "line", xref: "paper", x0: 0, x1: 1, y0: chart.cap, y1: chart.cap, line: { color: MUTED, width: 1, dash: "dot" }
    }];
    draw(el, [
      { type: "scatter", mode: "lines", x: chart.cycles, y: chart.lower, line: { width: 0 }, hoverinfo: "skip", showlegend: false },
      {
        type: "scatter", mode: "lines", name: labels.band, x: chart.cycles, y: chart.upper, fill: "tonexty",
        fillcolor: "rgba(37, 99, 235, 0.15)", line: { width: 0 }, hovertemplate: labels.band + " %{y:.0f}<extra></extra>"
      },
      {
        type: "scatter", mode: "lines", name: labels.point, x: chart.cycles, y: chart.point,
        line: { color: PRIMARY, width: 2 }, hovertemplate: labels.cycle + " %{x}: %{y:.0f}<extra></extra>"
      }
    ], layout);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.Plotly) {
      return;
    }
    var monitor = document.getElementById("monitor-chart");
    if (monitor) {
      drawMonitor(monitor);
    }
    var contributions = document.getElementById("contribution-data");
    if (contributions) {
      drawContributions(contributions);
    }
    var spc = document.getElementById("spc-chart");
    if (spc) {
      drawSpc(spc);
    }
    var rul = document.getElementById("rul-chart");
    if (rul) {
      drawRul(rul);
    }
  });
})();
