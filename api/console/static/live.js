// Live refresh of the queue: re-fetch the server-rendered fragment every few seconds and swap it
// in (no full reload). Without JavaScript the page still works; it just does not update itself.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box || !window.fetch) { return; }
  var every = parseInt(box.getAttribute("data-every"), 10) || 2000;
  function tick() {
    fetch(box.getAttribute("data-src"), { credentials: "same-origin", redirect: "manual" })
      .then(function (r) {
        if (r.status !== 200) { throw new Error("signed out or unavailable"); }
        return r.text();
      })
      .then(function (html) { box.innerHTML = html; setTimeout(tick, every); })
      .catch(function () { setTimeout(tick, every * 5); });
  }
  setTimeout(tick, every);
})();
