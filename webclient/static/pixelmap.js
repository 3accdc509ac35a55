/* CityGrid: Leaflet maps in the pixel CRS of the tile descriptors. No geographic or projected
   coordinate ever reaches the page: positions are pixel positions of the finest level,
   counted from the tile grid's (secret) origin.

   cgPixelGrid(descriptors) is the grid the descriptors (null for a map the account may not
   see) span together: its levels, CRS, bounds (the tiles served) and the district inside
   them, and tile layers confined to what each descriptor offers. The map viewer builds on
   it. cgPixelMap(id, bases, overlays, options), used by the evaluation dashboard and the
   big screen, resolves to {map, layers}; overlays are {name, url, zIndex, scaleOut} where
   url is a tile URL template whose levels are those of the product `name`. Products the
   account may not see are left out (descriptors.js). It opens on the whole district with
   every overlay drawn (cgWholeView); with options.keepWhole (a wall display, which no one
   pans) it shows it again whenever the box changes size. */
(function () {
  "use strict";

  /* How far beyond the district the descriptors' tiles reach (tiles.service.MARGIN_M; a
     test keeps the two equal): the district is inside the finest level's tiles less this
     much on every side. */
  var SERVED_MARGIN_M = 300;

  /* Tiles of whole levels only. A view between levels (cgWholeView) is drawn with the
     nearest level's tiles scaled; Leaflet's redraw() would ask tiles of the fractional zoom
     itself, which no server has. */
  var LevelTiles = L.TileLayer.extend({
    _clampZoom: function (zoom) { return L.TileLayer.prototype._clampZoom.call(this, Math.round(zoom)); }
  });

  function levelsOf(desc) {
    var by = {};
    (desc ? desc.levels : []).forEach(function (lv) { by[lv.level] = lv; });
    return by;
  }

  function zoomsOf(desc) {
    return Object.keys(levelsOf(desc)).map(Number).sort(function (a, b) { return a - b; });
  }

  window.cgPixelGrid = function (descriptors) {
    var all = {};
    descriptors.forEach(function (d) {
      var lv = levelsOf(d);
      Object.keys(lv).forEach(function (z) { all[z] = lv[z]; });
    });
    var zs = Object.keys(all).map(Number).sort(function (a, b) { return a - b; });
    if (!zs.length) { return null; }
    var minZ = zs[0], maxZ = zs[zs.length - 1];
    var crs = L.extend({}, L.CRS.Simple, {
      transformation: new L.Transformation(1, 0, 1, 0),
      scale: function (z) { return Math.pow(2, z - maxZ); },
      zoom: function (s) { return Math.log(s) / Math.LN2 + maxZ; }
    });

    // The tiles of `desc`'s finest level, in pixels of the grid's finest level; `inset`
    // pixels inside, so that tiles merely touching the edge are not asked.
    function extent(desc, inset) {
      var zs = zoomsOf(desc), hi = zs[zs.length - 1];
      var t = levelsOf(desc)[hi].tiles, k = 256 * Math.pow(2, maxZ - hi);
      return L.latLngBounds(L.latLng((t.y_max + 1) * k - inset, t.x_min * k + inset),
                            L.latLng(t.y_min * k + inset, (t.x_max + 1) * k - inset));
    }

    // A layer of `desc`'s tiles, asked only inside what the descriptor offers this account (no
    // refused requests). scaleOut: levels coarser than the product's own at which its coarsest
    // tiles are shown scaled down (case points on an overview).
    function layer(desc, url, options) {
      var o = options || {}, zs = zoomsOf(desc);
      var lo = zs[0], hi = zs[zs.length - 1];
      var options = { minZoom: lo - (o.scaleOut || 0), maxZoom: hi, minNativeZoom: lo,
                      maxNativeZoom: hi, tileSize: 256, noWrap: true, keepBuffer: 1,
                      bounds: extent(desc, 0.5) };
      if (o.zIndex) { options.zIndex = o.zIndex; }
      return new LevelTiles(url, options);
    }

    var served = extent({ levels: [all[maxZ]] }, 0);
    var margin = all[maxZ].metres_per_pixel ? SERVED_MARGIN_M / all[maxZ].metres_per_pixel : 0;
    var district = served.getEast() - served.getWest() > 2 * margin && served.getNorth() - served.getSouth() > 2 * margin
      ? L.latLngBounds(L.latLng(served.getSouth() + margin, served.getWest() + margin),
                       L.latLng(served.getNorth() - margin, served.getEast() - margin))
      : served;
    return { levels: all, minZ: minZ, maxZ: maxZ, crs: crs, bounds: served, district: district,
             levelsOf: levelsOf, zoomsOf: zoomsOf, layer: layer };
  };

  /* The zoom that shows all of `bounds` (pixels of level `maxZ`) in a box of `size` pixels:
     the finest whole level at which it fits, at most `maxZ`; but never coarser than
     `lowest`, the coarsest level at which every overlay is drawn. A district that does not
     fit even there is shown at the zoom between levels that fits it, its tiles scaled
     down. Pure: no map of its own. */
  window.cgWholeView = function (bounds, size, maxZ, lowest) {
    var width = bounds.getEast() - bounds.getWest(), height = bounds.getSouth() - bounds.getNorth();
    var scale = Math.min(size.x / Math.abs(width), size.y / Math.abs(height));
    var fits = maxZ + Math.log(scale) / Math.LN2;
    if (!isFinite(fits)) { return lowest; }
    var level = Math.min(maxZ, Math.floor(fits + 1e-9));
    return level >= lowest ? level : fits;
  };

  window.cgPixelMap = function (id, bases, overlays, options) {
    var names = bases.concat(overlays.map(function (o) { return o.name; }));
    var keepWhole = !!(options && options.keepWhole);
    return cgDescriptors(names).then(function (list) {
      var desc = {};
      names.forEach(function (p, i) { desc[p] = list[i]; });
      var grid = cgPixelGrid(list);
      if (!grid) { document.getElementById(id).textContent = T("common.no_map_you_may_view"); return null; }
      var map = L.map(id, { crs: grid.crs, minZoom: grid.minZ, maxZoom: grid.maxZ, zoomSnap: 1,
                            attributionControl: false, maxBounds: grid.bounds.pad(0.2) });
      // The coarsest level at which every overlay offered is drawn (the hot spots stop at
      // 1:8000, the cases at half their 1:8000 size).
      var lowest = grid.minZ, drawn = {};
      overlays.forEach(function (o) {
        var z = zoomsOf(desc[o.name]);
        if (z.length) { drawn[o.name] = z[0] - (o.scaleOut || 0); lowest = Math.max(lowest, drawn[o.name]); }
      });
      var layers = {};
      bases.forEach(function (p) {
        if (desc[p] && !layers.base) {
          layers.base = grid.layer(desc[p], "/tiles/" + p + "/{z}/{x}/{y}.png", { zIndex: 1 }).addTo(map);
        }
      });
      var overlayLayers = [];
      overlays.forEach(function (o) {
        if (desc[o.name]) {
          var made = grid.layer(desc[o.name], o.url, { zIndex: o.zIndex || 10, scaleOut: o.scaleOut });
          overlayLayers.push({ layer: made, drawn: drawn[o.name] });
          layers[o.key || o.name] = made;
        }
      });
      // The whole district. Shown between levels (scaled), the map is let to that zoom and
      // the overlays drawn there, their coarsest tiles scaled down further.
      function whole() {
        var zoom = cgWholeView(grid.district, map.getSize(), grid.maxZ, lowest);
        if (zoom < map.getMinZoom()) { map.setMinZoom(zoom); }
        // Leaflet draws a layer at the view's zoom rounded, if that is not below its minZoom.
        overlayLayers.forEach(function (o) { o.layer.options.minZoom = Math.min(o.drawn, Math.floor(zoom)); });
        map.options.zoomSnap = zoom === Math.floor(zoom) ? 1 : 0;
        map.setView(grid.district.getCenter(), zoom, { animate: false });
        map.options.zoomSnap = 1;  // a person's zooming goes from level to level
      }
      whole();
      overlayLayers.forEach(function (o) { o.layer.addTo(map); });
      if (keepWhole) { map.on("resize", whole); }
      window.cgMaps = window.cgMaps || {};
      window.cgMaps[id] = map;
      return { map: map, layers: layers };
    });
  };
})();
