// Keyboard shortcuts of the review page (listed on the page). No inline script: see the CSP.
(function () {
  function typing(event) {
    var tag = (event.target.tagName || "").toLowerCase();
    return tag === "textarea" || tag === "input" || tag === "select";
  }
  var review = document.getElementById("review");
  if (review) {
    document.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
        event.preventDefault();
        document.getElementById(event.shiftKey ? "save-next" : "save").click();
      } else if (event.altKey && !event.ctrlKey) {
        var target = {a: "approved", x: "exclude", c: "correction"}[event.key.toLowerCase()];
        if (!target) return;
        event.preventDefault();
        var element = document.getElementById(target);
        if (target === "correction") element.focus(); else element.click();
      }
    });
  }
  var inbox = document.getElementById("inbox");
  if (inbox) {
    var rows = Array.prototype.slice.call(inbox.querySelectorAll("tbody tr")).filter(function (r) {
      return r.querySelector("a.question");
    });
    var current = -1;
    function select(i) {
      if (!rows.length) return;
      if (current >= 0) rows[current].classList.remove("current");
      current = Math.max(0, Math.min(rows.length - 1, i));
      rows[current].classList.add("current");
      rows[current].querySelector("a.question").focus();
    }
    document.addEventListener("keydown", function (event) {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j") select(current + 1);
      else if (event.key === "k") select(current - 1);
      else if ((event.key === "o" || event.key === "Enter") && current >= 0) rows[current].querySelector("a.question").click();
      else if (event.key === "x" && current >= 0) rows[current].querySelector("input.pick").click();
      else return;
      event.preventDefault();
    });
    var all = document.getElementById("select-all");
    if (all) all.addEventListener("change", function () {
      inbox.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
    });
  }
})();
