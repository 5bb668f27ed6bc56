// The playground: submit through /app/playground/submit, poll the job, move the progress bar
// and show the job's live preview while it runs.
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const result = document.getElementById("result");
  const statusLine = document.getElementById("status");
  const bar = document.getElementById("progress");
  const preview = document.getElementById("preview");
  const images = document.getElementById("images");
  const curl = document.getElementById("curl");
  const button = document.getElementById("generate");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const POLL_MS = 200;

  function body() {
    const data = {};
    for (const field of form.elements) {
      if (!field.name || field.name === "csrfmiddlewaretoken" || field.value === "") continue;
      if (field.hasAttribute("data-int")) data[field.name] = parseInt(field.value, 10);
      else if (field.hasAttribute("data-number")) data[field.name] = parseFloat(field.value);
      else data[field.name] = field.value;
    }
    return data;
  }

  function showCurl() {
    const data = Object.assign({ key: "YOUR_API_KEY" }, body());
    const json = JSON.stringify(data).replace(/'/g, "'\\''");
    curl.textContent = "curl -s -X POST " + form.dataset.api +
      " -H 'Content-Type: application/json' \\\n  -d '" + json + "'";
  }

  function message(data) {
    if (typeof data.message === "string") return data.message;
    if (data.message && typeof data.message === "object") {
      return Object.entries(data.message).map(([k, v]) => k + ": " + [].concat(v).join(" ")).join("; ");
    }
    return "Something went wrong.";
  }

  function finish(data) {
    button.disabled = false;
    preview.hidden = true;
    preview.removeAttribute("src");
    if (data.status === "success") {
      bar.value = 100;
      statusLine.textContent = "Done in " + data.generationTime + " s (seed " + data.meta.seed + ", " + data.meta.credits + " credits).";
      images.replaceChildren(...data.output.map((url, i) => {
        const img = document.createElement("img");
        img.src = url;
        img.alt = "Generated image " + (i + 1);
        return img;
      }));
    } else {
      statusLine.textContent = "Failed: " + message(data);
    }
  }

  async function poll(id) {
    const response = await fetch(form.dataset.job.replace(/0\/?$/, id + "/"), { credentials: "same-origin" });
    const data = await response.json();
    if (data.status === "processing") {
      bar.value = Math.round((data.progress || 0) * 100);
      statusLine.textContent = data.progress ? "Generating… " + bar.value + "%" : "Waiting for a worker…";
      if (data.preview) {
        preview.src = "data:image/png;base64," + data.preview;
        preview.hidden = false;
      }
      setTimeout(() => poll(id), POLL_MS);
    } else {
      finish(data);
    }
  }

  form.addEventListener("input", showCurl);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    result.hidden = false;
    bar.value = 0;
    images.replaceChildren();
    statusLine.textContent = "Submitting…";
    try {
      const response = await fetch(form.dataset.submit, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify(body()),
      });
      const data = await response.json();
      if (!response.ok) {
        finish({ status: "error", message: data.message });
      } else if (data.status === "processing") {
        poll(data.id);
      } else {
        finish(data);
      }
    } catch (error) {
      finish({ status: "error", message: String(error) });
    }
  });
  showCurl();
})();
