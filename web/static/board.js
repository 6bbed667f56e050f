// The schedule board: polls for changed steps and updates rows in place (no reload).
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board) return;
  var since = board.dataset.since;
  var period = parseInt(board.dataset.poll, 10) || 3000;
  var live = document.getElementById("live");
  var ended = document.getElementById("session-ended");
  var lost = document.getElementById("server-lost");
  var stopped = false;
  var missed = 0;
  var lastOk = stamp();
  var LOST_AFTER = 3; // missed polls before the board says it is no longer up to date

  // The time of the last good poll, on the appliance's clock (clock.js) like every time shown.
  function stamp() {
    if (window.applianceClock) return window.applianceClock.now();
    var d = new Date();
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
  }

  function missedOne() {
    missed += 1;
    live.hidden = true;
    if (missed >= LOST_AFTER && lost) {
      lost.querySelector(".since").textContent = lastOk;
      lost.hidden = false;
    }
  }

  function section(station) {
    var found = board.querySelector('section.station[data-station="' + CSS.escape(station) + '"]');
    if (found) return found;
    var s = document.createElement("section");
    s.className = "station card";
    s.dataset.station = station;
    var h = document.createElement("h2");
    h.textContent = station;
    var ul = document.createElement("ul");
    ul.className = "steps";
    s.appendChild(h);
    s.appendChild(ul);
    board.appendChild(s);
    return s;
  }

  function refreshEmpty(s) {
    var empty = s.querySelector(".empty");
    if (empty) empty.hidden = s.querySelectorAll("li.step").length > 0;
  }

  function apply(row) {
    var old = document.getElementById("step-" + row.pk);
    var oldSection = old ? old.closest("section.station") : null;
    if (old) old.remove();
    if (oldSection) refreshEmpty(oldSection);
    if (!row.html) return;
    if (board.dataset.station && row.station !== board.dataset.station) return;
    var tpl = document.createElement("template");
    tpl.innerHTML = row.html.trim();
    var li = tpl.content.firstElementChild;
    var s = section(row.station);
    var ul = s.querySelector("ul.steps");
    var before = null;
    ul.querySelectorAll("li.step").forEach(function (other) {
      if (!before && other.dataset.start > row.start) before = other;
    });
    ul.insertBefore(li, before);
    if (!old || old.dataset.status !== row.status) li.classList.add("changed");
    refreshEmpty(s);
  }

  function poll() {
    if (stopped) return;
    var url = board.dataset.changes + "?date=" + encodeURIComponent(board.dataset.date) +
      "&since=" + encodeURIComponent(since) +
      (board.dataset.station ? "&station=" + encodeURIComponent(board.dataset.station) : "");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 401) { stopped = true; ended.hidden = false; live.hidden = true; return null; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (data) {
        if (!data) return;
        data.rows.forEach(apply);
        since = data.since;
        live.hidden = false;
        missed = 0;
        lastOk = stamp();
        if (lost) lost.hidden = true;
      })
      .catch(missedOne)
      .finally(function () { if (!stopped) setTimeout(poll, period); });
  }
  setTimeout(poll, period);
})();
