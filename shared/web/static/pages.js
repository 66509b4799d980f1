// Live preview: a form with data-preview="<url>" sends itself there (debounced) whenever a field changes, and
// shows the answer (server-rendered, escaped HTML) in the element named by data-preview-target. Without
// JavaScript the form's own "preview" button does the same with a page load.
"use strict";
document.querySelectorAll("form[data-preview]").forEach(function (form) {
  var target = document.getElementById(form.dataset.previewTarget);
  if (!target) { return; }
  var timer = null;
  var latest = 0;
  function refresh() {
    var asked = ++latest;
    var body = new URLSearchParams(new FormData(form));
    fetch(form.dataset.preview, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": form.querySelector("[name=csrf]").value }
    }).then(function (answer) {
      return answer.ok ? answer.text() : null;
    }).then(function (html) {
      // Only the answer to the latest change is shown; an older one arriving late is dropped.
      if (html !== null && asked === latest) { target.innerHTML = html; }
    }).catch(function () { /* the next change tries again */ });
  }
  function later() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 350);
  }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
});
