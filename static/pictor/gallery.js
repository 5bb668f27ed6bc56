// The history gallery: a lightbox over the page's images (← → to move, Escape to close) and
// a selection of images to download as one zip. The page works without it: thumbnails stay
// plain buttons, and each job keeps its own zip link.
(function () {
  "use strict";
  const data = document.getElementById("gallery-items");
  const box = document.getElementById("lightbox");
  if (!data || !box) return;
  const items = JSON.parse(data.textContent);
  const $ = (id) => document.getElementById(id);
  let current = -1;

  function show(position) {
    const count = items.length;
    if (!count) return;
    current = ((position % count) + count) % count;
    const item = items[current];
    const img = $("lb-img");
    img.src = item.url;
    img.alt = "Job " + item.job + " image " + (item.index + 1) + ": " + item.prompt;
    $("lb-title").textContent =
      "Job " + item.job + " · image " + (item.index + 1) + " (" + (current + 1) + " of " + count + ")";
    $("lb-prompt").textContent = item.prompt;
    $("lb-negative").textContent = item.negative_prompt ? "Negative: " + item.negative_prompt : "";
    const params = $("lb-params");
    params.replaceChildren();
    const rows = [
      ["model", item.model],
      ["kind", item.kind],
      ["size", item.size],
      ["created", item.created],
    ].concat(item.parameters);
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      params.append(dt, dd);
    }
    $("lb-seed").textContent = String(item.seed);
    $("lb-seed-copy").dataset.copy = String(item.seed);
    const use = $("lb-use");
    use.hidden = !item.use;
    use.href = item.use || "#";
    $("lb-vary").action = item.vary;
    $("lb-download").href = item.download;
    $("lb-zip").href = item.zip;
    $("lb-prev").disabled = $("lb-next").disabled = count < 2;
    if (!box.open) box.showModal();
  }

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("button.open[data-position]");
    if (opener) show(parseInt(opener.dataset.position, 10));
  });
  $("lb-prev").addEventListener("click", () => show(current - 1));
  $("lb-next").addEventListener("click", () => show(current + 1));
  $("lb-close").addEventListener("click", () => box.close());
  // A click on the backdrop (outside the dialog's box) closes it too.
  box.addEventListener("click", (event) => {
    if (event.target === box) box.close();
  });
  box.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowLeft") show(current - 1);
    else if (event.key === "ArrowRight") show(current + 1);
    else if (event.key === "Escape") box.close();
    else return;
    event.preventDefault();
  });
  box.addEventListener("close", () => {
    const opener = document.querySelector('button.open[data-position="' + current + '"]');
    if (opener) opener.focus();
  });

  // The selection: checkboxes belong to the #selection form, which asks for the zip.
  const form = $("selection");
  const max = parseInt(form.dataset.max, 10);
  const label = $("selection-count");
  const submit = $("zip-selection");
  const boxes = () => document.querySelectorAll('input[type=checkbox][form="selection"]');

  function update() {
    const chosen = [...boxes()].filter((b) => b.checked).length;
    const tooMany = chosen > max;
    submit.disabled = chosen === 0 || tooMany;
    if (tooMany) label.textContent = chosen + " selected: a zip holds at most " + max + ".";
    else if (chosen) label.textContent = chosen + " image" + (chosen === 1 ? "" : "s") + " selected.";
    else label.textContent = "No images selected.";
  }
  document.addEventListener("change", (event) => {
    if (event.target.matches('input[type=checkbox][form="selection"]')) update();
  });
  $("select-page").addEventListener("click", () => {
    const all = [...boxes()];
    const every = all.every((b) => b.checked);
    for (const b of all) b.checked = !every;
    update();
  });
  update();
})();
