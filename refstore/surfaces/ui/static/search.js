// Filters the artifact table as you type (the form also works without JavaScript, through the server).
(function () {
  "use strict";
  var input = document.getElementById("search");
  var table = document.getElementById("artifacts");
  if (!input || !table) { return; }
  var rows = table.tBodies[0].rows;
  function filter() {
    var needle = input.value.trim().toLowerCase();
    for (var i = 0; i < rows.length; i++) {
      rows[i].hidden = needle !== "" && rows[i].getAttribute("data-name").indexOf(needle) < 0;
    }
  }
  input.addEventListener("input", filter);
  if (document.body.hasAttribute("data-export")) {  // a static export has no server to ask
    input.form.addEventListener("submit", function (event) { event.preventDefault(); filter(); });
  }
  filter();
})();
