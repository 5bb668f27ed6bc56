// On a phone, tables reflow into one card per row (pictor.css); each cell then shows its
// column's name, taken here from the table's header unless the cell has a data-label already.
(function () {
  "use strict";
  for (const table of document.querySelectorAll(".table-wrap table")) {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    if (!names.length) continue;
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.children].forEach((cell, column) => {
        if (!cell.hasAttribute("data-label") && names[column] && !cell.hasAttribute("colspan")) {
          cell.setAttribute("data-label", names[column]);
        }
      });
    }
  }
})();
