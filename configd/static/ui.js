// configd UI: progressive enhancement only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Version pickers and audit filters apply as soon as a choice is made.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form && select.form.requestSubmit());
  }
  // Opening the rollback panel focuses its message field; a second submit while the first runs is ignored.
  const rollback = document.getElementById("rollback");
  if (rollback) {
    rollback.addEventListener("toggle", () => {
      const field = rollback.querySelector("input[name=message]");
      if (rollback.open && field) field.focus();
    });
    const form = rollback.querySelector("form");
    if (form) {
      form.addEventListener("submit", (event) => {
        if (form.dataset.sent) { event.preventDefault(); return; }
        form.dataset.sent = "1";
      });
    }
  }
});
