// The order page's countdown: the seconds left to pay, from the server's count (so the visitor's clock does not
// matter), and "Order expired" in place of the pay form when it reaches zero. Without JavaScript the page shows the
// count at load time and the server refuses a late payment with a readable message.
(function () {
  var countdown = document.getElementById("countdown");
  if (!countdown) return;
  var total = parseInt(countdown.getAttribute("data-seconds-left"), 10);
  var started = performance.now();
  var shown = document.getElementById("seconds-left");
  function tick() {
    var left = Math.max(0, Math.ceil(total - (performance.now() - started) / 1000));
    shown.textContent = String(left);
    if (left > 0) {
      window.setTimeout(tick, 250);
      return;
    }
    document.getElementById("reservation").hidden = true;
    document.getElementById("expired-note").hidden = false;
  }
  tick();
})();
