// The edited face's js_on_load, after live_slider.js: hold to compare, and the undo keys.
{
  // While the compare button is held (pointer, or Space / Enter), the face the edit started from
  // (the template's second image) is shown instead of the edited one.
  const hold = (on) => element.querySelector(".face")?.classList.toggle("comparing", on);
  element.addEventListener("pointerdown", (event) => { if (event.target.closest(".compare")) hold(true); });
  for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
    element.addEventListener(type, () => hold(false));
  }
  element.addEventListener("keydown", (event) => {
    if (event.target.closest(".compare") && (event.key === " " || event.key === "Enter")) {
      event.preventDefault();
      hold(true);
    }
  });
  element.addEventListener("keyup", () => hold(false));
  element.addEventListener("focusout", () => hold(false));
  // Ctrl+Z / Cmd+Z undoes, with Shift (or Ctrl+Y) redoes: a click on the Undo / Redo button.
  // Text boxes keep their own undo.
  const ccvae = (window.ccvae ??= { probs: {} });
  if (!ccvae.undoKeys) {
    ccvae.undoKeys = true;
    document.addEventListener("keydown", (event) => {
      const key = event.key.toLowerCase();
      if (!(event.ctrlKey || event.metaKey) || event.altKey || (key !== "z" && key !== "y")) return;
      const target = event.target;
      const typing = target instanceof HTMLTextAreaElement || target.isContentEditable ||
        (target instanceof HTMLInputElement && !["range", "checkbox", "radio", "button"].includes(target.type));
      if (typing) return;
      const button = document.getElementById(key === "y" || event.shiftKey ? "redo" : "undo");
      if (!button) return;
      event.preventDefault();
      button.click();
    });
  }
}
