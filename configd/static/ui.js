// configd UI: progressive enhancement only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Version pickers and audit filters apply as soon as a choice is made.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form && select.form.requestSubmit());
  }
  // Opening a two-step panel (roll back, promote, abort) focuses its message field; a second submit while the
  // first runs is ignored.
  for (const panel of document.querySelectorAll("details.danger-zone")) {
    panel.addEventListener("toggle", () => {
      const field = panel.querySelector("input[name=message]");
      if (panel.open && field) field.focus();
    });
    const form = panel.querySelector("form");
    if (form) {
      form.addEventListener("submit", (event) => {
        if (form.dataset.sent) { event.preventDefault(); return; }
        form.dataset.sent = "1";
      });
    }
  }
});
