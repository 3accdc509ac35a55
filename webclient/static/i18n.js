/* The page's words in the install's language: T(key) looks a key up in the message
   catalogue the page carries (the JSON block #citygrid-messages, webclient/messages.py),
   and LANG is the page's language for dates and numbers. ZONE is the install's work
   calendar zone (<meta name="citygrid-timezone">): cgWhen and cgClock show times there, and
   cgInstant reads them, so that every page and the big screen say the same time for the same
   moment, whatever zone the browser's computer is set to. */
(function () {
  "use strict";
  var node = document.getElementById("citygrid-messages");
  var messages = node ? JSON.parse(node.textContent) : {};
  window.T = function (key) {
    return Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
  };
  /* A name the server sends beside its code (a case's state, a transition, a grade...):
     the catalogue's "table.code" where it has one, else the server's own name. */
  window.N = function (table, code, fallback) {
    var key = table + "." + code;
    if (Object.prototype.hasOwnProperty.call(messages, key)) { return messages[key]; }
    return fallback === undefined ? code : fallback;
  };
  /* A refusal in the page's words: the catalogue's "refusal.CODE" where the server's error
     code has one ({state} the case's state by name), else the server's own message. */
  window.cgRefusal = function (reply) {
    var body = reply && reply.body ? reply.body : {};
    var said = N("refusal", body.error, null);
    if (said === null) { return T("common.refused") + (body.message || reply.status); }
    return T("common.refused") + said.replace("{state}", body.state ? N("state", body.state) : "");
  };
  window.LANG = document.documentElement.lang || "zh-CN";
  var zone = document.querySelector('meta[name="citygrid-timezone"]');
  window.ZONE = (zone && zone.content) || undefined;

  var parts = null;
  try {
    parts = new Intl.DateTimeFormat("en-GB", {
      timeZone: window.ZONE, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
    });
  } catch (e) {  // a zone this browser does not know: its own
    parts = new Intl.DateTimeFormat("en-GB", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
      second: "2-digit", hourCycle: "h23"
    });
  }
  function fields(date) {
    var out = {};
    parts.formatToParts(date).forEach(function (p) { out[p.type] = p.value; });
    return out;
  }
  /* "YYYY-MM-DD HH:MM" (":SS" with `seconds`) of an ISO time or a Date, in ZONE; "—" for
     none. */
  window.cgWhen = function (value, seconds) {
    if (!value) { return "—"; }
    var d = value instanceof Date ? value : new Date(value);
    if (isNaN(d.getTime())) { return String(value); }
    var f = fields(d);
    return f.year + "-" + f.month + "-" + f.day + " " + f.hour + ":" + f.minute + (seconds ? ":" + f.second : "");
  };
  /* The moment a wall time of ZONE names: "YYYY-MM-DDTHH:MM[:SS]" (a datetime-local input's
     value) → a Date; null for anything else. Found by correcting a first guess by the zone's
     offset there, twice (once more where the offset changes in between). */
  window.cgInstant = function (local) {
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local || "");
    if (!m) { return null; }
    var wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0)), t = wall;
    for (var i = 0; i < 2; i++) {
      var f = fields(new Date(t));
      t += wall - Date.UTC(+f.year, +f.month - 1, +f.day, +f.hour, +f.minute, +f.second);
    }
    return new Date(t);
  };
  /* "HH:MM:SS" of a Date in ZONE. */
  window.cgClock = function (date) {
    var f = fields(date);
    return f.hour + ":" + f.minute + ":" + f.second;
  };
})();
