"""The static part of the interactive HTML page (:mod:`fxgrow.drawing.html` fills it in):
``PAGE``, the document with its style sheet and placeholders ``@@TITLE@@``, ``@@VIEWS@@``
(the views' SVGs), ``@@DATA@@`` (groups and views as JSON) and ``@@SCRIPT@@``; ``SCRIPT``,
the script that finds, highlights, opens, switches, pans and zooms.

Invariant: the page loads nothing from the network and needs no library."""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
html,body{margin:0;height:100%;font:13px Helvetica,Arial,sans-serif;color:#263238}
#bar{display:flex;gap:8px;align-items:center;padding:6px 10px;background:#eceff1;
  border-bottom:1px solid #cfd8dc;flex-wrap:wrap}
#bar h1{font-size:14px;margin:0 8px 0 0;font-weight:600}
#search{width:260px;padding:3px 6px}
#main{display:flex;height:calc(100% - 42px)}
#canvas{flex:1;position:relative;overflow:hidden;background:#fff;cursor:grab}
#canvas.drag{cursor:grabbing}
.view{position:absolute;inset:0}
.view svg{width:100%;height:100%}
#side{width:340px;overflow:auto;border-left:1px solid #cfd8dc;padding:8px;background:#fafafa}
#info{white-space:normal;margin-bottom:10px}
#info h2{font-size:14px;margin:4px 0}
#info ul{margin:2px 0 6px 16px;padding:0}
#legend div{display:flex;gap:6px;align-items:center;padding:1px 2px;cursor:pointer}
#legend div:hover{background:#e3f2fd}
#legend .sw{width:14px;height:10px;flex:none;border:1px solid #90a4ae}
#legend .w{margin-left:auto;color:#546e7a}
#crumb a{cursor:pointer;color:#1565c0;text-decoration:underline}
svg.dim .node,svg.dim .edge,svg.dim .cluster{opacity:.12}
svg.dim .hl,svg.dim .cluster.hl{opacity:1}
svg .hl.edge path{stroke-width:4}
svg .hl.node polygon,svg .hl.node path,svg .hl.node ellipse{stroke-width:3}
svg .found polygon,svg .found path{stroke:#ff6f00;stroke-width:4}
svg .fxbox{cursor:zoom-in}
svg .edge,svg .node{cursor:pointer}
button{padding:2px 8px}
.blk{color:#c62828}
</style></head><body>
<div id="bar"><h1>@@TITLE@@</h1>
<input id="search" list="names" placeholder="find a group or module (Enter)" autocomplete="off">
<datalist id="names"></datalist>
<span id="which"></span>
<button id="fit" title="fit the drawing to the window">fit</button>
<button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">−</button>
<button id="clear" title="clear the highlight">clear</button>
<span id="crumb"></span><span id="status"></span></div>
<div id="main"><div id="canvas">@@VIEWS@@</div>
<div id="side"><div id="info">Click an edge, an op or a legend entry to see its channel
group; double-click a folded module to open it.</div><div id="legend"></div></div></div>
<script id="fxgrow-data" type="application/json">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("fxgrow-data").textContent);
  const groups = new Map(D.groups.map(g => [g.i, g]));
  const byName = new Map(D.groups.map(g => [g.name.toLowerCase(), g]));
  const views = new Map(D.views.map(v => [v.key, v]));
  const state = {view: null, side: "teacher", group: null};
  const $ = id => document.getElementById(id);
  const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  // -- names for the search box
  const names = new Set(D.groups.map(g => g.name));
  D.views.forEach(v => { v.modules.forEach(m => names.add(m)); v.folded.forEach(m => names.add(m)); });
  $("names").innerHTML = [...names].sort().map(n => "<option value=\"" + esc(n) + "\">").join("");

  // -- the legend
  $("legend").innerHTML = "<b>channel groups</b>" + D.groups.map(g =>
    "<div data-g=\"" + g.i + "\"><span class=\"sw\" style=\"background:" + g.colour + "\"></span>" +
    "<span>" + esc(g.name) + "</span><span class=\"w\">" +
    (g.old !== null && g.old !== g.width ? g.old + " → " + g.width : g.width) +
    (g.widenable ? "" : " <span class=\"blk\">■</span>") + "</span></div>").join("");
  $("legend").addEventListener("click", ev => {
    const row = ev.target.closest("[data-g]");
    if (row) select(+row.dataset.g, true);
  });

  function svgOf(key) { return document.querySelector("#" + views.get(key).id + " svg"); }
  function classesOf(el) { return (el.getAttribute("class") || "").split(/\s+/); }

  // -- views
  function show(key) {
    if (!views.has(key)) return;
    if (state.view) document.getElementById(views.get(state.view).id).hidden = true;
    state.view = key;
    const v = views.get(key);
    document.getElementById(v.id).hidden = false;
    state.side = key.split("/")[0];
    const sides = D.views.filter(x => !x.key.includes("/")).map(x => x.key);
    $("which").innerHTML = sides.length > 1 ? sides.map(s =>
      "<label><input type=\"radio\" name=\"side\" value=\"" + s + "\"" +
      (s === state.side ? " checked" : "") + "> " + s + "</label>").join(" ") : "";
    $("crumb").innerHTML = key.includes("/") ?
      "<a id=\"back\">" + esc(state.side) + " overview</a> › " + esc(v.label) : "";
    if ($("back")) $("back").onclick = () => show(state.side);
    fit();
    if (state.group !== null) highlight(state.group);
  }
  $("which").addEventListener("change", ev => {
    const here = state.view.includes("/") ? state.view.split("/").slice(1).join("/") : null;
    const key = here && views.has(ev.target.value + "/" + here) ? ev.target.value + "/" + here : ev.target.value;
    show(key);
  });

  // -- pan and zoom on the SVG viewBox
  function box(svg) { return svg.viewBox.baseVal; }
  function fit(whole) {
    const svg = svgOf(state.view);
    if (!svg.dataset.vb) svg.dataset.vb = svg.getAttribute("viewBox");
    const [x, y, w, h] = svg.dataset.vb.split(/[ ,]+/).map(Number);
    const r = svg.getBoundingClientRect();
    const aspect = r.height / Math.max(r.width, 1);
    // a tall drawing starts at its top, filling the width; "fit" shows it whole
    if (!whole && h / w > 2.5 * aspect) svg.setAttribute("viewBox", [x, y, w, w * aspect].join(" "));
    else svg.setAttribute("viewBox", svg.dataset.vb);
  }
  function zoom(f, cx, cy) {
    const svg = svgOf(state.view), b = box(svg);
    const r = svg.getBoundingClientRect();
    const px = cx === undefined ? 0.5 : (cx - r.left) / r.width;
    const py = cy === undefined ? 0.5 : (cy - r.top) / r.height;
    const w = b.width * f, h = b.height * f;
    svg.setAttribute("viewBox", [b.x + (b.width - w) * px, b.y + (b.height - h) * py, w, h].join(" "));
  }
  function zoomTo(els) {
    const svg = svgOf(state.view), inv = svg.getScreenCTM().inverse();
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const el of els) {
      const bb = el.getBBox(), m = inv.multiply(el.getScreenCTM());
      for (const [px, py] of [[bb.x, bb.y], [bb.x + bb.width, bb.y + bb.height]]) {
        const q = new DOMPoint(px, py).matrixTransform(m);
        x0 = Math.min(x0, q.x); y0 = Math.min(y0, q.y); x1 = Math.max(x1, q.x); y1 = Math.max(y1, q.y);
      }
    }
    if (!isFinite(x0)) return;
    const pad = Math.max(x1 - x0, y1 - y0) * (els.length === 1 ? 0.9 : 0.15) + 60;
    svg.setAttribute("viewBox", [x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad].join(" "));
  }
  const canvas = $("canvas");
  canvas.addEventListener("wheel", ev => { ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY); }, {passive: false});
  let drag = null;
  canvas.addEventListener("mousedown", ev => { drag = {x: ev.clientX, y: ev.clientY, moved: false}; });
  window.addEventListener("mousemove", ev => {
    if (!drag) return;
    const svg = svgOf(state.view), b = box(svg), r = svg.getBoundingClientRect();
    const s = Math.max(b.width / r.width, b.height / r.height);
    const dx = (ev.clientX - drag.x) * s, dy = (ev.clientY - drag.y) * s;
    if (Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 3) { drag.moved = true; canvas.classList.add("drag"); }
    if (drag.moved) {
      svg.setAttribute("viewBox", [b.x - dx, b.y - dy, b.width, b.height].join(" "));
      drag.x = ev.clientX; drag.y = ev.clientY;
    }
  });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); canvas.classList.remove("drag"); });
  $("fit").onclick = () => fit(true);
  $("zin").onclick = () => zoom(1 / 1.4);
  $("zout").onclick = () => zoom(1.4);
  $("clear").onclick = () => clear();

  // -- highlighting a group
  function clear() {
    state.group = null;
    document.querySelectorAll(".hl, .found").forEach(el => el.classList.remove("hl", "found"));
    document.querySelectorAll("svg.dim").forEach(s => s.classList.remove("dim"));
    $("status").textContent = "";
  }
  function highlight(i, zoomed) {
    document.querySelectorAll(".hl, .found").forEach(el => el.classList.remove("hl", "found"));
    const svg = svgOf(state.view);
    const els = svg.querySelectorAll(".g" + i + ", .b" + i);
    els.forEach(el => el.classList.add("hl"));
    svg.classList.toggle("dim", els.length > 0);  // a group not drawn here dims nothing
    $("status").textContent = els.length + " elements";
    if (els.length && zoomed) zoomTo(els);
    return els.length;
  }
  function select(i, zoomed) {
    const g = groups.get(i);
    if (!g) return 0;
    state.group = i;
    const n = highlight(i, zoomed);
    const width = g.old !== null && g.old !== g.width ? g.old + " → " + g.width : String(g.width);
    let h = "<h2 style=\"color:" + g.colour + "\">" + esc(g.name) + "</h2>" +
      "<div><b>width</b> " + esc(width) + " · " + esc(g.status) + "</div>";
    if (g.blockers.length) h += "<div><b>blockers</b><ul>" + g.blockers.map(b =>
      "<li class=\"blk\"><b>" + esc(b.node) + "</b> (" + esc(b.kind) + "): " + esc(b.reason) + "</li>").join("") + "</ul></div>";
    if (g.members.length) h += "<div><b>members</b><ul>" + g.members.map(m => "<li>" + esc(m) + "</li>").join("") + "</ul></div>";
    h += "<div>" + n + " elements in this view</div>";
    $("info").innerHTML = h;
    return n;
  }
  canvas.addEventListener("click", ev => {
    if (drag && drag.moved) return;
    const el = ev.target.closest(".fxedge, .fxitem");
    if (!el) return;
    const gs = classesOf(el).filter(c => /^[gb]\d+$/.test(c)).map(c => +c.slice(1));
    if (gs.length) {
      const at = gs.indexOf(state.group);
      select(gs[(at + 1) % gs.length]);  // clicking again cycles through its groups
    }
  });
  canvas.addEventListener("dblclick", ev => {
    const el = ev.target.closest(".fxbox");
    if (!el) return;
    const path = el.id.replace(/^v\d+_box:/, "");
    if (views.has(state.side + "/" + path)) show(state.side + "/" + path);
  });

  // -- search
  function find(text) {
    const t = text.trim().toLowerCase();
    if (!t) { clear(); return null; }
    const g = byName.get(t) || D.groups.find(x => x.name.toLowerCase().includes(t));
    if (g && (byName.has(t) || !moduleFound(t))) { select(g.i, true); return {group: g.name}; }
    const m = moduleFound(t);
    if (m) { reveal(m); return {module: m}; }
    $("status").textContent = "nothing named " + text;
    return null;
  }
  function moduleFound(t) {
    const all = [...names].filter(n => !byName.has(n.toLowerCase()));
    return all.find(n => n.toLowerCase() === t) || all.find(n => n.toLowerCase().includes(t)) || null;
  }
  function locate(side, path) {
    // the element drawing module ``path`` on ``side``: in the overview (a box or a cluster),
    // else in the detailed view of the module itself or of the folded module around it
    const tries = [side];
    if (views.has(side + "/" + path)) tries.push(side + "/" + path);
    const outer = views.get(side).folded.find(p => path.startsWith(p + "."));
    if (outer && views.has(side + "/" + outer)) tries.push(side + "/" + outer);
    for (const key of tries) {
      const vid = views.get(key).id, svg = svgOf(key);
      const el = svg.querySelector("[id=\"" + vid + "_box:" + path + "\"], [id=\"" + vid + "_m:" + path + "\"]");
      if (el) return [key, el.id];
    }
    return null;
  }
  function reveal(path) {
    const sides = [state.side].concat(D.views.filter(x => !x.key.includes("/") && x.key !== state.side).map(x => x.key));
    let hit = null;
    for (const side of sides) { hit = locate(side, path); if (hit) break; }
    document.querySelectorAll(".found").forEach(x => x.classList.remove("found"));
    if (!hit) { $("status").textContent = path + " is not drawn"; return; }
    if (hit[0] !== state.view) show(hit[0]);
    const el = document.getElementById(hit[1]);
    el.classList.add("found");
    zoomTo([el]);
    $("status").textContent = "module " + path + " (" + state.view + ")";
    $("info").innerHTML = "<h2>" + esc(path) + "</h2>" + (el.classList.contains("fxbox") ?
      "<div>folded module: double-click it to open it</div>" : "");
  }
  $("search").addEventListener("keydown", ev => { if (ev.key === "Enter") find(ev.target.value); });

  window.fxgrow = {find: find, select: select, show: show, clear: clear, state: state, data: D};
  show(D.views[0].key);
})();
"""
