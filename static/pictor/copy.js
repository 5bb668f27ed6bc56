// Copy buttons: <button data-copy="text"> copies its text; <button data-copy-target="id">
// copies the text of the element with that id. The button says "Copied" for a moment.
// A static file, so the pages' Content-Security-Policy (no inline scripts) allows it.
(function () {
  "use strict";
  const CONFIRM_MS = 2000;

  function fallback(text) {
    // navigator.clipboard needs a secure context (https or localhost); elsewhere, the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(() => fallback(text));
    }
    return fallback(text);
  }

  function confirm(button, word) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = word;
    button.dataset.copied = word === "Copied" ? "true" : "false";
    clearTimeout(button.copyTimer);
    button.copyTimer = setTimeout(() => {
      button.textContent = button.dataset.label;
      delete button.dataset.copied;
    }, CONFIRM_MS);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy], [data-copy-target]");
    if (!button) return;
    event.preventDefault();
    let text = button.dataset.copy;
    if (button.dataset.copyTarget) {
      const source = document.getElementById(button.dataset.copyTarget);
      text = source ? source.textContent.trim() : "";
    }
    if (!text) return;
    copy(text).then(
      () => confirm(button, "Copied"),
      () => confirm(button, "Press Ctrl+C")
    );
  });
})();
