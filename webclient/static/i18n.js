/* The page's words in the install's language: T(key) looks a key up in the message
   catalogue the page carries (the JSON block #citygrid-messages, webclient/messages.py),
   and LANG is the page's language for dates and numbers. */
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
  window.LANG = document.documentElement.lang || "zh-CN";
})();
