// The antler page: click the 16 keypoints on the crop (plain JavaScript, no build step).
(function () {
  var data = JSON.parse(document.getElementById("antler-data").textContent);
  var img = document.getElementById("antler-crop");
  var svg = document.getElementById("antler-overlay");
  var field = document.getElementById("points-field");
  var NS = "http://www.w3.org/2000/svg";
  var PER_SIDE = 8, BEAM = [0, 5];
  var points = {};
  data.points.forEach(function (p) {
    if (p.visibility > 0) points[p.index] = {x: p.x, y: p.y, visibility: p.visibility};
  });
  var current = 0, visibility = 2;
  var r = Math.max(1.5, Math.min(data.width, data.height) / 40);

  function sideCount(side) {  // as core.antlers.features counts: tines seen, plus the beam when its base or tip is
    var n = 0, beam = false;
    for (var part = 0; part < PER_SIDE; part++) {
      if (!points[side * PER_SIDE + part]) continue;
      if (BEAM.indexOf(part) >= 0) beam = true; else n++;
    }
    return n + (beam ? 1 : 0);
  }

  function mark(tag, attrs) {
    var el = document.createElementNS(NS, tag);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    svg.appendChild(el);
    return el;
  }

  function render() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    data.points.forEach(function (p) {  // the stored (predicted or earlier) points: grey crosses
      if (p.visibility === 0) return;
      mark("path", {d: "M" + (p.x - r) + " " + (p.y - r) + "L" + (p.x + r) + " " + (p.y + r) + "M" + (p.x - r) + " " +
                    (p.y + r) + "L" + (p.x + r) + " " + (p.y - r), stroke: "#999", "stroke-width": r / 3, "class": "stored"});
    });
    Object.keys(points).forEach(function (key) {
      var i = Number(key), p = points[key];
      mark("circle", {cx: p.x, cy: p.y, r: r, "class": "placed", "data-index": i,
                      fill: p.visibility === 2 ? (i < PER_SIDE ? "#e33" : "#36f") : "none",
                      stroke: i < PER_SIDE ? "#e33" : "#36f", "stroke-width": r / 3});
    });
    var text = mark("text", {x: 2, y: r * 3, "font-size": r * 2.5, fill: "#ff0"});
    text.textContent = "yours " + sideCount(0) + "L/" + sideCount(1) + "R";
    document.getElementById("placed-counts").textContent =
      "yours: " + sideCount(0) + "L / " + sideCount(1) + "R points";
    document.querySelectorAll("button.kp").forEach(function (b) {
      var i = Number(b.dataset.index);
      b.style.fontWeight = i === current ? "bold" : "normal";
      b.style.outline = i === current ? "2px solid #2f4a25" : "";
      document.getElementById("kp-" + i).textContent =
        points[i] ? (points[i].visibility === 2 ? "visible" : "occluded") : "";
    });
    document.getElementById("side").textContent = current < PER_SIDE ? "left" : "right";
    document.getElementById("visibility").textContent = visibility === 2 ? "visible" : "occluded";
    field.value = JSON.stringify(Object.keys(points).map(function (k) {
      var p = points[k];
      return {index: Number(k), x: Math.round(p.x * 10) / 10, y: Math.round(p.y * 10) / 10, visibility: p.visibility};
    }));
  }

  img.addEventListener("click", function (event) {
    var box = img.getBoundingClientRect();
    var x = (event.clientX - box.left) * data.width / box.width;
    var y = (event.clientY - box.top) * data.height / box.height;
    points[current] = {x: Math.max(0, Math.min(data.width, x)), y: Math.max(0, Math.min(data.height, y)),
                       visibility: visibility};
    current = (current + 1) % (2 * PER_SIDE);
    render();
  });
  document.querySelectorAll("button.kp").forEach(function (b) {
    b.addEventListener("click", function () { current = Number(b.dataset.index); render(); });
  });
  document.getElementById("toggle-side").addEventListener("click", function () {
    current = (current + PER_SIDE) % (2 * PER_SIDE); render();
  });
  document.getElementById("toggle-visibility").addEventListener("click", function () {
    visibility = visibility === 2 ? 1 : 2; render();
  });
  document.getElementById("clear-point").addEventListener("click", function () {
    delete points[current]; render();
  });
  render();
})();
