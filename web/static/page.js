// Every page: behaviour bound from data-* attributes (the CSP allows no inline script).
//   data-autosubmit on a field: changing it sends its form (the board's date, the audit filter).
//   data-confirm on a form: sending it asks first, with that text.
(function () {
  "use strict";
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
