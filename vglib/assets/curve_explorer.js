// Kernel-free curve explorer: draws precomputed per-layer curves as SVG, chosen by the controls.
// Self-contained (no libraries, no network). Data format and page address syntax: vglib/static.py.
(function () {
  "use strict";
  // The page address records explorers that differ from their defaults, each in full:
  // "#explorer-1:depth=50,activation=tanh&explorer-3:init=he" (URI-encoded names and values).
  var ENTRY = /^explorer-([1-9][0-9]*):(.*)$/;
  function explorers() { return Array.prototype.slice.call(document.querySelectorAll(".vg-curve-explorer")); }
  function decode(s) { try { return decodeURIComponent(s); } catch (e) { return null; } }
  // {index: {name: value}} from the fragment; null when it holds no explorer (a plain anchor).
  function readHash() {
    var state = null;
    location.hash.slice(1).split("&").forEach(function (entry) {
      var m = ENTRY.exec(entry), values = Object.create(null);
      if (!m) return;
      m[2].split(",").forEach(function (pair) {
        var eq = pair.indexOf("="), name = decode(pair.slice(0, eq)), value = decode(pair.slice(eq + 1));
        if (eq > 0 && name !== null && value !== null) values[name] = value;
      });
      (state = state || {})[m[1]] = values;
    });
    return state;
  }
  // Called on a committed change (not on every input tick: browsers rate-limit replaceState, Safari
  // by throwing, Chrome by ignoring calls). A write that would not change the fragment is skipped;
  // explorers all at their defaults leave a plain anchor as it is. An address that cannot be
  // rewritten (a sandboxed frame) keeps its fragment.
  function writeHash() {
    var hash = explorers().map(function (root, i) {
      var entry = root.vgEntry ? root.vgEntry() : "";
      return entry && "explorer-" + (i + 1) + ":" + entry;
    }).filter(Boolean).join("&");
    if (hash ? "#" + hash === location.hash : !readHash()) return;
    try {
      history.replaceState(history.state, "", location.pathname + location.search + (hash && "#" + hash));
    } catch (e) {}
  }
  var NS = "http://www.w3.org/2000/svg";
  var SUP = { "-": "\u207b", "0": "\u2070", "1": "\u00b9", "2": "\u00b2", "3": "\u00b3", "4": "\u2074",
              "5": "\u2075", "6": "\u2076", "7": "\u2077", "8": "\u2078", "9": "\u2079" };
  function el(tag, attrs, parent) {
    var node = document.createElementNS(NS, tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, s, attrs) {
    var t = el("text", Object.assign({ x: x, y: y, "font-size": 12, fill: "#222" }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  // A frame's curves: base64 of little-endian int16 codes, round(100 log10 v); -32768 = exactly 0.
  function unpack(packed, count) {
    var bytes = atob(packed), n = bytes.length / 2 / count, rows = [];
    for (var j = 0; j < count; j++) {
      var row = [];
      for (var i = 0; i < n; i++) {
        var k = 2 * (j * n + i), v = bytes.charCodeAt(k) | (bytes.charCodeAt(k + 1) << 8);
        if (v >= 32768) v -= 65536;
        row.push(v === -32768 ? null : v);
      }
      rows.push(row);
    }
    return rows;
  }
  function power(e) { return "10" + String(e).split("").map(function (c) { return SUP[c]; }).join(""); }

  function draw(root, spec, frame) {
    var svg = root.querySelector("svg");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 640, H = 330, L = 64, R = 12, T = 30, B = 44;
    el("rect", { x: 0, y: 0, width: W, height: H, fill: "#fff" }, svg);
    var n = frame.y[0].length, floor = spec.floor, lo = Infinity, hi = -Infinity, zeros = 0;
    frame.y.forEach(function (ys) {
      ys.forEach(function (v) {
        if (v === null) { zeros++; v = floor; }
        v = v / 100; lo = Math.min(lo, v); hi = Math.max(hi, v);
      });
    });
    var bottom = 3 * Math.floor((lo - 0.5) / 3), top = 3 * Math.ceil((hi + 0.5) / 3);
    var right = n <= 10 ? n : 10 * Math.ceil(n / 10);
    function X(i) { return L + (i + 1 - 0.5) / right * (W - L - R); }
    function Y(v) { return T + (top - v) / (top - bottom) * (H - T - B); }
    el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#444" }, svg);
    var step = Math.max(1, Math.ceil((top - bottom) / 6));
    for (var e = Math.ceil(bottom / step) * step; e <= top; e += step) {
      el("line", { x1: L, x2: W - R, y1: Y(e), y2: Y(e), stroke: "#ddd" }, svg);
      text(svg, L - 6, Y(e) + 4, power(e), { "text-anchor": "end" });
    }
    var xstep = right <= 10 ? 1 : right <= 50 ? 10 : 20;
    for (var k = xstep; k <= right; k += xstep) {
      el("line", { x1: X(k - 1), x2: X(k - 1), y1: H - B, y2: H - B + 4, stroke: "#444" }, svg);
      text(svg, X(k - 1), H - B + 16, String(k), { "text-anchor": "middle" });
    }
    text(svg, (L + W - R) / 2, H - 8, spec.xlabel, { "text-anchor": "middle" });
    text(svg, 14, (T + H - B) / 2, spec.ylabel, { "text-anchor": "middle", transform: "rotate(-90 14 " + (T + H - B) / 2 + ")" });
    text(svg, (L + W - R) / 2, 18, frame.title, { "text-anchor": "middle", "font-size": 13 });
    if (zeros) el("line", { x1: L, x2: W - R, y1: Y(floor / 100), y2: Y(floor / 100), stroke: "#888", "stroke-dasharray": "2 3" }, svg);
    spec.series.forEach(function (s, j) {
      var pts = frame.y[j].map(function (v, i) { return X(i) + "," + Y((v === null ? floor : v) / 100); });
      el("polyline", { points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 1.6,
                       "stroke-dasharray": s.dash || "", "class": "vg-series-" + j }, svg);
      frame.y[j].forEach(function (v, i) {
        if (v === null) el("path", { d: "M" + (X(i) - 4) + "," + (Y(floor / 100) - 7) + "h8l-4,7z", fill: s.color }, svg);
        else el("circle", { cx: X(i), cy: Y(v / 100), r: 2, fill: s.color }, svg);
      });
      el("line", { x1: L + 10, x2: L + 34, y1: T + 14 + 16 * j, y2: T + 14 + 16 * j, stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || "" }, svg);
      text(svg, L + 40, T + 18 + 16 * j, s.label, { "font-size": 11 });
    });
    if (zeros) text(svg, W - R - 6, H - B - 8, "\u25bc " + zeros + " norm(s) exactly 0 (float32 underflow), drawn at 1e-45",
                    { "text-anchor": "end", "font-size": 11 });
    svg.setAttribute("aria-label", frame.title);
  }

  function init(root) {
    var spec = JSON.parse(root.querySelector("script[type='application/json']").textContent);
    var form = root.querySelector(".vg-controls"), inputs = [];
    spec.controls.forEach(function (c) {
      var label = document.createElement("label");
      label.textContent = c.name + " ";
      var input;
      if (c.kind === "range") {
        input = document.createElement("input");
        input.type = "range"; input.min = 0; input.max = c.values.length - 1; input.step = 1;
        input.value = c.values.indexOf(c.value);
        var out = document.createElement("output");
        out.textContent = c.value;
        input.addEventListener("input", function () { out.textContent = c.values[+input.value]; });
        label.appendChild(input); label.appendChild(out);
        input.read = function () { return c.values[+input.value]; };
        input.set = function (v) { input.value = c.values.indexOf(v); out.textContent = v; };
      } else {
        input = document.createElement("select");
        c.values.forEach(function (v) { var o = document.createElement("option"); o.value = o.textContent = v; input.appendChild(o); });
        input.value = c.value;
        label.appendChild(input);
        input.read = function () { return input.value; };
        input.set = function (v) { input.value = v; };
      }
      input.name = c.name;
      input.setAttribute("data-control", c.name);
      // a slider redraws while it is dragged; the address follows once the value is committed
      input.addEventListener("input", redraw);
      input.addEventListener("change", function () { redraw(); writeHash(); });
      inputs.push(input);
      form.appendChild(label);
    });
    function redraw() {
      var key = inputs.map(function (i) { return i.read(); }).join("|");
      if (key === root.getAttribute("data-key")) return;
      root.setAttribute("data-key", key);
      var frame = spec.frames[key];
      draw(root, spec, { title: frame.title, y: unpack(frame.y, spec.series.length) });
    }
    // This explorer's entry for the address: every control, or "" when all are at their defaults.
    root.vgEntry = function () {
      var differs = false, pairs = spec.controls.map(function (c, j) {
        var v = inputs[j].read();
        differs = differs || v !== c.value;
        return encodeURIComponent(c.name) + "=" + encodeURIComponent(v);
      });
      return differs ? pairs.join(",") : "";
    };
    // Set the controls to the state the address gives this explorer (a control it omits, or gives a
    // value that is not among its values, takes its default). Returns null where the address holds
    // no explorer state (nothing changes), else whether this is the first explorer it names.
    function follow() {
      var state = readHash(), index = explorers().indexOf(root) + 1, values = (state && state[index]) || {};
      if (!state) return null;
      inputs.forEach(function (input, j) {
        var c = spec.controls[j], v = values[c.name];
        input.set(c.values.indexOf(v) >= 0 ? v : c.value);
      });
      for (var k = 1; k < index; k++) if (state[k]) return false;
      return !!state[index];
    }
    var linked = follow();
    redraw();
    if (linked) window.addEventListener("load", function () { root.scrollIntoView({ block: "center" }); });
    window.addEventListener("hashchange", function () {
      var first = follow();
      redraw();
      if (first) root.scrollIntoView({ block: "center" });
    });
  }
  document.querySelectorAll(".vg-curve-explorer:not([data-ready])").forEach(function (root) {
    root.setAttribute("data-ready", "1");
    init(root);
  });
})();
