// Filter boards by machine, dtype and model size with the selects above them. Without
// JavaScript the selects stay hidden and every board shows.
(function () {
  "use strict";
  document.querySelectorAll("form.filters").forEach(function (form) {
    var selects = form.querySelectorAll("select[data-filter]");
    var shown = form.querySelector(".shown");
    var boards = document.querySelectorAll("section.board");
    form.hidden = false;
    function apply() {
      var n = 0;
      boards.forEach(function (board) {
        var keep = true;
        selects.forEach(function (s) {
          if (s.value !== "" && board.getAttribute("data-" + s.getAttribute("data-filter")) !== s.value) {
            keep = false;
          }
        });
        board.hidden = !keep;
        if (keep) { n += 1; }
      });
      document.querySelectorAll("section.machine").forEach(function (m) {
        m.hidden = m.querySelector("section.board:not([hidden])") === null;
      });
      if (shown) { shown.textContent = n + " of " + boards.length + " boards shown"; }
    }
    selects.forEach(function (s) { s.addEventListener("change", apply); });
    form.addEventListener("submit", function (e) { e.preventDefault(); });
  });
})();
