// The chat prompt: Enter sends, Shift+Enter starts a new line (Gradio's multi-line box does the reverse, on
// keypress). Both events are caught before Gradio sees them; a Shift+Enter keeps its default: a new line.
for (const type of ["keydown", "keypress"]) {
  document.addEventListener(type, (event) => {
    const prompt = event.target.closest && event.target.closest("#chat-prompt");
    if (!prompt || event.key !== "Enter" || event.isComposing) return;
    event.stopPropagation();
    if (!event.shiftKey) {
      event.preventDefault();
      if (type === "keydown") document.querySelector("#chat-send")?.click();
    }
  }, true);
}

// The log box follows its end while the reader is at the end; scrolling up to read stops following until they
// scroll back down. (Gradio sets the textarea's value property, which no DOM observer sees, hence the poll.)
setInterval(() => {
  const box = document.querySelector("#log-tail textarea");
  if (!box) return;
  const length = String(box.value.length);
  if (box.dataset.seen === length) return;
  box.dataset.seen = length;
  if (box.dataset.following !== "false") box.scrollTop = box.scrollHeight;
}, 400);
document.addEventListener("scroll", (event) => {
  const box = event.target;
  if (box.matches && box.matches("#log-tail textarea")) {
    box.dataset.following = String(box.scrollTop + box.clientHeight >= box.scrollHeight - 24);
  }
}, true);

// The address keeps the run being followed (?job=N), so a copied link opens that run again. (Here rather than in an
// event's `js=`: Gradio runs those through eval, which the studio's Content-Security-Policy forbids.)
setInterval(() => {
  const box = document.querySelector("#selected-job textarea, #selected-job input");
  if (!box) return;
  const picked = box.value.trim();
  const url = new URL(window.location);
  if ((url.searchParams.get("job") || "") === picked) return;
  if (picked) url.searchParams.set("job", picked); else url.searchParams.delete("job");
  history.replaceState(null, "", url);
}, 400);

// Each Train form field gets a small (i) button after its control: a keyboard stop whose tooltip (hover or focus) is
// the field's whole help, which the spec states once (#field-help-text, escaped by app/train/spec_form.help_tips);
// the form shows only its first line. Re-added when Gradio re-renders a field.
setInterval(() => {
  const texts = document.querySelector("#field-help-text");
  if (!texts) return;
  for (const field of document.querySelectorAll(".spec-field[id^='field-']")) {
    if (field.querySelector(":scope > .field-tip")) continue;
    const help = texts.querySelector(`[data-field="${CSS.escape(field.id.slice("field-".length))}"]`);
    if (!help) continue;
    const tip = document.createElement("button");
    tip.type = "button";
    tip.className = "field-tip";
    tip.textContent = "i";
    tip.title = help.textContent;
    tip.dataset.tip = help.textContent;
    tip.setAttribute("aria-label", "About this field: " + help.textContent);
    field.appendChild(tip);
  }
}, 500);
