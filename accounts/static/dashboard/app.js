// Small progressive enhancements; every page works without them.
document.addEventListener("DOMContentLoaded", () => {
  // A page shown once (a new key's secret): its address becomes the list's, so a reload shows the list.
  const replaced = document.querySelector("[data-replace-url]");
  if (replaced) window.history.replaceState(null, "", replaced.dataset.replaceUrl);
  // Organization switcher: submit on change.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // Copy buttons: <button data-copy="#element-id">.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        button.textContent = "Copied";
      } catch (err) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
  // Confirmations: <form data-confirm="Revoke this key?">.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
