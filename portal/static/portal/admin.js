// Behaviour the admin templates ask for with data- attributes: the Content-Security-Policy
// allows no inline script (no onclick="..."), only files like this one.
document.addEventListener("change", (event) => {
  if (event.target.matches("[data-submit-on-change]")) {
    event.target.form.submit();
  }
});
document.addEventListener("click", (event) => {
  const all = event.target.closest("input[data-tick-all]");
  if (all) {
    document.querySelectorAll(`input[name="${all.dataset.tickAll}"]`).forEach((box) => {
      box.checked = all.checked;
    });
  }
});
