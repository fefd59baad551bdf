// moxtw web interface: small progressive enhancements; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // A "select all" checkbox in the first header cell of tables with selectable rows.
  document.querySelectorAll("[data-select]").forEach(function (box) {
    var name = box.getAttribute("data-select");
    var th = box.querySelector("thead th");
    var rows = box.querySelectorAll('tbody input[type=checkbox][name="' + name + '"]');
    if (!th || rows.length === 0) return;
    var all = document.createElement("input");
    all.type = "checkbox";
    all.setAttribute("aria-label", "Select all rows on this page");
    all.addEventListener("change", function () {
      rows.forEach(function (r) { r.checked = all.checked; });
    });
    th.textContent = "";
    th.appendChild(all);
  });
});
