/* lightning-cam report: plain JavaScript over window.LC_REPORT (data.js), no network. */
(function () {
  "use strict";
  var D = window.LC_REPORT;
  if (!D) {
    document.body.textContent = "data.js is missing or broken: rerun `lightning-cam report OUT`.";
    return;
  }
  var C = D.columns, N = D.count, PAGE = 50;
  var PALETTE = ["#6a3fc1", "#e8590c", "#0b7285", "#c2255c", "#2b8a3e", "#1864ab", "#a61e4d", "#5c940d"];
  var SVGNS = "http://www.w3.org/2000/svg";
  var state = { view: 0, sortKey: null, sortDir: 1, search: "", cls: "", status: "", mis: false,
                page: 0, order: [], current: -1, opacity: 0.5 };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in (attrs || {})) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    return node;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "—";
    if (typeof v !== "number") return String(v);
    return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 3 : digits);
  }
  function words(k) { return k.replace(/_/g, " "); }
  function arrow(k) { return D.higher[k] ? "↑" : "↓"; }
  function view() { return D.views[state.view]; }
  function metricKey(k, v) { return (v || view()).key + "/" + k; }
  function misclassified(i) {
    return C.label[i] !== null && C.pred[i] !== null && C.label[i] !== C.pred[i];
  }
  function imageSrc(i) { return "thumbs/" + C.key[i] + ".jpg"; }
  function mapSrc(i, v) { return "thumbs/" + C.key[i] + "-" + v.file + ".png"; }

  /* ------------------------------------------------------------ header, means, histograms */

  function header() {
    $("lc-title").textContent = D.title;
    var bad = C.status.filter(function (s) { return s !== "ok"; }).length;
    var facts = N + " images · methods " + D.methods.join(", ") + " · layers " + D.layers.join(", ") +
      " · target " + D.target + (bad ? " · " + bad + " not explained" : "") +
      " · run " + (D.created || "?") + " · report " + D.generated;
    $("lc-facts").textContent = facts;
    if (!D.has_images) {
      $("lc-facts").appendChild(el("span", { className: "lc-warn",
        text: " · no images found: maps are shown alone (lightning-cam report OUT --images DIR)" }));
    }
  }

  function histogram(values, width, height) {
    var finite = values.filter(function (v) { return v !== null; });
    var box = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           role: "img", "class": "lc-hist" });
    if (!finite.length) {
      var t = svg("text", { x: 2, y: height / 2, "font-size": 11, fill: "#5b6570" });
      t.textContent = "no values";
      box.appendChild(t);
      return box;
    }
    var lo = Math.min.apply(null, finite), hi = Math.max.apply(null, finite);
    var bins = 20, counts = new Array(bins).fill(0), span = hi - lo || 1;
    finite.forEach(function (v) { counts[Math.min(bins - 1, Math.floor((v - lo) / span * bins))]++; });
    var top = Math.max.apply(null, counts), bw = width / bins, plot = height - 12;
    counts.forEach(function (c, b) {
      var h = c ? Math.max(1, c / top * plot) : 0;
      var r = svg("rect", { x: b * bw + 0.5, y: plot - h, width: bw - 1, height: h, fill: "#6a3fc1" });
      var tip = svg("title", {});
      tip.textContent = fmt(lo + b * span / bins) + " – " + fmt(lo + (b + 1) * span / bins) + ": " + c;
      r.appendChild(tip);
      box.appendChild(r);
    });
    [[lo, 0, "start"], [hi, width, "end"]].forEach(function (p) {
      var t = svg("text", { x: p[1], y: height - 1, "font-size": 10, fill: "#5b6570", "text-anchor": p[2] });
      t.textContent = fmt(p[0], 2);
      box.appendChild(t);
    });
    return box;
  }

  function means() {
    var host = $("lc-means");
    if (!D.metrics.length) {
      host.appendChild(el("p", { className: "lc-note", text: "The run computed no metrics (CAMWriter(metrics=[]))." }));
      return;
    }
    var head = el("tr", {}, [el("th", { text: "method" }), el("th", { text: "layer" })]);
    D.metrics.forEach(function (k) { head.appendChild(el("th", { text: words(k) + " " + arrow(k) })); });
    var body = el("tbody");
    D.views.forEach(function (v) {
      var row = el("tr", {}, [el("td", { text: v.method }), el("td", {}, [el("code", { text: v.layer })])]);
      D.metrics.forEach(function (k) {
        var mean = D.means[metricKey(k, v)] || [null, 0];
        var cell = el("td", { className: "hist" }, [
          el("div", { text: (mean[0] === null ? "—" : mean[0].toFixed(3)) + "  (" + mean[1] + " images)" }),
          histogram(D.metric_columns[metricKey(k, v)] || [], 140, 40)]);
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
    host.appendChild(el("table", { className: "lc-means" }, [el("thead", {}, [head]), body]));
  }

  /* ------------------------------------------------------------ the table */

  function columns() {
    var cols = [
      { key: "thumb", title: "", sortable: false },
      { key: "id", title: "id", get: function (i) { return C.id[i]; } },
      { key: "label", title: "label", get: function (i) { return C.label[i]; }, num: true },
      { key: "pred", title: "predicted", get: function (i) { return C.pred[i]; }, num: true,
        bad: misclassified },
      { key: "prob", title: "probability", get: function (i) { return C.prob[i]; }, num: true },
      { key: "status", title: "status", get: function (i) { return C.status[i]; },
        bad: function (i) { return C.status[i] !== "ok"; } }
    ];
    D.metrics.forEach(function (k) {
      var values = D.metric_columns[metricKey(k)] || [];
      cols.push({ key: "m:" + k, title: words(k) + " " + arrow(k), num: true,
                  get: function (i) { return values[i]; } });
    });
    return cols;
  }

  function matches(i) {
    if (state.search && C.id[i].toLowerCase().indexOf(state.search) < 0) return false;
    if (state.cls !== "" && String(classOf(i)) !== state.cls) return false;
    if (state.status !== "" && C.status[i] !== state.status) return false;
    if (state.mis && !misclassified(i)) return false;
    return true;
  }
  function classOf(i) { return hasLabels() ? C.label[i] : C.pred[i]; }
  function hasLabels() { return C.label.some(function (v) { return v !== null; }); }

  function compute() {
    var order = [];
    for (var i = 0; i < N; i++) if (matches(i)) order.push(i);
    var col = columns().filter(function (c) { return c.key === state.sortKey; })[0];
    if (col) {
      var dir = state.sortDir;
      order.sort(function (a, b) {
        var x = col.get(a), y = col.get(b);
        var nx = x === null || x === undefined, ny = y === null || y === undefined;
        if (nx || ny) return nx === ny ? a - b : (nx ? 1 : -1);  // no value: last, either way
        if (x < y) return -dir;
        if (x > y) return dir;
        return a - b;
      });
    }
    state.order = order;
    state.page = Math.min(state.page, Math.max(0, Math.ceil(order.length / PAGE) - 1));
  }

  function thumb(i) {
    var box = el("span", { className: "lc-thumb" });
    if (C.image[i]) box.appendChild(el("img", { src: imageSrc(i), alt: "", loading: "lazy" }));
    else if (C.maps[i]) box.appendChild(el("img", { src: mapSrc(i, view()), alt: "", loading: "lazy" }));
    return box;
  }

  function renderHead() {
    var tr = document.querySelector("#lc-table thead tr");
    tr.textContent = "";
    columns().forEach(function (c) {
      var th = el("th", { text: c.title, "data-col": c.key });
      if (c.sortable === false) { tr.appendChild(th); return; }
      if (state.sortKey === c.key) th.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
      th.addEventListener("click", function () {
        if (state.sortKey === c.key) state.sortDir = -state.sortDir;
        else { state.sortKey = c.key; state.sortDir = 1; }
        refresh();
      });
      tr.appendChild(th);
    });
  }

  function renderBody() {
    var body = document.querySelector("#lc-table tbody");
    body.textContent = "";
    var cols = columns(), start = state.page * PAGE;
    state.order.slice(start, start + PAGE).forEach(function (i) {
      var tr = el("tr", { "data-row": i });
      cols.forEach(function (c) {
        if (c.key === "thumb") { tr.appendChild(el("td", {}, [thumb(i)])); return; }
        var td = el("td", { text: c.key === "prob" ? fmt(c.get(i), 2) : fmt(c.get(i)) });
        if (c.num) td.className = "num";
        if (c.bad && c.bad(i)) td.className += " bad";
        tr.appendChild(td);
      });
      tr.addEventListener("click", function () { openImage(i); });
      body.appendChild(tr);
    });
    var pages = Math.max(1, Math.ceil(state.order.length / PAGE));
    $("lc-page").textContent = "page " + (state.page + 1) + " of " + pages;
    $("lc-prev").disabled = state.page === 0;
    $("lc-next").disabled = state.page >= pages - 1;
    $("lc-count").textContent = state.order.length + " of " + N + " images" +
      (state.order.length ? "; click a row to see its maps" : "");
  }

  function refresh() { compute(); renderHead(); renderBody(); }

  function controls() {
    D.views.forEach(function (v, j) { $("lc-view").appendChild(el("option", { value: j, text: v.method + " / " + v.layer })); });
    $("lc-view").addEventListener("change", function (e) { state.view = +e.target.value; refresh(); });
    var classes = {}, statuses = {};
    for (var i = 0; i < N; i++) { if (classOf(i) !== null) classes[classOf(i)] = 1; statuses[C.status[i]] = 1; }
    var which = hasLabels() ? "label " : "predicted ";
    Object.keys(classes).map(Number).sort(function (a, b) { return a - b; }).forEach(function (c) {
      $("lc-class").appendChild(el("option", { value: c, text: which + c }));
    });
    Object.keys(statuses).sort().forEach(function (s) { $("lc-status").appendChild(el("option", { value: s, text: s })); });
    $("lc-search").addEventListener("input", function (e) { state.search = e.target.value.toLowerCase(); state.page = 0; refresh(); });
    $("lc-class").addEventListener("change", function (e) { state.cls = e.target.value; state.page = 0; refresh(); });
    $("lc-status").addEventListener("change", function (e) { state.status = e.target.value; state.page = 0; refresh(); });
    $("lc-misclassified").addEventListener("change", function (e) { state.mis = e.target.checked; state.page = 0; refresh(); });
    $("lc-prev").addEventListener("click", function () { state.page--; renderBody(); });
    $("lc-next").addEventListener("click", function () { state.page++; renderBody(); });
    D.metrics.forEach(function (k) {
      var text = (D.higher[k] ? "lowest " : "largest ") + words(k);
      var b = el("button", { type: "button", text: text, "data-preset": k });
      b.addEventListener("click", function () {
        state.sortKey = "m:" + k; state.sortDir = D.higher[k] ? 1 : -1; state.page = 0; refresh();
      });
      $("lc-presets").appendChild(b);
    });
  }

  /* ------------------------------------------------------------ one image */

  function tile(title, i, v) {
    var stack = el("div", { className: "lc-stack" });
    if (C.image[i]) stack.appendChild(el("img", { src: imageSrc(i), alt: "image", className: "lc-image" }));
    if (v) {
      var map = el("img", { src: mapSrc(i, v), alt: "map " + v.key, className: "lc-map" });
      map.style.opacity = C.image[i] ? state.opacity : 1;
      stack.appendChild(map);
    }
    var parts = [el("h3", { text: title }), stack];
    if (v && D.metrics.length) {
      var rows = D.metrics.map(function (k) {
        return el("tr", {}, [el("td", { text: words(k) + " " + arrow(k) }),
                             el("td", { className: "num", text: fmt((D.metric_columns[metricKey(k, v)] || [])[i]) })]);
      });
      parts.push(el("table", {}, [el("tbody", {}, rows)]));
    }
    return el("div", { className: "lc-tile" }, parts);
  }

  function openImage(i) {
    state.current = i;
    $("lc-viewer").hidden = false;
    $("lc-viewer-title").textContent = C.id[i];
    var facts = "label " + fmt(C.label[i]) + " · predicted " + fmt(C.pred[i]) + " (p " + fmt(C.prob[i], 2) +
      ") · explained class " + fmt(C.explained[i]) + " · status " + C.status[i] +
      (misclassified(i) ? " · misclassified" : "");
    $("lc-viewer-facts").textContent = facts;
    var tiles = $("lc-tiles");
    tiles.textContent = "";
    if (C.image[i]) tiles.appendChild(tile("image", i, null));
    if (!C.maps[i]) {
      tiles.appendChild(el("p", { className: "lc-warn", text: "Not explained (" + C.status[i] + "): no maps." }));
    } else {
      D.views.forEach(function (v) { tiles.appendChild(tile(v.method + " · " + v.layer, i, v)); });
    }
    if (history.replaceState) history.replaceState(null, "", "#image=" + encodeURIComponent(C.id[i]));
  }

  function step(delta) {
    var at = state.order.indexOf(state.current);
    if (at < 0) return;
    var next = state.order[at + delta];
    if (next !== undefined) openImage(next);
  }

  function closeImage() {
    $("lc-viewer").hidden = true;
    state.current = -1;
    if (history.replaceState) history.replaceState(null, "", "#images");
  }

  function viewer() {
    $("lc-opacity").addEventListener("input", function (e) {
      state.opacity = e.target.value / 100;
      $("lc-opacity-value").textContent = state.opacity.toFixed(2);
      document.querySelectorAll("#lc-tiles .lc-map").forEach(function (m) {
        if (C.image[state.current]) m.style.opacity = state.opacity;
      });
    });
    $("lc-viewer-close").addEventListener("click", closeImage);
    $("lc-viewer-prev").addEventListener("click", function () { step(-1); });
    $("lc-viewer-next").addEventListener("click", function () { step(1); });
    document.addEventListener("keydown", function (e) {
      if ($("lc-viewer").hidden) return;
      if (e.key === "Escape") closeImage();
      else if (e.key === "ArrowLeft") step(-1);
      else if (e.key === "ArrowRight") step(1);
    });
  }

  /* ------------------------------------------------------------ sanity curves */

  function chart(sim, sanity) {
    var W = 440, H = 240, L = 40, R = 12, T = 12, B = 60;
    var stages = ["trained"].concat(sanity.stages);
    var series = D.views.map(function (v) {
      var got = ((sanity.similarity[v.method] || {})[v.layer] || {})[sim] || [];
      return [1].concat(got);
    });
    var all = [].concat.apply([], series).filter(function (x) { return x !== null; });
    var lo = Math.min(0, Math.min.apply(null, all.length ? all : [0])), hi = 1;
    function X(s) { return L + (W - L - R) * (stages.length > 1 ? s / (stages.length - 1) : 0.5); }
    function Y(v) { return T + (H - T - B) * (hi - v) / (hi - lo || 1); }
    var box = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "lc-curve", "data-sim": sim });
    [lo, (lo + hi) / 2, hi].forEach(function (g) {
      box.appendChild(svg("line", { x1: L, x2: W - R, y1: Y(g), y2: Y(g), stroke: "#d8dde3" }));
      var t = svg("text", { x: L - 4, y: Y(g) + 4, "font-size": 11, "text-anchor": "end", fill: "#5b6570" });
      t.textContent = fmt(g, 1);
      box.appendChild(t);
    });
    stages.forEach(function (s, j) {
      var t = svg("text", { x: X(j), y: H - B + 14, "font-size": 10, fill: "#5b6570", "text-anchor": "end",
                            transform: "rotate(-35 " + X(j) + " " + (H - B + 14) + ")" });
      t.textContent = s;
      box.appendChild(t);
    });
    series.forEach(function (vals, j) {
      var pts = vals.map(function (v, s) { return v === null ? null : X(s) + "," + Y(v); }).filter(Boolean);
      var color = PALETTE[j % PALETTE.length];
      box.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      vals.forEach(function (v, s) {
        if (v === null) return;
        var c = svg("circle", { cx: X(s), cy: Y(v), r: 3, fill: color });
        var tip = svg("title", {});
        tip.textContent = D.views[j].key + " → " + stages[s] + ": " + fmt(v);
        c.appendChild(tip);
        box.appendChild(c);
      });
    });
    var title = sim === "ssim" ? "SSIM" : "Spearman rank correlation";
    return el("figure", {}, [el("figcaption", { text: title + " with the trained model's maps" }), box]);
  }

  function sanity() {
    var host = $("lc-sanity"), s = D.sanity;
    if (!s) {
      host.appendChild(el("p", { className: "lc-note", text: "This folder has no sanity check (the run had sanity_samples=0)." }));
      return;
    }
    if (s.error) {
      host.appendChild(el("p", { className: "lc-warn", text: "The sanity check failed: " + s.error }));
      return;
    }
    host.appendChild(el("p", { className: "lc-note", text: "Similarity between the maps of the trained model and of the model randomised from the top down to the named layer (" + s.samples + " images; the first point is the trained model itself, 1). Falling curves are good: the maps depend on the weights." }));
    var legend = el("p", { className: "lc-legend" });
    D.views.forEach(function (v, j) {
      var i = el("i"); i.style.background = PALETTE[j % PALETTE.length];
      legend.appendChild(el("span", {}, [i, document.createTextNode(v.method + " · " + v.layer)]));
    });
    host.appendChild(legend);
    var charts = el("div", { className: "lc-charts" });
    Object.keys(s.similarity[D.views[0].method][D.views[0].layer]).forEach(function (sim) { charts.appendChild(chart(sim, s)); });
    host.appendChild(charts);
  }

  /* ------------------------------------------------------------ start */

  header();
  means();
  controls();
  refresh();
  viewer();
  sanity();
  function follow() {  /* #image=<id>: a link to one image */
    var wanted = /^#image=(.*)$/.exec(location.hash);
    var at = wanted ? C.id.indexOf(decodeURIComponent(wanted[1])) : -1;
    if (at >= 0 && at !== state.current) openImage(at);
  }
  window.addEventListener("hashchange", follow);
  follow();
  window.LC_READY_MS = performance.now();
  document.body.setAttribute("data-ready", "1");
})();
