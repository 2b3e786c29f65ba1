/* tuneline viewer, browser side: the URL. The page is built from the URL less its unit (the route
 * key); the map's selectors and open unit are written back into the URL, a unit opened or closed as a
 * new history entry, so units are bookmarkable and back / forward move between them without
 * rebuilding the page. Extends the clientside namespace "tuneline" of tuneline.js (loaded before).
 */
(function () {
  "use strict";
  const TL = (window.tuneline = window.tuneline || {});
  const nu = function () { return window.dash_clientside.no_update; };

  /* The page a URL shows: its path and sorted query less the unit (viewer/callbacks.py). */
  function pageKey(pathname, search) {
    const params = new URLSearchParams(search || "");
    params.delete("unit");
    params.sort();
    const q = params.toString();
    return (pathname || "/") + (q ? "?" + q : "");
  }

  function urlUnit(search) {
    const u = new URLSearchParams(search || "").get("unit");
    return u != null && /^[0-9]{1,8}$/.test(u) ? parseInt(u, 10) : null;
  }

  /* Open the unit the URL names when the page stays (back / forward between units of one map). */
  function showUrlUnit() {
    if (!document.getElementById("map-canvas")) return;
    const u = urlUnit(window.location.search);
    if (u !== (TL.unit == null ? null : TL.unit)) {
      TL.unit = u;
      window.dash_clientside.set_props("map-unit", { data: u });
    }
  }

  window.addEventListener("popstate", function () {
    if (pageKey(window.location.pathname, window.location.search) === TL.routeKey) showUrlUnit();
    else window.dash_clientside.set_props("url", { pathname: window.location.pathname, search: window.location.search });
  });

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.tuneline = Object.assign(window.dash_clientside.tuneline || {}, {
    routeKey: function (pathname, search) {
      const key = pageKey(pathname, search);
      if (key === TL.routeKey) {
        showUrlUnit();
        return nu();
      }
      TL.routeKey = key;
      TL.unit = urlUnit(search);
      return key;
    },

    /* Write the map's selectors and open unit into the URL: a unit opened or closed is a new history
     * entry (the back button returns to the previous one), other changes replace the current one. */
    syncUrl: function (run, layer, by, metric, unit) {
      TL.unit = unit == null ? null : unit;
      const params = new URLSearchParams(window.location.search);
      const want = { run: run, layer: layer, by: by, metric: metric, unit: unit == null ? null : String(unit) };
      let changed = false, unitChanged = false;
      Object.keys(want).forEach(function (k) {
        const cur = params.get(k), w = want[k];
        if (w == null ? cur === null : cur === String(w)) return;
        if (w == null) params.delete(k); else params.set(k, w);
        changed = true;
        if (k === "unit") unitChanged = true;
      });
      if (!changed) return nu();
      const onlyUnit = unitChanged && ["run", "layer", "by", "metric"].every(function (k) {
        return want[k] == null || new URLSearchParams(window.location.search).get(k) === String(want[k]);
      });
      const search = "?" + params.toString();
      const url = window.location.pathname + search + window.location.hash;
      if (onlyUnit) window.history.pushState(null, "", url);
      else window.history.replaceState(null, "", url);
      TL.routeKey = pageKey(window.location.pathname, search);
      return search;
    },
  });
})();
