// Keyboard shortcuts for the review queue: every button with data-key="k" is clicked by key k.
document.addEventListener("keydown", function (event) {
  var tag = (event.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "select" || tag === "textarea") return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var button = document.querySelector('button[data-key="' + event.key + '"]');
  if (button) { event.preventDefault(); button.click(); }
});
