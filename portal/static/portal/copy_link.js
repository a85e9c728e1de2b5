// "Copy" beside a link in the admin (the invoice list's pay links): <button data-copy="URL">
// puts URL on the clipboard and says so. A static file: the CSP allows no inline script.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) {
    return;
  }
  event.preventDefault();
  const text = button.dataset.copy;
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch (error) {
    // No clipboard API (a page not served over HTTPS): the old way, through a selection.
    const field = document.createElement("textarea");
    field.value = text;
    field.setAttribute("readonly", "");
    field.className = "visually-hidden";
    document.body.appendChild(field);
    field.select();
    copied = document.execCommand("copy");
    field.remove();
  }
  const label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  button.textContent = copied ? "Copied" : "Copy failed: select the link";
  button.setAttribute("aria-live", "polite");
  window.setTimeout(() => {
    button.textContent = label;
  }, 2000);
});
