/* CityGrid: a Leaflet map in the pixel CRS of the tile descriptors (no geographic or
   projected coordinate ever reaches the page), shared by the evaluation dashboard and the
   big screen. cgPixelMap(id, bases, overlays) resolves to {map, layers}; overlays are
   {name, url, zIndex, scaleOut} where url is a tile URL template whose levels are those of the
   product `name`. Products the account may not see are left out (descriptors.js). */
(function () {
  "use strict";

  function levels(desc) {
    var by = {};
    (desc ? desc.levels : []).forEach(function (lv) { by[lv.level] = lv; });
    return by;
  }

  window.cgPixelMap = function (id, bases, overlays) {
    var names = bases.concat(overlays.map(function (o) { return o.name; }));
    return cgDescriptors(names).then(function (list) {
      var desc = {};
      names.forEach(function (p, i) { desc[p] = list[i]; });
      var all = {};
      names.forEach(function (p) {
        var lv = levels(desc[p]);
        Object.keys(lv).forEach(function (z) { all[z] = lv[z]; });
      });
      var zs = Object.keys(all).map(Number).sort(function (a, b) { return a - b; });
      if (!zs.length) { document.getElementById(id).textContent = T("common.no_map_you_may_view"); return null; }
      var minZ = zs[0], maxZ = zs[zs.length - 1];
      var crs = L.extend({}, L.CRS.Simple, {
        transformation: new L.Transformation(1, 0, 1, 0),
        scale: function (z) { return Math.pow(2, z - maxZ); },
        zoom: function (s) { return Math.log(s) / Math.LN2 + maxZ; }
      });
      var t = all[maxZ].tiles;
      var bounds = L.latLngBounds(L.latLng((t.y_max + 1) * 256, t.x_min * 256),
                                  L.latLng(t.y_min * 256, (t.x_max + 1) * 256));
      var map = L.map(id, { crs: crs, minZoom: minZ, maxZoom: maxZ, zoomSnap: 1,
                            attributionControl: false, maxBounds: bounds.pad(0.2) });
      map.fitBounds(bounds);
      // Close enough that every overlay offered is drawn (the hot spots stop at 1:8000).
      overlays.forEach(function (o) {
        var z = Object.keys(levels(desc[o.name])).map(Number);
        var lo = Math.min.apply(null, z) - (o.scaleOut || 0);
        if (z.length && map.getZoom() < lo) {
          map.setView(bounds.getCenter(), lo, { animate: false });
        }
      });

      // scaleOut: levels coarser than the product's own at which its coarsest tiles are
      // shown scaled down (case points on an overview).
      function layer(product, url, zIndex, scaleOut) {
        var z = Object.keys(levels(desc[product])).map(Number);
        var lo = Math.min.apply(null, z), hi = Math.max.apply(null, z);
        // The product's tiles at its own finest level, in pixels of the map's finest level.
        var own = levels(desc[product])[hi].tiles, k = 256 * Math.pow(2, maxZ - hi);
        var inner = L.latLngBounds(L.latLng((own.y_max + 1) * k - 0.5, own.x_min * k + 0.5),
                                   L.latLng(own.y_min * k + 0.5, (own.x_max + 1) * k - 0.5));
        return L.tileLayer(url, { minZoom: lo - (scaleOut || 0), maxZoom: hi, minNativeZoom: lo, maxNativeZoom: hi,
                                  tileSize: 256, noWrap: true, keepBuffer: 1, zIndex: zIndex,
                                  bounds: inner });
      }
      var layers = {};
      bases.forEach(function (p) {
        if (desc[p] && !layers.base) { layers.base = layer(p, "/tiles/" + p + "/{z}/{x}/{y}.png", 1).addTo(map); }
      });
      overlays.forEach(function (o) {
        if (desc[o.name]) { layers[o.key || o.name] = layer(o.name, o.url, o.zIndex || 10, o.scaleOut).addTo(map); }
      });
      window.cgMaps = window.cgMaps || {};
      window.cgMaps[id] = map;
      return { map: map, layers: layers };
    });
  };
})();
