// Every page: the appliance's clock in the footer, running, in the clinic's zone, and a
// warning when this computer's clock is far from the appliance's (the times on the pages
// are the appliance's; a wrong clock on either side misleads whoever reads them).
(function () {
  "use strict";
  var footer = document.getElementById("clock");
  if (!footer) return;
  var boxMs = parseInt(footer.dataset.epochMs, 10);
  var offsetMin = parseInt(footer.dataset.offsetMin, 10) || 0;
  var warnS = parseInt(footer.dataset.warnS, 10) || 120;
  if (!boxMs) return;
  var loaded = Date.now();
  var skewMs = loaded - boxMs; // this computer minus the appliance, when the page came

  function two(n) { return ("0" + n).slice(-2); }

  function boxClock() {
    var at = new Date(boxMs + (Date.now() - loaded) + offsetMin * 60000);
    return two(at.getUTCHours()) + ":" + two(at.getUTCMinutes());
  }

  function spell(ms) {
    var minutes = Math.round(Math.abs(ms) / 60000);
    if (minutes < 120) return minutes + " min";
    return Math.round(minutes / 60) + " h";
  }

  var shown = document.getElementById("box-clock");
  setInterval(function () { if (shown) shown.textContent = boxClock(); }, 10000);

  var banner = document.getElementById("clock-skew");
  if (banner && Math.abs(skewMs) > warnS * 1000) {
    banner.querySelector(".skew").textContent = spell(skewMs);
    banner.hidden = false;
  }
  // The board's "not updated since" time, in the appliance's clock (board.js reads it).
  window.applianceClock = { now: boxClock };
})();
