/* CityGrid: the tile descriptors of the maps a page would show, for the maps the account may
   view only. GET /tiles names those; asking for another map's descriptor would be a refusal
   in the audit log at every page load. cgDescriptors(names) resolves to a list in the order
   of `names`: each map's descriptor, or null where the account may not view it. It rejects
   when an answer is no answer about rights (a 502 from a proxy, a 503, the network): the
   page then says the map could not be loaded, not that there is none to view. Shared by
   the map viewer (viewer.js), the case page's minimap (cases.js), and the dashboard's and
   big screen's maps (pixelmap.js). */
(function () {
  "use strict";

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (r.ok) { return r.json(); }
      if (r.status === 401 || r.status === 403 || r.status === 404) { return null; }
      throw new Error(String(r.status));
    });
  }

  window.cgDescriptors = function (names) {
    return getJSON("/tiles").then(function (index) {
      var mine = index ? index.maps : [];
      return Promise.all(names.map(function (p) {
        return mine.indexOf(p) >= 0 ? getJSON("/tiles/" + p) : null;
      }));
    });
  };
})();
