// The schedule form: find an existing patient and fill the patient fields.
(function () {
  "use strict";
  // One click schedules once: the button is disabled while the form is sent.
  var form = document.getElementById("step-form");
  if (form) {
    form.addEventListener("submit", function () {
      var save = document.getElementById("save");
      if (save) save.disabled = true;
    });
  }
  // A field's message goes away once the field is changed.
  document.querySelectorAll(".field.invalid input, .field.invalid select, .names.invalid input")
    .forEach(function (el) {
      function clear() {
        var box = el.closest(".field.invalid") || el.closest(".names.invalid");
        if (!box) return;
        box.classList.remove("invalid");
        box.querySelectorAll(".error").forEach(function (e) { e.remove(); });
        el.removeAttribute("aria-invalid");
        var banner = document.getElementById("form-errors");
        if (banner && !document.querySelector("span.error")) banner.remove();
      }
      el.addEventListener("input", clear);
      el.addEventListener("change", clear);
    });
  var find = document.getElementById("find-patient");
  var hits = document.getElementById("patient-hits");
  if (!find || !hits) return;
  var timer = null;

  function set(id, value) {
    var el = document.getElementById(id);
    if (el) el.value = value || "";
  }

  function fill(p) {
    var groups = (p.name || "").split("=");
    ["alpha", "ideo", "phon"].forEach(function (g, i) {
      var comps = (groups[i] || "").split("^");
      set("name_" + g + "_family", comps[0] || "");
      set("name_" + g + "_given", comps.slice(1).filter(Boolean).join(" "));
    });
    set("patient_id", p.patient_id);
    set("sex", p.sex);
    var b = p.birth_date || "";
    set("birth_date", b.length === 8 ? b.slice(0, 4) + "-" + b.slice(4, 6) + "-" + b.slice(6) : "");
    hits.hidden = true;
  }

  function show(patients) {
    hits.innerHTML = "";
    patients.forEach(function (p) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = p.name.replace(/\^/g, " ").replace(/=/g, " / ") + " — " + p.patient_id;
      b.addEventListener("click", function () { fill(p); });
      li.appendChild(b);
      hits.appendChild(li);
    });
    hits.hidden = patients.length === 0;
  }

  find.addEventListener("input", function () {
    clearTimeout(timer);
    var q = find.value.trim();
    if (q.length < 2) { hits.hidden = true; return; }
    timer = setTimeout(function () {
      fetch(find.dataset.url + "?q=" + encodeURIComponent(q), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : { patients: [] }; })
        .then(function (data) { show(data.patients); });
    }, 250);
  });

  // Modality follows the chosen station unless typed by hand.
  var station = document.getElementById("station_ae");
  var modality = document.getElementById("modality");
  // Start stays empty until chosen; the button offers the station's next free slot.
  var slot = document.getElementById("next-slot");
  var start = document.getElementById("start");
  function offerSlot() {
    if (!slot || !station) return;
    var ae = station.value;
    slot.disabled = true;
    delete slot.dataset.start;
    if (!ae) return;
    var url = slot.dataset.url + "?station=" + encodeURIComponent(ae) +
      (slot.dataset.date ? "&date=" + encodeURIComponent(slot.dataset.date) : "");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || station.value !== ae) return;
        if (!data.start) { slot.textContent = slot.dataset.none; return; }
        slot.dataset.start = data.start;
        slot.textContent = slot.dataset.label + ": " + data.start.replace("T", " ");
        slot.disabled = false;
      });
  }
  if (slot && start) {
    slot.addEventListener("click", function () {
      if (!slot.dataset.start) return;
      start.value = slot.dataset.start;
      start.dispatchEvent(new Event("change", { bubbles: true }));
    });
    if (station) station.addEventListener("change", offerSlot);
    offerSlot();
  }
  if (station && modality) {
    station.addEventListener("change", function () {
      var opt = station.options[station.selectedIndex];
      if (opt && opt.dataset.modality && !modality.dataset.touched) modality.value = opt.dataset.modality;
    });
    modality.addEventListener("input", function () { modality.dataset.touched = "1"; });
  }
})();
