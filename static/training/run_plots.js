/* A training run's live plots (uPlot, vendored): train loss, learning rate, gradient norm and the
 * validation metric (loss for SFT; accuracy with its 95% interval as a band for a reward model and
 * DPO, which also plots its implicit reward margin, chosen minus rejected; PPO plots its rollouts' reward,
 * KL, entropy and answer length, its clip fraction and value loss, and the validation reward).
 *
 * The page gives the metrics API's URL in data-metrics-url. The script reads every row once, then
 * while the run is live (data-live="true" and the progress card, which htmx re-polls, has no
 * data-finished) asks every data-poll-ms for the rows after the last step it has, and redraws.
 * It asks from the step before its last one: a validation row is written after the training row
 * of the same step, so the newest step may still gain a row. Rows are keyed by (split, step), so
 * re-read and rewritten rows (a resumed run logs the steps after its checkpoint again) replace
 * the old points instead of doubling them.
 *
 * Only numbers from the API are drawn; text goes into the page with textContent.
 * Each figure says how many points it draws in data-points (the browser tests read it).
 */
(function () {
  "use strict";

  var HEIGHT = 190;
  var GRID = "#eef0f4";
  var AXIS = "#5a6475";
  // Steps are whole numbers: the x axis ticks only at these spacings.
  var STEP_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000];
  var SPECS = {
    loss: { split: "train", key: "loss", label: "loss", color: "#3b55c4" },
    lr: { split: "train", key: "lr", label: "learning rate", color: "#0f7a5c" },
    grad_norm: { split: "train", key: "grad_norm", label: "grad norm", color: "#a15c07" },
    reward_margin: { split: "train", key: "reward_margin", label: "reward margin", color: "#c43b6e" },
    reward: { split: "train", key: "reward", label: "reward", color: "#c43b6e", sparse: true },
    kl: { split: "train", key: "kl", label: "KL (nats / answer)", color: "#a15c07", sparse: true },
    entropy: { split: "train", key: "entropy", label: "entropy", color: "#0f7a5c", sparse: true },
    response_length: { split: "train", key: "response_length", label: "tokens", color: "#5a6475", sparse: true },
    clip_fraction: { split: "train", key: "clip_fraction", label: "clip fraction", color: "#7a3bc4" },
    value_loss: { split: "train", key: "value_loss", label: "value loss", color: "#3b55c4" },
    validation_reward: { split: "validation", key: "validation/reward", label: "validation reward", color: "#7a3bc4",
                         sparse: true },
    validation_loss: { split: "validation", key: "validation/loss", label: "validation loss", color: "#7a3bc4",
                       sparse: true },
    validation_accuracy: { split: "validation", key: "validation/accuracy", label: "accuracy", color: "#7a3bc4",
                           sparse: true, band: "validation/accuracy_ci", range: [0, 1] },
  };

  function fmt(v) {
    if (v === null || v === undefined || typeof v !== "number" || !isFinite(v)) return "—";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return String(+v.toPrecision(4));
  }

  // The x axis spans the steps drawn; one step alone gets a step of room on each side.
  // (uPlot widens a one-value range itself before asking, so look at the data.)
  function stepRange(u, min, max) {
    var xs = u.data && u.data[0];
    if (xs && xs.length === 1) return [Math.max(xs[0] - 1, 0), xs[0] + 1];
    return min === null || max === null ? [0, 1] : [min, max];
  }

  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function Plots(root) {
    this.root = root;
    this.url = root.dataset.metricsUrl;
    this.live = root.dataset.live === "true";
    this.pollMs = parseInt(root.dataset.pollMs, 10) || 2000;
    this.status = document.querySelector("[data-plots-status]");
    this.rows = { train: {}, validation: {} };  // split -> step -> values
    this.lastStep = null;
    this.figures = [];
    var self = this;
    root.querySelectorAll("figure[data-plot]").forEach(function (figure) {
      var spec = SPECS[figure.dataset.plot];
      if (!spec) return;
      var area = figure.querySelector(".plot-area");
      var empty = document.createElement("p");
      empty.className = "plot-empty";
      empty.textContent = spec.split === "validation" ? "No validation yet." : "No steps yet.";
      area.appendChild(empty);
      figure.dataset.points = "0";
      self.figures.push({ figure: figure, area: area, empty: empty, spec: spec, plot: null });
    });
    if (window.ResizeObserver) {
      new ResizeObserver(function () { self.resize(); }).observe(root);
    }
  }

  Plots.prototype.finished = function () {
    return !this.live || !!document.querySelector("#run-progress[data-finished]");
  };

  Plots.prototype.say = function (text) {
    if (this.status) this.status.textContent = text;
  };

  Plots.prototype.fetch = function () {
    var url = this.url;
    if (this.lastStep !== null && this.lastStep > 0) url += "?after=" + encodeURIComponent(this.lastStep - 1);
    return window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  };

  Plots.prototype.merge = function (rows) {
    var self = this;
    (Array.isArray(rows) ? rows : []).forEach(function (row) {
      if (!row || typeof row.step !== "number" || !self.rows[row.split]) return;
      self.rows[row.split][row.step] = row.values || {};
      if (self.lastStep === null || row.step > self.lastStep) self.lastStep = row.step;
    });
  };

  Plots.prototype.columns = function (spec) {
    var byStep = this.rows[spec.split];
    var steps = Object.keys(byStep).map(Number).sort(function (a, b) { return a - b; });
    var xs = [], ys = [], hi = [], lo = [];
    steps.forEach(function (step) {
      var values = byStep[step];
      var y = num(values[spec.key]);
      if (y === null) return;
      xs.push(step);
      ys.push(y);
      if (spec.band) {
        var ci = Array.isArray(values[spec.band]) ? values[spec.band] : [];
        lo.push(num(ci[0]));
        hi.push(num(ci[1]));
      }
    });
    return spec.band ? [xs, ys, hi, lo] : [xs, ys];
  };

  Plots.prototype.options = function (item, width) {
    var spec = item.spec;
    var valueFmt = function (u, v) { return fmt(v); };
    var series = [
      { label: "step", value: function (u, v) { return v === null || v === undefined ? "—" : String(v); } },
      { label: spec.label, stroke: spec.color, width: 2, value: valueFmt,
        points: spec.sparse ? { show: true, size: 6, fill: spec.color } : {} },
    ];
    var options = {
      width: width,
      height: HEIGHT,
      scales: { x: { time: false, range: stepRange }, y: spec.range ? { range: spec.range } : {} },
      axes: [
        { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID }, size: 34, incrs: STEP_INCRS,
          values: function (u, splits) { return splits.map(function (v) { return String(Math.round(v)); }); } },
        { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID }, size: 58,
          values: function (u, splits) { return splits.map(fmt); } },
      ],
      series: series,
      legend: { show: true, live: true },
      cursor: { drag: { x: true, y: false } },
    };
    if (spec.band) {
      var edge = { stroke: "rgba(122, 59, 196, 0.35)", width: 1, dash: [4, 4], value: valueFmt, points: { show: false } };
      series.push(Object.assign({ label: "95% high" }, edge), Object.assign({ label: "95% low" }, edge));
      options.bands = [{ series: [2, 3], fill: "rgba(122, 59, 196, 0.12)" }];
    }
    return options;
  };

  Plots.prototype.draw = function () {
    var self = this;
    this.figures.forEach(function (item) {
      var data = self.columns(item.spec);
      var n = data[0].length;
      item.figure.dataset.points = String(n);
      item.empty.hidden = n > 0;
      if (!n) return;
      if (!item.plot) {
        item.plot = new window.uPlot(self.options(item, Math.max(item.area.clientWidth, 200)), data, item.area);
      } else {
        item.plot.setData(data);
      }
    });
  };

  Plots.prototype.resize = function () {
    this.figures.forEach(function (item) {
      if (item.plot) item.plot.setSize({ width: Math.max(item.area.clientWidth, 200), height: HEIGHT });
    });
  };

  Plots.prototype.summary = function (finished) {
    var steps = Object.keys(this.rows.train).length;
    if (finished) return steps ? steps + " step" + (steps === 1 ? "" : "s") + " logged" : "No steps were logged.";
    var time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return "Live: " + (this.lastStep === null ? "waiting for the first step" : "step " + this.lastStep) +
      " · updated " + time;
  };

  Plots.prototype.tick = function () {
    var self = this;
    var finishedBefore = this.finished();
    this.fetch().then(function (rows) {
      self.merge(rows);
      self.draw();
      self.say(self.summary(finishedBefore));
    }, function (error) {
      self.say("Could not load the metrics (" + error.message + ")" + (finishedBefore ? "." : "; trying again."));
    }).then(function () {
      if (finishedBefore) return;
      // One more read after the run finished picks up its last rows; then the loop stops.
      window.setTimeout(function () { self.tick(); }, self.finished() ? 0 : self.pollMs);
    });
  };

  function scrollLogs() {
    document.querySelectorAll("[data-run-log]").forEach(function (pre) {
      pre.scrollTop = pre.scrollHeight;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    scrollLogs();
    document.body.addEventListener("htmx:oobAfterSwap", scrollLogs);
    var root = document.querySelector("[data-run-plots]");
    if (!root) return;
    if (!window.uPlot) {
      var status = document.querySelector("[data-plots-status]");
      if (status) status.textContent = "The plotting library did not load; the latest metrics are below.";
      return;
    }
    new Plots(root).tick();
  });
})();
