// Draws the lineage graph: the layout is dagre's (@dagrejs/dagre, vendored), drawn as SVG whose every node
// is a link to its page. The data comes from the page (#lineage-data); the depth control redraws it.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("lineage-data").textContent);
  var box = document.getElementById("graph");
  var select = document.getElementById("depth");

  function element(name, attributes, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes).forEach(function (key) { node.setAttribute(key, attributes[key]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function textWidth(svg, text, size) {
    var probe = element("text", {"font-size": size}, svg);
    probe.textContent = text;
    var width = probe.getComputedTextLength();
    svg.removeChild(probe);
    return width;
  }

  function draw(depth) {
    box.textContent = "";
    var nodes = data.nodes.filter(function (n) { return n.distance <= depth; });
    var shown = {};
    nodes.forEach(function (n) { shown[n.id] = n; });
    var edges = data.edges.filter(function (e) { return shown[e.source] && shown[e.target]; });
    var svg = element("svg", {"class": "lineage", "role": "group"}, box);
    var graph = new dagre.graphlib.Graph();
    graph.setGraph({rankdir: "LR", nodesep: 18, ranksep: 70, marginx: 16, marginy: 16});
    graph.setDefaultEdgeLabel(function () { return {}; });
    nodes.forEach(function (n) {
      var width = Math.max(textWidth(svg, n.label, 13), 40) + 28;
      graph.setNode(n.id, {width: width, height: 44, node: n});
    });
    edges.forEach(function (e) { graph.setEdge(e.source, e.target); });
    dagre.layout(graph);
    var size = graph.graph();
    svg.setAttribute("width", Math.ceil(size.width));
    svg.setAttribute("height", Math.ceil(size.height));
    svg.setAttribute("viewBox", "0 0 " + Math.ceil(size.width) + " " + Math.ceil(size.height));
    var defs = element("defs", {}, svg);
    var marker = element("marker", {id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse"}, defs);
    element("path", {d: "M 0 0 L 10 5 L 0 10 z"}, marker);
    graph.edges().forEach(function (e) {
      var points = graph.edge(e).points.map(function (p) { return p.x + "," + p.y; });
      element("path", {"class": "edge", d: "M" + points.join(" L"), "marker-end": "url(#arrow)"}, svg);
    });
    graph.nodes().forEach(function (id) {
      var placed = graph.node(id);
      var n = placed.node;
      var link = element("a", {href: n.href, "class": "node " + n.kind + (id === data.start ? " start" : ""),
        "data-id": id}, svg);
      var x = placed.x - placed.width / 2;
      var y = placed.y - placed.height / 2;
      element("rect", {x: x, y: y, width: placed.width, height: placed.height,
        rx: n.kind === "run" ? 18 : 4}, link);
      var kind = element("text", {"class": "kind-label", x: placed.x, y: y + 14, "text-anchor": "middle"}, link);
      kind.textContent = n.kind;
      var label = element("text", {x: placed.x, y: y + 32, "text-anchor": "middle"}, link);
      label.textContent = n.label;
    });
  }

  function showRows(depth) {  // the edge table lists what the graph shows
    var rows = document.querySelectorAll("#edges tbody tr");
    for (var i = 0; i < rows.length; i++) {
      rows[i].hidden = parseInt(rows[i].getAttribute("data-distance"), 10) > depth;
    }
  }

  function current() { return Math.max(1, Math.min(data.max_depth, parseInt(select.value, 10) || data.depth)); }
  select.addEventListener("change", function () {
    var depth = current();
    draw(depth);
    showRows(depth);
    if (window.history && window.history.replaceState && location.protocol !== "file:") {
      var url = new URL(window.location.href);
      url.searchParams.set("depth", String(depth));
      window.history.replaceState(null, "", url);
    }
  });
  draw(current());
})();
