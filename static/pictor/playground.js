// The playground: every kind the API offers, submitted through the API's own views; the job is
// polled with a growing interval (250 ms up to 2 s) and shown as it goes: state, progress bar,
// live preview, then the images or the error. The same request is shown for each wire format
// that can carry it, as curl and as Python, and for text2img and inpaint as a call of OpenAI's
// Python SDK (copied by copy.js's buttons).
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const result = $("result");
  const statusLine = $("status");
  const jobLine = $("job-line");
  const bar = $("progress");
  const preview = $("preview");
  const images = $("images");
  const button = $("generate");
  const initImage = $("init_image");
  const maskImage = $("mask_image");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const base = form.dataset.base || window.location.origin;
  const FIRST_POLL_MS = 250;
  const MAX_POLL_MS = 2000;
  const GROWTH = 1.5;
  const IMAGE_PLACEHOLDER = "https://example.com/your-image.png";
  const MASK_PLACEHOLDER = "https://example.com/your-mask.png";
  // What the OpenAI routes use, having no guidance parameter (generation/api/base.py).
  const DEFAULT_GUIDANCE = 7.5;

  function kind() {
    const checked = form.querySelector("input[name=kind]:checked");
    return checked ? checked.value : "text2img";
  }

  function matches(tokens) {
    const current = kind();
    const type = $("controlnet_type").value;
    return tokens.split(/\s+/).some((token) => {
      const [k, sub] = token.split(":");
      return k === current && (!sub || sub === type);
    });
  }

  function shown(element) {
    for (let node = element; node && node !== form; node = node.parentElement) {
      if (node.dataset && node.dataset.kinds !== undefined && !matches(node.dataset.kinds)) return false;
    }
    return true;
  }

  function applyKind() {
    for (const node of form.querySelectorAll("[data-kinds]")) {
      const on = matches(node.dataset.kinds);
      node.hidden = !on;
      if (node.tagName === "OPTION") node.disabled = !on;
    }
    for (const field of form.elements) {
      if (field.name === "kind" || field.name === "csrfmiddlewaretoken") continue;
      field.disabled = !shown(field);
    }
    for (const select of form.querySelectorAll("select")) {
      const option = select.selectedOptions[0];
      if (option && option.disabled) {
        const first = [...select.options].find((o) => !o.disabled);
        if (first) select.value = first.value;
      }
    }
    showRequests();
  }

  function addons(data) {
    if (!shown($("prompt"))) return;
    const loras = [...form.querySelectorAll("[data-lora]:checked")].map((box) => box.dataset.lora);
    if (loras.length) {
      data.lora_model = loras.join(",");
      data.lora_strength = loras
        .map((name) => form.querySelector(`[data-lora-weight="${CSS.escape(name)}"]`).value || "1")
        .join(",");
    }
    const embeddings = [...form.querySelectorAll("[data-embedding]:checked")].map((b) => b.dataset.embedding);
    if (embeddings.length) data.embeddings_model = embeddings.join(",");
  }

  function body() {
    const data = {};
    for (const field of form.elements) {
      if (!field.name || field.disabled || field.hasAttribute("data-skip")) continue;
      if (field.name === "csrfmiddlewaretoken" || field.value === "") continue;
      if (field.hasAttribute("data-int")) data[field.name] = parseInt(field.value, 10);
      else if (field.hasAttribute("data-number")) data[field.name] = parseFloat(field.value);
      else data[field.name] = field.value;
    }
    addons(data);
    return data;
  }

  // ----- the same request in each format -------------------------------------------------

  function shownImages(data) {
    // Base64 images would fill the page: placeholders stand in for them.
    const copy = Object.assign({}, data);
    if (copy.init_image) copy.init_image = IMAGE_PLACEHOLDER;
    if (copy.mask_image) copy.mask_image = MASK_PLACEHOLDER;
    return copy;
  }

  function loraTags(data) {
    if (!data.lora_model) return "";
    const weights = data.lora_strength.split(",");
    return data.lora_model.split(",").map((name, i) => ` <lora:${name}:${weights[i]}>`).join("");
  }

  // [format label, path, auth ("body" key or "bearer"), body] for each format that fits.
  function formats(k, data) {
    const d = shownImages(data);
    const modelslabPath = {
      text2img: "/api/v3/text2img",
      img2img: "/api/v3/img2img",
      inpaint: "/api/v3/inpaint",
      controlnet: "/api/v5/controlnet",
      super_resolution: "/api/v6/image_editing/super_resolution",
    }[k];
    const list = [["ModelsLab", modelslabPath, "body", d]];
    if (k === "super_resolution" || k === "controlnet") return list;
    const common = {
      prompt: (d.prompt || "") + loraTags(d),
      negative_prompt: d.negative_prompt || "",
      width: d.width,
      height: d.height,
      steps: d.num_inference_steps,
      cfg_scale: d.guidance_scale,
      seed: d.seed === undefined ? -1 : d.seed,
    };
    const a1111 = Object.assign({}, common, {
      sampler_name: d.scheduler,
      batch_size: d.samples || 1,
      override_settings: { sd_model_checkpoint: d.model_id },
    });
    if (k === "text2img") {
      list.push(["AUTOMATIC1111", "/sdapi/v1/txt2img", "bearer", a1111]);
      const hyperbolic = Object.assign({}, common, { model_name: d.model_id, sampler: d.scheduler });
      delete hyperbolic.prompt;
      hyperbolic.prompt = d.prompt || "";
      if (d.lora_model) {
        const weights = d.lora_strength.split(",");
        hyperbolic.loras = Object.fromEntries(d.lora_model.split(",").map((n, i) => [n, parseFloat(weights[i])]));
      }
      list.push(["Hyperbolic", "/v1/image/generation", "bearer", hyperbolic]);
      list.push(["Synapse", "/sd/" + d.model_id, "bearer", Object.assign({}, common, { sampler: d.scheduler })]);
      if (d.num_inference_steps >= 20) {
        list.push(["Dan", "/api/sd/txt2img", "bearer", Object.assign({}, common, {
          model: d.model_id, sampler_name: d.scheduler, batch_size: d.samples || 1,
        })]);
      }
      return list;
    }
    const img2img = Object.assign({}, a1111, {
      init_images: ["<base64 of your image>"],
      denoising_strength: d.strength,
    });
    if (k === "inpaint") img2img.mask = "<base64 of your mask>";
    list.push(["AUTOMATIC1111", "/sdapi/v1/img2img", "bearer", img2img]);
    if (k === "img2img") {
      list.push(["Hyperbolic", "/v1/image/generation", "bearer", Object.assign({}, common, {
        model_name: d.model_id, sampler: d.scheduler, image: "<base64 of your image>", strength: d.strength,
      })]);
    }
    return list;
  }

  function curlFor(path, auth, data) {
    const sent = auth === "body" ? Object.assign({ key: "YOUR_API_KEY" }, data) : data;
    const json = JSON.stringify(sent).replace(/'/g, "'\\''");
    const header = auth === "bearer" ? " -H 'Authorization: Bearer YOUR_API_KEY'" : "";
    return "curl -s -X POST " + base + path + " -H 'Content-Type: application/json'" + header +
      " \\\n  -d '" + json + "'";
  }

  function pythonFor(path, auth, data) {
    const sent = auth === "body" ? Object.assign({ key: "YOUR_API_KEY" }, data) : data;
    const json = JSON.stringify(sent, null, 4)
      .replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
    const headers = auth === "bearer" ? ',\n    headers={"Authorization": "Bearer YOUR_API_KEY"}' : "";
    return "import requests\n\nbody = " + json + "\nresponse = requests.post(\n    \"" + base + path +
      "\",\n    json=body" + headers + ",\n    timeout=300,\n)\nprint(response.json())";
  }

  // The quality whose steps (the plan's fewest, middle or most, as generation/api/openai/
  // serializers.py picks them) are the chosen steps; null when none is.
  function quality(steps) {
    const list = [...$("num_inference_steps").options].map((o) => parseInt(o.value, 10)).sort((a, b) => a - b);
    const levels = { medium: list[(list.length - 1) >> 1], low: list[0], high: list[list.length - 1] };
    return Object.keys(levels).find((level) => levels[level] === steps) || null;
  }

  // The OpenAI SDK's call for text2img (images.generate) and inpaint (images.edit with a mask
  // file), or null for the other kinds. The OpenAI routes refuse a parameter they do not list,
  // so what they cannot carry is named in a comment rather than sent.
  function openaiFor(k, d) {
    if (k !== "text2img" && k !== "inpaint") return null;
    const level = quality(d.num_inference_steps);
    const left = [];
    if (d.negative_prompt) left.push("negative prompt");
    if (d.seed !== undefined && d.seed !== -1) left.push("seed");
    if (d.guidance_scale !== undefined && d.guidance_scale !== DEFAULT_GUIDANCE) left.push("guidance");
    if (d.scheduler && d.scheduler !== form.dataset.defaultScheduler) left.push("scheduler");
    if (level === null) left.push("steps");
    if (d.lora_model) left.push("LoRAs");
    if (d.embeddings_model) left.push("embeddings");
    if (k === "inpaint" && d.strength !== 1) left.push("strength (a masked edit repaints at 1)");
    const args = [];
    if (k === "inpaint") args.push("image=image", "mask=mask");
    if (d.model_id) args.push("model=" + JSON.stringify(d.model_id));
    args.push("prompt=" + JSON.stringify(d.prompt || ""));
    if (d.width && d.height) args.push(`size="${d.width}x${d.height}"`);
    args.push("n=" + (d.samples || 1));
    if (level) args.push(`quality="${level}"`);
    const lines = ["from openai import OpenAI", ""];
    if (left.length) {
      lines.push("# Not in the OpenAI format, so Pictor's defaults stand in: " + left.join(", ") + ".");
    }
    lines.push(
      "# max_retries=0: a retried request would be a second job.",
      `client = OpenAI(base_url="${base}/v1", api_key="YOUR_API_KEY", max_retries=0)`,
    );
    if (k === "text2img") {
      lines.push("result = client.images.generate(", ...args.map((a) => "    " + a + ","), ")");
    } else {
      lines.push(
        "# The mask is a PNG of the image's size: its transparent pixels are repainted.",
        'with open("your-image.png", "rb") as image, open("your-mask.png", "rb") as mask:',
        "    result = client.images.edit(",
        ...args.map((a) => "        " + a + ","),
        "    )",
      );
    }
    lines.push("for image in result.data:", "    print(image.url)");
    return lines.join("\n");
  }

  function snippet(parent, id, title, text) {
    const heading = document.createElement("h3");
    heading.className = "format";
    heading.textContent = title;
    const pre = document.createElement("pre");
    pre.id = id;
    pre.textContent = text;
    const p = document.createElement("p");
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "secondary copy";
    copy.dataset.copyTarget = id;
    copy.textContent = "Copy";
    p.append(copy);
    parent.append(heading, pre, p);
  }

  function showRequests() {
    const k = kind();
    const [first, ...rest] = formats(k, body());
    $("curl").textContent = curlFor(first[1], first[2], first[3]);
    $("python").textContent = pythonFor(first[1], first[2], first[3]);
    const others = $("other-formats");
    others.replaceChildren();
    for (const [label, path, auth, data] of rest) {
      const slug = label.toLowerCase().replace(/\W+/g, "");
      snippet(others, "curl-" + slug, label + " (curl)", curlFor(path, auth, data));
      snippet(others, "python-" + slug, label + " (Python)", pythonFor(path, auth, data));
    }
    const sdk = openaiFor(k, body());
    if (sdk) snippet(others, "python-openai", "OpenAI (Python SDK)", sdk);
  }

  // ----- images: the chosen image, the mask, the control preview ------------------------

  $("init_file").addEventListener("change", () => {
    const file = $("init_file").files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      initImage.value = reader.result;
      const shownImage = $("init_preview");
      shownImage.src = reader.result;
      shownImage.hidden = false;
      if (window.PictorMask) window.PictorMask.load(reader.result);
      maskImage.value = "";
      showRequests();
    };
    reader.readAsDataURL(file);
  });

  if (window.PictorMask) {
    window.PictorMask.onChange(() => {
      maskImage.value = window.PictorMask.isEmpty() ? "" : window.PictorMask.toDataURL();
      showRequests();
    });
  }

  function message(data) {
    if (!data) return "Something went wrong.";
    const text = data.message || data.detail || data.error;
    if (typeof text === "string") return text;
    if (text && typeof text === "object") {
      return Object.entries(text).map(([k, v]) => k + ": " + [].concat(v).join(" ")).join("; ");
    }
    return "Something went wrong.";
  }

  async function post(url, data) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(data),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (error) {
      answer = { message: "The server answered " + response.status + "." };
    }
    return [response, answer];
  }

  $("control-preview-button").addEventListener("click", async () => {
    const shownImage = $("control-preview");
    const module = $("controlnet_type").value;
    if (!initImage.value) {
      statusLine.textContent = "Choose an image first.";
      result.hidden = false;
      return;
    }
    const data = { module: module, image: initImage.value };
    if (module === "inpaint") data.mask = maskImage.value || window.PictorMask.toDataURL();
    const [response, answer] = await post(form.dataset.preprocess, data);
    if (response.ok) {
      shownImage.src = answer.image;
      shownImage.hidden = false;
    } else {
      result.hidden = false;
      statusLine.textContent = "Preview failed: " + message(answer);
    }
  });

  // ----- submit and poll -----------------------------------------------------------------

  let polls = 0;

  function finish(data) {
    button.disabled = false;
    preview.hidden = true;
    preview.removeAttribute("src");
    result.dataset.state = data.status;
    if (data.status === "success") {
      bar.value = 100;
      statusLine.textContent = "Succeeded. Done in " + data.generationTime + " s (seed " + data.meta.seed +
        ", " + data.meta.credits + " credits).";
      images.replaceChildren(...data.output.map((url, i) => {
        const link = document.createElement("a");
        link.href = url;
        const img = document.createElement("img");
        img.src = url;
        img.alt = "Generated image " + (i + 1);
        link.append(img);
        return link;
      }));
    } else {
      const reason = data.error ? " (" + data.error + ")" : "";
      statusLine.textContent = "Failed: " + message(data) + reason;
    }
  }

  function describe(data) {
    const parts = ["Job " + data.id, data.state || data.status];
    if (data.steps) parts.push("step " + data.steps);
    if (typeof data.eta === "number") parts.push("about " + Math.ceil(data.eta) + " s left");
    parts.push(polls + (polls === 1 ? " poll" : " polls"));
    return parts.join(" · ");
  }

  async function poll(id, delay) {
    polls += 1;
    let response;
    let data;
    try {
      response = await fetch(form.dataset.job.replace(/0\/?$/, id + "/"), { credentials: "same-origin" });
      data = await response.json();
    } catch (error) {
      statusLine.textContent = "Connection lost; retrying…";
      setTimeout(() => poll(id, MAX_POLL_MS), MAX_POLL_MS);
      return;
    }
    const next = Math.min(Math.round(delay * GROWTH), MAX_POLL_MS);
    if (response.status === 429) {
      const wait = (parseInt(response.headers.get("Retry-After") || "2", 10) || 2) * 1000;
      statusLine.textContent = "Checking too often; next check in " + Math.round(wait / 1000) + " s.";
      setTimeout(() => poll(id, MAX_POLL_MS), wait);
      return;
    }
    if (!response.ok) {
      finish({ status: "error", message: message(data) });
      return;
    }
    jobLine.textContent = describe(data);
    if (data.status === "processing") {
      result.dataset.state = data.state || "processing";
      bar.value = Math.round((data.progress || 0) * 100);
      if (data.state === "queued") statusLine.textContent = "Queued: waiting for a worker…";
      else statusLine.textContent = data.progress ? "Generating… " + bar.value + "%" : "Starting…";
      if (data.preview) {
        preview.src = "data:image/png;base64," + data.preview;
        preview.hidden = false;
      }
      setTimeout(() => poll(id, next), delay);
    } else {
      finish(data);
    }
  }

  form.addEventListener("change", (event) => {
    if (event.target.name === "kind" || event.target.id === "controlnet_type") applyKind();
    else showRequests();
  });
  form.addEventListener("input", showRequests);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const k = kind();
    if ((k === "img2img" || k === "inpaint" || k === "controlnet" || k === "super_resolution") && !initImage.value) {
      result.hidden = false;
      statusLine.textContent = "Choose an image first.";
      return;
    }
    if (shown(maskImage) && !maskImage.value) {
      result.hidden = false;
      statusLine.textContent = "Paint the area to repaint on the image first.";
      return;
    }
    button.disabled = true;
    result.hidden = false;
    result.dataset.state = "submitting";
    bar.value = 0;
    polls = 0;
    jobLine.textContent = "";
    images.replaceChildren();
    statusLine.textContent = "Submitting…";
    const url = k === "text2img" ? form.dataset.submit : form.dataset.submitKind.replace(/text2img$/, k);
    try {
      const [response, data] = await post(url, body());
      if (!response.ok) {
        finish({ status: "error", message: message(data) });
      } else if (data.status === "processing") {
        jobLine.textContent = describe(Object.assign({ state: "queued" }, data));
        poll(data.id, FIRST_POLL_MS);
      } else {
        finish(data);
      }
    } catch (error) {
      finish({ status: "error", message: String(error) });
    }
  });
  applyKind();
})();
