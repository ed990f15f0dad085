// The alarm pages, live: the list and an alarm follow /api/alarms/feed and refresh the parts of the
// page that change (the server renders them, so filters, sorting and words stay the server's); the
// action forms post in place; the report draws the alarm rates with plotly.
(function () {
  "use strict";

  var REFRESH_GAP_MS = 500; // at most two refreshes a second, however many changes arrive
  var POLL_MS = 10000; // without the feed

  // --- refreshing the live parts of a page

  function LivePage(root) {
    this.root = root;
    this.labels = JSON.parse(root.getAttribute("data-labels") || "{}");
    this.alarm = root.getAttribute("data-alarm") || "";
    this.source = null;
    this.pending = false;
    this.running = false;
    this.lastRefresh = 0;
    this.opened = false;
    this.pollTimer = null;
  }

  LivePage.prototype.setStatus = function (mode) {
    var badge = document.getElementById("live-status");
    if (!badge) {
      return;
    }
    badge.setAttribute("data-live", mode);
    badge.textContent = this.labels[mode] || mode;
    badge.className = "badge " + (mode === "live" ? "badge-success" : "badge-warning");
  };

  LivePage.prototype.showError = function (text) {
    var box = document.getElementById("live-alert");
    if (!box) {
      return;
    }
    box.textContent = text || "";
    box.hidden = !text;
  };

  // A region someone is working in (typing, a shelve form open) is left alone until they are done.
  function busy(region) {
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active) && active.matches("input, textarea, select")) {
      return true;
    }
    if (region.querySelector("details[open]")) {
      return true;
    }
    var fields = region.querySelectorAll("input[type=text], textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value) {
        return true;
      }
    }
    return false;
  }

  function checkedIds() {
    var ids = {};
    Array.prototype.forEach.call(document.querySelectorAll("input[name=ids]:checked"), function (box) {
      ids[box.value] = true;
    });
    return ids;
  }

  function shownAlarms() {
    var ids = {};
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-alarm]"), function (row) {
      ids[row.getAttribute("data-alarm")] = true;
    });
    return ids;
  }

  LivePage.prototype.swap = function (html) {
    var fresh = new window.DOMParser().parseFromString(html, "text/html");
    var checked = checkedIds();
    var shown = shownAlarms();
    var left = false;
    Array.prototype.forEach.call(this.root.querySelectorAll("[data-live-region][id]"), function (region) {
      var replacement = fresh.getElementById(region.id);
      if (!replacement) {
        return;
      }
      if (busy(region)) {
        left = true;
        return;
      }
      region.parentNode.replaceChild(document.importNode(replacement, true), region);
    });
    Array.prototype.forEach.call(document.querySelectorAll("input[name=ids]"), function (box) {
      box.checked = !!checked[box.value];
    });
    Array.prototype.forEach.call(document.querySelectorAll("tr[data-alarm]"), function (row) {
      if (!shown[row.getAttribute("data-alarm")]) {
        row.classList.add("row-new");
      }
    });
    this.root.setAttribute("data-refreshed", String(Date.now()));
    if (left) {
      this.pending = true; // tried again on the next change or poll
    }
  };

  LivePage.prototype.refresh = function () {
    var self = this;
    if (this.running) {
      this.pending = true;
      return;
    }
    var wait = this.lastRefresh + REFRESH_GAP_MS - Date.now();
    if (wait > 0) {
      this.running = true;
      window.setTimeout(function () {
        self.running = false;
        self.refresh();
      }, wait);
      return;
    }
    this.running = true;
    this.pending = false;
    this.lastRefresh = Date.now();
    window.fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (html) {
        self.swap(html);
      }, function () {})
      .then(function () {
        self.running = false;
        if (self.pending) {
          self.refresh();
        }
      });
  };

  LivePage.prototype.poll = function () {
    var self = this;
    this.setStatus("polling");
    window.clearInterval(this.pollTimer);
    this.pollTimer = window.setInterval(function () { self.refresh(); }, POLL_MS);
  };

  LivePage.prototype.listen = function () {
    var self = this;
    if (!window.EventSource) {
      this.poll();
      return;
    }
    this.setStatus("connecting");
    var source = new window.EventSource(this.root.getAttribute("data-feed-url"));
    this.source = source;
    source.addEventListener("ready", function (event) {
      var ready = JSON.parse(event.data);
      window.clearInterval(self.pollTimer);
      // Back after a break the feed could not bridge: what is shown may be behind.
      if (self.opened && !ready.resumed) {
        self.refresh();
      }
      self.opened = true;
      self.setStatus("live");
    });
    source.addEventListener("change", function (event) {
      var change = JSON.parse(event.data);
      if (!self.alarm || change.alarm_id === self.alarm) {
        self.refresh();
      }
    });
    source.addEventListener("reload", function () {
      self.refresh();
    });
    source.addEventListener("error", function () {
      if (source.readyState === window.EventSource.CLOSED) {
        source.close(); // refused (signed out, no permission): refresh now and then instead
        self.poll();
      } else {
        self.setStatus("connecting"); // the browser reconnects by itself
      }
    });
  };

  // --- forms that act in place

  LivePage.prototype.submitInline = function (form) {
    var self = this;
    var button = form.querySelector("button[type=submit]");
    if (button) {
      button.disabled = true;
    }
    this.showError("");
    window.fetch(form.action, {
      method: "POST",
      body: new window.FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    }).then(function (response) {
      return response.json().then(function (answer) {
        return { ok: response.ok, answer: answer };
      }, function () {
        return { ok: false, answer: {} };
      });
    }).then(function (result) {
      if (button) {
        button.disabled = false;
      }
      if (!result.ok) {
        self.showError(result.answer.error || self.labels.failed);
        return;
      }
      if (form.id === "bulk-ack") {
        Array.prototype.forEach.call(document.querySelectorAll("input[name=ids]:checked"), function (box) {
          box.checked = false;
        });
      }
      form.reset();
      var open = form.closest("details[open]");
      if (open) {
        open.removeAttribute("open");
      }
      if (document.activeElement && form.contains(document.activeElement)) {
        document.activeElement.blur();
      }
      self.refresh();
    }, function () {
      if (button) {
        button.disabled = false;
      }
      self.showError(self.labels.failed);
    });
  };

  LivePage.prototype.start = function () {
    var self = this;
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (form instanceof HTMLFormElement && form.hasAttribute("data-inline") && self.root.contains(form)) {
        event.preventDefault();
        self.submitInline(form);
      }
    });
    // A region left alone while someone worked in it is refreshed once they are done.
    var retry = function () {
      if (self.pending) {
        window.setTimeout(function () { self.refresh(); }, 0);
      }
    };
    document.addEventListener("focusout", retry);
    document.addEventListener("toggle", retry, true);
    document.addEventListener("change", function (event) {
      var all = event.target;
      if (all instanceof HTMLInputElement && all.hasAttribute("data-select-all")) {
        var name = all.getAttribute("data-select-all");
        Array.prototype.forEach.call(document.querySelectorAll("input[name='" + name + "']"), function (box) {
          box.checked = all.checked;
        });
      }
    });
    this.listen();
  };

  // --- the report's rate chart

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // Plotly date axes take wall-clock strings; these are in the viewer's own time zone.
  function localTime(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function drawRates(el) {
    if (!window.Plotly) {
      return;
    }
    var chart = JSON.parse(el.getAttribute("data-chart") || "{}");
    var series = chart.series || [];
    var font = window.getComputedStyle(document.body).fontFamily;
    var traces = series.map(function (s) {
      return {
        type: "bar",
        name: s.position || "\u2014",
        x: s.counts.map(function (_count, i) { return localTime(chart.start_ms + i * chart.window_ms); }),
        y: s.counts,
        hovertemplate: "%{x|%m-%d %H:%M}  %{y}<extra>" + (s.position || "\u2014") + "</extra>"
      };
    });
    var layout = {
      height: 280,
      barmode: "stack",
      bargap: 0.1,
      margin: { l: 44, r: 12, t: 8, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: font, size: 12, color: "#475569" },
      showlegend: series.length > 1,
      legend: { orientation: "h", y: -0.2 },
      xaxis: { type: "date", showgrid: false, linecolor: "#e2e8f0" },
      yaxis: { gridcolor: "#eef2f7", zeroline: false, rangemode: "tozero" },
      shapes: [{
        type: "line", xref: "paper", x0: 0, x1: 1, y0: chart.threshold, y1: chart.threshold,
        line: { color: "#dc2626", width: 1, dash: "dot" }
      }],
      annotations: series.length ? [] : [{
        text: el.getAttribute("data-no-data") || "", showarrow: false, xref: "paper", yref: "paper",
        x: 0.5, y: 0.5, font: { color: "#94a3b8" }
      }]
    };
    window.Plotly.newPlot(el, traces, layout, { displayModeBar: false, responsive: true }).then(function () {
      el.setAttribute("data-drawn", "true");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("alarms-live");
    if (root) {
      new LivePage(root).start();
    }
    var rates = document.getElementById("rate-chart");
    if (rates) {
      drawRates(rates);
    }
  });
})();
