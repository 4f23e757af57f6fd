// Click a column header to sort its table; numbers sort by data-sort, text by content.
(function () {
  "use strict";
  function key(cell, numeric) {
    if (!cell) { return numeric ? Infinity : ""; }
    if (numeric) {
      var raw = cell.getAttribute("data-sort");
      var n = raw === null || raw === "" ? NaN : parseFloat(raw);
      return isNaN(n) ? Infinity : n;
    }
    return cell.textContent.trim().toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var numeric = th.getAttribute("data-kind") === "num";
        var asc = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          if (x === y) { return 0; }
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
