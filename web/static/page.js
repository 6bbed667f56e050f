// Every page: behaviour bound from data-* attributes (the CSP allows no inline script).
//   data-autosubmit on a field: changing it sends its form (the board's date, the audit filter).
//   data-confirm on a form: sending it asks first, with that text.
//   data-refresh="SECONDS" on an element: the page reloads itself that often, unless the
//   person is using a field (the queue pages: what waits changes by itself).
(function () {
  "use strict";
  var refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    var every = (parseInt(refresh.dataset.refresh, 10) || 30) * 1000;
    var touched = 0;
    document.addEventListener("input", function () { touched = Date.now(); });
    document.addEventListener("focusin", function () { touched = Date.now(); });
    setInterval(function () {
      var active = document.activeElement;
      var busy = active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
      if (!busy && Date.now() - touched > every) window.location.reload();
    }, every);
  }
  document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () {
      if (el.form) el.form.submit();
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
