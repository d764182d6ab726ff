// Live refresh of the overview, the one thing that needs JavaScript:
// reload every 10 seconds while the box is ticked.
(function () {
  var box = document.getElementById("auto-refresh");
  if (!box) return;
  document.getElementById("auto-refresh-label").hidden = false;
  box.checked = sessionStorage.getItem("console-refresh") !== "off";
  box.addEventListener("change", function () {
    sessionStorage.setItem("console-refresh", box.checked ? "on" : "off");
  });
  setInterval(function () { if (box.checked) location.reload(); }, 10000);
})();
