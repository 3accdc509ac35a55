/* CityGrid: Leaflet maps in the pixel CRS of the tile descriptors. No geographic or projected
   coordinate ever reaches the page: positions are pixel positions of the finest level,
   counted from the tile grid's (secret) origin.

   cgPixelGrid(descriptors) is the grid the descriptors (null for a map the account may not
   see) span together: its levels, CRS and bounds, and tile layers confined to what each
   descriptor offers. The map viewer builds on it. cgPixelMap(id, bases, overlays), used by
   the evaluation dashboard and the big screen, resolves to {map, layers}; overlays are
   {name, url, zIndex, scaleOut} where url is a tile URL template whose levels are those of the
   product `name`. Products the account may not see are left out (descriptors.js). */
(function () {
  "use strict";

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
      return L.tileLayer(url, options);
    }

    return { levels: all, minZ: minZ, maxZ: maxZ, crs: crs, bounds: extent({ levels: [all[maxZ]] }, 0),
             levelsOf: levelsOf, zoomsOf: zoomsOf, layer: layer };
  };

  window.cgPixelMap = function (id, bases, overlays) {
    var names = bases.concat(overlays.map(function (o) { return o.name; }));
    return cgDescriptors(names).then(function (list) {
      var desc = {};
      names.forEach(function (p, i) { desc[p] = list[i]; });
      var grid = cgPixelGrid(list);
      if (!grid) { document.getElementById(id).textContent = T("common.no_map_you_may_view"); return null; }
      var map = L.map(id, { crs: grid.crs, minZoom: grid.minZ, maxZoom: grid.maxZ, zoomSnap: 1,
                            attributionControl: false, maxBounds: grid.bounds.pad(0.2) });
      map.fitBounds(grid.bounds);
      // Close enough that every overlay offered is drawn (the hot spots stop at 1:8000).
      overlays.forEach(function (o) {
        var z = zoomsOf(desc[o.name]);
        if (z.length && map.getZoom() < z[0] - (o.scaleOut || 0)) {
          map.setView(grid.bounds.getCenter(), z[0] - (o.scaleOut || 0), { animate: false });
        }
      });
      var layers = {};
      bases.forEach(function (p) {
        if (desc[p] && !layers.base) {
          layers.base = grid.layer(desc[p], "/tiles/" + p + "/{z}/{x}/{y}.png", { zIndex: 1 }).addTo(map);
        }
      });
      overlays.forEach(function (o) {
        if (desc[o.name]) {
          layers[o.key || o.name] = grid.layer(desc[o.name], o.url,
            { zIndex: o.zIndex || 10, scaleOut: o.scaleOut }).addTo(map);
        }
      });
      window.cgMaps = window.cgMaps || {};
      window.cgMaps[id] = map;
      return { map: map, layers: layers };
    });
  };
})();
