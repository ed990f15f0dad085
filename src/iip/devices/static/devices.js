// The device page, live: the twin from its server-sent events (or polled when they are not
// available), and one plotly chart per numeric metric over the last hour.
(function () {
  "use strict";

  var POLL_MS = 5000;
  var RAW_LIMIT = 3000; // more points than this in the window: the chart shows buckets instead
  var BUCKETS_PER_WINDOW = 360;

  function pad(n, width) {
    var text = String(n);
    while (text.length < (width || 2)) {
      text = "0" + text;
    }
    return text;
  }

  // The server formats numbers the same way (pages.format_number).
  function formatNumber(value) {
    if (value === null || value === undefined || !isFinite(value)) {
      return "\u2014";
    }
    return String(Number(Number(value).toPrecision(6)));
  }

  function formatUtc(iso) {
    if (!iso) {
      return "\u2014";
    }
    var d = new Date(iso);
    if (isNaN(d.getTime())) {
      return "\u2014";
    }
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  }

  // Plotly date axes take wall-clock strings; these are in the viewer's own time zone.
  function localTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  // JSON merge patch (RFC 7396), the form of the twin's `patch` events.
  function mergePatch(target, patch) {
    if (!isObject(patch)) {
      return patch;
    }
    var result = isObject(target) ? target : {};
    Object.keys(patch).forEach(function (key) {
      if (patch[key] === null) {
        delete result[key];
      } else {
        result[key] = mergePatch(result[key], patch[key]);
      }
    });
    return result;
  }

  function DevicePage(root) {
    this.root = root;
    this.labels = JSON.parse(root.getAttribute("data-labels") || "{}");
    this.windowMs = Number(root.getAttribute("data-window-ms")) || 3600000;
    this.twin = null;
    this.source = null;
    this.eventsRefused = false;
    this.pollTimer = null;
    this.charts = {};
    var self = this;
    Array.prototype.forEach.call(root.querySelectorAll(".device-chart[data-metric]"), function (el) {
      self.charts[el.getAttribute("data-metric")] = { el: el, x: [], y: [], last: 0, pending: false };
    });
  }

  DevicePage.prototype.setStatus = function (mode) {
    var badge = document.getElementById("live-status");
    if (!badge) {
      return;
    }
    badge.setAttribute("data-live", mode);
    badge.textContent = mode === "live" ? this.labels.live : this.labels.polling;
    badge.className = mode === "live" ? "badge badge-success" : "badge badge-warning";
  };

  // --- the twin on the page

  DevicePage.prototype.metricRow = function (name) {
    var rows = this.root.querySelectorAll("#metrics-table tbody tr[data-metric]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-metric") === name) {
        return rows[i];
      }
    }
    // A metric the profile does not name: shown as the device reports it.
    var body = this.root.querySelector("#metrics-table tbody");
    if (!body) {
      return null;
    }
    var empty = body.querySelector("td.empty");
    if (empty) {
      body.removeChild(empty.parentNode);
    }
    var row = document.createElement("tr");
    row.setAttribute("data-metric", name);
    ["name", "value", "unit", "quality", "ts", "type"].forEach(function (field) {
      var cell = document.createElement("td");
      cell.setAttribute("data-field", field);
      cell.className = field === "ts" ? "nowrap muted" : "mono";
      cell.textContent = field === "name" ? name : "\u2014";
      row.appendChild(cell);
    });
    body.appendChild(row);
    return row;
  };

  DevicePage.prototype.qualityBadge = function (quality) {
    var badge = document.createElement("span");
    var kind = quality === 0 ? "badge-success" : quality === 1 ? "badge-warning" : "badge-danger";
    badge.className = "badge " + kind;
    badge.textContent = (this.labels.quality || {})[String(quality)] || String(quality);
    return badge;
  };

  DevicePage.prototype.showMetric = function (name, metric) {
    var row = this.metricRow(name);
    if (!row || !metric) {
      return;
    }
    var value = row.querySelector("[data-field=value]");
    var quality = row.querySelector("[data-field=quality]");
    var ts = row.querySelector("[data-field=ts]");
    if (value) {
      value.textContent = formatNumber(metric.value);
      value.setAttribute("data-updated", metric.ts || "");
    }
    if (quality) {
      quality.textContent = "";
      quality.appendChild(this.qualityBadge(metric.quality));
    }
    if (ts) {
      ts.textContent = formatUtc(metric.ts);
    }
    this.addPoint(name, metric);
  };

  DevicePage.prototype.showConnection = function (connection) {
    if (!connection) {
      return;
    }
    var state = connection.online ? "online" : connection.last_seen ? "offline" : "never";
    var cell = document.getElementById("connection-state");
    if (cell) {
      var badge = document.createElement("span");
      badge.className = "badge" + (state === "online" ? " badge-success" : state === "offline" ? " badge-danger" : "");
      badge.setAttribute("data-state-badge", state);
      badge.textContent = this.labels[state] || state;
      cell.textContent = "";
      cell.appendChild(badge);
    }
    var fields = { "connection-last-seen": formatUtc(connection.last_seen), "connection-since": formatUtc(connection.since) };
    fields["connection-reason"] = connection.reason || "\u2014";
    Object.keys(fields).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) {
        el.textContent = fields[id];
      }
    });
  };

  DevicePage.prototype.showAttributes = function (id, values) {
    var table = document.getElementById(id);
    if (!table) {
      return;
    }
    var body = document.createElement("tbody");
    var names = Object.keys(values || {}).sort();
    if (!names.length) {
      var row = document.createElement("tr");
      var cell = document.createElement("td");
      cell.className = "empty";
      cell.textContent = this.labels.no_attributes || "";
      row.appendChild(cell);
      body.appendChild(row);
    }
    names.forEach(function (name) {
      var row = document.createElement("tr");
      row.setAttribute("data-attribute", name);
      var head = document.createElement("th");
      head.className = "mono";
      head.textContent = name;
      var cell = document.createElement("td");
      cell.className = "mono";
      cell.style.wordBreak = "break-all";
      var value = values[name];
      cell.textContent = typeof value === "string" ? value : JSON.stringify(value);
      row.appendChild(head);
      row.appendChild(cell);
      body.appendChild(row);
    });
    table.replaceChild(body, table.tBodies[0]);
  };

  DevicePage.prototype.showTwin = function (twin) {
    var self = this;
    this.twin = twin;
    this.showConnection(twin.connection);
    Object.keys(twin.metrics || {}).forEach(function (name) {
      self.showMetric(name, twin.metrics[name]);
    });
    var attributes = twin.attributes || {};
    this.showAttributes("reported-attributes", attributes.reported);
    this.showAttributes("desired-attributes", attributes.desired);
  };

  DevicePage.prototype.applyPatch = function (patch) {
    var self = this;
    this.twin = mergePatch(this.twin || {}, patch);
    if (patch.connection) {
      this.showConnection(this.twin.connection);
    }
    if (isObject(patch.metrics)) {
      Object.keys(patch.metrics).forEach(function (name) {
        if (self.twin.metrics && self.twin.metrics[name]) {
          self.showMetric(name, self.twin.metrics[name]);
        }
      });
    }
    if (patch.attributes) {
      var attributes = this.twin.attributes || {};
      this.showAttributes("reported-attributes", attributes.reported);
      this.showAttributes("desired-attributes", attributes.desired);
    }
  };

  // --- charts

  DevicePage.prototype.addPoint = function (name, metric) {
    var chart = this.charts[name];
    if (!chart || metric.value === null || metric.value === undefined || !metric.ts) {
      return;
    }
    var ts = Date.parse(metric.ts);
    if (isNaN(ts) || ts <= chart.last) {
      return;
    }
    chart.last = ts;
    chart.x.push(ts);
    chart.y.push(metric.value);
    this.redraw(chart);
  };

  DevicePage.prototype.layout = function (chart) {
    var font = window.getComputedStyle(document.body).fontFamily;
    var now = Date.now();
    return {
      height: 240,
      margin: { l: 52, r: 12, t: 8, b: 36 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: font, size: 12, color: "#475569" },
      showlegend: false,
      xaxis: {
        type: "date", tickformat: "%H:%M", showgrid: false, linecolor: "#e2e8f0",
        range: [localTime(now - this.windowMs), localTime(Math.max(now, chart.last))]
      },
      yaxis: { gridcolor: "#eef2f7", zeroline: false, automargin: true },
      annotations: chart.x.length ? [] : [{
        text: this.labels.no_data || "", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
        font: { color: "#94a3b8" }
      }]
    };
  };

  // Redraws at most once a frame, however many points arrive.
  DevicePage.prototype.redraw = function (chart) {
    var self = this;
    if (!window.Plotly || chart.pending) {
      return;
    }
    chart.pending = true;
    window.requestAnimationFrame(function () {
      chart.pending = false;
      var start = Date.now() - self.windowMs;
      while (chart.x.length && chart.x[0] < start) {
        chart.x.shift();
        chart.y.shift();
      }
      var unit = chart.el.getAttribute("data-unit") || "";
      window.Plotly.react(
        chart.el,
        [{
          type: "scatter",
          mode: chart.x.length > 120 ? "lines" : "lines+markers",
          x: chart.x.map(localTime),
          y: chart.y,
          line: { color: "#2563eb", width: 1.8 },
          marker: { size: 4 },
          hovertemplate: "%{x|%H:%M:%S}  %{y} " + unit + "<extra></extra>"
        }],
        self.layout(chart),
        { displayModeBar: false, responsive: true }
      );
      chart.el.setAttribute("data-drawn", "true");
      chart.el.setAttribute("data-points", String(chart.x.length));
    });
  };

  function getJson(url) {
    return window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) {
          return null;
        }
        if (!response.ok) {
          throw new Error(url + ": " + response.status);
        }
        return response.json();
      });
  }

  // The last hour of every metric in two requests at most: raw points, or averages per bucket
  // when there are too many. A device without any stored point answers 404: no history.
  DevicePage.prototype.history = function () {
    var query = "?start=" + (Date.now() - this.windowMs);
    var bucketsUrl = this.root.getAttribute("data-buckets-url");
    var bucketS = Math.max(1, Math.round(this.windowMs / 1000 / BUCKETS_PER_WINDOW));
    return getJson(this.root.getAttribute("data-points-url") + query + "&limit=" + RAW_LIMIT).then(function (answer) {
      var found = {};
      if (!answer) {
        return found;
      }
      if (!answer.truncated) {
        answer.series.forEach(function (series) {
          found[series.metric] = series.points.map(function (p) { return [p.ts_ms, p.value]; });
        });
        return found;
      }
      return getJson(bucketsUrl + query + "&bucket=" + bucketS + "s&fn=avg").then(function (buckets) {
        (buckets ? buckets.series : []).forEach(function (series) {
          found[series.metric] = series.buckets.map(function (b) { return [b.start_ms, b.avg]; });
        });
        return found;
      });
    });
  };

  DevicePage.prototype.loadCharts = function () {
    var self = this;
    var names = Object.keys(this.charts);
    if (!names.length || this.root.getAttribute("data-has-history") !== "true") {
      names.forEach(function (name) { self.redraw(self.charts[name]); });
      return Promise.resolve();
    }
    var draw = function (found) {
      names.forEach(function (name) {
        var chart = self.charts[name];
        (found[name] || []).forEach(function (p) {
          if (p[1] !== null && p[0] > chart.last) {
            chart.x.push(p[0]);
            chart.y.push(p[1]);
            chart.last = p[0];
          }
        });
        self.redraw(chart);
      });
    };
    return this.history().then(draw, function () { draw({}); }); // empty charts rather than none
  };

  // --- keeping up

  DevicePage.prototype.poll = function () {
    var self = this;
    this.setStatus("polling");
    window.clearTimeout(this.pollTimer);
    getJson(this.root.getAttribute("data-twin-url")).then(function (twin) {
      if (twin) {
        self.showTwin(twin);
        if (window.EventSource && !self.eventsRefused) {
          self.listen(); // the twin exists now: its events may be available too
          return;
        }
      }
      self.pollTimer = window.setTimeout(function () { self.poll(); }, POLL_MS);
    }, function () {
      self.pollTimer = window.setTimeout(function () { self.poll(); }, POLL_MS);
    });
  };

  DevicePage.prototype.listen = function () {
    var self = this;
    if (!window.EventSource) {
      this.poll();
      return;
    }
    var source = new window.EventSource(this.root.getAttribute("data-events-url"));
    this.source = source;
    source.addEventListener("twin", function (event) {
      self.showTwin(JSON.parse(event.data));
      self.setStatus("live");
    });
    source.addEventListener("patch", function (event) {
      self.applyPatch(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      // The browser reconnects by itself unless the server refused the stream (no twin yet, no permission).
      if (source.readyState === window.EventSource.CLOSED) {
        source.close();
        // Refused although the twin exists: polling from now on.
        self.eventsRefused = self.twin !== null;
        self.poll();
      } else {
        self.setStatus("polling");
      }
    });
    source.addEventListener("open", function () {
      if (self.twin) {
        self.setStatus("live");
      }
    });
  };

  DevicePage.prototype.start = function () {
    var self = this;
    this.loadCharts().then(function () { self.listen(); }, function () { self.listen(); });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("device-live");
    if (root) {
      new DevicePage(root).start();
    }
  });
})();
