/* CityGrid map viewer: base maps, overlays, a scale bar and identify on the pixel grid of the
   tile descriptors (pixelmap.js). The page never sees a geographic or projected coordinate. */
(function () {
  "use strict";

  var PRODUCTS = ["topo500", "topo2000", "grids", "components", "cases"];
  var NICE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
  var descriptors = {};

  /* The body of a 200 answer, or null: refused, not JSON (a proxy's error page), or no
     answer at all. */
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : null;
    }).catch(function () { return null; });
  }

  function start() {
    cgDescriptors(PRODUCTS).then(function (list) {
      PRODUCTS.forEach(function (p, i) { descriptors[p] = list[i]; });
      getJSON("/auth/whoami").then(function (me) {
        if (me) { document.getElementById("who").textContent = me.account + T("common.open_paren") + me.roles.map(function (r) { return N("role", r); }).join(T("common.list_comma")) + T("common.close_paren"); }
      });
      build();
    }, function () {
      document.getElementById("map").textContent = T("viewer.the_map_could_not_be_loaded");
    });
  }

  function build() {
    var grid = cgPixelGrid(PRODUCTS.map(function (p) { return descriptors[p]; }));
    if (!grid) { document.getElementById("map").textContent = T("common.no_map_you_may_view"); return; }
    var minZ = grid.minZ, maxZ = grid.maxZ, all = grid.levels, bounds = grid.bounds;
    var levelsOf = grid.levelsOf;
    var map = L.map("map", { crs: grid.crs, minZoom: minZ, maxZoom: maxZ, maxBounds: bounds.pad(0.2),
                             attributionControl: false, zoomSnap: 1 });
    map.fitBounds(bounds);
    if (map.getZoom() < minZ + 2) { map.setZoom(Math.min(minZ + 2, maxZ), { animate: false }); }
    // A small area (one street's, for a street-scoped account) that fits with room to spare
    // opens one level closer, so that it fills the view rather than a corner of it.
    var view = map.getSize();
    var span = map.latLngToContainerPoint(bounds.getSouthEast())
      .subtract(map.latLngToContainerPoint(bounds.getNorthWest()));
    if (Math.abs(span.x * span.y) < 0.4 * view.x * view.y && map.getZoom() < maxZ) {
      map.setZoom(map.getZoom() + 1, { animate: false });
    }
    window.citygridMap = map;

    function layerFor(product, options) {
      return grid.layer(descriptors[product], "/tiles/" + product + "/{z}/{x}/{y}.png", options);
    }

    var bases = {};
    ["topo500", "topo2000"].forEach(function (p) {
      var input = document.querySelector('input[name="base"][value="' + p + '"]');
      if (descriptors[p]) { bases[p] = layerFor(p); }
      else { input.disabled = true; input.parentNode.classList.add("unavailable"); }
    });
    var overlays = {};
    ["grids", "components", "cases"].forEach(function (p) {
      var input = document.querySelector('input[name="overlay"][value="' + p + '"]');
      if (descriptors[p]) { overlays[p] = layerFor(p, { zIndex: p === "cases" ? 11 : 10 }); }
      else { input.disabled = true; input.parentNode.classList.add("unavailable"); }
    });
    // The cases overlay (case readers only): its legend and click answers, when offered.
    if (descriptors.cases) { document.getElementById("cases").hidden = false; }

    var mode = "auto";
    function baseForZoom(z) {
      if (mode !== "auto") { return mode; }
      if (bases.topo500 && levelsOf(descriptors.topo500)[z]) { return "topo500"; }
      return "topo2000";
    }
    function refreshBase() {
      var want = baseForZoom(map.getZoom());
      Object.keys(bases).forEach(function (p) {
        if (p === want) { if (!map.hasLayer(bases[p])) { bases[p].addTo(map); } }
        else if (map.hasLayer(bases[p])) { map.removeLayer(bases[p]); }
      });
    }
    document.querySelectorAll('input[name="base"]').forEach(function (input) {
      input.addEventListener("change", function () {
        mode = input.value;
        if (mode !== "auto") {
          var lv = Object.keys(levelsOf(descriptors[mode])).map(Number);
          var z = map.getZoom();
          if (lv.indexOf(z) < 0) { map.setZoom(z < Math.min.apply(null, lv) ? Math.min.apply(null, lv) : Math.max.apply(null, lv)); }
        }
        refreshBase();
      });
    });
    document.querySelectorAll('input[name="overlay"]').forEach(function (input) {
      input.addEventListener("change", function () {
        var layer = overlays[input.value];
        if (!layer) { return; }
        if (input.checked) { layer.addTo(map); } else { map.removeLayer(layer); }
      });
    });

    var ScaleBar = L.Control.extend({
      options: { position: "bottomleft" },
      onAdd: function () {
        this._div = L.DomUtil.create("div", "scalebar");
        this._label = L.DomUtil.create("div", "label", this._div);
        this._bar = L.DomUtil.create("div", "bar", this._div);
        return this._div;
      },
      update: function (z) {
        var lv = all[z];
        if (!lv) { return; }
        var metres = NICE.filter(function (m) { return m / lv.metres_per_pixel <= 120; }).pop() || 1;
        var px = Math.round(metres / lv.metres_per_pixel);
        this._bar.style.width = px + "px";
        var text = metres >= 1000 ? (metres / 1000) + T("viewer.km") : metres + T("viewer.m");
        this._label.textContent = text;
        document.getElementById("scale-text").textContent =
          "1:" + lv.scale_denominator + T("viewer.level") + z + T("viewer.text") + lv.metres_per_pixel + T("viewer.m_per_pixel");
      }
    });
    var scaleBar = new ScaleBar();
    scaleBar.addTo(map);

    map.on("zoomend", function () { refreshBase(); scaleBar.update(map.getZoom()); });
    refreshBase();
    scaleBar.update(map.getZoom());

    // A position handed over in the hash (a case's place): #level=Z&x=X&y=Y&col=C&row=R.
    var marker = null;
    function showHash() {
      var q = new URLSearchParams(location.hash.slice(1)), v = {};
      if (!["level", "x", "y", "col", "row"].every(function (k) {
        v[k] = parseInt(q.get(k), 10); return isFinite(v[k]) && v[k] >= 0;
      })) { return; }
      var f = Math.pow(2, maxZ - v.level);
      var at = L.latLng((v.y * 256 + v.row + 0.5) * f, (v.x * 256 + v.col + 0.5) * f);
      map.setView(at, maxZ, { animate: false });
      if (marker) { map.removeLayer(marker); }
      marker = L.circleMarker(at, { radius: 9, color: "#d2453d", weight: 3, fillOpacity: 0.3 }).addTo(map);
    }
    showHash();
    window.addEventListener("hashchange", showHash);

    // The answers shown are those of the last click: an earlier click's, come later, is
    // dropped (`clicks` counts them).
    var clicks = 0;
    map.on("click", function (e) {
      var mine = ++clicks;
      function latest(show) { return function (data) { if (mine === clicks) { show(data); } }; }
      var z = map.getZoom();
      var p = map.project(e.latlng, z);
      var x = Math.floor(p.x / 256), y = Math.floor(p.y / 256);
      var col = Math.floor(p.x - x * 256), row = Math.floor(p.y - y * 256);
      var product = baseForZoom(z);
      var url = "/map/identify?map=" + product + "&level=" + z + "&x=" + x + "&y=" + y +
                "&col=" + col + "&row=" + row;
      getJSON(url).then(latest(showIdentify));
      // A case under the click, when the cases overlay is shown at this level.
      if (overlays.cases && map.hasLayer(overlays.cases) && levelsOf(descriptors.cases)[z]) {
        getJSON("/map/cases?level=" + z + "&x=" + x + "&y=" + y + "&col=" + col + "&row=" + row)
          .then(latest(showCases));
      } else {
        document.getElementById("cases-result").textContent = "";  // not another place's cases
      }
    });
  }

  function showCases(data) {
    var ul = document.getElementById("cases-result");
    ul.textContent = "";
    function item(text) { var li = document.createElement("li"); li.textContent = text; ul.appendChild(li); return li; }
    if (!data) { item(T("viewer.not_allowed_or_the_query_failed")); return; }
    if (!data.cases.length) { item(T("viewer.no_case_here")); return; }
    data.cases.forEach(function (c) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = c.href;  // the case page
      a.textContent = c.number;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" " + N("state", c.state, c.state_name) + (c.overdue ? T("viewer.overdue") : "") +
        " · " + c["class"] + " · " + c.grid));
      li.className = c.overdue ? "overdue" : c.group;
      ul.appendChild(li);
    });
    if (data.more) { item(T("viewer.more_cases_nearby")); }
  }

  function showIdentify(data) {
    var dl = document.getElementById("identify-result");
    dl.textContent = "";
    function row(term, value) {
      var dt = document.createElement("dt"); dt.textContent = term; dl.appendChild(dt);
      var dd = document.createElement("dd");
      if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = value; }
      dl.appendChild(dd);
    }
    if (!data) { row(T("common.result"), T("viewer.not_allowed_or_the_query_failed")); return; }
    if (!data.grid) { row(T("common.result"), T("viewer.in_no_unit_grid")); return; }
    row(T("common.unit_grid"), data.grid);
    row(T("common.communities"), data.community.name + T("common.open_paren") + data.community.code + T("common.close_paren"));
    row(T("common.streets"), data.street.name + T("common.open_paren") + data.street.code + T("common.close_paren"));
    var ul = document.createElement("ul");
    data.components.forEach(function (c) {
      var li = document.createElement("li");
      li.textContent = c["class"] + " " + c.code + " · " + N("component_state", c.state, c.state_name) + " · " + c.distance_m + T("viewer.m");
      if (c.state !== "intact") { li.className = c.state; }
      ul.appendChild(li);
    });
    row(T("viewer.components_nearby"), data.components.length ? ul : T("common.none"));
  }

  document.addEventListener("DOMContentLoaded", start);
}());
